"""Loading and running an engine imports neither onnx, onnx-ir nor the optimizer modules."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

import workbench as wb
from tests.test_cli import small_model

BLOCKER = textwrap.dedent('''
    import sys, importlib.abc
    BLOCKED = ("onnx", "onnx_ir", "onnxscript", "onnxruntime", "workbench.frontends", "workbench.passes",
               "workbench.builder", "workbench.ir", "workbench.rewrite", "workbench.precision")
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"lean runtime imported {name}")
            return None
    sys.meta_path.insert(0, Block())
''')


def test_engine_runs_without_optimizer_imports(tmp_path):
    small_model(tmp_path / "m.onnx")
    engine = wb.build(wb.load_onnx(tmp_path / "m.onnx"), wb.BuilderConfig(device="cpu", shapes={"x": (2, 4)}))
    engine.save(tmp_path / "m.wbe")
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = engine.create_context().run({"x": x})["y"]
    np.save(tmp_path / "y.npy", expected)
    script = BLOCKER + textwrap.dedent(f'''
        import numpy as np
        import workbench as wb
        e = wb.Engine.load({str(tmp_path / "m.wbe")!r})
        y = e.create_context().run({{"x": np.load({str(tmp_path / "x.npy")!r})}})["y"]
        assert np.array_equal(y, np.load({str(tmp_path / "y.npy")!r}))
        e.create_context().profile(runs=2)
        e.describe()
        bad = [m for m in sys.modules if m.split(".")[0] in ("onnx", "onnx_ir", "onnxscript")]
        assert not bad, bad
        print("LEAN-OK")
    ''')
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "LEAN-OK" in proc.stdout, proc.stderr
