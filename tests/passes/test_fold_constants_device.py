"""The constant folder folds constants of any size on every device, under two byte limits: the
memory budget (evaluation) and the engine-size limit (the constants the engine holds). The light_*
models make their weights with ConstantOfShape; folded, every Conv+BN pair fuses. A fold past the
engine-size limit keeps its layer and says why in the fusion log."""

from __future__ import annotations

import math

import onnx_ir as ir
import pytest

import workbench as wb
from workbench.builder.lower import lower_model
from workbench.demo import embedded_model_path
from workbench.dtypes import itemsize
from workbench.errors import ResourceLimitError
from workbench.passes.context import PassContext
from workbench.passes.fold_constants import NON_DETERMINISTIC
from workbench.passes.pipeline import run_pipeline

LIGHT = ["light_bvlc_alexnet", "light_densenet121", "light_inception_v1", "light_inception_v2", "light_resnet50",
         "light_shufflenet", "light_squeezenet", "light_vgg19", "light_zfnet512"]


def _plan(name: str, device: str, max_engine_bytes: int | None = None):
    model = ir.from_proto(ir.to_proto(wb.load_onnx(embedded_model_path(name)).model))
    ctx = PassContext(device=device, max_engine_bytes=max_engine_bytes)
    run_pipeline(model, ctx)
    return lower_model(model), ctx


def _constant_only(plan) -> list:
    return [layer for layer in plan.layers if layer.op not in NON_DETERMINISTIC
            and all(n in plan.constants for n in layer.inputs if n)]


@pytest.mark.parametrize("device", ["cpu", "gpu"])
@pytest.mark.parametrize("name", LIGHT)
def test_every_constant_only_layer_is_folded(name, device):
    plan, _ = _plan(name, device)
    assert not _constant_only(plan), [(layer.name, layer.op) for layer in _constant_only(plan)]


def test_cpu_build_of_resnet50_folds_every_conv_bn_pair():
    engine = wb.build(wb.load_onnx(embedded_model_path("light_resnet50")), wb.BuilderConfig(device="cpu"))
    info = engine.describe()
    assert "BatchNormalization" not in {layer["op"] for layer in info["layers"]}
    fired = [f for f in info["fusions"] if f["rule"] == "fold_batchnorm" and f["status"] == "fired"]
    assert len(fired) == 53  # every BatchNormalization of the model


def test_engine_size_limit_keeps_the_layer_and_says_why():
    limit = 4 << 20
    plan, ctx = _plan("light_bvlc_alexnet", "cpu", max_engine_bytes=limit)
    kept = _constant_only(plan)
    assert kept and {layer.op for layer in kept} == {"ConstantOfShape"}
    held = sum(c.nbytes for c in plan.constants.values())
    assert held <= limit
    for layer in kept:
        spec = plan.tensors[layer.outputs[0]]
        assert held + itemsize(spec.dtype) * math.prod(spec.shape) > limit
    declined = {tuple(f["nodes"]): f["reason"] for f in ctx.log
                if f["rule"] == "fold_constants" and f["status"] == "declined"}
    assert declined and all("engine-size limit is 4194304 bytes (BuilderConfig.max_engine_bytes)" in r
                            for r in declined.values())


@pytest.mark.parametrize("value", [0, -1, "abc", [1], True, 1.5])
def test_engine_size_limit_validated(value):
    with pytest.raises(ResourceLimitError, match="BuilderConfig.max_engine_bytes must be a positive int"):
        wb.BuilderConfig(device="cpu", max_engine_bytes=value)
