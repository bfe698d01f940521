"""``workbench build --calib PATH [--calib-method M] [--calib-percentile P] [--calib-cache FILE]``: every
mistake exits 2 with one line naming it, before any optimization runs, and writes no engine."""

from __future__ import annotations

import os

import numpy as np
import pytest

from workbench.cli import main
from tests.support.cli import assert_user_error, run_cli, small_model


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """m.onnx (x: [batch, 4] -> y); data/ with three batches; empty/; files with wrong contents."""
    tmp = tmp_path_factory.mktemp("calib_cli")
    small_model(tmp / "m.onnx")
    (tmp / "data").mkdir()
    (tmp / "empty").mkdir()
    (tmp / "empty" / "readme.txt").write_text("no arrays here")
    rng = np.random.default_rng(0)
    for i in range(3):
        np.savez(tmp / "data" / f"b{i}.npz", x=rng.standard_normal((2, 4)).astype(np.float32))
    np.savez(tmp / "wrong_name.npz", z=np.ones((2, 4), np.float32))
    np.savez(tmp / "wrong_shape.npz", x=np.ones((2, 5), np.float32))
    np.savez(tmp / "wrong_dtype.npz", x=np.ones((2, 4), np.float64))
    np.save(tmp / "single.npy", np.ones((2, 4), np.float32))
    return tmp


def build(work, capsys, *extra):
    """Run ``workbench build`` in this process; (exit status, stderr)."""
    out = work / "out.wbe"
    out.unlink(missing_ok=True)
    try:
        code = main(["build", str(work / "m.onnx"), "-o", str(out), "--device", "cpu", *map(str, extra)])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    return code, capsys.readouterr().err


def user_error(work, capsys, extra, *words):
    code, err = build(work, capsys, *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err)
    assert "Traceback" not in err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    assert not (work / "out.wbe").exists()


@pytest.mark.parametrize("extra,words", [
    (["--calib", "{w}/nope"], ["calibration data", "nope", "does not exist"]),
    (["--calib", "{w}/empty"], ["empty", "no .npz files"]),
    (["--calib", "{w}/wrong_name.npz"], ["wrong_name.npz", "missing input 'x'"]),
    (["--calib", "{w}/wrong_shape.npz"], ["wrong_shape.npz", "shape [2, 5]"]),
    (["--calib", "{w}/wrong_dtype.npz"], ["wrong_dtype.npz", "float64"]),
    (["--calib", "{w}/single.npy"], ["single.npy", "single .npy array"]),
    (["--calib", "{w}/data", "--shapes", "x:3x4"], ["b0.npz", "shape [2, 4]"]),
    (["--calib", "{w}/data", "--calib-method", "kl"], ["--calib-method", "invalid choice: 'kl'"]),
    (["--calib", "{w}/data", "--calib-method", "percentile", "--calib-percentile", "0"], ["--calib-percentile"]),
    (["--calib", "{w}/data", "--calib-method", "percentile", "--calib-percentile", "x"], ["--calib-percentile"]),
    (["--calib", "{w}/data", "--calib-percentile", "99"], ["--calib-percentile", "percentile"]),
    (["--calib-method", "entropy"], ["need --calib"]),
    (["--calib-cache", "{w}/nope.calib"], ["nope.calib", "does not exist"]),
    (["--calib-cache", "{w}/m.onnx"], ["m.onnx", "not valid JSON"]),
    (["--calib", "{w}/data", "--calib-cache", "{w}/no/such/folder.calib"], ["folder.calib", "folder does not exist"]),
    (["--calib", "{w}/data", "--calib-cache", "{w}/data"], ["directory"]),
])
def test_calibration_mistakes(work, capsys, extra, words):
    user_error(work, capsys, [e.format(w=work) for e in extra], *words)


def test_fifo_as_calibration_data_is_refused_at_once(work, capsys):
    fifo = work / "pipe.npz"
    if not fifo.exists():
        os.mkfifo(fifo)
    user_error(work, capsys, ["--calib", fifo], "pipe.npz", "FIFO")


def test_build_with_calibration_options(work, capsys):
    code, err = build(work, capsys, "--calib", work / "data", "--calib-method", "percentile",
                      "--calib-percentile", "99.9", "--calib-cache", work / "m.calib")
    assert code == 0, err
    assert (work / "out.wbe").exists()


def test_one_line_from_the_installed_command(work):
    """The same contract through a real process (the console entry point), no traceback."""
    proc = run_cli("build", work / "m.onnx", "-o", work / "out.wbe", "--device", "cpu", "--calib", work / "empty")
    assert_user_error(proc, "no .npz files")
