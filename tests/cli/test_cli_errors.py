"""CLI user mistakes (DESIGN.md: a user error exits 2 with one line on stderr naming the problem, no
traceback): --shapes syntax, wrong files, .npz feeds, devices, build options, profile and demo arguments,
a closed stdout."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import workbench as wb
from tests.support.cli import assert_user_error, run_cli, small_model
from tests.support.gpu import gpu_available
from tests.support.paths import REPO


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """m.onnx (x: [batch, 4] -> y), m.wbe built at x:2x4, dyn.wbe built without shapes, in.npz."""
    tmp = tmp_path_factory.mktemp("cli")
    small_model(tmp / "m.onnx")
    for name, extra in (("m.wbe", ["--shapes", "x:2x4"]), ("dyn.wbe", [])):
        proc = run_cli("build", tmp / "m.onnx", "-o", tmp / name, "--device", "cpu", *extra)
        assert proc.returncode == 0, proc.stderr
    np.savez(tmp / "in.npz", x=np.ones((2, 4), np.float32))
    return tmp


def build_args(work, *extra):
    """Arguments of a CPU build of m.onnx into out.wbe (removed first, so that a test can check it is not written)."""
    (work / "out.wbe").unlink(missing_ok=True)
    return ("build", work / "m.onnx", "-o", work / "out.wbe", "--device", "cpu", *extra)


@pytest.mark.parametrize("shapes,word", [
    ("x=2x4", "x=2x4"),            # '=' instead of ':'
    ("x:2,4", "'4'"),              # ',' between dims splits entries
    ("x:2*4", "x:2*4"),
    ("x:2x4,", "NAME:DxD"),        # trailing comma
    (":2x4", ":2x4"),              # no name
    ("x:-1x4", "x:-1x4"),          # negative dim
    ("x: 2x4", "x: 2x4"),          # space inside
    ("x:2x4,x:2x4", "twice"),
    ("x:", "rank"),                # scalar for a rank-2 input
])
def test_bad_shapes_syntax(work, shapes, word):
    assert_user_error(run_cli(*build_args(work, "--shapes", shapes)), word)
    assert not (work / "out.wbe").exists()


def test_empty_shapes_is_an_error(work):
    assert_user_error(run_cli(*build_args(work, "--shapes", "")), "empty")


def test_shapes_over_the_element_cap_refused(work):
    assert_user_error(run_cli(*build_args(work, "--shapes", f"x:{2**62}x4")), "x")


def test_directory_as_model(work):
    assert_user_error(run_cli("build", work, "-o", work / "out.wbe", "--device", "cpu"), "directory")


@pytest.mark.parametrize("name", ["in.npz", "m.wbe"])
def test_other_file_kinds_as_model(work, name):
    assert_user_error(run_cli("build", work / name, "-o", work / "out.wbe", "--device", "cpu"), name,
                      "not a valid ONNX model")


def test_empty_and_truncated_model_file(work):
    (work / "empty.onnx").write_bytes(b"")
    data = (work / "m.onnx").read_bytes()
    (work / "half.onnx").write_bytes(data[: len(data) // 2])
    for name in ("empty.onnx", "half.onnx"):
        assert_user_error(run_cli("build", work / name, "-o", work / "out.wbe", "--device", "cpu"), name)
        assert_user_error(run_cli("inspect", work / name), name)


def test_engine_empty_or_truncated(work):
    (work / "empty.wbe").write_bytes(b"")
    data = (work / "m.wbe").read_bytes()
    (work / "trunc.wbe").write_bytes(data[: len(data) // 2])
    assert_user_error(run_cli("run", work / "empty.wbe", "--inputs", work / "in.npz"), "not a workbench engine")
    assert_user_error(run_cli("inspect", work / "trunc.wbe"), "truncated")
    assert_user_error(run_cli("profile", work / "trunc.wbe"), "truncated")


def test_engine_of_an_older_format_is_refused_in_one_line(work):
    """An engine written by format 1 (same container, version field 1.0, valid checksum) is refused
    by run, profile and inspect with exit 2 and one line naming both versions."""
    import hashlib
    import struct

    from workbench.format.container import FORMAT_VERSION

    data = bytearray((work / "m.wbe").read_bytes())
    data[8:12] = struct.pack("<HH", 1, 0)
    body = bytes(data[:-32])
    (work / "old.wbe").write_bytes(body + hashlib.sha256(body).digest())
    line = (f"workbench: error: engine file built by format 1.0, this workbench reads format "
            f"{FORMAT_VERSION[0]}.{FORMAT_VERSION[1]} — rebuild it")
    for args in (("run", work / "old.wbe", "--inputs", work / "in.npz"), ("profile", work / "old.wbe"),
                 ("inspect", work / "old.wbe")):
        proc = run_cli(*args)
        assert_user_error(proc, "format 1.0", "rebuild")
        assert proc.stderr.strip() == line


def test_inspect_directory(work):
    assert_user_error(run_cli("inspect", work), "directory")


def test_gpu_engine_on_a_machine_without_cupy(work):
    if gpu_available():
        pytest.skip("this machine has a GPU")
    engine = wb.Engine.load(work / "m.wbe")
    engine.target["backend"], engine.target["arch"] = "gpu", "sm_90"
    engine.save(work / "gpu.wbe")
    assert_user_error(run_cli("run", work / "gpu.wbe", "--inputs", work / "in.npz"), "gpu")


@pytest.mark.parametrize("feeds,words", [
    ({"z": np.ones((2, 4), np.float32)}, ["missing input 'x'"]),
    ({}, ["missing input 'x'"]),                                           # empty .npz
    ({"x": np.array([{"a": 1}], dtype=object)}, ["bad.npz", "python objects"]),  # would need pickle: refused
])
def test_npz_mistakes(work, feeds, words):
    np.savez(work / "bad.npz", **feeds)
    assert_user_error(run_cli("run", work / "m.wbe", "--inputs", work / "bad.npz"), *words)


def test_inputs_is_a_directory_or_missing(work):
    assert_user_error(run_cli("run", work / "m.wbe", "--inputs", work), "directory")
    assert_user_error(run_cli("run", work / "m.wbe", "--inputs", work / "nope.npz"), "nope.npz", "does not exist")


def test_outputs_into_missing_folder(work):
    assert_user_error(run_cli("run", work / "m.wbe", "--inputs", work / "in.npz", "--outputs",
                              work / "no" / "such" / "out.npz"), "out.npz")


def test_outputs_without_npz_suffix_reports_the_file_it_wrote(work):
    proc = run_cli("run", work / "m.wbe", "--inputs", work / "in.npz", "--outputs", work / "result")
    assert proc.returncode == 0, proc.stderr
    assert (work / "result").exists() or str(work / "result.npz") in proc.stdout


def test_run_cpu_engine_with_device_gpu(work):
    assert_user_error(run_cli("run", work / "m.wbe", "--inputs", work / "in.npz", "--device", "gpu"),
                      "built for cpu", "rebuild")


def test_build_device_gpu_without_gpu(work):
    if gpu_available():
        pytest.skip("this machine has a GPU")
    assert_user_error(run_cli(*build_args(work)[:-2], "--device", "gpu"), "gpu")
    assert not (work / "out.wbe").exists()


@pytest.mark.parametrize("item,words", [
    ("relu=fp64", ["fp64", "relu"]),
    ("relu", ["LAYER=PRECISION"]),
    ("relu=tf32", ["tf32", "not available"]),      # a GPU-only precision on the CPU target
    ("=fp16", ["neither a layer nor an ONNX node"]),
])
def test_bad_layer_precision(work, item, words):
    assert_user_error(run_cli(*build_args(work, "--layer-precision", item)), *words)


@pytest.mark.parametrize("value,name", [("no_such_rule", "no_such_rule"), ("fold_batchnorm,nope2", "nope2")])
def test_disable_unknown_rule(work, value, name):
    assert_user_error(run_cli(*build_args(work, "--disable", value)), name, "unknown")


def test_bad_precision_choice(work):
    assert_user_error(run_cli(*build_args(work, "--precision", "fp64")), "fp64")


@pytest.mark.parametrize("runs,word", [("0", "--runs"), ("-3", "--runs"), ("abc", "abc")])
def test_profile_bad_runs(work, runs, word):
    assert_user_error(run_cli("profile", work / "m.wbe", "--runs", runs), word)


def test_profile_dynamic_engine_without_inputs(work):
    assert_user_error(run_cli("profile", work / "dyn.wbe", "--runs", "1"), "'x'", "--inputs")


def test_profile_csv_into_missing_folder(work):
    assert_user_error(run_cli("profile", work / "m.wbe", "--runs", "1", "--csv", work / "no" / "such" / "p.csv"),
                      "no/such")


def test_demo_runs_zero(tmp_path):
    assert_user_error(run_cli("demo", "--runs", "0", "-o", tmp_path / "d.wbe"), "runs")


def test_output_closed_early_is_not_an_error(work):
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -0`: every write to stdout fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "workbench.cli", "inspect", str(work / "m.wbe")],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=60)
    finally:
        os.close(write_end)
    assert "Broken pipe" not in proc.stderr and proc.returncode != 2, (proc.returncode, proc.stderr)
