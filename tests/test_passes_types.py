"""Every value a pass creates carries its dtype and, at static input shapes, a static shape (the GPU
build refuses anything less), and those specs are what the layers really produce."""

from __future__ import annotations

import numpy as np
import pytest

import workbench as wb
from tests.exporter_models import load_io, model_names, model_path, shapes_of
from workbench.demo import embedded_model_path, reference_io

LIGHT = ["light_bvlc_alexnet", "light_densenet121", "light_inception_v1", "light_inception_v2", "light_resnet50",
         "light_shufflenet", "light_squeezenet", "light_vgg19", "light_zfnet512"]


def untyped(plan) -> list[str]:
    bad = [f"tensor {n}: {s.dtype} {s.shape}" for n, s in plan.tensors.items() if s.dtype is None or not s.is_static]
    for layer in plan.layers:
        for s in layer.input_specs + layer.output_specs:
            if s.dtype is None or not s.is_static:
                bad.append(f"{layer.name} ({layer.op}): {s.name} {s.dtype} {s.shape}")
    return bad


def run_checking_specs(engine, feeds) -> list[str]:
    """Run on the CPU executor with every layer's outputs compared to its output_specs."""
    ctx = engine.create_context()
    ex, wrong = ctx._exec, []

    def wrap(kernel, layer):
        def run(kctx, args, attrs):
            outs = kernel(kctx, args, attrs)
            for spec, val in zip(layer.output_specs, outs):
                if isinstance(val, np.ndarray) and (list(val.shape) != list(spec.shape) or str(val.dtype) != spec.dtype):
                    wrong.append(f"{layer.name} ({layer.op}): {spec.name} is {val.dtype}{list(val.shape)}, "
                                 f"spec says {spec.dtype}{spec.shape}")
            return outs
        return run

    ex.kernels = [wrap(k, layer) for k, layer in zip(ex.kernels, ex.layers)]
    ctx.run(feeds)
    return wrong


@pytest.mark.parametrize("name", LIGHT)
def test_light_model_plan_is_fully_typed(name):
    path = embedded_model_path(name)
    engine = wb.build(wb.load_onnx(path), wb.BuilderConfig(device="cpu"))
    assert not untyped(engine.plan)
    if name in ("light_resnet50", "light_densenet121", "light_inception_v2"):
        feeds, _ = reference_io(path)
        assert not run_checking_specs(engine, feeds)


@pytest.mark.parametrize("name", model_names())
def test_exporter_model_plan_is_fully_typed(name):
    inputs, _ = load_io(name)
    engine = wb.build(wb.load_onnx(model_path(name)), wb.BuilderConfig(device="cpu", shapes=shapes_of(inputs)))
    assert not untyped(engine.plan)
    assert not run_checking_specs(engine, inputs)
