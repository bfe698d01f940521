"""A CuPy twin of the NumPy reference kernels, for the long tail of ops with no dedicated tactic.

The reference modules are imported a second time, under ``workbench.kernels._cupy_twin``, through
the ordinary source loader; after each module runs, its global ``np`` is rebound to a namespace
that resolves names in CuPy first (NumPy for what CuPy lacks: dtype helpers, ``errstate``...). The
kernels look ``np`` up when they run, so the same code then computes on the device, helpers and
cross-module imports included. Nothing is trusted blindly: ``generic.py`` validates every layer
against the NumPy kernel at build time and declines the layer, with the reason, if they disagree.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

import numpy

_TWIN = "workbench.kernels._cupy_twin"
_SOURCE = "workbench.kernels.reference"


class _CupyFirst(types.ModuleType):
    """``np`` for the twin: CuPy's name where it has one, else NumPy's."""

    def __init__(self, cupy):
        super().__init__("cupy_first")
        self._cupy = cupy

    def __getattr__(self, name):
        try:
            return getattr(self._cupy, name)
        except AttributeError:
            return getattr(numpy, name)


class _TwinLoader(importlib.machinery.SourceFileLoader):
    np_namespace: types.ModuleType | None = None

    def exec_module(self, module):
        super().exec_module(module)
        if "np" in module.__dict__:
            module.np = self.np_namespace


class _TwinFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TWIN and not name.startswith(_TWIN + "."):
            return None
        source = importlib.util.find_spec(_SOURCE + name[len(_TWIN):])
        if source is None or not source.origin or not source.origin.endswith(".py"):
            return None
        package = source.submodule_search_locations is not None
        return importlib.util.spec_from_file_location(
            name, source.origin, loader=_TwinLoader(name, source.origin),
            submodule_search_locations=list(source.submodule_search_locations) if package else None)


def twin_kernels(cupy) -> dict:
    """The twin's (domain, op) -> kernel table (imported once per process)."""
    module = sys.modules.get(_TWIN)
    if module is None:
        _TwinLoader.np_namespace = _CupyFirst(cupy)
        if not any(isinstance(f, _TwinFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _TwinFinder())
        module = importlib.import_module(_TWIN)
    return module.KERNELS


def twin_kernel(cupy, domain: str, op: str):
    return twin_kernels(cupy).get(("" if domain == "ai.onnx" else domain, op))
