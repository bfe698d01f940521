"""Calibration (workbench.precision.calibration): what it records, the table file and the cache, the
histograms against onnxruntime's own collector, and every bad input as a one-line error.

The agreement of whole calibrations with onnxruntime's calibrators is in
test_calibration_onnxruntime.py; the command line in test_calibration_cli.py."""

from __future__ import annotations

import gc
import json
import os
import weakref

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

import workbench as wb
from workbench.builder.lower import lower_model
from workbench.builder.shapes import apply_input_shapes
from workbench.errors import InputError, InputTypeError, WorkbenchError
from workbench.passes.context import PassContext
from workbench.passes.pipeline import run_pipeline
from workbench.precision.calibration import (
    Calibration,
    CalibrationError,
    CalibrationTable,
    calibrate,
    float_tensors,
    from_path,
)
from workbench.precision.histograms import MAX_GROWTH, AbsHistogram, SignedHistogram, entropy_threshold


def lowered_plan(model, shapes=None, optimize=True):
    """The fp32 lowered plan the builder makes before precision assignment (``Builder._build``'s
    prepare -> optimize -> lower stages)."""
    net = wb.load_onnx(model)
    m = ir.from_proto(ir.to_proto(net.model))
    apply_input_shapes(m, shapes or {})
    run_pipeline(m, PassContext(disabled=frozenset(), device="cpu", max_engine_bytes=1 << 40), optimize=optimize)
    return lower_model(m)


def mlp_model(width=4) -> bytes:
    """x [batch, width] -> MatMul -> Add -> Relu -> MatMul -> Tanh -> y; every tensor float32."""
    rng = np.random.default_rng(0)
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [width, 8], rng.standard_normal(width * 8).astype(np.float32))
    b1 = helper.make_tensor("b1", TensorProto.FLOAT, [8], rng.standard_normal(8).astype(np.float32))
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [8, 3], rng.standard_normal(24).astype(np.float32))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Add", ["h", "b1"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["m"], name="mm2"),
             helper.make_node("Tanh", ["m"], ["y"], name="tanh")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w1, b1, w2])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.fixture(scope="module")
def mlp():
    return lowered_plan(mlp_model(), optimize=False)


def batches(n=3, seed=0, batch=2, width=4):
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal((batch, width)) * (i + 1)).astype(np.float32)} for i in range(n)]


def reference_ranges(plan, feeds):
    """Every tensor's min / max over the feeds from an independent float64 NumPy run of the MLP."""
    consts = plan.constants
    out: dict[str, list] = {}
    for feed in feeds:
        x = feed["x"].astype(np.float64)
        h = x @ consts["w1"]
        a = h + consts["b1"]
        r = np.maximum(a, 0)
        m = r @ consts["w2"]
        for name, v in {"x": x, "h": h, "a": a, "r": r, "m": m, "y": np.tanh(m)}.items():
            lo, hi = out.get(name, (np.inf, -np.inf))
            out[name] = (min(lo, v.min()), max(hi, v.max()))
    return out


# --------------------------------------------------------------------------- what is recorded


def test_minmax_records_every_float_tensor(mlp):
    feeds = batches(4)
    table = calibrate(mlp, Calibration(feeds))
    ref = reference_ranges(mlp, feeds)
    assert set(table.names()) == set(ref) == float_tensors(mlp)
    for name, (lo, hi) in ref.items():
        got = table.range(name)
        assert got == table.observed(name)
        np.testing.assert_allclose(got, (lo, hi), rtol=1e-5, atol=1e-6 * max(abs(lo), abs(hi)), err_msg=name)
        assert table.amax(name) == max(abs(got[0]), abs(got[1]))
    # graph inputs are not computed: exactly the data's extremes
    data = np.concatenate([f["x"].ravel() for f in feeds])
    assert table.range("x") == (float(data.min()), float(data.max()))
    assert table.method == "minmax" and table.batches == 4
    assert table.amax("no such tensor") is None and table.range("no such tensor") is None


def test_plan_is_left_as_it_was(mlp):
    before = [(layer.precision, layer.tactic, dict(layer.tactic_config)) for layer in mlp.layers]
    calibrate(mlp, Calibration(batches(1), method="entropy", num_bins=256))
    assert [(layer.precision, layer.tactic, dict(layer.tactic_config)) for layer in mlp.layers] == before


def test_dynamic_batch_and_one_dict(mlp):
    """A plan with a symbolic batch takes batches of any size; a single dict is one batch."""
    feeds = [batches(1, seed=1, batch=1)[0], batches(1, seed=2, batch=5)[0]]
    table = calibrate(mlp, Calibration(feeds, method="percentile"))
    assert set(table.names()) == float_tensors(mlp)
    one = calibrate(mlp, Calibration(feeds[1]))
    assert one.batches == 1 and one.range("x") == (float(feeds[1]["x"].min()), float(feeds[1]["x"].max()))


def test_non_finite_values_are_left_out(mlp):
    feeds = batches(2)
    feeds[0]["x"][0, 0] = np.inf
    feeds[1]["x"][1, 1] = np.nan
    table = calibrate(mlp, Calibration(feeds))
    finite = np.concatenate([f["x"][np.isfinite(f["x"])] for f in feeds])
    assert table.range("x") == (float(finite.min()), float(finite.max()))
    assert all(np.isfinite(table.amax(n)) for n in table.names())


def test_histogram_methods_stay_inside_the_observed_range(mlp):
    feeds = batches(3)
    for method in ("entropy", "percentile"):
        table = calibrate(mlp, Calibration(feeds, method=method, num_bins=256))
        for name in table.names():
            lo, hi = table.range(name)
            omin, omax = table.observed(name)
            assert omin <= lo <= hi <= omax, (method, name)
            assert table.amax(name) <= max(abs(omin), abs(omax))


def test_one_shot_iterator_is_read_once(mlp):
    """A generator cannot be read twice: histograms start from the first batch and grow; the
    feeds are read exactly once and none of them is kept."""
    feeds = batches(4)
    reads, refs = [], []

    def gen():
        for f in feeds:
            reads.append(1)
            x = f["x"].copy()
            refs.append(weakref.ref(x))
            yield {"x": x}

    table = calibrate(mlp, Calibration(gen(), method="percentile"))
    assert len(reads) == 4 and set(table.names()) == float_tensors(mlp)
    gc.collect()
    assert all(r() is None for r in refs), "calibration kept a feed alive"
    # ... and the minmax part of it is the same as from a list
    ref = calibrate(mlp, Calibration(feeds))
    assert all(table.observed(n) == ref.range(n) for n in ref.names())


def test_reiterable_feeds_are_read_twice_for_histograms(mlp):
    class Feeds:
        def __init__(self):
            self.passes = 0

        def __iter__(self):
            self.passes += 1
            return iter(batches(2))

    src = Feeds()
    calibrate(mlp, Calibration(src, method="entropy", num_bins=256))
    assert src.passes == 2
    src = Feeds()
    calibrate(mlp, Calibration(src, method="minmax"))
    assert src.passes == 1


def test_progress_bar(mlp, capsys):
    calibrate(mlp, Calibration(batches(2), method="entropy", num_bins=256), progress=True)
    assert "calibrate" in capsys.readouterr().err


# --------------------------------------------------------------------------- histograms vs onnxruntime


def _ort_collector(method: str, num_bins: int, symmetric: bool):
    from onnxruntime.quantization.calibrate import HistogramCollector

    return HistogramCollector(method=method, symmetric=symmetric, num_bins=num_bins, num_quantized_bins=128,
                              percentile=99.99, scenario="same")


def _growing_batches(seed=0):
    """Batches whose magnitude grows, so that both histograms must widen as they are merged."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(3000) * s + o).astype(np.float32) for s, o in ((1, 0), (0.5, 0.1), (3, 0), (7, 1))]


def test_signed_histogram_merges_as_onnxruntime():
    ort = _ort_collector("entropy", 256, symmetric=False)
    ours = None
    for x in _growing_batches():
        ort.collect({"t": [x]})
        ours = SignedHistogram.first(x, 256) if ours is None else (ours.add(x) or ours)
    hist, edges, _, _, threshold = ort.histogram_dict["t"]
    np.testing.assert_array_equal(ours.hist, hist)
    np.testing.assert_array_equal(ours.edges, edges)
    assert ours.threshold == threshold


def test_abs_histogram_merges_as_onnxruntime():
    ort = _ort_collector("percentile", 512, symmetric=True)
    ours = None
    for x in _growing_batches(1):
        ort.collect({"t": [x]})
        ours = AbsHistogram.first(x, 512) if ours is None else (ours.add(x) or ours)
    hist, edges, _, _ = ort.histogram_dict["t"]
    np.testing.assert_array_equal(ours.hist, hist)
    np.testing.assert_array_equal(ours.edges, edges)


@pytest.mark.parametrize("num_bins", [256, 512])
@pytest.mark.parametrize("kind", ["normal", "heavy_tail", "relu", "few_values"])
def test_entropy_threshold_is_onnxruntimes(kind, num_bins):
    """The same histogram gives onnxruntime's KL threshold exactly (its float32 arithmetic on the
    near-best candidates, its first-minimum choice)."""
    rng = np.random.default_rng(num_bins)
    x = {"normal": rng.standard_normal(20000), "heavy_tail": rng.standard_t(3, 20000),
         "relu": np.maximum(rng.standard_normal(20000), 0), "few_values": rng.laplace(size=300) * 0.01}[kind]
    x = x.astype(np.float32)
    t = np.float32(max(abs(x.min()), abs(x.max())))
    hist, edges = np.histogram(x, num_bins, range=(-t, t))
    ref = _ort_collector("entropy", num_bins, False).get_entropy_threshold((hist, edges, x.min(), x.max(), t), 128)
    assert entropy_threshold(hist, edges, float(x.min()), float(x.max())) == (float(ref[0]), float(ref[1]))


@pytest.mark.parametrize("samples", [20, 300, 20000])
def test_every_candidate_divergence_matches_the_direct_sum(samples):
    """The prefix-sum divergences of all candidate windows equal the direct float32 sum over each
    window's p and q (float32 rounding apart), inf exactly where it is inf."""
    from workbench.precision.histograms import _kl, _kl_all

    rng = np.random.default_rng(samples)
    x = rng.standard_t(4, samples).astype(np.float32)
    t = np.float32(np.abs(x).max())
    hist = np.histogram(x, 1024, range=(-t, t))[0]
    csum = np.concatenate(([0], np.cumsum(hist)))
    fast = _kl_all(hist, csum, 128)
    levels = np.arange(129)
    direct = np.array([_kl(hist, csum, csum[-1], 512 - i, min(512 + i + 1, 1024), 128, levels) for i in range(64, 513)])
    np.testing.assert_array_equal(np.isfinite(fast), np.isfinite(direct))
    finite = np.isfinite(direct)
    np.testing.assert_allclose(fast[finite], direct[finite], rtol=1e-3)


def test_entropy_threshold_of_an_empty_or_flat_histogram():
    edges = np.linspace(-1, 1, 257, dtype=np.float32)
    assert entropy_threshold(np.zeros(256, np.int64), edges, 0.0, 0.0) == (0.0, 0.0)
    flat = np.zeros(256, np.int64)
    flat[128] = 10
    lo, hi = entropy_threshold(flat, edges, 0.0, 0.0078125)
    assert lo == 0.0 and 0 < hi <= 0.0078125


@pytest.mark.parametrize("cls", [SignedHistogram, AbsHistogram])
def test_a_growing_histogram_stays_bounded(cls):
    """A one-shot stream whose later batches are far larger merges neighbouring bins instead of
    growing without bound; no value is dropped (but, as in onnxruntime, magnitudes below the first
    batch's smallest, where an |x| histogram starts)."""
    rng = np.random.default_rng(0)
    xs = [(rng.standard_normal(2000) * s).astype(np.float32) for s in (1e-3, 1.0, 1e3, 1e4)]
    h = cls.first(xs[0], 128)
    for x in xs[1:]:
        h.add(x)
    assert h.hist.size <= MAX_GROWTH * 128
    below = sum(int((np.abs(x) < h.edges[0]).sum()) for x in xs) if cls is AbsHistogram else 0
    assert h.hist.sum() == sum(x.size for x in xs) - below
    top = max(float(np.abs(x).max()) for x in xs)
    assert h.edges[-1] >= top and h.edges.size == h.hist.size + 1


# --------------------------------------------------------------------------- the table and the cache


def test_table_round_trip(mlp, tmp_path):
    table = calibrate(mlp, Calibration(batches(2), method="percentile", percentile=99.9, num_bins=512))
    path = table.save(tmp_path / "t.calib")
    doc = json.loads((tmp_path / "t.calib").read_text())
    assert doc["format"] == "workbench.calibration" and doc["version"] == 1
    assert doc["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
    assert len(doc["fingerprint"]) == 64
    back = CalibrationTable.load(path)
    assert back.method == "percentile" and back.names() == table.names() and back.batches == 2
    assert back.settings == table.settings == {"method": "percentile", "percentile": 99.9, "num_bins": 512}
    for n in table.names():
        assert back.range(n) == table.range(n) and back.observed(n) == table.observed(n)
        assert back.amax(n) == table.amax(n)
    assert calibrate(mlp, back) is back  # a table that fits is used as it is
    assert isinstance(from_path(path), CalibrationTable)


class Unreadable:
    """Feeds that fail the test if calibration reads them (the cache must be used instead)."""

    def __iter__(self):
        raise AssertionError("the calibration data was read although the cache fits")


def test_cache_is_written_then_reused(mlp, tmp_path):
    cache = tmp_path / "c.calib"
    first = calibrate(mlp, Calibration(batches(2), cache=cache))
    assert cache.exists()
    again = calibrate(mlp, Calibration(Unreadable(), cache=cache))
    assert again.names() == first.names() and all(again.range(n) == first.range(n) for n in first.names())
    # settings minmax does not use change nothing
    calibrate(mlp, Calibration(Unreadable(), num_bins=256, percentile=99.0, cache=cache))
    # other settings: the cache is stale and is recalibrated and rewritten
    other = calibrate(mlp, Calibration(batches(2), method="percentile", cache=cache))
    assert other.method == "percentile" and CalibrationTable.load(cache).method == "percentile"
    with pytest.raises(AssertionError, match="the cache fits"):
        calibrate(mlp, Calibration(Unreadable(), method="percentile", percentile=99.0, cache=cache))


def test_cache_of_another_model_is_refused(mlp, tmp_path):
    cache = tmp_path / "c.calib"
    calibrate(mlp, Calibration(batches(2), cache=cache))
    wide = lowered_plan(mlp_model(width=6), optimize=False)
    with pytest.raises(CalibrationError, match="another model") as exc:
        calibrate(wide, Calibration(batches(2, width=6), cache=cache))
    assert "x float32[batch, 4]" in str(exc.value) and "x float32[batch, 6]" in str(exc.value)
    assert "c.calib" in str(exc.value)
    assert len(str(exc.value).splitlines()) == 1
    with pytest.raises(CalibrationError, match="another model"):
        calibrate(wide, CalibrationTable.load(cache))


def test_table_from_another_build_is_refused(mlp):
    """Same inputs, other tensors (here: an optimized build that fused them away or renamed)."""
    table = calibrate(mlp, Calibration(batches(1)))
    renamed = CalibrationTable("minmax", {"x": (0.0, 1.0)}, {"x": (0.0, 1.0)}, inputs=table.inputs, covered=["x"])
    with pytest.raises(CalibrationError, match="another build"):
        calibrate(mlp, renamed)


def test_a_file_that_is_not_a_table_is_never_overwritten(mlp, tmp_path):
    cache = tmp_path / "model.onnx"
    cache.write_bytes(mlp_model())
    with pytest.raises(CalibrationError, match="not valid JSON"):
        calibrate(mlp, Calibration(batches(1), cache=cache))
    assert cache.read_bytes() == mlp_model()


def _good_doc(mlp):
    return calibrate(mlp, Calibration(batches(1))).to_dict()


@pytest.mark.parametrize("mutate,words", [
    (lambda d: "{not json", "not valid JSON"),
    (lambda d: json.dumps(d)[:-20], "not valid JSON"),
    (lambda d: "[1, 2]", "not a workbench calibration table"),
    (lambda d: json.dumps({**d, "format": "onnxruntime"}), "not a workbench calibration table"),
    (lambda d: json.dumps({**d, "version": 99}), "version 99"),
    (lambda d: json.dumps({**d, "extra": 1}), "unknown key 'extra'"),
    (lambda d: json.dumps({k: v for k, v in d.items() if k != "tensors"}), "no key 'tensors'"),
    (lambda d: json.dumps({**d, "method": "magic"}), "unknown method"),
    (lambda d: json.dumps({**d, "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 5]}]}),
     "fingerprint"),
    (lambda d: json.dumps({**d, "tensors": {**d["tensors"], "x": {"min": 2.0, "max": 1.0, "range": [0, 1]}}}),
     "tensor 'x'"),
    (lambda d: json.dumps({**d, "tensors": {**d["tensors"], "x": {"min": 0, "max": 1, "range": [0]}}}),
     "tensor 'x'"),
    (lambda d: json.dumps(d).replace('"batches": 1', '"batches": 1, "batches": 2'), "duplicate key"),
    (lambda d: json.dumps(d).replace('"max": ', '"max": NaN, "_": ', 1), "not valid JSON"),
    (lambda d: json.dumps({**d, "batches": True}), "batch count"),
])
def test_load_is_strict(mlp, tmp_path, mutate, words):
    path = tmp_path / "bad.calib"
    path.write_text(mutate(_good_doc(mlp)))
    with pytest.raises(CalibrationError) as exc:
        CalibrationTable.load(path)
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1 and words in msg and "bad.calib" in msg, msg


def test_load_missing_or_not_a_file(tmp_path):
    with pytest.raises(CalibrationError, match="does not exist"):
        CalibrationTable.load(tmp_path / "nope.calib")
    with pytest.raises(CalibrationError, match="directory"):
        CalibrationTable.load(tmp_path)


def test_interrupt_leaves_no_cache(mlp, tmp_path):
    """Ctrl-C during calibration propagates and writes nothing, not even a temporary file."""
    def feeds():
        yield batches(1)[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calibrate(mlp, Calibration(feeds(), cache=tmp_path / "c.calib"))
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- bad input: one line each


@pytest.mark.parametrize("kwargs,err,words", [
    ({"method": "kl"}, CalibrationError, "unknown calibration method 'kl'"),
    ({"method": None}, CalibrationError, "unknown calibration method"),
    ({"percentile": 0}, CalibrationError, "percentile"),
    ({"percentile": 100.5}, CalibrationError, "percentile"),
    ({"percentile": "99"}, CalibrationError, "percentile"),
    ({"num_bins": 64}, CalibrationError, "num_bins"),
    ({"num_bins": 1001}, CalibrationError, "num_bins"),
    ({"num_bins": True}, CalibrationError, "num_bins"),
])
def test_bad_settings(kwargs, err, words):
    with pytest.raises(err) as exc:
        Calibration(batches(1), **kwargs)
    assert words in str(exc.value) and len(str(exc.value).splitlines()) == 1


@pytest.mark.parametrize("feeds,err,words", [
    (3, InputTypeError, "got int"),
    (np.ones((2, 4), np.float32), InputTypeError, "got ndarray"),
])
def test_bad_feed_kinds(feeds, err, words):
    with pytest.raises(err, match=words):
        Calibration(feeds)


@pytest.mark.parametrize("feeds,err,words", [
    ([{"z": np.ones((2, 4), np.float32)}], InputError, "calibration batch 0: missing input 'x'"),
    ([{"x": np.ones((2, 4), np.float32), "z": np.ones(1)}], InputError, "unexpected input 'z'"),
    ([{"x": np.ones((2, 5), np.float32)}], InputError, "input 'x' has shape [2, 5]"),
    ([{"x": np.ones((2, 4, 1), np.float32)}], InputError, "rank 3"),
    ([{"x": np.ones((2, 4), np.float64)}], InputTypeError, "dtype float64, expected float32"),
    ([batches(1)[0], [1, 2]], InputTypeError, "calibration batch 1 is a list"),
    ([], InputError, "no calibration batches"),
])
def test_feeds_that_do_not_fit_the_model(mlp, feeds, err, words):
    with pytest.raises(err) as exc:
        calibrate(mlp, Calibration(feeds))
    assert words in str(exc.value) and len(str(exc.value).splitlines()) == 1, str(exc.value)


def test_a_used_up_iterator_says_so(mlp):
    cal = Calibration(iter(batches(1)))
    calibrate(mlp, cal)
    with pytest.raises(InputError, match="read only once"):
        calibrate(mlp, cal)


def test_paths(mlp, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        Calibration(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="holds no .npz files"):
        Calibration(tmp_path / "empty")
    np.save(tmp_path / "one.npy", np.ones(3))
    with pytest.raises(InputError, match="single .npy array"):
        calibrate(mlp, Calibration(tmp_path / "one.npy"))
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(InputError, match="not an .npz archive"):
        calibrate(mlp, Calibration(tmp_path / "text.npz"))
    with pytest.raises(CalibrationError, match="directory"):
        Calibration(batches(1), cache=tmp_path)
    os.mkfifo(tmp_path / "fifo.npz")
    with pytest.raises(WorkbenchError, match="FIFO"):
        Calibration(tmp_path / "fifo.npz")


def test_folder_of_npz_files(mlp, tmp_path):
    feeds = batches(3)
    for i, f in enumerate(feeds):
        np.savez(tmp_path / f"b{i}.npz", **f)
    table = calibrate(mlp, Calibration(tmp_path))
    assert table.batches == 3
    assert table.range("x") == calibrate(mlp, Calibration(feeds)).range("x")
    assert isinstance(from_path(tmp_path), Calibration) and isinstance(from_path(tmp_path / "b0.npz"), Calibration)
    np.savez(tmp_path / "b3.npz", x=np.ones((2, 7), np.float32))
    cal = Calibration(tmp_path)
    with pytest.raises(InputError, match=r"b3\.npz'?: input 'x' has shape \[2, 7\]"):
        cal.check_inputs(mlp.inputs)  # from the headers, before anything runs
    with pytest.raises(InputError, match=r"b3\.npz"):
        calibrate(mlp, cal)


def test_builder_config_takes_a_calibration(tmp_path):
    cal = wb.Calibration(batches(1))
    assert wb.BuilderConfig(calibration=cal).calibration is cal
    assert wb.BuilderConfig(calibration=str(tmp_path)).calibration == str(tmp_path)
    with pytest.raises(WorkbenchError, match="BuilderConfig.calibration must be"):
        wb.BuilderConfig(calibration=[{"x": np.ones(1)}])
    with pytest.raises(CalibrationError, match="takes a Calibration"):
        calibrate(lowered_plan(mlp_model(), optimize=False), 3)
