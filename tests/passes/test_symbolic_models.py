"""The exporter test models built with their dims left symbolic optimize as their static builds do,
and run correctly at any shape.

* Every fusion that fires on the data path of the static build fires in the symbolic build, per rule
  (fusion passes exactly; the cleanup rules of ``simplify`` in total, since with symbolic dims some
  chains simplify in another order), and the data-path layers are the same ops with the same
  attributes (causal attention included).
* What the symbolic build has beyond that is the layers that compute values from input *shapes*
  only (positions, the mask's index arithmetic, rotary tables, a broadcast CLS token): a static
  build folds exactly those into constants.
* The symbolic engine matches onnxruntime at several batch sizes and sequence lengths (inputs as
  tests/models/README.md describes them).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_ir as ir
import pytest

import workbench as wb
from tests.support.exporter_models import entry, model_names, model_path
from workbench.builder.config import parse_shapes
from workbench.core.numerics import rel_err, tolerance
from workbench.passes import simplify

NAMES = model_names()
TEXT = ("bert", "gpt2", "llama")
CLEANUP = {r.name for r in simplify.RULES}
_BUILDS: dict = {}


def _builds(name):
    if name not in _BUILDS:
        net = wb.load_onnx(model_path(name))
        static = wb.build(net, wb.BuilderConfig(device="cpu", shapes=parse_shapes(entry(name)["shapes"])))
        dynamic = wb.build(net, wb.BuilderConfig(device="cpu"))
        _BUILDS[name] = (static, dynamic, _shape_only_nodes(model_path(name)))
    return _BUILDS[name]


def _shape_only_nodes(path) -> set[str]:
    """Names of the ONNX nodes whose outputs depend on input shapes only (Shape, Size, and nodes
    reading nothing else or constants): what a static build folds away."""
    model = ir.load(path)
    derived = {id(v) for v in model.graph.initializers.values()}
    names = set()
    for node in model.graph:
        ins = [v for v in node.inputs if v is not None]
        if node.op_type in ("Shape", "Size") or all(id(v) in derived for v in ins):
            derived.update(id(o) for o in node.outputs)
            names.add(node.name)
    return names


def shape_only_layers(engine) -> set[str]:
    """Layers computing from shapes only: Shape/Size, or reading nothing but constants and such layers."""
    derived, out = set(engine.plan.constants), set()
    for layer in engine.layers:
        ins = [i for i in layer.inputs if i]
        if layer.op in ("Shape", "Size") or all(i in derived for i in ins):
            derived.update(layer.outputs)
            out.add(layer.name)
    return out


def _fired_on_data_path(engine, shape_only: set[str]) -> Counter:
    return Counter(f["rule"] for f in engine.reports["fusions"]
                   if f["status"] == "fired" and not all(n in shape_only for n in f["nodes"]))


def _signature(layer) -> tuple:
    scalars = {k: v for k, v in layer.attrs.items() if isinstance(v, (int, float, str)) and k != "program"}
    return layer.op, tuple(sorted(scalars.items()))


@pytest.mark.parametrize("name", NAMES)
def test_symbolic_build_fuses_as_the_static_build(name):
    static, dynamic, shape_only = _builds(name)
    want, got = _fired_on_data_path(static, shape_only), _fired_on_data_path(dynamic, shape_only)
    for rule in sorted(set(want) | set(got)):
        if rule not in CLEANUP:
            assert got[rule] == want[rule], f"{name}: {rule} fired {got[rule]} times symbolic, {want[rule]} static"
    assert sum(got[r] for r in CLEANUP) == sum(want[r] for r in CLEANUP), name
    assert sum(want.values()) > 0


@pytest.mark.parametrize("name", NAMES)
def test_symbolic_layers_are_the_static_layers_plus_shape_computations(name):
    static, dynamic, _ = _builds(name)
    extra = shape_only_layers(dynamic)
    data_path = Counter(_signature(l) for l in dynamic.layers if l.name not in extra)
    assert data_path == Counter(_signature(l) for l in static.layers)
    assert not shape_only_layers(static)
    if entry(name)["family"] not in TEXT + ("vit",):  # CNNs: batch is the only dynamic dim, nothing is left
        assert not extra and len(dynamic.layers) == len(static.layers)
    # the dims stay expressions over the model's names, never made-up ones
    dims = {str(d) for l in dynamic.layers for s in l.output_specs for d in (s.shape or []) if isinstance(d, str)}
    assert not any(d.startswith("unk__") for d in dims), dims


@pytest.mark.parametrize("name", [n for n in NAMES if entry(n)["family"] in TEXT])
def test_causal_and_padding_masks_are_recognised(name):
    _, dynamic, _ = _builds(name)
    att = [l for l in dynamic.layers if l.op == "Attention"]
    assert len(att) == 2
    causal = entry(name)["family"] != "bert"
    assert all(a.attrs["causal"] == int(causal) for a in att)


# ---- numerics at several shapes -----------------------------------------------------------------
TEXT_SHAPES = [(1, 1), (1, 7), (2, 16), (3, 5), (4, 33), (2, 64)]  # (batch, sequence); 64 = max positions
IMAGE_BATCHES = [1, 2, 3, 5, 8]


def feeds_for(m: dict, batch: int, seq: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs as tests/models/README.md makes them, at any batch and sequence length."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in m["inputs"]:
        name = spec["name"]
        if name == "input_ids":
            feeds[name] = rng.integers(0, 100, size=(batch, seq), dtype=np.int64)
        elif name == "attention_mask":  # row 0 full; later rows padded at the end
            mask = np.ones((batch, seq), np.int64)
            for b in range(1, batch):
                mask[b, seq - min(seq - 1, 3 * b):] = 0
            feeds[name] = mask
        elif name == "token_type_ids":
            t = np.zeros((batch, seq), np.int64)
            t[:, seq // 2:] = 1
            feeds[name] = t
        elif name == "pixel_values":
            feeds[name] = rng.standard_normal((batch, *spec["shape"][1:])).astype(np.float32)
        else:
            raise KeyError(name)
    return feeds


@pytest.mark.parametrize("name", NAMES)
def test_symbolic_engine_matches_onnxruntime_at_many_shapes(name):
    ort = pytest.importorskip("onnxruntime")
    m = entry(name)
    _, dynamic, _ = _builds(name)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model_path(name), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    shapes = TEXT_SHAPES if m["family"] in TEXT else [(b, None) for b in IMAGE_BATCHES]
    ctx = dynamic.create_context()
    for batch, seq in shapes:
        feeds = feeds_for(m, batch, seq, seed=batch * 100 + (seq or 0))
        want = dict(zip(names, sess.run(None, feeds)))
        got = ctx.run(feeds)
        for key, ref in want.items():
            assert got[key].shape == ref.shape, (name, key, batch, seq)
            assert rel_err(got[key], ref) < tolerance("float32"), (name, key, batch, seq, rel_err(got[key], ref))


@pytest.mark.parametrize("name", [n for n in NAMES if entry(n)["family"] in TEXT])
def test_fixed_sequence_with_symbolic_batch_builds_the_static_plan(name):
    """A range that fixes the sequence length (batch 1..N at sequence 16): with that one dim given
    (``builder.shapes.apply_dim_values``), the plan is the static build's, layer for layer, and runs
    at any batch."""
    ort = pytest.importorskip("onnxruntime")
    from workbench.builder.shapes import apply_dim_values

    static, _, _ = _builds(name)
    model = ir.load(model_path(name))
    apply_dim_values(model, {"sequence": 16})
    engine = wb.build(wb.load_onnx(ir.to_proto(model)), wb.BuilderConfig(device="cpu"))
    assert [_signature(l) for l in engine.layers] == [_signature(l) for l in static.layers]
    assert {s.shape[0] for s in engine.inputs} == {"batch"}
    sess = ort.InferenceSession(model_path(name), providers=["CPUExecutionProvider"])
    ctx = engine.create_context()
    for batch in IMAGE_BATCHES:
        feeds = feeds_for(entry(name), batch, 16, seed=batch)
        want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        got = ctx.run(feeds)
        for key, ref in want.items():
            assert rel_err(got[key], ref) < tolerance("float32"), (name, key, batch)
