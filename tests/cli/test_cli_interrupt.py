"""Ctrl-C during `workbench build` exits 130 with one line and leaves no engine and no temp file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import onnx
import pytest

import workbench as wb
from tests.support.cli import small_model
from tests.support.paths import REPO

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


# Ctrl-C as a terminal delivers it: a test run started in the background by a non-interactive shell
# inherits SIGINT ignored, and Python then never installs its handler
_CTRL_C_WORKS = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)"


def _assert_interrupted(proc_rc, stderr, folder):
    assert proc_rc == 130, (proc_rc, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in stderr, stderr
    assert os.listdir(folder) == [], os.listdir(folder)  # no engine, no temp file


def test_ctrl_c_while_saving_leaves_no_partial_engine(tmp_path):
    """SIGINT arrives in the middle of writing the engine (deterministic: the write itself sends it)."""
    small_model(tmp_path / "m.onnx")
    out = tmp_path / "out"
    out.mkdir()
    script = (
        "import os, signal, sys\n"
        f"{_CTRL_C_WORKS}\n"
        "from workbench.format import container as fmt\n"
        "real = fmt.os.replace\n"
        "def replace(src, dst):\n"
        "    assert os.path.getsize(src) > 0\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    real(src, dst)\n"
        "fmt.os.replace = replace\n"
        "from workbench.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", script, "build", str(tmp_path / "m.onnx"), "-o", str(out / "e.wbe"),
                           "--device", "cpu"], capture_output=True, text=True, cwd=REPO, timeout=120)
    _assert_interrupted(proc.returncode, proc.stderr, out)


# The child imports the CLI, says "ready" on stderr, then runs main(): the test measures the build from
# that moment, so the interrupt lands in the build whatever the machine's load (a SIGINT during
# interpreter start-up kills Python before any handler exists, which no program can report on).
_READY_THEN_MAIN = _CTRL_C_WORKS + "; import sys; from workbench.cli import main; print('ready', file=sys.stderr, flush=True); sys.exit(main(sys.argv[1:]))"


def _start_build(model, engine_path):
    p = subprocess.Popen([sys.executable, "-c", _READY_THEN_MAIN, "build", model, "-o", str(engine_path),
                          "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert p.stderr.readline().strip() == "ready"
    return p, time.monotonic()


@pytest.mark.slow
def test_ctrl_c_during_a_real_build(tmp_path):
    """A real SIGINT to `workbench build` of ResNet-50 while it is working, before it finishes."""
    model = os.path.join(LIGHT, "light_resnet50.onnx")
    if not os.path.exists(model):
        pytest.skip("light_resnet50.onnx is not shipped with this onnx")
    p, t0 = _start_build(model, tmp_path / "full.wbe")
    _, err = p.communicate(timeout=300)
    total = time.monotonic() - t0
    assert p.returncode == 0, err
    os.remove(tmp_path / "full.wbe")
    for frac in (0.3, 0.6):
        out = tmp_path / f"out{frac}"
        out.mkdir()
        p, t0 = _start_build(model, out / "e.wbe")
        time.sleep(total * frac)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
        if p.returncode == 0:  # finished first: then the engine must be whole
            wb.Engine.load(out / "e.wbe")
            continue
        _assert_interrupted(p.returncode, err, out)
