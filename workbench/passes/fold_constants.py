"""fold_constants: evaluate every node whose inputs are all known at build time.

Removes: Constant nodes, shape arithmetic over static shapes (Shape, Size, and whatever consumes
them: Gather, Concat, Unsqueeze, Cast, Reshape of constants...), and any other deterministic node
with only constant inputs. Evaluation uses the same NumPy reference kernels the CPU runtime runs,
so a folded value is exactly what the layer would have produced.

Keeps: random ops; nodes with subgraphs; nodes whose evaluation would exceed the memory budget
(``BuilderConfig.memory_budget``); and nodes whose results would push the constants the engine
holds past ``BuilderConfig.max_engine_bytes``. Otherwise constants of any size are folded (the
ConstantOfShape nodes that make the light_* models' weights become initializers, so Conv+BN and
the other weight fusions see constants). Every fold declined for a byte limit is in the fusion
log with its reason.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..dtypes import NAMES_BY_CODE, ONNX_CODES, from_numpy, itemsize, to_numpy
from ..errors import ResourceLimitError
from ..ir.attrs import has_subgraph, node_attrs
from ..ir.values import const, shape
from ..kernels.reference import KernelContext, get_kernel
from ..kernels.reference.limits import memory_budget

NON_DETERMINISTIC = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"}
)
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


def _predicted_bytes(node: ir.Node) -> int | None:
    """The outputs' size from their inferred shapes and types, None where one is unknown."""
    total = 0
    for out in node.outputs:
        dims = shape(out)
        if dims is None or out.type is None or not all(isinstance(d, int) for d in dims):
            return None
        name = NAMES_BY_CODE.get(int(out.type.dtype))
        if name is None:
            return None
        total += int(np.prod(dims, dtype=object)) * max(int(np.ceil(itemsize(name))), 1)
    return total


_UNKNOWN = object()


def evaluate(node: ir.Node, opsets: dict[str, int], max_bytes: int | None = None,
             why: list[str] | None = None, cache: dict | None = None,
             predicted: object = _UNKNOWN) -> list[np.ndarray] | None:
    """The node's outputs if they can be computed at build time, else None. Results over
    ``max_bytes`` (None: no cap) are folded only if no larger than the inputs. Nothing is evaluated
    whose outputs or inputs would exceed the memory budget in force: ``why`` receives the reason.
    ``cache`` (id(value) -> array) makes a constant read by many inputs or nodes one array.
    ``predicted``: the caller's ``_predicted_bytes(node)``, so a sweep computes it once per node."""
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
    budget = memory_budget()
    if budget is not None and predicted is _UNKNOWN:
        predicted = _predicted_bytes(node)
    if budget is not None and predicted is not None and predicted > budget:
        return _decline(why, f"its outputs would take {predicted} bytes; the memory budget is {budget} bytes")
    if any(v is not None and v.const_value is None for v in node.inputs):
        return None
    cache = {} if cache is None else cache
    inputs, seen, in_bytes = [], set(), 0
    for v in node.inputs:
        if v is None:
            inputs.append(None)
            continue
        if id(v) not in seen:  # one array per distinct value, however many times the node reads it
            seen.add(id(v))
            in_bytes += int(getattr(v.const_value, "nbytes", 0) or 0)
            if budget is not None and in_bytes > budget:
                return _decline(why, f"its constant inputs take over {budget} bytes (the memory budget)")
        hit = cache.get(id(v))
        if hit is None or hit[0] is not v:  # the value itself is kept, so an id is never reused
            hit = cache[id(v)] = (v, const(v))
        inputs.append(hit[1])
    kernel = get_kernel(node.domain, node.op_type)
    if kernel is None:
        return None
    opset = node.version or opsets.get(node.domain or "", 0)
    ctx = KernelContext(opset=opset, n_outputs=len(node.outputs), name=node.name or "")
    try:
        with np.errstate(all="ignore"):
            outs = list(kernel(ctx, inputs, node_attrs(node)))
    except (MemoryError, ResourceLimitError) as exc:
        return _decline(why, f"evaluating it ran out of memory ({str(exc).splitlines()[0][:160]})")
    except Exception:  # the layer will raise the same error at run time, with its name
        return None
    # some kernels hand back NumPy scalars for 0-d results; they are 0-d tensors all the same
    outs = [np.asarray(o) if isinstance(o, np.generic) else o for o in outs]
    if len(outs) < len(node.outputs) or not all(isinstance(o, np.ndarray) for o in outs[: len(node.outputs)]):
        return None  # sequences / optionals stay layers
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


def _decline(why: list[str] | None, reason: str) -> None:
    if why is not None:
        why.append(reason)
    return None


def _nbytes(value: ir.Value) -> int:
    return int(getattr(value.const_value, "nbytes", 0) or 0)


def _freed_bytes(node: ir.Node) -> int:
    """Bytes of the initializers only ``node`` reads: folding it leaves them dead (cleanup drops them)."""
    freed, seen = 0, set()
    for v in node.inputs:
        if v is None or id(v) in seen or not v.is_initializer() or v.is_graph_output():
            continue
        seen.add(id(v))
        if all(use.node is node for use in v.uses()):
            freed += _nbytes(v)
    return freed


def fold_constants(model: ir.Model, ctx) -> bool:
    """One sweep in topological order; returns whether anything was folded. A fold declined for
    the memory budget or the engine-size limit is logged with its reason (the node stays a layer)."""
    graph = model.graph
    opsets = dict(model.opset_imports)
    limit = getattr(ctx, "max_engine_bytes", None)
    held = sum(_nbytes(v) for v in graph.initializers.values())  # the constants the engine would hold
    changed = False
    cache: dict = {}
    budget = memory_budget()
    for node in list(graph):
        why: list[str] = []
        predicted = _predicted_bytes(node) if budget is not None or limit is not None else None
        if limit is not None and node.op_type != "Constant" and predicted is not None and held + predicted - _freed_bytes(node) > limit and predicted > _freed_bytes(node):
            ctx.declined("fold_constants", [node.name or node.op_type], _over_limit(predicted, held, limit))
            continue
        arrays = evaluate(node, opsets, None, why, cache, predicted)
        if arrays is None:
            if why:
                ctx.declined("fold_constants", [node.name or node.op_type], why[0])
            continue
        added, freed = sum(a.nbytes for a in arrays), _freed_bytes(node)
        # a Constant only moves data the model already holds into an initializer: always folded
        if limit is not None and node.op_type != "Constant" and added > freed and held + added - freed > limit:
            ctx.declined("fold_constants", [node.name or node.op_type], _over_limit(added, held, limit))
            continue
        replace_with_constants(graph, node, arrays)
        held += added - freed
        ctx.count("fold_constants", node)
        changed = True
    return changed


def _over_limit(added: int, held: int, limit: int) -> str:
    return (f"folding it adds {added} bytes of constants to the {held} the engine holds; "
            f"the engine-size limit is {limit} bytes (BuilderConfig.max_engine_bytes)")
