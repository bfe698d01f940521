"""The layer order, checked on the source: every import statement of every module under workbench/
(inside functions and `if TYPE_CHECKING:` blocks too), and `importlib.import_module` of a constant
name, resolved to the module it names.

Rank (a module may import its own rank or a lower number):
  0 _version, errors, dtypes   1 core   2 ops   3 kernels.reference   4 format   5 kernels.cuda
  6 runtime   7 ir   8 frontends, rewrite   9 passes   10 precision   11 builder
  12 onnx_backend, demo, cli, ui, and the package itself (`workbench/__init__.py`: its lazy table
     names lower modules as strings, which are not imports)
Ranks 0-6 are the lean side (what loading and running an engine needs): besides the order, they never
import onnx, onnx_ir, onnxscript or onnxruntime. The UI goes through the public API: `workbench`,
`workbench.errors`, `workbench.core.*`, `workbench.runtime.*` and `workbench.ui.*` only, and a tab
(`ui/*_tab.py`) never imports `workbench.ui.app`.
"""

from __future__ import annotations

import ast
import os

from tests.support.layers import LEAN_FORBIDDEN, LEAN_MAX, package_modules, rank, within
from tests.support.paths import REPO

UI_ALLOWED = ("workbench", "workbench.errors", "workbench.core", "workbench.runtime", "workbench.ui")


def imported_modules(source: str, module: str, is_package: bool, known: set[str]) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in ``source``, relative ones resolved against ``module``.
    ``from P import name`` names P.name where that is a module in ``known``, else P."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name)
                 and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in known else base))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and isinstance(node.func.value, ast.Name)
              and node.func.value.id == "importlib"):
            arg = node.args[0]
            name = arg.value if isinstance(arg, ast.Constant) else constants.get(getattr(arg, "id", None))
            if isinstance(name, str) and not name.startswith("."):
                found.append((node.lineno, name))
    return found


def violations(source: str, module: str, path: str, is_package: bool = False,
               known: set[str] = frozenset()) -> list[str]:
    """Every import of ``source`` (the module ``module`` in file ``path``) that breaks the layer order,
    as 'path:line imports X (rank a -> rank b)'."""
    own = rank(module)
    is_tab = within(module, "workbench.ui") and module.rpartition(".")[2].endswith("_tab")
    out = []
    for line, target in sorted(imported_modules(source, module, is_package, known)):
        where = f"{path}:{line} imports {target}"
        top = target.split(".")[0]
        theirs = rank(target)
        if own is not None and own <= LEAN_MAX and top in LEAN_FORBIDDEN:
            out.append(f"{where} (rank {own} -> {top}, which the lean side never imports)")
        elif theirs is None:
            continue
        elif within(module, "workbench.ui") and not any(within(target, p) if p != "workbench" else target == p
                                                        for p in UI_ALLOWED):
            out.append(f"{where} (rank {own} -> rank {theirs}: the UI uses only the public API, core, runtime and ui)")
        elif is_tab and within(target, "workbench.ui.app"):
            out.append(f"{where} (rank {own} -> rank {theirs}: a UI tab never imports the app)")
        elif theirs > own:
            out.append(f"{where} (rank {own} -> rank {theirs})")
    return out


def all_violations() -> list[str]:
    modules = package_modules()
    known = set(modules)
    out = []
    for module, path in sorted(modules.items()):
        with open(path, encoding="utf-8") as f:
            source = f.read()
        out += violations(source, module, os.path.relpath(path, REPO), path.endswith("__init__.py"), known)
    return out


def test_every_workbench_module_has_a_rank():
    assert [m for m in package_modules() if rank(m) is None] == []


def test_workbench_imports_follow_the_layer_order():
    found = all_violations()
    assert not found, f"{len(found)} imports break the layer order:\n" + "\n".join(found)


KNOWN = {"workbench", "workbench.errors", "workbench.core", "workbench.core.plan", "workbench.builder",
         "workbench.builder.memory", "workbench.runtime", "workbench.runtime.engine", "workbench.ui",
         "workbench.ui.app", "workbench.ui.profile_tab", "workbench.kernels.cuda", "workbench.kernels.cuda.tactic"}


def check(source: str, module: str, is_package: bool = False) -> list[str]:
    return violations(source, module, "m.py", is_package, KNOWN)


def test_checker_reports_an_upward_import_inside_a_function():
    src = "import numpy as np\nfrom ..core.plan import Plan\n\ndef f():\n    from ..builder.memory import plan_memory\n"
    assert check(src, "workbench.runtime.engine") == [
        "m.py:5 imports workbench.builder.memory (rank 6 -> rank 11)"]


def test_checker_resolves_from_package_import_name():
    assert check("from .. import builder\n", "workbench.runtime.engine") == [
        "m.py:1 imports workbench.builder (rank 6 -> rank 11)"]
    # a name that is no module is taken from the package itself: the top package is rank 12
    assert check("from ... import Engine\n", "workbench.kernels.cuda.tactic") == [
        "m.py:1 imports workbench (rank 5 -> rank 12)"]
    assert check("from . import plan\n", "workbench.core", is_package=True) == []


def test_checker_reports_onnx_on_the_lean_side_only():
    src = "def load():\n    import onnx_ir as ir\n"
    assert check(src, "workbench.kernels.cuda.tactic") == [
        "m.py:2 imports onnx_ir (rank 5 -> onnx_ir, which the lean side never imports)"]
    assert check(src, "workbench.builder.memory") == []


def test_checker_sees_import_module_of_a_constant_name():
    src = "import importlib\n_MOD = 'workbench.builder'\n\ndef f():\n    return importlib.import_module(_MOD)\n"
    assert check(src, "workbench.format.container") == ["m.py:5 imports workbench.builder (rank 4 -> rank 11)"]


def test_checker_ui_rules():
    assert check("import workbench as wb\nfrom workbench.core.plan import Plan\nfrom .app import Workbench\n",
                 "workbench.ui.session") == []
    assert check("from ..builder.memory import plan_memory\n", "workbench.ui.details") == [
        "m.py:1 imports workbench.builder.memory (rank 12 -> rank 11: "
        "the UI uses only the public API, core, runtime and ui)"]
    assert check("from .app import Workbench\n", "workbench.ui.profile_tab") == [
        "m.py:1 imports workbench.ui.app (rank 12 -> rank 12: a UI tab never imports the app)"]


def test_checker_allows_same_rank_and_downward_imports():
    src = "from ..core.plan import Plan\nfrom ..errors import WorkbenchError\nfrom .engine import Engine\n"
    assert check(src, "workbench.runtime.context") == []
