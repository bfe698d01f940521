"""`workbench run` as a benchmark (iterations, warm-up, duration, seeded random inputs, latency
percentiles, throughput, --json) and a validator (--compare onnxruntime with --atol/--rtol)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import onnx
import pytest

from tests.support.cli import assert_user_error, run_cli, small_model
from workbench.cli import main
from workbench.runtime.cpu import CpuExecutionContext

ORT_IR = 8  # an IR version every supported onnxruntime reads (small_model writes onnx's newest)


def ort_model(path, seed=0):
    """small_model's graph (x: [batch, 4] -> y: [batch, 3]) at an IR version onnxruntime reads."""
    m = small_model(path)
    if seed:
        rng = np.random.default_rng(seed)
        m.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w"))
    m.ir_version = ORT_IR
    onnx.save(m, path)
    return m


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """m.onnx + m.wbe (x:2x4), dyn.wbe (batch left dynamic), other.onnx (same graph, other weights)."""
    tmp = tmp_path_factory.mktemp("run")
    ort_model(tmp / "m.onnx")
    ort_model(tmp / "other.onnx", seed=5)
    for name, extra in (("m.wbe", ["--shapes", "x:2x4"]), ("dyn.wbe", [])):
        proc = run_cli("build", tmp / "m.onnx", "-o", tmp / name, "--device", "cpu", "-q", *extra)
        assert proc.returncode == 0, proc.stderr
    return tmp


def run_json(*args):
    proc = run_cli("run", *args, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_benchmark_reports_percentiles_and_throughput(work):
    rc, rep = run_json(work / "m.wbe", "--iterations", "7", "--warmup", "0")
    assert rc == 0
    lat = rep["latency"]
    assert lat["runs"] == 7
    # the statistics themselves are pinned on known samples in the test below; here: all reported
    stats = ("min_ms", "mean_ms", "median_ms", "p90_ms", "p99_ms", "max_ms", "throughput_per_s")
    assert all(isinstance(lat[k], float) and math.isfinite(lat[k]) for k in stats)
    assert rep["inputs"]["x"]["shape"] == [2, 4] and "random" in rep["inputs"]["x"]["origin"]
    assert rep["outputs"]["y"] == {**rep["outputs"]["y"], "dtype": "float32", "shape": [2, 3]}


def test_text_report(work):
    proc = run_cli("run", work / "m.wbe", "--iterations", "3")
    assert proc.returncode == 0, proc.stderr
    for word in ("latency over 3 runs", "min", "mean", "median", "p90", "p99", "throughput", "output y: float32 [2, 3]"):
        assert word in proc.stdout, (word, proc.stdout)


def test_duration_adds_runs_until_the_timed_total_is_reached(work):
    _, rep = run_json(work / "m.wbe", "--iterations", "2", "--duration", "0.05")
    assert rep["latency"]["runs"] > 2
    assert rep["latency"]["total_ms"] >= 50


def test_timing_goes_through_the_context(work, monkeypatch, capsys):
    """The samples reported are exactly those ctx.time_end_to_end returned."""
    calls = []

    def fake(self, feeds, runs):
        calls.append(runs)
        return [float(i + 1) for i in range(runs)]

    monkeypatch.setattr(CpuExecutionContext, "time_end_to_end", fake)
    assert main(["run", str(work / "m.wbe"), "--iterations", "100", "--warmup", "2", "--json"]) == 0
    lat = json.loads(capsys.readouterr().out)["latency"]
    assert calls == [100]
    assert (lat["min_ms"], lat["max_ms"], lat["mean_ms"], lat["median_ms"]) == (1.0, 100.0, 50.5, 50.5)
    assert lat["p90_ms"] == pytest.approx(np.percentile(np.arange(1, 101), 90))
    assert lat["p99_ms"] == pytest.approx(np.percentile(np.arange(1, 101), 99))


def test_random_inputs_are_seeded(work):
    outs = []
    for seed in ("3", "3", "4"):
        path = work / f"out{len(outs)}.npz"
        proc = run_cli("run", work / "m.wbe", "--iterations", "1", "--seed", seed, "--outputs", path)
        assert proc.returncode == 0, proc.stderr
        with np.load(path) as f:
            outs.append(f["y"])
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])


def test_shapes_give_dynamic_dims(work):
    _, rep = run_json(work / "dyn.wbe", "--shapes", "x:5x4", "--iterations", "1")
    assert rep["inputs"]["x"]["shape"] == [5, 4] and rep["outputs"]["y"]["shape"] == [5, 3]


def test_dynamic_engine_without_shapes_says_how(work):
    assert_user_error(run_cli("run", work / "dyn.wbe"), "'x'", "--shapes")


@pytest.mark.parametrize("shapes,words", [
    ("x:5x4x1", ["rank 3", "rank 2"]),
    ("y:5x4", ["'y'", "not an input"]),
    ("x:5,4", ["'4'", "'x'", "x:5x4"]),
    (f"x:{2**40}x4", ["'x'", "memory budget"]),
])
def test_bad_run_shapes(work, shapes, words):
    assert_user_error(run_cli("run", work / "dyn.wbe", "--shapes", shapes), *words)


def test_shapes_conflicting_with_a_fixed_engine(work):
    assert_user_error(run_cli("run", work / "m.wbe", "--shapes", "x:3x4"), "axis 0", "fixes")


def test_inputs_and_shapes_together(work):
    np.savez(work / "in.npz", x=np.ones((2, 4), np.float32))
    assert_user_error(run_cli("run", work / "m.wbe", "--inputs", work / "in.npz", "--shapes", "x:2x4"),
                      "--inputs", "--shapes")


@pytest.mark.parametrize("args,word", [(["--iterations", "0"], "--iterations"), (["--warmup", "-1"], "--warmup"),
                                       (["--duration", "nan"], "--duration"), (["--atol", "x"], "--atol"),
                                       (["--threads", "0"], "--threads"), (["--compare", "tensorrt"], "tensorrt")])
def test_bad_run_options(work, args, word):
    assert_user_error(run_cli("run", work / "m.wbe", *args), word)


def test_threads_option(work):
    rc, rep = run_json(work / "m.wbe", "--threads", "1", "--iterations", "2")
    assert rc == 0 and rep["latency"]["runs"] == 2


def test_compare_onnxruntime_passes(work):
    proc = run_cli("run", work / "dyn.wbe", "--shapes", "x:6x4", "--compare", "onnxruntime", "--iterations", "2")
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime" in proc.stdout and "PASSED" in proc.stdout and "max abs" in proc.stdout
    rc, rep = run_json(work / "m.wbe", "--compare", "onnxruntime", "--iterations", "1")
    c = rep["compare"]
    assert rc == 0 and c["passed"] and c["outputs"]["y"]["passed"] and c["outputs"]["y"]["max_abs"] <= 1e-5
    assert c["atol"] == 1e-4 and c["rtol"] == 1e-4 and c["model"].endswith("m.onnx")


def test_compare_mismatch_exits_1(work):
    """Against a model with other weights every output differs: exit 1, per-output errors shown."""
    proc = run_cli("run", work / "m.wbe", "--compare", "onnxruntime", "--model", work / "other.onnx", "--iterations", "1")
    assert proc.returncode == 1, proc.stderr
    assert "MISMATCH" in proc.stdout and "FAILED" in proc.stdout and "Traceback" not in proc.stderr
    rc, rep = run_json(work / "m.wbe", "--compare", "onnxruntime", "--model", work / "other.onnx", "--iterations", "1")
    y = rep["compare"]["outputs"]["y"]
    assert rc == 1 and not rep["compare"]["passed"] and y["mismatched"] > 0 and y["max_abs"] > 1e-3


def test_compare_tolerances_decide(work):
    """The same pair passes when the tolerances are wide enough."""
    rc, rep = run_json(work / "m.wbe", "--compare", "onnxruntime", "--model", work / "other.onnx", "--iterations", "1",
                       "--atol", "1000")
    assert rc == 0 and rep["compare"]["passed"]


def test_compare_finds_a_relative_source_beside_the_engine(work, tmp_path):
    """The build info records the model path as given; a relative one is also looked for beside the engine."""
    shutil.copy(work / "m.onnx", tmp_path / "m.onnx")
    proc = run_cli("build", "m.onnx", "-o", "e.wbe", "--device", "cpu", "--shapes", "x:2x4", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_cli("run", tmp_path / "e.wbe", "--compare", "onnxruntime", "--iterations", "1", cwd=elsewhere)
    assert proc.returncode == 0 and "PASSED" in proc.stdout, proc.stderr
    (tmp_path / "m.onnx").unlink()
    proc = run_cli("run", tmp_path / "e.wbe", "--compare", "onnxruntime", cwd=elsewhere)
    assert_user_error(proc, "source model 'm.onnx'", "not available", "--model")


def test_compare_model_onnxruntime_cannot_load(work, tmp_path):
    small_model(tmp_path / "new_ir.onnx")  # onnx's newest IR version may be past onnxruntime's
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage" * 10)
    proc = run_cli("run", work / "m.wbe", "--compare", "onnxruntime", "--model", tmp_path / "junk.onnx")
    assert_user_error(proc, "onnxruntime", "junk.onnx")
    assert "onnxruntime_src" not in proc.stderr


def test_model_without_compare(work):
    assert_user_error(run_cli("run", work / "m.wbe", "--model", work / "m.onnx"), "--compare")
