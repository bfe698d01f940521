"""The static memory planner (builder/memory.py plan_memory) on hand-made plans, random DAGs and a real
model: tensors alive at the same time never share bytes, offsets are aligned, bytes are reused, tensors
of unknown size are reported instead of placed, graph outputs stay until the end, and the plan's arena
is what the report says."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench as wb
from tests.support.exporter_models import load_io, model_path
from workbench.builder.memory import ALIGN, plan_memory, tensor_bytes
from workbench.core.liveness import last_uses_of
from workbench.core.plan import Layer, Plan, Subgraph, TensorSpec


def make_plan(layers, sizes, outputs, inputs=("x",), dtype="float32"):
    """``layers``: [(name, [inputs], [outputs])]; ``sizes``: tensor -> element count (or a shape list,
    or None for no spec)."""
    tensors = {}
    for name, n in sizes.items():
        if n is not None:
            tensors[name] = TensorSpec(name, dtype, list(n) if isinstance(n, (list, tuple)) else [n])
    return Plan(inputs=[TensorSpec(i, dtype, [4]) for i in inputs],
                outputs=[TensorSpec(o, dtype, None) for o in outputs],
                layers=[Layer(name=n, op="Relu", inputs=list(i), outputs=list(o)) for n, i, o in layers],
                tensors=tensors)


def chain(n, elements=1024):
    """x -> L0 -> t0 -> L1 -> t1 ... -> t<n-1> (the graph output)."""
    layers = [(f"L{i}", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}"]) for i in range(n)]
    return make_plan(layers, {f"t{i}": elements for i in range(n)}, [f"t{n - 1}"])


def lifetimes(plan):
    """tensor -> (first layer, last layer) over the planned tensors."""
    last = last_uses_of(plan.layers, [o.name for o in plan.outputs])
    return {name: (i, last.get(name, i)) for i, layer in enumerate(plan.layers) for name in layer.outputs
            if name in plan.arena.offsets}


def collisions(plan) -> list[tuple[str, str]]:
    """Pairs of tensors alive at the same time whose byte ranges overlap."""
    life = lifetimes(plan)
    size = {n: tensor_bytes(plan.tensors[n]) for n in life}
    names = sorted(life)
    bad = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (sa, ea), (sb, eb) = life[a], life[b]
            if sa <= eb and sb <= ea:
                oa, ob = plan.arena.offsets[a], plan.arena.offsets[b]
                if oa < ob + size[b] and ob < oa + size[a]:
                    bad.append((a, b))
    return bad


def test_chain_reuses_bytes_two_buffers_suffice():
    plan = chain(6)
    report = plan_memory(plan)
    x = 1024 * 4
    assert report["naive_bytes"] == 6 * x and report["arena_bytes"] == 2 * x == plan.arena.bytes
    assert report["reuse_saving"] == 1 - 2 / 6
    assert len(set(plan.arena.offsets.values())) == 2  # every other tensor shares a buffer
    assert collisions(plan) == []
    plan.arena.offsets = dict.fromkeys(plan.arena.offsets, 0)  # the check itself sees neighbours collide
    assert ("t0", "t1") in collisions(plan) and ("t0", "t2") not in collisions(plan)


def test_offsets_are_aligned_and_sizes_rounded_up():
    plan = make_plan([("a", ["x"], ["s"]), ("b", ["s"], ["t"]), ("c", ["s", "t"], ["y"])], {"s": 1, "t": 3, "y": 70},
                     ["y"])
    report = plan_memory(plan)
    assert plan.arena.alignment == report["alignment"] == ALIGN
    assert all(o % ALIGN == 0 for o in plan.arena.offsets.values())
    # s, t and y are alive together: y's 280 bytes take two aligned slots, the 4- and 12-byte s and t
    # one whole slot each; the largest is placed first
    assert plan.arena.offsets == {"y": 0, "s": 2 * ALIGN, "t": 3 * ALIGN} and plan.arena.bytes == 4 * ALIGN
    assert collisions(plan) == []


def test_tensors_of_unknown_size_are_reported_not_placed():
    layers = [("a", ["x"], ["sym"]), ("b", ["sym"], ["nospec"]), ("c", ["nospec"], ["s"]), ("d", ["s"], ["y"])]
    plan = make_plan(layers, {"sym": ["batch", 4], "nospec": None, "s": [0, 4], "y": 8}, ["y"])
    report = plan_memory(plan)
    assert report["tensors_dynamic"] == ["sym", "nospec"]
    assert set(plan.arena.offsets) == {"s", "y"} and report["tensors_planned"] == 2
    assert report["offsets"] == plan.arena.offsets


def test_string_tensors_are_not_placed():
    plan = make_plan([("a", ["x"], ["y"])], {"y": 4}, ["y"], dtype="string")
    assert plan_memory(plan)["tensors_dynamic"] == ["y"] and plan.arena.offsets == {}


def test_a_graph_output_made_early_is_never_overwritten():
    layers = [("a", ["x"], ["early"])] + [(f"L{i}", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}"]) for i in range(5)]
    plan = make_plan(layers, {"early": 1024, **{f"t{i}": 1024 for i in range(5)}}, ["early", "t4"])
    plan_memory(plan)
    assert lifetimes(plan)["early"] == (0, len(plan.layers))
    start, size = plan.arena.offsets["early"], 4096
    for name, off in plan.arena.offsets.items():
        if name != "early":
            assert off + 4096 <= start or start + size <= off, name
    assert collisions(plan) == []


def test_a_tensor_captured_by_a_subgraph_lives_until_that_layer():
    body = Subgraph(inputs=[], outputs=[TensorSpec("r", "float32", [256])],
                    layers=[Layer(name="inner", op="Relu", inputs=["t"], outputs=["r"])])
    plan = make_plan([("a", ["x"], ["t"]), ("b", ["x"], ["u"]), ("c", ["u"], ["v"]), ("d", ["v"], ["y"])],
                     {"t": 256, "u": 256, "v": 256, "y": 256}, ["y"])
    plan.layers[3].op, plan.layers[3].attrs = "If", {"then_branch": body, "else_branch": body}
    plan_memory(plan)
    assert lifetimes(plan)["t"] == (0, 3)
    assert collisions(plan) == []


def test_empty_plan():
    plan = make_plan([], {}, [])
    report = plan_memory(plan)
    assert (plan.arena.bytes, plan.arena.offsets, report["naive_bytes"], report["reuse_saving"]) == (0, {}, 0, 0.0)


@st.composite
def dags(draw):
    """A random topologically ordered plan: each layer reads 1-3 earlier tensors (or the input)."""
    n = draw(st.integers(1, 14))
    names = ["x"]
    layers, sizes = [], {}
    for i in range(n):
        reads = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        outs = [f"t{i}"] + ([f"t{i}b"] if draw(st.booleans()) else [])
        for o in outs:
            sizes[o] = draw(st.integers(1, 3000))
        layers.append((f"L{i}", reads, outs))
        names += outs
    produced = names[1:]
    outputs = draw(st.lists(st.sampled_from(produced), min_size=1, max_size=3, unique=True))
    return make_plan(layers, sizes, outputs)


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(dags())
def test_random_plans_never_overlap_live_tensors(plan):
    report = plan_memory(plan)
    assert collisions(plan) == []
    assert all(o % ALIGN == 0 for o in plan.arena.offsets.values())
    assert report["peak_live_bytes"] <= plan.arena.bytes <= report["naive_bytes"]
    ends = [o + -(-tensor_bytes(plan.tensors[n]) // ALIGN) * ALIGN for n, o in plan.arena.offsets.items()]
    assert plan.arena.bytes == max(ends)


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(dags())
def test_large_plans_placed_in_execution_order_never_overlap_live_tensors(plan):
    """Past BEST_FIT_LIMIT tensors the planner walks the layers with a free list; the same guarantees."""
    from workbench.builder import memory

    saved, memory.BEST_FIT_LIMIT = memory.BEST_FIT_LIMIT, 0
    try:
        report = plan_memory(plan)
    finally:
        memory.BEST_FIT_LIMIT = saved
    assert report["placement"].startswith("in execution order")
    assert collisions(plan) == []
    assert all(o % ALIGN == 0 for o in plan.arena.offsets.values())
    assert report["peak_live_bytes"] <= plan.arena.bytes <= report["naive_bytes"]


def test_execution_order_reuses_freed_blocks_and_merges_neighbours():
    """A chain needs two tensors alive at once: the arena is two tensors, whatever the length."""
    from workbench.builder import memory

    plan = chain(50)
    saved, memory.BEST_FIT_LIMIT = memory.BEST_FIT_LIMIT, 0
    try:
        plan_memory(plan)
    finally:
        memory.BEST_FIT_LIMIT = saved
    assert plan.arena.bytes == 2 * 4096 and collisions(plan) == []
    # three 1 KiB blocks freed side by side merge, so a 3 KiB tensor fits where they were
    layers = [("a", ["x"], ["p"]), ("b", ["x"], ["q"]), ("c", ["x"], ["r"]), ("d", ["x"], ["keep"]),
              ("e", ["p", "q", "r"], ["s"]), ("f", ["s", "keep"], ["big"])]
    plan = make_plan(layers, {"p": 256, "q": 256, "r": 256, "keep": 256, "s": 64, "big": 768}, ["big"])
    saved, memory.BEST_FIT_LIMIT = memory.BEST_FIT_LIMIT, 0
    try:
        plan_memory(plan)
    finally:
        memory.BEST_FIT_LIMIT = saved
    assert plan.arena.offsets["big"] == 0 and collisions(plan) == []


def test_real_model_plan():
    inputs, _ = load_io("resnet_legacy")
    engine = wb.build(wb.load_onnx(model_path("resnet_legacy")),
                      wb.BuilderConfig(device="cpu", shapes={k: v.shape for k, v in inputs.items()}))
    plan = engine.plan
    assert plan.arena.offsets and collisions(plan) == []
    assert all(o % plan.arena.alignment == 0 for o in plan.arena.offsets.values())
    assert engine.reports["memory"]["arena_bytes"] == plan.arena.bytes
    assert plan.arena.bytes < engine.reports["memory"]["naive_bytes"]  # reuse on a real network
    memory = engine.reports["memory"]
    assert np.isclose(memory["reuse_saving"], 1 - plan.arena.bytes / memory["naive_bytes"])
