"""Run a generated model three ways and compare: onnxruntime with graph optimizations disabled,
workbench ``optimize=False``, workbench optimized (all CPU, fp32 unless the graph casts)."""

from __future__ import annotations

import numpy as np

from workbench.core.numerics import rel_err

from .core import Case

# (between the two workbench builds, against onnxruntime), relative L2 norm in float64
TOLERANCE = {
    np.dtype(np.float32): (1e-5, 1e-4),
    np.dtype(np.float64): (1e-5, 1e-4),  # our float64 values come from float32 ones through Cast
    np.dtype(np.float16): (2e-3, 4e-3),
}


def run_ort(case: Case) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(case.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, case.feeds)))


def build(case: Case, optimize: bool, timing_cache: str | None = None):
    import workbench as wb

    net = wb.load_onnx(case.model)
    return wb.build(net, wb.BuilderConfig(device="cpu", optimize=optimize, shapes=dict(case.shapes),
                                          timing_cache=timing_cache))


def run_engine(engine, case: Case) -> dict:
    return engine.create_context().run({k: v.copy() for k, v in case.feeds.items()})


def compare(got: np.ndarray, want: np.ndarray, tol: float, what: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if want.dtype.kind in "biu":
        bad = int(np.count_nonzero(got != want))
        assert bad == 0, f"{what}: {bad} of {want.size} elements differ (exact dtype {want.dtype})"
        return
    w, g = want.astype(np.float64), got.astype(np.float64)
    nonfinite = ~np.isfinite(w)
    assert np.isfinite(g[~nonfinite]).all(), \
        f"{what}: {int((~np.isfinite(g[~nonfinite])).sum())} non-finite values where the reference is finite"
    if nonfinite.any():
        assert np.array_equal(g[nonfinite], w[nonfinite], equal_nan=True), f"{what}: NaN/Inf pattern differs"
    err = rel_err(g, w)
    # A reference whose finite part has an rms below 1e-3 (an output that cancels to about zero, or all
    # zeros) is compared absolutely at that scale: relative to its own tiny norm, the float32 rounding
    # of the terms that cancelled would dominate.
    scale, floor = float(np.linalg.norm(w[~nonfinite])), 1e-3 * np.sqrt(np.count_nonzero(~nonfinite))
    if scale < floor:
        err *= (scale if scale else 1.0) / floor
    assert err < tol, f"{what}: relative error {err:.3e} >= {tol:.0e}"


def check_case(case: Case) -> dict:
    """The property: all three agree. Returns the optimized engine's outputs."""
    want = run_ort(case)
    for name, w in want.items():  # the generator's own bookkeeping, so that near-misses are what they claim
        expect = case.expected.get(name)
        assert expect is None or tuple(expect) == np.shape(w), f"generator bug: {name} tracked as {expect}, is {np.shape(w)}"
    ref_engine = build(case, optimize=False)
    opt_engine = build(case, optimize=True)
    ref, opt = run_engine(ref_engine, case), run_engine(opt_engine, case)
    assert set(ref) == set(want), f"unoptimized outputs {sorted(ref)} != onnxruntime's {sorted(want)}"
    assert set(opt) == set(want), f"optimized outputs {sorted(opt)} != onnxruntime's {sorted(want)}"
    for name, w in want.items():
        between, vs_ort = TOLERANCE.get(np.asarray(w).dtype, (0, 0))
        compare(ref[name], w, vs_ort, f"{name}: unoptimized vs onnxruntime")
        compare(opt[name], w, vs_ort, f"{name}: optimized vs onnxruntime")
        compare(opt[name], ref[name], between, f"{name}: optimized vs unoptimized")
    return {"engine": opt_engine, "outputs": opt}
