"""Calibration agrees with onnxruntime's calibrators (onnxruntime.quantization.calibrate) on real models.

Both sides see the same random batches: onnxruntime runs the original ONNX model (graph optimization
off), workbench the optimized, lowered fp32 plan. Fusion removes some tensors and keeps the ONNX
names of the others; the tensors both have are compared, the graph input among them.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from workbench.precision.calibration import Calibration, calibrate, float_tensors
from tests.precision.test_calibration import lowered_plan
from tests.support.paths import MODELS

SHAPE = (2, 3, 64, 64)


def _feeds(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"pixel_values": rng.standard_normal(SHAPE).astype(np.float32) * (1 + 0.5 * i)} for i in range(n)]


def _onnxruntime(model: str, feeds, method: str, tmp_path, **options) -> dict[str, tuple[float, float]]:
    """onnxruntime's ranges, {tensor: (lo, hi)}, from ``create_calibrator`` with ``options``."""
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    kind = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]
    cal = create_calibrator(model, augmented_model_path=str(tmp_path / "augmented.onnx"), calibrate_method=kind,
                            extra_options=options)
    cal.collect_data(Reader())
    data = cal.compute_data()
    return {name: tuple(float(np.asarray(v).reshape(-1)[0]) for v in data[name].range_value) for name in data.keys()}


def _common(table, ort, plan) -> list[str]:
    names = sorted(set(table.names()) & set(ort))
    assert "pixel_values" in names
    # most of the plan's float tensors keep an ONNX name (the rest are made by fusion)
    assert len(names) >= 0.6 * len(float_tensors(plan)), (len(names), len(float_tensors(plan)))
    return names


@pytest.mark.parametrize("model", ["resnet_legacy", pytest.param("mobilenetv2_legacy", marks=pytest.mark.slow)])
def test_minmax_is_onnxruntimes(model, tmp_path):
    """MinMaxCalibrater with its defaults (global min / max, not symmetric): the same ranges within
    float32 rounding. Activations come from different kernels (fused, other summation orders), so
    an extreme can differ in its last bits: 1e-5 of the tensor's magnitude. The graph input is not
    computed, so it must match exactly."""
    path = os.path.join(MODELS, f"{model}.onnx")
    feeds = _feeds(4)
    plan = lowered_plan(path, {"pixel_values": SHAPE})
    table = calibrate(plan, Calibration(feeds, method="minmax"))
    ort = _onnxruntime(path, feeds, "minmax", tmp_path)
    assert table.range("pixel_values") == ort["pixel_values"]
    for name in _common(table, ort, plan):
        lo, hi = ort[name]
        scale = max(abs(lo), abs(hi))
        np.testing.assert_allclose(table.range(name), (lo, hi), rtol=0, atol=1e-5 * scale, err_msg=name)
        assert table.amax(name) == pytest.approx(scale, rel=1e-5)


def _bin_tolerance(table, name: str, num_bins: int) -> float:
    """Two bins of the histogram both sides build, plus float32 rounding (see the callers)."""
    lo, hi = table.observed(name)
    amax = max(abs(lo), abs(hi))
    return 2 * (2 * amax / num_bins) + 1e-5 * amax


def _check_histogram_method(model, method, num_bins, tmp_path, **ort_options):
    path = os.path.join(MODELS, f"{model}.onnx")
    feeds = _feeds(3, seed=1)
    plan = lowered_plan(path, {"pixel_values": SHAPE})
    table = calibrate(plan, Calibration(feeds, method=method, num_bins=num_bins, percentile=99.99))
    ort = _onnxruntime(path, feeds, method, tmp_path, num_bins=num_bins, **ort_options)
    worst = 0.0
    for name in _common(table, ort, plan):
        got, want = table.range(name), ort[name]
        err = max(abs(got[0] - want[0]), abs(got[1] - want[1]))
        assert err <= _bin_tolerance(table, name, num_bins), (name, got, want)
        worst = max(worst, err / max(table.amax(name), 1e-30))
    return worst


def test_percentile_is_onnxruntimes(tmp_path):
    """PercentileCalibrater (symmetric: a histogram of |x|, 2048 bins, percentile 99.99).

    Tolerance: two bins of the |x| histogram plus float32 rounding. Both sides bin the same global
    range (workbench reads the feeds twice: ranges, then counts), so with bit-equal data the counts
    and the chosen edge are identical; the data differ only by float32 rounding between kernels,
    which can move a value across a bin edge and the percentile edge by one bin where the
    cumulative share sits right at the percentile. (Measured: equal to ~2e-7 of amax.)"""
    assert _check_histogram_method("mobilenetv2_legacy", "percentile", 2048, tmp_path,
                                   percentile=99.99, symmetric=True) < 1e-3


def test_entropy_is_onnxruntimes(tmp_path):
    """EntropyCalibrater (a histogram over [-amax, amax], KL divergence against 128 quantized bins).

    256 bins here to keep onnxruntime's own search (a Python loop) quick; 2048 in the slow test.
    Tolerance: two bins. The histograms are built over the same range as onnxruntime's; the KL
    search is onnxruntime's, checked to give its exact threshold on equal histograms
    (test_calibration.py). What remains is float32 rounding in the activations, which can change a
    few counts and so tip the KL argmin between neighbouring windows whose divergences are nearly
    equal (a threshold moves by whole bins). (Measured: equal to ~2e-7 of amax.)"""
    assert _check_histogram_method("resnet_legacy", "entropy", 256, tmp_path, num_quantized_bins=128) < 1e-3


@pytest.mark.slow
def test_entropy_is_onnxruntimes_at_2048_bins(tmp_path):
    """As above with the default 2048 bins (onnxruntime takes ~15 s for its search here)."""
    assert _check_histogram_method("resnet_legacy", "entropy", 2048, tmp_path, num_quantized_bins=128) < 1e-3

