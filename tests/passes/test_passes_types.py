"""Every value a pass creates carries its dtype and, at static input shapes, a static shape (the GPU
build refuses anything less), and those specs are what the layers really produce."""

from __future__ import annotations

import numpy as np
import pytest

import workbench as wb
from tests.support.exporter_models import load_io, model_names, model_path, shapes_of
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


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "light_densenet121" else n for n in LIGHT])
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


def test_fused_op_shape_functions_agree_with_their_reference_kernels():
    """ops.fused: each fused op's shape function gives the dims and dtype that the reference kernel
    named as its semantics produces; symbolic dims pass through."""
    import json

    from workbench.kernels.reference import KernelContext, get_kernel
    from workbench.ops.fused import FUSED_OPS

    rng = np.random.default_rng(0)

    def f(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    prog = json.dumps([{"op": "Add", "args": ["in0", "in1"], "out": "t0", "dtype": "float32"},
                       {"op": "Cast", "args": ["t0"], "attrs": {"to": "float16"}, "out": "t1", "dtype": "float16"}])
    cases = {
        "FusedConv": ([f(2, 3, 9, 9), f(4, 3, 3, 3), f(4), f(2, 4, 5, 5)],
                      {"strides": [2, 2], "pads": [1, 1, 1, 1], "residual": 1, "activation": "Relu"}),
        "FusedGemm": ([f(2, 5, 3), f(4, 3), f(4)], {"transB": 1, "activation": "Gelu"}),
        "LayerNorm": ([f(2, 6), f(6)], {}),
        "SkipLayerNorm": ([f(2, 6), f(2, 6), f(6)], {}),
        "RMSNorm": ([f(2, 6), f(6)], {}),
        "Attention": ([f(2, 5, 8), f(2, 7, 8), f(2, 7, 8)],
                      {"num_heads": 2, "q_layout": "bsd", "k_layout": "bsd", "v_layout": "bsd", "out_layout": "bshd"}),
        "Pointwise": ([f(2, 3), f(3)], {"program": prog, "outputs": ["t1"]}),
    }
    assert set(cases) == set(FUSED_OPS)
    for op, (ins, attrs) in cases.items():
        schema = FUSED_OPS[op]
        kernel = get_kernel("workbench", op)
        assert kernel.__module__ == schema.semantics, op
        outs = kernel(KernelContext(n_outputs=max(1, len(schema.outputs))), ins, attrs)
        types = schema.shape([(str(x.dtype), x.shape) for x in ins], schema.with_defaults(attrs))
        assert [(dt, tuple(d)) for dt, d in types] == [(str(y.dtype), y.shape) for y in outs[:len(types)]], op
    conv = FUSED_OPS["FusedConv"]
    got = conv.shape([("float16", ("N", 3, 9, "W")), ("float16", (4, 3, 3, 3)), ("float16", (4,))],
                     conv.with_defaults({"pads": [1, 1, 1, 1]}))
    assert got == [("float16", ("N", 4, 9, None))]
