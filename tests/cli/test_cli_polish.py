"""CLI polish and the files the CLI reads and writes: --version, usage, help with defaults, --disable
names, declined fusions in inspect, profile --json/--trace, refused .npy/text/FIFO inputs, --shapes
wording, atomic outputs (concurrent writers, a file-size limit), out-of-memory as one line."""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, save

import workbench as wb
from tests.support.cli import assert_user_error, run_cli, small_model
from tests.support.paths import REPO
from workbench.cli import main, make_parser


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """m.onnx, m.wbe (x:2x4), dyn.wbe, decl.onnx/decl.wbe (a declined fusion, an escape sequence in a name)."""
    tmp = tmp_path_factory.mktemp("polish")
    small_model(tmp / "m.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("y", "m")]
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.ones(12, np.float32))
    b = helper.make_tensor("b", TensorProto.FLOAT, [3], np.arange(3, dtype=np.float32))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm\x1b[2J"),  # m is also a graph output
             helper.make_node("Add", ["m", "b"], ["a"], name="add"), helper.make_node("Relu", ["a"], ["y"], name="relu")]
    save(helper.make_model(helper.make_graph(nodes, "g", [x], outs, [w, b]),
                           opset_imports=[helper.make_opsetid("", 17)]), tmp / "decl.onnx")
    for model, name, extra in (("m.onnx", "m.wbe", ["--shapes", "x:2x4"]), ("m.onnx", "dyn.wbe", []),
                               ("decl.onnx", "decl.wbe", [])):
        proc = run_cli("build", tmp / model, "-o", tmp / name, "--device", "cpu", "-q", *extra)
        assert proc.returncode == 0, proc.stderr
    return tmp


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"workbench {wb.__version__}"


def test_bare_workbench_prints_usage():
    proc = run_cli()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("usage: workbench")
    for command in ("build", "run", "profile", "inspect", "demo"):
        assert command in proc.stderr


def test_every_option_has_help_and_shows_its_default():
    parser = make_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"build", "run", "profile", "inspect", "demo", "accuracy", "lint", "serve", "batch"}
    for name, sub in commands.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            assert action.help, (name, action.dest)
            default = action.default
            if action.option_strings and default not in (None, argparse.SUPPRESS) and default is not False:
                assert "%(default)" in formatter._get_help_string(action), (name, action.dest)
        text = sub.format_help()
        assert "--help" in text
    assert "(default: 10)" in commands["run"].format_help()


def test_disable_help_lists_the_names(work):
    proc = run_cli("build", work / "m.onnx", "-o", work / "x.wbe", "--disable", "help")
    assert proc.returncode == 0, proc.stderr
    listed = {line.strip() for line in proc.stdout.splitlines()[1:]}
    assert listed == set(wb.pass_names())
    assert not (work / "x.wbe").exists()


def test_unknown_disable_name_lists_valid_ones(work):
    assert_user_error(run_cli("build", work / "m.onnx", "-o", work / "x.wbe", "--disable", "gemm_epilgue"),
                      "gemm_epilgue", "valid names", "gemm_epilogue", "fold_constants")


def test_inspect_prints_declined_fusions_with_reasons(work):
    proc = run_cli("inspect", work / "decl.wbe")
    assert proc.returncode == 0, proc.stderr
    declined = [f for f in wb.Engine.load(work / "decl.wbe").describe()["fusions"] if f["status"] == "declined"]
    assert declined
    assert "== declined fusions ==" in proc.stdout
    for f in declined:
        assert f["rule"] in proc.stdout and f["reason"] in proc.stdout
    assert "\x1b" not in proc.stdout and "mm\\x1b[2J" in proc.stdout  # escaped, not sent to the terminal


def test_inspect_model_escapes_names(work):
    proc = run_cli("inspect", work / "decl.onnx")
    assert proc.returncode == 0 and "\x1b" not in proc.stdout


def test_profile_json_and_trace(work):
    trace = work / "t.json"
    proc = run_cli("profile", work / "decl.wbe", "--runs", "2", "--json", "--trace", trace)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    engine = wb.Engine.load(work / "decl.wbe")
    assert [row["layer"] for row in d["layers"]] == [layer.name for layer in engine.layers]
    assert d["runs"] == 2 and math.isfinite(d["end_to_end_ms"]) and {"median_ms", "tactic", "pct"} <= set(d["layers"][0])
    t = json.loads(trace.read_text())
    layers = [e for e in t["traceEvents"] if e["ph"] == "X" and e["tid"] == 1]  # the layers track
    assert [e["name"] for e in layers] == [layer.name for layer in engine.layers]
    assert all(e["dur"] >= 0 for e in layers) and {e["ph"] for e in t["traceEvents"]} <= {"X", "M"}


@pytest.mark.parametrize("option", ["--trace", "--csv"])
def test_profile_output_into_missing_folder_names_the_folder(work, option):
    proc = run_cli("profile", work / "m.wbe", "--runs", "1", option, work / "no" / "such" / "f.out")
    assert_user_error(proc, "f.out", "folder", "no/such", "does not exist")
    assert ".tmp" not in proc.stderr


def test_npy_given_as_inputs(work):
    np.save(work / "x.npy", np.ones((2, 4), np.float32))
    assert_user_error(run_cli("run", work / "m.wbe", "--inputs", work / "x.npy"), "x.npy", ".npy", ".npz")


def test_text_given_as_inputs_is_never_offered_pickle(work):
    (work / "x.txt").write_text("1 2 3 4\n5 6 7 8\n")
    proc = run_cli("run", work / "m.wbe", "--inputs", work / "x.txt")
    assert_user_error(proc, "x.txt", "not an .npz")
    assert "pickle" not in proc.stderr.lower()


@pytest.mark.parametrize("command", ["build", "run"])
def test_shapes_with_commas_between_dims(work, command):
    args = (("build", work / "m.onnx", "-o", work / "x.wbe", "--device", "cpu") if command == "build"
            else ("run", work / "dyn.wbe"))
    proc = run_cli(*args, "--shapes", "x:1,3,224,224")
    assert_user_error(proc, "'x'", "separate dimensions with 'x'", "x:1x3x224x224")


def test_outputs_into_missing_folder_names_the_folder(work):
    proc = run_cli("run", work / "m.wbe", "--outputs", work / "no" / "such" / "out.npz")
    assert_user_error(proc, "out.npz", "folder", "no/such")
    assert ".tmp" not in proc.stderr


def test_build_into_missing_folder_fails_before_building(work):
    assert_user_error(run_cli("build", work / "m.onnx", "-o", work / "nope" / "e.wbe", "--device", "cpu"),
                      "e.wbe", "folder", "nope", "does not exist")


@pytest.mark.parametrize("args", [("inspect", "{f}"), ("run", "{f}"), ("profile", "{f}"),
                                  ("build", "{f}", "-o", "{d}/e.wbe"), ("run", "{d}/m.wbe", "--inputs", "{f}")])
def test_fifo_is_refused_at_once(work, tmp_path, args):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    argv = [a.format(f=fifo, d=work) for a in args]
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", *argv], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=False)  # a hang would be a TimeoutExpired, not a pass
    assert_user_error(proc, "pipe", "FIFO")


def _limited(limit_bytes):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


@pytest.mark.parametrize("args,limit", [(("run", "{d}/dyn.wbe", "--shapes", "x:4000x4", "--outputs", "{o}/out.npz"), 4096),
                                        (("profile", "{d}/m.wbe", "--runs", "1", "--csv", "{o}/p.csv"), 64),
                                        (("profile", "{d}/m.wbe", "--runs", "1", "--trace", "{o}/t.json"), 64)])
def test_file_size_limit_leaves_nothing_behind(work, tmp_path, args, limit):
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.format(d=work, o=out) for a in args]
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=300, preexec_fn=_limited(limit), check=False)
    assert_user_error(proc, os.path.basename(argv[-1]))
    assert ".tmp" not in proc.stderr
    assert os.listdir(out) == []


def test_two_runs_writing_one_outputs_file(work, tmp_path):
    """Two processes write one --outputs path at once: the file is whole and is one of the two results."""
    out = tmp_path / "same.npz"
    expected = []
    for seed in ("1", "2"):
        proc = run_cli("run", work / "dyn.wbe", "--shapes", "x:20000x4", "--seed", seed, "--iterations", "1",
                       "--outputs", tmp_path / f"ref{seed}.npz")
        assert proc.returncode == 0, proc.stderr
        with np.load(tmp_path / f"ref{seed}.npz") as f:
            expected.append(f["y"])
    for _ in range(2):
        procs = [subprocess.Popen([sys.executable, "-m", "workbench.cli", "run", str(work / "dyn.wbe"), "--shapes",
                                   "x:20000x4", "--seed", seed, "--iterations", "1", "--outputs", str(out)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO) for seed in ("1", "2")]
        for p in procs:
            assert p.wait(timeout=300) == 0, p.stderr.read()
            p.stderr.close()
        with np.load(out) as f:
            got = f["y"]
        assert any(np.array_equal(got, e) for e in expected)
        assert sorted(os.listdir(tmp_path)) == ["ref1.npz", "ref2.npz", "same.npz"]


def test_memory_error_is_one_line(work, monkeypatch, capsys):
    from workbench.cli import run as run_module

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 3.00 GiB for an array with shape (805306368,) and data type float32")

    monkeypatch.setattr(run_module, "benchmark", exhausted)
    assert main(["run", str(work / "m.wbe")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of memory" in err[0] and "3.00 GiB" in err[0]
