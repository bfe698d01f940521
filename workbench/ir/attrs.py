"""Node attributes, both directions: ``ir.Attr`` -> plain Python values (the form kernels and the
engine file use) and Python values -> ``ir.Attr`` (what rewrites and the network-definition API
create nodes with)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx_ir as ir

AT = ir.AttributeType


def tensor_to_numpy(t) -> np.ndarray:
    arr = t.numpy()
    if arr.dtype.kind in ("S", "O"):  # string tensors: object arrays of str
        flat = [x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else x for x in arr.reshape(-1)]
        arr = np.array(flat, dtype=object).reshape(arr.shape)
    return arr


def _sparse_to_dense(sp) -> np.ndarray:
    values = tensor_to_numpy(sp.values)
    indices = tensor_to_numpy(sp.indices).astype(np.int64)
    dims = list(sp.dims)
    dense = np.zeros(int(np.prod(dims)) if dims else 1, dtype=values.dtype)
    if indices.ndim == 2:  # [NNZ, rank] coordinates
        flat = np.ravel_multi_index(tuple(indices.T), dims)
    else:
        flat = indices
    dense[flat] = values
    return dense.reshape(dims)


def attr_value(attr: ir.Attr, lower_graph: Callable[[ir.Graph], Any] | None = None) -> Any:
    """One attribute's value; ``lower_graph`` converts GRAPH attributes (None: keep the ir.Graph)."""
    t = attr.type
    v = attr.value
    if t in (AT.FLOAT, AT.INT, AT.STRING):
        return v
    if t in (AT.FLOATS, AT.INTS, AT.STRINGS):
        return list(v)
    if t == AT.TENSOR:
        return tensor_to_numpy(v)
    if t == AT.TENSORS:
        return [tensor_to_numpy(x) for x in v]
    if t == AT.SPARSE_TENSOR:
        return _sparse_to_dense(v)
    if t == AT.SPARSE_TENSORS:
        return [_sparse_to_dense(x) for x in v]
    if t == AT.GRAPH:
        return lower_graph(v) if lower_graph else v
    if t == AT.GRAPHS:
        return [lower_graph(g) if lower_graph else g for g in v]
    if t in (AT.TYPE_PROTO, AT.TYPE_PROTOS):
        return str(v)
    return v


def node_attrs(node: ir.Node, lower_graph: Callable[[ir.Graph], Any] | None = None) -> dict[str, Any]:
    return {name: attr_value(a, lower_graph) for name, a in node.attributes.items() if not a.is_ref()}


def has_subgraph(node: ir.Node) -> bool:
    return any(a.type in (AT.GRAPH, AT.GRAPHS) for a in node.attributes.values())


def _plain(value):
    if isinstance(value, np.ndarray):
        return ir.tensor(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):  # ONNX has no bool attribute: flags are ints
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_attr(name: str, value: Any) -> ir.Attr:
    """``value`` as an attribute: int, float, str, lists of one of those, NumPy arrays and scalars,
    onnx-ir tensors and graphs (the type is the value's; an empty list is an empty INTS). Raises
    TypeError for a value no attribute type holds (e.g. a list mixing ints and floats)."""
    value = _plain(value)
    if isinstance(value, list) and not value:
        return ir.AttrInt64s(name, [])
    return ir.convenience.convert_attribute(name, value)
