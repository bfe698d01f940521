"""The constant folder reads the build's device: a GPU build lifts its size cap, so that no layer of a
GPU plan reads only constants (the light_* models make their weights with ConstantOfShape, larger
than the CPU cap); a CPU build keeps the cap, so those stay layers rather than bloating the engine."""

from __future__ import annotations

import math

import onnx_ir as ir
import pytest

import workbench as wb
from workbench.builder.lower import lower_model
from workbench.demo import embedded_model_path
from workbench.dtypes import itemsize
from workbench.passes.context import PassContext
from workbench.passes.fold_constants import MAX_FOLD_BYTES, NON_DETERMINISTIC
from workbench.passes.pipeline import run_pipeline

LIGHT = ["light_bvlc_alexnet", "light_densenet121", "light_inception_v1", "light_inception_v2", "light_resnet50",
         "light_shufflenet", "light_squeezenet", "light_vgg19", "light_zfnet512"]


def _plan(name: str, device: str):
    model = ir.from_proto(ir.to_proto(wb.load_onnx(embedded_model_path(name)).model))
    run_pipeline(model, PassContext(device=device))
    return lower_model(model)


def _constant_only(plan) -> list:
    return [layer for layer in plan.layers if layer.op not in NON_DETERMINISTIC
            and all(n in plan.constants for n in layer.inputs if n)]


@pytest.mark.parametrize("name", LIGHT)
def test_gpu_build_folds_every_constant_only_layer(name):
    plan = _plan(name, "gpu")
    assert not _constant_only(plan), [(layer.name, layer.op) for layer in _constant_only(plan)]


def test_cpu_build_keeps_the_size_cap():
    plan = _plan("light_bvlc_alexnet", "cpu")
    kept = _constant_only(plan)
    assert kept and {layer.op for layer in kept} == {"ConstantOfShape"}
    specs = [plan.tensors[layer.outputs[0]] for layer in kept]
    assert all(s.is_static and itemsize(s.dtype) * math.prod(s.shape) > MAX_FOLD_BYTES for s in specs)
