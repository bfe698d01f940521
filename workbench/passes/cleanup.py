"""Graph cleanup: dead nodes and initializers, shape inference to a fixed point with folding."""

from __future__ import annotations

import hashlib

import logging

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, TopologicalSortPass
from onnx_ir.passes.common._c_api_utils import call_onnx_api

from ..ir.attrs import has_subgraph
from ..ir.symdims import from_ir, is_unknown_name
from ..ir.symshapes import propagate
from ..rewrite.engine import apply
from .fold_constants import NON_DETERMINISTIC, fold_constants
from .fold_shapes import fold_shapes
from .simplify import RULES as SIMPLIFY_RULES


def remove_dead_code(model: ir.Model, ctx) -> bool:
    """Nodes whose outputs nobody reads, and unused initializers (graph signature kept)."""
    return RemoveUnusedNodesPass()(model).modified


def infer_shapes(model: ir.Model) -> None:
    """ONNX shape inference with data propagation (``_infer_onnx``), then symbolic inference
    (``ir.symshapes``: dims as expressions over the model's dim names, the contents of shape
    tensors); an ONNX inference failure leaves the ONNX part as it was."""
    _forget_made_up_dims(model.graph)
    _infer_onnx(model)
    propagate(model.graph)


def _forget_made_up_dims(graph: ir.Graph) -> None:
    """ONNX inference keeps the dims a value already has; a made-up ``unk__N`` of an earlier round
    (before a fold made the dim computable) would stay forever, so those become unknown first."""
    for node in graph:
        for v in node.outputs:
            if v.shape is not None and any(is_unknown_name(from_ir(d)) for d in v.shape):
                v.shape = ir.Shape([None if is_unknown_name(from_ir(d)) else d for d in v.shape])


def _infer_onnx(model: ir.Model) -> None:
    """ONNX shape inference: onnx-ir's ShapeInferencePass (non-strict, data propagation on) with a
    cheaper merge: that pass deserializes the whole inferred model into a second IR (nodes, attributes,
    subgraphs) only to read the types back, which took about as long as the inference itself. Here
    the inferred protos are walked beside the IR graphs they were serialized from, and each value
    defined in a graph takes the shape and element type that deserializing it would have given it
    (its graph input, initializer, value_info or graph output entry), set only where inference
    knows it and it differs, as the pass does."""
    logging.getLogger("onnx_ir").setLevel(logging.ERROR)
    try:
        inferred = call_onnx_api(_infer_model_proto, model)
    except Exception:  # noqa: BLE001 - as the pass: a model inference rejects is left unchanged
        return
    decoded: dict[bytes, tuple] = {}  # one decode per distinct TypeProto (a chain repeats one type)
    stack = [(model.graph, inferred.graph)]
    while stack:
        graph, proto = stack.pop()
        _merge_graph(graph, proto, decoded)
        for node, node_proto in zip(graph, proto.node):
            subs = {a.name: a for a in node_proto.attribute}
            for name, attr in node.attributes.items():
                sub = subs.get(name)
                if sub is None:
                    continue
                if attr.type == ir.AttributeType.GRAPH:
                    stack.append((attr.value, sub.g))
                elif attr.type == ir.AttributeType.GRAPHS:
                    stack.extend(zip(attr.value, sub.graphs))


SEPARATE_ABOVE = 256  # control-flow nodes in the main graph past which each is inferred on its own
_STAND_IN = "workbench.inferred_alone"  # the domain of their stand-ins, which ONNX does not know
_GRAPH_ATTRS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def _infer(proto: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=False, data_prop=True)


def _infer_model_proto(proto: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX inference of a serialized model. ONNX copies every value type of the enclosing graph into
    each subgraph it visits, so thousands of If/Loop/Scan nodes side by side cost time quadratic in
    their number. Past ``SEPARATE_ABOVE`` such nodes in the main graph it stays linear:

    1. the main graph is inferred with those nodes stood in for by an op ONNX does not know;
    2. each of them is inferred in a model of just that node, its inputs and the outer values its
       subgraphs read typed as step 1 found them;
    3. the main graph is inferred again with the stand-ins' outputs typed as step 2 found them, and
       the nodes, with their subgraphs as inferred in step 2, are put back.

    A node that reads another one's output directly sees the type step 2 found for it; one that reads
    it through ordinary nodes sees step 1's, so its subgraphs may keep a vaguer shape until the
    next inference of the build."""
    graph = proto.graph
    control = [i for i, n in enumerate(graph.node) if any(a.type in _GRAPH_ATTRS for a in n.attribute)]
    if len(control) <= SEPARATE_ABOVE:
        return _infer(proto)
    alone = {i: _alone_model(proto, graph.node[i]) for i in control}  # each holds the node's only copy
    for i in control:
        node = graph.node[i]
        kept = [a for a in node.attribute if a.type not in _GRAPH_ATTRS]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.domain = _STAND_IN
    proto.opset_import.add(domain=_STAND_IN, version=1)
    first = _infer(proto).graph
    types = {info.name: info.type for info in (*first.input, *first.value_info, *first.output)
             if info.type.HasField("tensor_type")}
    for t in first.initializer:
        types.setdefault(t.name, onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims)))
    inferred_alone = {}
    for i in control:  # in graph order: a node reading another's output sees the type just found
        mini, outer = alone[i]
        mini.graph.input.extend(onnx.helper.make_value_info(name, types[name]) for name in outer if name in types)
        try:
            inferred_alone[i] = _infer(mini).graph
        except Exception:  # noqa: BLE001 - left as it is, like a model inference rejects
            continue
        types.update({o.name: o.type for o in inferred_alone[i].output if o.type.HasField("tensor_type")})
    found = {o.name: o for g in inferred_alone.values() for o in g.output if o.type.HasField("tensor_type")}
    for info in graph.output:  # a graph output keeps its entry there, with the type found
        if info.name in found:
            info.type.CopyFrom(found.pop(info.name).type)
    kept_info = [info for info in graph.value_info if info.name not in found]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    graph.value_info.extend(found.values())
    inferred = _infer(proto)
    for i in control:  # the nodes as they were, with their subgraphs as inferred alone where ONNX could
        inferred.graph.node[i].CopyFrom((inferred_alone[i] if i in inferred_alone else alone[i][0].graph).node[0])
    return inferred


def _alone_model(model: onnx.ModelProto, node) -> tuple[onnx.ModelProto, list[str]]:
    """A model of ``node`` alone, without graph inputs yet, and the outer names it reads (its inputs
    and the values its subgraphs read but do not define), to be typed as graph inputs."""
    read, made = set(node.input), set()
    stack = [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    stack += [g for a in node.attribute if a.type == onnx.AttributeProto.GRAPHS for g in a.graphs]
    while stack:
        g = stack.pop()
        made.update(v.name for v in g.input)
        made.update(t.name for t in g.initializer)
        for n in g.node:
            read.update(n.input)
            made.update(n.output)
            stack += [a.g for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
            stack += [sg for a in n.attribute if a.type == onnx.AttributeProto.GRAPHS for sg in a.graphs]
        read.update(v.name for v in g.output)
    outputs = [onnx.ValueInfoProto(name=name) for name in node.output if name]
    mini = onnx.helper.make_model(onnx.helper.make_graph([node], "alone", [], outputs),
                                  opset_imports=list(model.opset_import), ir_version=model.ir_version)
    mini.functions.extend(model.functions)  # model-local functions the subgraphs may call
    return mini, sorted(name for name in read - made if name)


def _decode(type_proto, decoded: dict) -> tuple:
    key = type_proto.SerializeToString()
    hit = decoded.get(key)
    if hit is None:
        t = ir.serde.deserialize_type_proto_for_type(type_proto)
        hit = decoded[key] = (ir.serde.deserialize_type_proto_for_shape(type_proto), t.dtype if t is not None else None)
    return hit


def _merge_graph(graph: ir.Graph, proto, decoded: dict) -> None:
    """Shapes and dtypes of the values ``graph`` defines, from the inferred GraphProto serialized from it.
    Which entry wins follows onnx-ir's deserializer: a graph input's own entry; an initializer's
    tensor, then its value_info; a node output's value_info; a graph output's entry last."""
    found: dict[str, tuple] = {}
    inputs = {info.name: info for info in proto.input}
    value_info = {info.name: info for info in proto.value_info}
    for name, info in inputs.items():
        found[name] = _decode(info.type, decoded)
    for t in proto.initializer:
        if t.name and t.name not in inputs:
            info = value_info.get(t.name)
            found[t.name] = _decode(info.type, decoded) if info is not None else (
                ir.Shape(list(t.dims)), ir.DataType(t.data_type))
    for name, info in value_info.items():
        if name not in found:
            found[name] = _decode(info.type, decoded)
    for info in proto.output:
        found[info.name] = _decode(info.type, decoded)
    defined = [*graph.inputs, *graph.initializers.values()]
    defined += [v for node in graph for v in node.outputs]
    for value in defined:
        hit = found.get(value.name) if value.name else None
        if hit is None:
            continue
        shape, dtype = hit
        if shape is not None and value.shape != shape:
            value.shape = shape
        if dtype is not None and value.dtype != dtype:
            value.dtype = dtype


def toposort(model: ir.Model) -> None:
    TopologicalSortPass()(model)


def fold_to_fixed_point(model: ir.Model, ctx, max_rounds: int = 10) -> bool:
    """Alternate shape inference and constant folding until nothing changes: once input shapes are
    static, Shape -> Gather -> Concat -> Reshape chains collapse to constants round by round; with
    symbolic dims ``fold_shapes`` folds what they compute into constant Reshape / Expand targets.
    Leaves ``ctx.shapes_current`` True when the last thing done was an inference of the graph as it is."""
    changed_any = False
    for _ in range(max_rounds):
        infer_shapes(model)
        ctx.shapes_current = True
        folded = fold_constants(model, ctx)
        if not (fold_shapes(model, ctx) or folded):  # symbolic shape arithmetic (passes/fold_shapes.py)
            break
        ctx.shapes_current = False
        changed_any = True
    return changed_any


def simplify(model: ir.Model, ctx) -> bool:
    """The cleanup rules of ``simplify.RULES`` and constant folding, to a fixed point: removing a
    no-op Cast can expose a Reshape chain, a merged chain can expose a foldable constant."""
    changed = False
    for _ in range(10):
        remove_dead_code(model, ctx)  # dead readers would make live values look shared
        step = apply(model, ctx, SIMPLIFY_RULES)
        if step:
            ctx.shapes_current = False
            toposort(model)
            if ctx.enabled("fold_constants"):
                fold_to_fixed_point(model, ctx)
        changed |= step
        if not step:
            break
    return changed


_SMALL = 64  # constants up to this many elements are compared by value


def _input_key(v: ir.Value | None):
    if v is None:
        return None
    if v.const_value is not None and v.const_value.size <= _SMALL:
        arr = v.const_value.numpy()
        return ("c", str(arr.dtype), arr.shape, arr.tobytes())
    return id(v)


def _attr_key(attr: ir.Attr):
    """An attribute's identity by content: repr() of a large tensor elides its data, so tensors are
    keyed by dtype, shape and a digest of their bytes."""
    t = attr.type
    if t in (ir.AttributeType.TENSOR, ir.AttributeType.SPARSE_TENSOR):
        arr = attr.value.numpy() if t == ir.AttributeType.TENSOR else None
        if arr is None:
            return ("sparse", id(attr.value))
        return ("tensor", str(arr.dtype), arr.shape, hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest())
    if t in (ir.AttributeType.TENSORS, ir.AttributeType.SPARSE_TENSORS):
        return ("tensors", id(attr.value))  # rare: never merged
    return repr(attr.value)


def eliminate_common_subexpressions(model: ir.Model, ctx) -> bool:
    """Two nodes with the same op, attributes and inputs compute the same thing: keep the first.
    Random ops and nodes with subgraphs are never merged; graph outputs keep their producers."""
    graph = model.graph
    seen: dict = {}
    outputs = {id(v) for v in graph.outputs}
    changed = False
    for node in list(graph):
        if node.op_type in NON_DETERMINISTIC or has_subgraph(node) or any(id(o) in outputs for o in node.outputs):
            continue
        attrs = tuple(sorted((k, _attr_key(a)) for k, a in node.attributes.items()))
        key = (node.domain, node.op_type, node.version, tuple(_input_key(v) for v in node.inputs), attrs, len(node.outputs))
        first = seen.get(key)
        if first is None:
            seen[key] = node
            continue
        for old, new in zip(node.outputs, first.outputs):
            old.replace_all_uses_with(new)
        graph.remove(node, safe=True)
        ctx.count("eliminate_common_subexpressions")
        changed = True
    return changed
