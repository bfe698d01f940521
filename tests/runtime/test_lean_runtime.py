"""The lean side (ranks 0-6 of tests/support/layers.py: core, ops, reference kernels, format, CUDA
kernels, runtime) works with the optimizer out of reach: a subprocess blocks onnx, onnx-ir and every
optimizer-side workbench package, and records each attempt to import one (an attempt that a module
catches still counts)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import workbench as wb
from tests.support.cli import small_model
from tests.support.layers import OPTIMIZER_SIDE, lean_modules
from tests.support.paths import REPO

BLOCKER = textwrap.dedent(f'''
    import importlib.abc, json, sys
    BLOCKED = {OPTIMIZER_SIDE!r}
    ATTEMPTS = []
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                ATTEMPTS.append(name)
                raise ImportError(f"lean runtime imported {{name}}")
            return None
    sys.meta_path.insert(0, Block())

    def report(**extra):
        loaded = sorted(m for m in sys.modules if m == "workbench" or m.startswith("workbench."))
        print("workbench modules imported:", " ".join(loaded))
        print("onnx imported:", "onnx" in sys.modules, "| onnx_ir imported:", "onnx_ir" in sys.modules)
        print("REPORT " + json.dumps(dict(attempts=ATTEMPTS, loaded=loaded,
                                          third_party=sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
                                          **extra)))
''')

# Packages a GPU module may need at import time that a CPU-only machine lacks.
GPU_PACKAGES = ("cupy", "cupy_backends", "cuda", "nvidia", "fastrlock")


def run_blocked(body: str, timeout: int = 300) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(body)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
    return json.loads(lines[-1][len("REPORT "):]), proc.stdout


def assert_lean(report: dict) -> None:
    assert report["attempts"] == [], f"the lean side tried to import {report['attempts']}"
    assert report["third_party"] == []
    optimizer = [m for m in report["loaded"] if any(m == b or m.startswith(b + ".") for b in OPTIMIZER_SIDE)]
    assert optimizer == []


def test_every_lean_module_imports_without_the_optimizer():
    modules = lean_modules()
    assert {"workbench.core.plan", "workbench.format.container", "workbench.runtime.engine"} <= set(modules)
    report, out = run_blocked(f'''
        import importlib
        gpu_packages = {GPU_PACKAGES!r}
        missing = {{}}
        for name in {modules!r}:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if not (exc.name or "").split(".")[0] in gpu_packages:
                    raise
                missing[name] = exc.name
        report(missing=missing)
    ''')
    print(out)
    assert_lean(report)
    imported = set(report["loaded"])
    assert [m for m in modules if m not in imported and m not in report["missing"]] == []


def test_cpu_engine_runs_without_optimizer_imports(tmp_path):
    small_model(tmp_path / "m.onnx")
    engine = wb.build(wb.load_onnx(tmp_path / "m.onnx"), wb.BuilderConfig(device="cpu", shapes={"x": (2, 4)}))
    engine.save(tmp_path / "m.wbe")
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", engine.create_context().run({"x": x})["y"])
    report, out = run_blocked(f'''
        import numpy as np
        import workbench as wb
        e = wb.Engine.load({str(tmp_path / "m.wbe")!r})
        y = e.create_context().run({{"x": np.load({str(tmp_path / "x.npy")!r})}})["y"]
        assert np.array_equal(y, np.load({str(tmp_path / "y.npy")!r}))
        e.create_context().profile(runs=2)
        e.describe()
        report()
    ''')
    print(out)
    assert_lean(report)


@pytest.mark.gpu
def test_gpu_fp16_engine_loads_runs_and_profiles_without_optimizer_imports(tmp_path):
    from workbench.core.numerics import host
    from workbench.demo import embedded_model_path, reference_io

    path = embedded_model_path("light_squeezenet")
    feeds, _ = reference_io(path)
    engine = wb.build(wb.load_onnx(path), wb.BuilderConfig(device="gpu", precision="fp16"))
    assert engine.target["backend"] == "gpu"
    engine.save(tmp_path / "g.wbe")
    np.savez(tmp_path / "in.npz", **feeds)
    np.savez(tmp_path / "out.npz", **{k: host(v) for k, v in engine.create_context().run(feeds).items()})
    report, out = run_blocked(f'''
        import numpy as np
        import workbench as wb
        from workbench.core.numerics import host
        feeds = dict(np.load({str(tmp_path / "in.npz")!r}))
        want = dict(np.load({str(tmp_path / "out.npz")!r}))
        e = wb.Engine.load({str(tmp_path / "g.wbe")!r})
        ctx = e.create_context()
        got = ctx.run(feeds)
        for k in want:
            np.testing.assert_allclose(host(got[k]), want[k], rtol=1e-3, atol=1e-3)
        prof = ctx.profile(feeds, runs=2)
        assert len(prof) > 0
        e.describe()
        report()
    ''', timeout=600)
    print(out)
    assert_lean(report)
    assert any(m.startswith("workbench.runtime.gpu") for m in report["loaded"]), report["loaded"]
