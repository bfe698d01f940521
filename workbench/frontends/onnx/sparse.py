"""Sparse initializers become dense initializers at load, under the memory budget.

Later stages know only dense constants; a sparse initializer left in place would make the built
engine read a value no layer produces. The dense bytes of all of them together are checked against
the budget before anything is allocated, and every index is checked against the shape, so a file
cannot make this write outside the tensor or allocate without bound.
"""

from __future__ import annotations

import numpy as np
from onnx import AttributeProto, GraphProto, ModelProto, numpy_helper
from onnx.helper import tensor_dtype_to_np_dtype

from ...core.budget import over_budget
from ...errors import ModelLoadError
from .proto_checks import _q


def _subgraphs(nodes):
    for node in nodes:
        for a in node.attribute:
            if a.type == AttributeProto.GRAPH:
                yield a.g
            elif a.type == AttributeProto.GRAPHS:
                yield from a.graphs


def _graphs(model: ModelProto):
    """Every graph of the model and of its function bodies (nesting is bounded by safe_read)."""
    stack: list[GraphProto] = [model.graph]
    for fn in model.functions:
        stack.extend(_subgraphs(fn.node))
    while stack:
        g = stack.pop()
        yield g
        stack.extend(_subgraphs(g.node))


def has_sparse(model: ModelProto) -> bool:
    return any(len(g.sparse_initializer) for g in _graphs(model))


def densify_sparse_initializers(model: ModelProto, budget: int) -> None:
    """Replace every sparse initializer of `model` (modified in place) by a dense one."""
    graphs = [g for g in _graphs(model) if len(g.sparse_initializer)]
    total = 0
    for g in graphs:
        for s in g.sparse_initializer:
            n = int(np.prod(s.dims, dtype=object)) if len(s.dims) else 1  # dims are capped by safe_read
            try:
                itemsize = np.dtype(tensor_dtype_to_np_dtype(s.values.data_type)).itemsize
            except Exception:  # a type NumPy has no dtype for
                raise ModelLoadError(f"sparse initializer {_q(s.values.name)}: its data type cannot be densified") from None
            total += n * itemsize
    if total > budget:
        raise over_budget(total, budget, "densifying the sparse initializers")
    for g in graphs:
        for s in g.sparse_initializer:
            g.initializer.append(numpy_helper.from_array(_dense(s), s.values.name))
        del g.sparse_initializer[:]


def _dense(s) -> np.ndarray:
    label = f"sparse initializer {_q(s.values.name)}"
    dims = tuple(int(d) for d in s.dims)
    size = int(np.prod(dims, dtype=np.int64)) if dims else 1
    try:
        values = numpy_helper.to_array(s.values).reshape(-1)
        indices = numpy_helper.to_array(s.indices).astype(np.int64, copy=False)
    except Exception as e:  # onnx raises several types for a tensor it cannot convert
        raise ModelLoadError(f"{label}: cannot read its values or indices ({e})") from None
    if indices.ndim == 2:  # [nnz, rank] coordinates
        if indices.size and ((indices < 0).any() or (indices >= np.array(dims, dtype=np.int64)).any()):
            raise ModelLoadError(f"{label}: an index is outside its shape {list(dims)}")
        flat = np.ravel_multi_index(indices.T, dims) if indices.size else indices.reshape(-1)
    else:
        flat = indices.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= size):
            raise ModelLoadError(f"{label}: an index is outside its {size} elements")
    if len(np.unique(flat)) != flat.size:
        raise ModelLoadError(f"{label}: an index appears twice")
    dense = np.zeros(size, dtype=values.dtype)
    dense[flat] = values
    return dense.reshape(dims)
