"""The Optimize tab's shape ranges: a model with dynamic dims opens with visible min / opt / max
fields (never a silent 1), builds for that range, shows the profiles and, for an engine of buckets,
one graph per bucket."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

import workbench as wb  # noqa: E402
from tests.support.paths import MODELS  # noqa: E402
from workbench.ui import Workbench  # noqa: E402
from workbench.ui.ranges import BATCH, OTHER, default_profile  # noqa: E402

BERT = os.path.join(MODELS, "bert_legacy.onnx")
NAMES = ("input_ids", "attention_mask", "token_type_ids")


def test_dynamic_dims_open_as_visible_ranges_and_build():
    a = Workbench(BERT, device="cpu")
    tab = a.optimize_tab
    fields = {n: tuple(f.value for f in tab.ranges[n]) for n in NAMES}
    want = (f"{BATCH[0]}x{OTHER[0]}", f"{BATCH[1]}x{OTHER[1]}", f"{BATCH[2]}x{OTHER[2]}")
    assert fields == {n: want for n in NAMES}
    assert tab.shapes.value == "" and "prefilled" in tab.ranges_box.children[0].value
    tab.build_button.click()
    assert tab.error.value == "", tab.error.value
    engine = a.engine
    assert engine.plan.profiles == [{n: [[1, 1], [1, 16], [8, 64]] for n in NAMES}]
    assert "Shape ranges (profiles)" in tab.ranges_view.value and tab.bucket.layout.display == "none"
    out = a.run()  # random feeds at the profile's opt shapes
    assert out["last_hidden_state"].shape == (1, 16, 32)
    # edited ranges; a bad field is shown in the tab, not raised
    for n in NAMES:
        tab.ranges[n][2].value = "4x32"
    tab.build_button.click()
    assert a.engine.plan.profiles[0]["input_ids"][2] == [4, 32]
    tab.ranges["input_ids"][1].value = "2xq"
    tab.build_button.click()
    assert "ShapeError" in tab.error.value and "opt shape of input" in tab.error.value
    # min = opt = max everywhere, or static shapes text: a static build
    for n in NAMES:
        for f in tab.ranges[n]:
            f.value = "2x8"
    tab.build_button.click()
    assert tab.error.value == "" and not a.engine.plan.profiles
    assert [s.shape for s in a.engine.inputs] == [[2, 8]] * 3


def test_given_shapes_or_feeds_fix_the_dims():
    net = wb.load_onnx(BERT)
    assert default_profile(net, {"input_ids": (2, 16)}) == {n: ((2, 16), (2, 16), (2, 16)) for n in NAMES}
    feeds = {n: np.ones((3, 12), np.int64) for n in NAMES}
    assert default_profile(net, feeds=feeds)["attention_mask"] == ((1, 12), (3, 12), (8, 12))
    a = Workbench(BERT, device="cpu", shapes={n: (2, 16) for n in NAMES})
    assert a.settings["profiles"] == [] and a.optimize_tab.shapes.value.startswith("input_ids:2x16")


def _bucketed_app(tmp_path):
    """The app on a saved BERT engine for batch 1..4 built as buckets of 2 and 4."""
    net = wb.load_onnx(BERT)
    profile = {n: ((1, 16), (2, 16), (4, 16)) for n in NAMES}
    engine = wb.build(net, wb.BuilderConfig(device="cpu", profiles=[profile], buckets=[2, 4], autotune=False))
    engine.save(tmp_path / "b.wbe")
    a = Workbench(str(tmp_path / "b.wbe"))
    return a


def test_an_engine_of_buckets_shows_one_graph_per_bucket(tmp_path):
    a = _bucketed_app(tmp_path)
    tab = a.optimize_tab
    assert tab.bucket.layout.display is None and [v for _, v in tab.bucket.options] == [0, 1]
    assert "Buckets (one static plan each)" in tab.ranges_view.value
    first = tab.graph.graph
    assert tab.view_engine.inputs[0].shape == [4, 16]
    tab.bucket.value = 1
    assert tab.view_engine.inputs[0].shape == [2, 16] and tab.graph.graph != first
    layer = tab.view_engine.layers[0].name
    tab.graph.selected = layer
    assert "Original ONNX nodes" in tab.details.value


def test_the_profile_tab_charts_latency_vs_batch(tmp_path):
    a = _bucketed_app(tmp_path)
    tab = a.profile_tab
    tab.refresh()
    assert tab.batches.placeholder == "default 1, 2, 4" and tab.sweep_box.layout.display == "none"
    tab.runs.value = 2
    tab.sweep_button.click()
    df = tab.sweep_df
    assert list(df["batch"]) == [1, 2, 4] and list(df["padded_to"]) == [2, 2, 4]
    assert tab.sweep_box.layout.display == "" and tab.sweep_image.value[:4] == b"\x89PNG"
    assert "Latency by batch size" in tab.sweep_table.value and "highest throughput" in tab.sweep_summary.value
    tab.batches.value = "3"
    tab.sweep_button.click()
    assert list(tab.sweep_df["batch"]) == [3] and list(tab.sweep_df["padded_to"]) == [4]
    for text, error in (("9", "outside"), ("2,x", "positive integers")):
        tab.batches.value = text
        tab.sweep_button.click()
        assert error in tab.sweep_summary.value and list(tab.sweep_df["batch"]) == [3]  # the last chart stays
