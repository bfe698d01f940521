"""fold_constants: evaluate every node whose inputs are all known at build time.

Removes: Constant nodes, shape arithmetic over static shapes (Shape, Size, and whatever consumes
them: Gather, Concat, Unsqueeze, Cast, Reshape of constants...), and any other deterministic node
with only constant inputs. Evaluation uses the same NumPy reference kernels the CPU runtime runs,
so a folded value is exactly what the layer would have produced.

Keeps: random ops; nodes with subgraphs; and, in CPU builds, results that would be much larger
than their inputs (ConstantOfShape to a big shape stays a layer rather than bloating the engine
file). A GPU build (``PassContext.device == "gpu"``) lifts that size cap: its tactics pack and
upload weights once at build, so every constant-only node is evaluated here (e.g. the
ConstantOfShape nodes that make the light_* models' weights) instead of running on the device at
every inference.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..dtypes import NAMES_BY_CODE, ONNX_CODES, from_numpy, to_numpy
from ..ir.attrs import has_subgraph, node_attrs
from ..ir.values import const, shape
from ..kernels.reference import KernelContext, get_kernel

NON_DETERMINISTIC = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"}
)
MAX_FOLD_BYTES = 1 << 22  # results up to 4 MiB are always folded; larger only if no larger than the inputs


def size_cap(device: str) -> int | None:
    """The fold size cap of a build for ``device`` (None: no cap; see the module doc)."""
    return None if device == "gpu" else MAX_FOLD_BYTES


def _shape_op(node: ir.Node) -> list[np.ndarray] | None:
    """Shape / Size of a value whose shape is static, even if the value itself is not constant."""
    dims = shape(node.inputs[0]) if node.inputs else None
    if dims is None:
        return None
    if node.op_type == "Size":
        return [np.array(int(np.prod(dims)), dtype=np.int64)]
    rank = len(dims)
    start = node.attributes.get("start")
    end = node.attributes.get("end")
    s = start.as_int() if start is not None else 0
    e = end.as_int() if end is not None else rank
    s = min(max(s + rank if s < 0 else s, 0), rank)
    e = min(max(e + rank if e < 0 else e, 0), rank)
    return [np.array(dims[s:e], dtype=np.int64)]


def _cast_like(node: ir.Node) -> list[np.ndarray] | None:
    """CastLike only needs the target's element type, which is known even when its data is not."""
    src, like = const(node.inputs[0]), node.inputs[1]
    if src is None or like.type is None:
        return None
    name = NAMES_BY_CODE.get(int(like.type.dtype))
    if name is None or name == "string":
        return None
    return [np.asarray(src).astype(to_numpy(name))]


def evaluate(node: ir.Node, opsets: dict[str, int], max_bytes: int | None = MAX_FOLD_BYTES) -> list[np.ndarray] | None:
    """The node's outputs if they can be computed at build time, else None. Results over
    ``max_bytes`` (None: no cap) are folded only if no larger than the inputs."""
    if node.op_type in NON_DETERMINISTIC or has_subgraph(node):
        return None
    if node.domain in ("", "ai.onnx") and node.op_type in ("Shape", "Size"):
        got = _shape_op(node)
        if got is not None:
            return got
    if node.op_type == "CastLike" and len(node.inputs) == 2 and node.inputs[1] is not None:
        got = _cast_like(node)
        if got is not None:
            return got
    inputs = []
    for v in node.inputs:
        if v is None:
            inputs.append(None)
            continue
        arr = const(v)
        if arr is None:
            return None
        inputs.append(arr)
    kernel = get_kernel(node.domain, node.op_type)
    if kernel is None:
        return None
    opset = node.version or opsets.get(node.domain or "", 0)
    ctx = KernelContext(opset=opset, n_outputs=len(node.outputs), name=node.name or "")
    try:
        with np.errstate(all="ignore"):
            outs = list(kernel(ctx, inputs, node_attrs(node)))
    except Exception:  # the layer will raise the same error at run time, with its name
        return None
    # some kernels hand back NumPy scalars for 0-d results; they are 0-d tensors all the same
    outs = [np.asarray(o) if isinstance(o, np.generic) else o for o in outs]
    if len(outs) < len(node.outputs) or not all(isinstance(o, np.ndarray) for o in outs[: len(node.outputs)]):
        return None  # sequences / optionals stay layers
    in_bytes = sum(a.nbytes for a in inputs if a is not None)
    if max_bytes is not None and node.op_type != "Constant" and sum(o.nbytes for o in outs) > max(max_bytes, in_bytes):
        return None  # (a Constant only moves data the model already holds: always folded)
    return outs[: len(node.outputs)]


def replace_with_constants(graph: ir.Graph, node: ir.Node, arrays: list[np.ndarray]) -> None:
    for out, arr in zip(node.outputs, arrays):
        if not out.name:
            continue
        name = out.name
        out.name = f"{name}__folded"
        tensor = ir.tensor(arr) if arr.dtype != object else ir.StringTensor(
            np.array([s.encode("utf-8") for s in arr.reshape(-1)], dtype=object), shape=ir.Shape(arr.shape))
        new = ir.Value(name=name, const_value=tensor, shape=ir.Shape(arr.shape),
                       type=ir.TensorType(ir.DataType(ONNX_CODES[from_numpy(arr.dtype)])))
        graph.register_initializer(new)
        out.replace_all_uses_with(new, replace_graph_outputs=True)
    graph.remove(node, safe=True)


def fold_constants(model: ir.Model, ctx) -> bool:
    """One sweep in topological order; returns whether anything was folded."""
    graph = model.graph
    opsets = dict(model.opset_imports)
    cap = size_cap(ctx.device)
    changed = False
    for node in list(graph):
        arrays = evaluate(node, opsets, cap)
        if arrays is None:
            continue
        replace_with_constants(graph, node, arrays)
        ctx.count("fold_constants", node)
        changed = True
    return changed
