"""The notebook app driven from Python the way a person drives it: button clicks and value changes."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")
pytest.importorskip("matplotlib")

import workbench as wb  # noqa: E402
from tests.support.paths import MODELS  # noqa: E402
from workbench.ui import Workbench  # noqa: E402

RESNET = os.path.join(MODELS, "resnet_bn_legacy.onnx")  # small exporter ResNet: fast on 2 cores
BERT = os.path.join(MODELS, "bert_legacy.onnx")


@pytest.fixture()
def app():
    a = Workbench(RESNET, device="cpu", shapes={"pixel_values": (2, 3, 64, 64)})
    a.optimize_tab.build_button.click()
    assert a.optimize_tab.error.value == ""
    return a


def test_build_click_fills_the_tables_and_graph(app):
    engine = app.engine
    assert engine is not None and app.label in app.engines
    tab = app.optimize_tab
    assert f"<b>{len(engine.layers)}</b> layers" in tab.counts.value
    assert tab.graph.layer_count == len(engine.layers)
    assert len(tab.graph.graph["edges"]) >= len(engine.layers) - 1
    # summary tab shows the model; precision tab lists every layer (first page)
    assert "pixel_values" in app.model_tab.summary.value
    assert len(app.precision_tab.dropdowns) == min(len(engine.layers), 40)
    # clicking a layer in the graph (the browser sets `selected`) shows its details
    name = engine.layers[0].name
    tab.graph.selected = name
    assert "Original ONNX nodes" in tab.details.value and "Tactic candidates" in tab.details.value


def test_fusion_log_filter(app):
    tab = app.optimize_tab
    total = len(app.engine.describe()["fusions"])
    if total == 0:
        pytest.skip("no fusion attempts logged for this model yet")
    tab.log_status.value = "fired"
    assert all(r["status"] == "fired" for r in tab.fusion_rows())
    tab.log_status.value = "all"
    tab.log_filter.value = "no-such-rule-xyz"
    assert tab.fusion_rows() == []
    assert "0 of" in tab.log.value


def test_rebuild_changes_a_layers_precision(app):
    precisions = wb.supported_precisions("cpu")
    others = [p for p in precisions if p != "fp32"]
    if not others:
        pytest.skip(f"the CPU target offers only {precisions}: no second precision to switch a layer to")
    tab = app.precision_tab
    conv = next(l for l in app.engine.layers if l.op in ("Conv", "FusedConv") or "Conv" in l.op)
    tab.filter.value = conv.name
    assert conv.name in tab.dropdowns
    tab.dropdowns[conv.name].value = others[0]
    tab.rebuild_button.click()
    assert "Error" not in tab.result.value, tab.result.value
    rebuilt = {l.name: l for l in app.engine.layers}
    assert rebuilt[conv.name].precision == others[0]
    assert app.engine.build_info["layer_precisions"] == {conv.name: others[0]}
    errs = tab.last_result["errors"]
    assert errs and all(0 <= e < 0.1 for e in errs.values())
    assert tab.last_result["before_ms"] > 0 and tab.last_result["after_ms"] > 0
    assert len(app.engines) == 2  # the fp32 build stays available for Compare
    # the rebuild ran no passes: it started from the plan the first build lowered
    assert app.engine.build_stats.get("front") and app.front.made == 1
    app.build(disable=["conv_epilogue"])
    assert not app.engine.build_stats.get("front") and app.front.made == 2  # other passes: lowered again


def test_profile_compare_and_exports(app, tmp_path):
    prof = app.profile_tab
    prof.runs.value = 2
    prof.run_button.click()
    assert prof.df is not None and len(prof.df) == len(app.engine.layers)
    assert len(prof.figure.axes) == 4 and "end-to-end" in prof.summary.value
    assert app.optimize_tab.graph.timing  # the graph can now colour by share of time
    prof.base.value = str(tmp_path / "prof")
    prof.csv_button.click()
    prof.trace_button.click()
    assert (tmp_path / "prof.csv").stat().st_size > 0 and (tmp_path / "prof.trace.json").stat().st_size > 0
    # a second engine, then Compare
    app.optimize_tab.disable.value = ()
    app.optimize_tab.build_button.click()
    cmp = app.compare_tab
    cmp.a.value, cmp.b.value = list(app.engines)
    cmp.runs.value = 1
    cmp.button.click()
    assert cmp.result is not None and cmp.result["e2e_a"] > 0 and len(cmp.result["layers"]) > 0


def test_export_writes_a_loadable_engine(app, tmp_path):
    path = tmp_path / "out" / "resnet.wbe"
    app.export_tab.filename.value = str(path)
    app.export_tab.button.click()
    info = app.export_tab.info
    assert info and os.path.exists(path) and info["size"] == path.stat().st_size
    assert info["sha256"] in app.export_tab.result.value
    loaded = wb.Engine.load(path)
    assert len(loaded.layers) == len(app.engine.layers)


def test_bad_shapes_are_shown_not_raised():
    a = Workbench(RESNET, device="cpu")
    a.optimize_tab.shapes.value = "pixel_values:2xZ"
    a.optimize_tab.build_button.click()
    assert "ShapeError" in a.optimize_tab.error.value and a.engine is None


def test_transformer_builds_with_given_shapes():
    shapes = {n: (2, 16) for n in ("input_ids", "attention_mask", "token_type_ids")}
    a = Workbench(BERT, device="cpu", shapes=shapes, build=True)
    assert a.engine is not None
    out = a.run()
    assert set(out) == {o.name for o in a.engine.outputs}


def test_open_an_engine_file(app, tmp_path):
    path = tmp_path / "e.wbe"
    app.engine.save(path)
    b = Workbench(str(path))
    assert b.net is None and b.engine is not None and b.optimize_tab.build_button.disabled
    assert b.optimize_tab.graph.layer_count == len(b.engine.layers)


def test_magics_open_and_profile(tmp_path, app):
    from workbench.ui.magics import wb_open, wb_profile

    a = wb_open(f"{RESNET} --device cpu --shapes pixel_values:2x3x64x64 --build")
    assert a.engine is not None
    path = tmp_path / "m.wbe"
    a.engine.save(path)
    p = wb_profile(f"{path} --runs 1")
    assert p.profile_tab.df is not None and p.tabs.selected_index == 3
    p2 = wb_profile("eng --runs 1", {"eng": app.engine})
    assert p2.profile_tab.df is not None
    with pytest.raises(ValueError, match="wb_open"):
        wb_open("")
