"""Latency against batch size (explore/sweep.py): which batches are swept by default, the bucket each
batch runs in and the batch it is padded to (the router's own answer), the timing columns, and the
one-line errors for batches outside the range, bad batch lists and engines without a batch to sweep."""

from __future__ import annotations

import numpy as np
import pytest

import workbench as wb
from tests.support.exporter_models import model_path
from workbench.errors import InputError
from workbench.explore.sweep import COLUMNS, latency_vs_batch
from workbench.runtime.buckets import ShapeRangeError, default_batches
from workbench.ui.ranges import parse_batches

RANGE = ((1, 3, 64, 64), (2, 3, 64, 64), (6, 3, 64, 64))


@pytest.fixture(scope="module")
def net():
    return wb.load_onnx(model_path("resnet_legacy"))


@pytest.fixture(scope="module")
def bucketed(net):
    return wb.build(net, wb.BuilderConfig(device="cpu", profiles=[{"pixel_values": RANGE}], buckets=[2, 4, 6],
                                          autotune=False))


def test_buckets_and_range_ends_by_default_with_the_routers_padding(bucketed):
    assert default_batches(bucketed.plan) == [1, 2, 4, 6]
    df = latency_vs_batch(bucketed, [1, 3, 4, 5, 6], runs=2)
    assert list(df.columns) == COLUMNS and list(df["batch"]) == [1, 3, 4, 5, 6]
    ctx = bucketed.create_context()
    for row in df.itertuples():
        i = ctx.select({"pixel_values": (row.batch, 3, 64, 64)})
        assert row.bucket == i and row.padded_to == bucketed.plan.buckets[i].batch >= row.batch
    assert list(df["padded_to"]) == [2, 4, 4, 6, 6]
    assert (df["median_ms"] > 0).all() and (df["p90_ms"] >= df["min_ms"]).all()
    assert np.allclose(df["ms_per_sample"] * df["batch"], df["median_ms"])
    assert np.allclose(df["samples_per_s"], df["batch"] / df["median_ms"] * 1e3)
    assert df.attrs["range"] == [1, 6] and df.attrs["inputs"] == ["pixel_values"] and df.attrs["runs"] == 2


def test_outside_the_range_is_the_runtimes_range_error(bucketed):
    with pytest.raises(ShapeRangeError, match=r"'pixel_values'.*\[7, 3, 64, 64\]"):
        latency_vs_batch(bucketed, [2, 7], runs=1)


@pytest.mark.parametrize("bad", [[0], [2, -1], ["4"], [True], []])
def test_bad_batch_lists(bucketed, bad):
    with pytest.raises(InputError, match="batch"):
        latency_vs_batch(bucketed, bad, runs=1)


def test_parse_batches():
    assert parse_batches(" 1, 8,32 ") == [1, 8, 32] and parse_batches("") is None
    for text in ("1,x", "0", "2,,4", "-3"):
        with pytest.raises(InputError, match="positive integers"):
            parse_batches(text)


def test_static_symbolic_and_unswept_engines(net):
    static = wb.build(net, wb.BuilderConfig(device="cpu", shapes={"pixel_values": (3, 3, 64, 64)}, autotune=False))
    df = latency_vs_batch(static, runs=1)
    assert list(df["batch"]) == [3] and df["bucket"].isna().all()
    symbolic = wb.build(net, wb.BuilderConfig(device="cpu", autotune=False))  # batch stays symbolic
    assert default_batches(symbolic.plan) == [1, 2, 4, 8, 16, 32]
    assert list(latency_vs_batch(symbolic, [1, 5], runs=1)["padded_to"]) == [1, 5]
    fixed = wb.build(net, wb.BuilderConfig(device="cpu", profiles=[{"pixel_values": (RANGE[1], RANGE[1], RANGE[1])}],
                                           autotune=False))
    assert fixed.plan.profiles  # a one-shape range keeps its profile: its one batch
    assert list(latency_vs_batch(fixed, runs=1)["batch"]) == [2]
    with pytest.raises(ShapeRangeError, match="outside"):
        latency_vs_batch(fixed, [3], runs=1)
