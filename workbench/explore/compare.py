"""Engine A vs engine B, layer by layer, where the two fused the model differently.

Layers are matched through the ONNX nodes they cover: two layers belong together when they share
an ONNX node, so the matched *groups* are the connected components of "A's layer shares a node with
B's layer" (A's FusedConv(Conv, Relu) and B's Conv + Relu form one group; layers covering no ONNX
node, like the casts a GPU build inserts, are groups of one side only).

``compare(engine_a, engine_b, profile_a=None, profile_b=None)`` returns one row per group, in A's
plan order (groups of B's layers alone last): the layers, op types, precisions and tactics of each
side, median ms of each side (summed over the group's layers; profiles are taken when not given),
speed-up ms_a / ms_b, and the relative error (``core.numerics.rel_err``, L2) of B's values against
A's at the group's outputs -- the tensors the group hands to the rest of the graph, which both
engines name alike however they fused (``x/float16``, a value stored in another type, is ``x``) --
on the same inputs (column ``tensor``: the worst one). ``attrs``: end_to_end_a/b (ms).

To read those tensors each engine is run once with the group outputs added to its plan's outputs
(on the GPU the arena is planned again so that they stay live; channels-last tensors are read back
in their logical NCHW order), so every matched tensor of the model is held at once: ``error=False``
skips this on models too large for it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from ..core.numerics import host, rel_err
from ..core.plan import TensorSpec
from ..runtime.feeds import random_feeds
from ..runtime.profile import layer_rows


def _find(parent: dict, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def match_layers(engine_a, engine_b) -> list[dict]:
    """The groups: [{"a": [layer indices of A], "b": [of B], "nodes": [ONNX node names]}]."""
    parent: dict = {}

    def union(x, y):
        parent.setdefault(x, x)
        parent.setdefault(y, y)
        rx, ry = _find(parent, x), _find(parent, y)
        if rx != ry:
            parent[ry] = rx

    for side, engine in (("a", engine_a), ("b", engine_b)):
        for i, layer in enumerate(engine.layers):
            key = (side, i)
            parent.setdefault(key, key)
            for node in layer.onnx_nodes:
                union(key, ("node", node))
    groups: dict = {}
    order: list = []
    for side, engine in (("a", engine_a), ("b", engine_b)):
        for i, layer in enumerate(engine.layers):
            root = _find(parent, (side, i))
            if root not in groups:
                groups[root] = {"a": [], "b": [], "nodes": []}
                order.append(root)
            groups[root][side].append(i)
    for key in parent:
        if key[0] == "node":
            root = _find(parent, key)
            if root in groups:
                groups[root]["nodes"].append(key[1])
    return [groups[r] for r in order]


def value_name(tensor: str) -> str:
    """The value a tensor holds, whatever type it is stored in: a GPU build stores a value in
    another type under ``NAME/TYPE`` (the casts at precision boundaries, a graph output written in
    half precision before its cast), so ``x/float16`` and ``x`` are one value."""
    from ..dtypes import ONNX_CODES  # noqa: PLC0415

    base, sep, kind = tensor.rpartition("/")
    return base if sep and base and kind in ONNX_CODES else tensor


def group_outputs(engine, indices: list[int]) -> list[str]:
    """Tensors the group's layers produce that a layer outside it reads, or that are graph outputs."""
    inside = set(indices)
    produced = [o for i in indices for o in engine.layers[i].outputs if o]
    read_outside = {n for j, layer in enumerate(engine.layers) if j not in inside for n in layer.inputs if n}
    outputs = {s.name for s in engine.outputs}
    return [n for n in produced if n in read_outside or n in outputs]


def tensor_values(engine, feeds: dict, names: list[str]) -> dict[str, np.ndarray]:
    """The values of intermediate tensors ``names`` for ``feeds`` (NumPy, logical layout), from one
    run of ``engine`` with them added to its outputs."""
    from ..runtime.engine import Engine  # noqa: PLC0415

    plan = engine.plan
    specs, producer = {}, {}
    for layer in plan.layers:
        for k, spec in enumerate(layer.output_specs):
            specs[spec.name] = spec
        for k, name in enumerate(layer.outputs):
            if name:
                producer[name] = (layer, k)
    have = {s.name for s in plan.outputs}
    extra = [TensorSpec(n, specs[n].dtype, list(specs[n].shape) if specs[n].shape is not None else None)
             for n in dict.fromkeys(names) if n in specs and n not in have]
    wider = dataclasses.replace(plan, outputs=list(plan.outputs) + extra)
    if engine.backend == "gpu":
        from ..builder.memory import plan_memory  # noqa: PLC0415 - the arena must keep them live

        plan_memory(wider)
    probe = Engine(wider, engine.target, engine.build_info, {}, engine.blobs)
    outs = probe.create_context().run(feeds)
    values = {}
    for name in names:
        if name not in outs:
            continue
        v = host(outs[name])
        layer, k = producer.get(name, (None, 0))
        layouts = layer.attrs.get("out_layouts") if layer is not None else None
        if layouts and k < len(layouts) and layouts[k] == "nhwc" and v.ndim == 4:
            n, c, h, w = v.shape  # the bytes are N, H, W, C under a logical-shape view
            v = np.ascontiguousarray(v.reshape(n, h, w, c).transpose(0, 3, 1, 2))
        values[name] = np.array(v, copy=True)
    return values


def _join(values) -> str:
    return "/".join(dict.fromkeys(str(v) for v in values if v != ""))


def _ms(profile, engine) -> dict[str, float]:
    if profile is None:
        return {}
    rows = layer_rows(profile)
    return dict(zip(rows["layer"], rows["median_ms"].astype(float)))


def compare(engine_a, engine_b, profile_a=None, profile_b=None, *, feeds: dict | None = None, runs: int = 5,
            error: bool = True, time: bool = True) -> pd.DataFrame:
    """Engine A vs B per matched group of layers (see the module doc). ``feeds``: inputs for the
    profiles and the error (random ones of A's input shapes when not given); ``time=False`` or
    given profiles: no profiling here."""
    names_a = [s.name for s in engine_a.inputs]
    if sorted(names_a) != sorted(s.name for s in engine_b.inputs):
        from ..errors import WorkbenchError  # noqa: PLC0415

        raise WorkbenchError(f"the engines take different inputs ({', '.join(names_a)} vs "
                             f"{', '.join(s.name for s in engine_b.inputs)}): they are not builds of one model")
    feeds = feeds if feeds is not None else random_feeds(engine_a.inputs)
    if time and profile_a is None:
        profile_a = engine_a.create_context().profile(feeds, runs=runs)
    if time and profile_b is None:
        profile_b = engine_b.create_context().profile(feeds, runs=runs)
    ms_a, ms_b = _ms(profile_a, engine_a), _ms(profile_b, engine_b)
    groups = match_layers(engine_a, engine_b)
    shared = []  # per group: (value, tensor of A, tensor of B) for each value both hand on
    for g in groups:
        ob = {value_name(n): n for n in group_outputs(engine_b, g["b"])}
        shared.append([(value_name(n), n, ob[value_name(n)]) for n in group_outputs(engine_a, g["a"])
                       if value_name(n) in ob])
    values_a = values_b = {}
    if error:
        values_a = tensor_values(engine_a, feeds, [a for s in shared for _, a, _ in s])
        values_b = tensor_values(engine_b, feeds, [b for s in shared for _, _, b in s])
    rows = []
    for k, (g, common) in enumerate(zip(groups, shared)):
        la = [engine_a.layers[i] for i in g["a"]]
        lb = [engine_b.layers[i] for i in g["b"]]
        t_a = sum(ms_a.get(x.name, math.nan) for x in la) if la and ms_a else math.nan
        t_b = sum(ms_b.get(x.name, math.nan) for x in lb) if lb and ms_b else math.nan
        pairs = [(v, a, b) for v, a, b in common if a in values_a and b in values_b]
        errs = [rel_err(values_b[b], values_a[a]) for _, a, b in pairs]
        worst = max(errs) if errs else math.nan
        worst_name = pairs[errs.index(worst)][0] if errs else ""
        rows.append({
            "group": k, "layer": (la or lb)[0].name, "match": "both" if la and lb else ("a only" if la else "b only"),
            "onnx_nodes": len(g["nodes"]), "layers_a": len(la), "layers_b": len(lb),
            "type_a": "+".join(x.op for x in la), "type_b": "+".join(x.op for x in lb),
            "precision_a": _join(x.precision for x in la), "precision_b": _join(x.precision for x in lb),
            "tactic_a": _join(x.tactic for x in la), "tactic_b": _join(x.tactic for x in lb),
            "ms_a": t_a, "ms_b": t_b, "speedup": t_a / t_b if t_b and t_b == t_b and t_b > 0 else math.nan,
            "rel_err": worst, "tensor": worst_name,
            "layer_names_a": [x.name for x in la], "layer_names_b": [x.name for x in lb], "nodes": list(g["nodes"]),
        })
    df = pd.DataFrame(rows, columns=["group", "layer", "match", "onnx_nodes", "layers_a", "layers_b", "type_a",
                                     "type_b", "precision_a", "precision_b", "tactic_a", "tactic_b", "ms_a", "ms_b",
                                     "speedup", "rel_err", "tensor", "layer_names_a", "layer_names_b", "nodes"])
    df.attrs.update({
        "end_to_end_a": profile_a.attrs.get("end_to_end_ms") if profile_a is not None else math.nan,
        "end_to_end_b": profile_b.attrs.get("end_to_end_ms") if profile_b is not None else math.nan,
        "groups": len(df), "fused_differently": int(((df["layers_a"] != df["layers_b"]) & (df["match"] == "both")).sum()),
    })
    return df
