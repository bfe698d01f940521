"""The layer order of workbench/: each module's rank, and which modules make up the lean side (what
loading and running an engine needs). tests/test_layering.py checks every import against it;
tests/runtime/test_lean_runtime.py imports the lean side with everything else blocked."""

from __future__ import annotations

import os

from tests.support.paths import REPO

PACKAGE = os.path.join(REPO, "workbench")
# A module may import its own rank or a lower number.
RANKS = [
    ("workbench._version", 0), ("workbench.errors", 0), ("workbench.dtypes", 0),
    ("workbench.core", 1),
    ("workbench.ops", 2),
    ("workbench.kernels.reference", 3), ("workbench.kernels.cpu", 3),
    ("workbench.format", 4),
    ("workbench.kernels.cuda", 5),
    ("workbench.runtime", 6),
    ("workbench.ir", 7),
    ("workbench.frontends", 8), ("workbench.rewrite", 8),
    ("workbench.passes", 9),
    ("workbench.precision", 10),
    ("workbench.builder", 11),
    ("workbench.onnx_backend", 12), ("workbench.demo", 12), ("workbench.cli", 12), ("workbench.ui", 12),
    # kernels/ holds no module of its own: a name directly under it (a module made at run time) sits
    # with the reference kernels
    ("workbench.kernels", 3),
    ("workbench", 12),
]
LEAN_MAX = 6
LEAN_FORBIDDEN = ("onnx", "onnx_ir", "onnxscript", "onnxruntime")
# what the lean side must never import: the third-party optimizer packages and every workbench
# package above the lean ranks
OPTIMIZER_SIDE = LEAN_FORBIDDEN + tuple(p for p, r in RANKS if r > LEAN_MAX and p != "workbench")


def rank(module: str) -> int | None:
    """The rank of a workbench module (longest matching prefix), None outside workbench."""
    for prefix, r in sorted(RANKS, key=lambda p: -len(p[0])):
        if within(module, prefix):
            return r
    return None


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def package_modules(root: str = PACKAGE) -> dict[str, str]:
    """Dotted module name -> file, for every .py under ``root``."""
    out = {}
    base = os.path.dirname(root)
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, base)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out[".".join(parts)] = path
    return out


def lean_modules() -> list[str]:
    """Every module of ranks 0..LEAN_MAX, in name order."""
    return sorted(m for m in package_modules() if m != "workbench" and rank(m) is not None and rank(m) <= LEAN_MAX)
