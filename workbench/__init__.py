"""workbench: a deep-learning inference optimizer whose home is Jupyter.

    import workbench as wb
    net = wb.load_onnx("model.onnx")
    engine = wb.build(net, wb.BuilderConfig(device="auto", precision="fp16", shapes={"x": (1, 3, 224, 224)}))
    engine.save("model.wbe")
    outs = wb.Engine.load("model.wbe").create_context().run({"x": x})

Importing this package is cheap: the optimizer (onnx, onnx-ir) is imported only when
``load_onnx`` / ``build`` are first used, so a deployment that only loads and runs engines never
imports it.

This module is the public API: the CLI, the demo and the notebook UI go through it. It is the top of
the layer order and names lower modules only in its lazy table.
"""

from __future__ import annotations

from ._version import __version__

from .runtime.engine import Engine
from .errors import (
    BuildError,
    EngineCompatibilityError,
    EngineFormatError,
    InputError,
    ModelLoadError,
    ShapeError,
    UnsupportedModelError,
    WorkbenchError,
)

_LAZY = {
    "load_onnx": ("workbench.frontends.onnx", "load_onnx"),
    "build": ("workbench.builder", "build"),
    "Builder": ("workbench.builder", "Builder"),
    "BuilderConfig": ("workbench.builder", "BuilderConfig"),
    "FrontCache": ("workbench.builder", "FrontCache"),
    "Calibration": ("workbench.precision.calibration", "Calibration"),
    "CalibrationTable": ("workbench.precision.calibration", "CalibrationTable"),
    "Network": ("workbench.ir.network", "Network"),
    "NetworkDefinition": ("workbench.frontends.network", "NetworkDefinition"),
    "NetworkDefinitionError": ("workbench.frontends.network", "NetworkDefinitionError"),
    "Tensor": ("workbench.frontends.network", "Tensor"),
    "parse_shapes": ("workbench.builder", "parse_shapes"),
    "pass_names": ("workbench.passes.pipeline", "known_names"),
    "resolve_device": ("workbench.builder.targets", "resolve_device"),
    "supported_precisions": ("workbench.core.precisions", "supported_precisions"),
    # the engine explorer (workbench/explore): views as DataFrames, A-vs-B comparison, linters
    "compare": ("workbench.explore", "compare"),
    "lint": ("workbench.explore", "lint"),
    "latency_by": ("workbench.explore", "latency_by"),
    "memory_timeline": ("workbench.explore", "memory_timeline"),
    "memory_peak": ("workbench.explore", "memory_peak"),
    "roofline": ("workbench.explore", "roofline"),
    "latency_vs_batch": ("workbench.explore", "latency_vs_batch"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in ("serve", "batch"):  # deployment subpackages (Ray is optional): imported on first use
        import importlib

        return importlib.import_module(f"workbench.{name}")
    if name == "load_ipython_extension":
        from .ui.magics import load_ipython_extension

        return load_ipython_extension
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


__all__ = [
    "BuildError", "Builder", "BuilderConfig", "Calibration", "CalibrationTable", "Engine",
    "EngineCompatibilityError", "EngineFormatError", "FrontCache",
    "InputError", "ModelLoadError", "Network", "NetworkDefinition", "NetworkDefinitionError", "ShapeError", "Tensor",
    "UnsupportedModelError", "WorkbenchError", "__version__", "build", "load_onnx", "parse_shapes", "pass_names",
    "resolve_device", "supported_precisions", "compare", "lint", "latency_by", "latency_vs_batch", "memory_timeline", "memory_peak",
    "roofline",
]
