"""The CLI: happy paths and every user-error path (exit 2, one line on stderr, no traceback)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from tests.support.cli import assert_user_error, run_cli, small_model
from workbench.cli import main
from workbench.core.numerics import rel_err


@pytest.fixture
def built(tmp_path):
    model = tmp_path / "m.onnx"
    small_model(model)
    engine = tmp_path / "m.wbe"
    proc = run_cli("build", model, "-o", engine, "--device", "cpu", "--precision", "fp32", "--shapes", "x:2x4")
    assert proc.returncode == 0, proc.stderr
    return tmp_path, model, engine


def test_build_run_profile_inspect(built):
    tmp, model, engine = built
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    np.savez(tmp / "in.npz", x=x)
    proc = run_cli("run", engine, "--inputs", tmp / "in.npz", "--outputs", tmp / "out.npz")
    assert proc.returncode == 0, proc.stderr
    m = onnx.load(model)
    w = onnx.numpy_helper.to_array(m.graph.initializer[0]).astype(np.float64)
    ref = np.maximum(x.astype(np.float64) @ w + np.arange(3), 0)
    with np.load(tmp / "out.npz") as out:
        got = out["y"]
    assert got.dtype == np.float32
    assert rel_err(got, ref) < 1e-6
    proc = run_cli("profile", engine, "--runs", "3", "--csv", tmp / "p.csv")
    assert proc.returncode == 0, proc.stderr
    assert "end-to-end" in proc.stdout and (tmp / "p.csv").exists()
    proc = run_cli("inspect", engine, "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert {"layers", "fusions", "target", "memory"} <= set(d)
    for layer in d["layers"]:
        assert {"name", "type", "onnx_nodes", "onnx_ops", "precision", "tactic", "inputs", "outputs"} <= set(layer)
    covered = sorted(n for layer in d["layers"] for n in layer["onnx_nodes"])
    assert covered == ["add", "mm", "relu"]
    proc = run_cli("inspect", model)
    assert proc.returncode == 0 and "MatMul" in proc.stdout


def test_main_returns_exit_codes_in_process(built, capsys):
    tmp, model, engine = built
    assert main(["inspect", str(engine)]) == 0
    assert main(["inspect", str(tmp / "nope.wbe")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_missing_model(tmp_path):
    assert_user_error(run_cli("build", tmp_path / "missing.onnx", "-o", tmp_path / "e.wbe"), "missing.onnx", "does not exist")


def test_bad_model_bytes(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    assert_user_error(run_cli("build", bad, "-o", tmp_path / "e.wbe", "--device", "cpu"))


@pytest.mark.parametrize("shapes,word", [("x:2xA", "x:2xA"), ("x", "NAME:DxD"), ("nope:2x4", "nope"),
                                          ("x:2x4x5", "rank"), ("x:2x5", "axis 1")])
def test_bad_shapes(tmp_path, shapes, word):
    model = tmp_path / "m.onnx"
    small_model(model)
    assert_user_error(run_cli("build", model, "-o", tmp_path / "e.wbe", "--device", "cpu", "--shapes", shapes), word)


def test_unknown_option_is_one_line(tmp_path):
    assert_user_error(run_cli("build", "m.onnx", "-o", "e.wbe", "--bogus"), "bogus")


@pytest.mark.parametrize("feeds,words", [
    ({"z": np.zeros((2, 4), np.float32)}, ["missing input", "'x'"]),
    ({"x": np.ones((2, 4), np.float32), "extra": np.ones(1)}, ["unexpected input", "extra"]),
    ({"x": np.ones((2, 4), np.float64)}, ["'x'", "float64", "float32"]),
    ({"x": np.ones((2, 4, 1), np.float32)}, ["'x'", "rank 3"]),
    ({"x": np.ones((3, 4), np.float32)}, ["'x'", "[3, 4]", "[2, 4]"]),
])
def test_wrong_inputs(built, feeds, words):
    tmp, model, engine = built
    np.savez(tmp / "bad.npz", **feeds)
    assert_user_error(run_cli("run", engine, "--inputs", tmp / "bad.npz"), *words)


def test_inputs_file_not_npz(built):
    tmp, model, engine = built
    (tmp / "x.npz").write_bytes(b"not a zip")
    assert_user_error(run_cli("run", engine, "--inputs", tmp / "x.npz"), "x.npz")


def test_corrupt_engine(built):
    tmp, model, engine = built
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0x10
    bad = tmp / "corrupt.wbe"
    bad.write_bytes(bytes(data))
    np.savez(tmp / "in.npz", x=np.ones((2, 4), np.float32))
    assert_user_error(run_cli("run", bad, "--inputs", tmp / "in.npz"))
    assert_user_error(run_cli("inspect", tmp / "m.onnx.missing"), "does not exist")


def test_not_an_engine(built):
    tmp, model, engine = built
    np.savez(tmp / "in.npz", x=np.ones((2, 4), np.float32))
    assert_user_error(run_cli("run", model, "--inputs", tmp / "in.npz"), "not a workbench engine")


def test_incompatible_engine(built):
    tmp, model, engine = built
    data = bytearray(engine.read_bytes())
    data[8] = 99  # format major version (little-endian uint16 after the magic)
    bad = tmp / "future.wbe"
    bad.write_bytes(bytes(data))
    assert_user_error(run_cli("inspect", bad), "rebuild")


def test_unsupported_opset(tmp_path):
    model = tmp_path / "old.onnx"
    small_model(model, opset=6)
    assert_user_error(run_cli("build", model, "-o", tmp_path / "e.wbe", "--device", "cpu"), "opset")


def test_gpu_precision_on_cpu_is_a_clear_error(tmp_path):
    model = tmp_path / "m.onnx"
    small_model(model)
    assert_user_error(run_cli("build", model, "-o", tmp_path / "e.wbe", "--device", "cpu", "--precision", "int8"), "int8")


def test_unknown_layer_precision_name(tmp_path):
    model = tmp_path / "m.onnx"
    small_model(model)
    assert_user_error(run_cli("build", model, "-o", tmp_path / "e.wbe", "--device", "cpu",
                              "--layer-precision", "nosuchnode=fp16"), "nosuchnode")


def test_unwritable_output(tmp_path):
    model = tmp_path / "m.onnx"
    small_model(model)
    assert_user_error(run_cli("build", model, "-o", tmp_path / "no" / "such" / "dir" / "e.wbe", "--device", "cpu"))
