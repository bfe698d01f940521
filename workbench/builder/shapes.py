"""Fixing symbolic input dims from ``BuilderConfig.shapes`` before optimization."""

from __future__ import annotations

import math

import onnx_ir as ir

from ..errors import ShapeError


def apply_input_shapes(model: ir.Model, shapes: dict[str, tuple[int, ...]], max_elements: int | None = None) -> None:
    """Set the given inputs' shapes, checking names, ranks, fixed dims and symbol consistency.

    Intermediate shapes recorded by the exporter are cleared so that inference recomputes them
    from the now-fixed inputs (stale symbolic value_info would otherwise block folding)."""
    if not shapes:
        return
    graph = model.graph
    inits = set(graph.initializers)
    inputs = {v.name: v for v in graph.inputs if v.name not in inits}
    symbols: dict[str, tuple[int, str]] = {}
    for name, dims in shapes.items():
        if name not in inputs:
            raise ShapeError(f"--shapes names {name!r}, which is not an input; inputs are: {', '.join(inputs) or '(none)'}")
        value = inputs[name]
        declared = value.shape
        if declared is not None:
            if len(declared) != len(dims):
                raise ShapeError(f"input {name!r} has rank {len(declared)} ({_fmt(declared)}); --shapes gives {len(dims)} dims")
            for axis, (want, got) in enumerate(zip(declared, dims)):
                if isinstance(want, int):
                    if want != got:
                        raise ShapeError(f"input {name!r} axis {axis} is fixed at {want}; --shapes gives {got}")
                elif isinstance(want, ir.SymbolicDim) and want.value:
                    prev = symbols.get(want.value)
                    if prev is not None and prev[0] != got:
                        raise ShapeError(f"dim {want.value!r} is {prev[0]} for input {prev[1]!r} but {got} for {name!r}")
                    symbols[want.value] = (got, name)
        if max_elements is not None and math.prod(dims) > max_elements:
            raise ShapeError(f"input {name!r} shape {'x'.join(map(str, dims))} has {math.prod(dims)} elements, "
                             f"over the limit of {max_elements} (BuilderConfig.max_elements)")
        value.shape = ir.Shape(list(dims))
    # any other input using a symbol we now know gets it too
    for name, value in inputs.items():
        if name in shapes or value.shape is None:
            continue
        dims = [symbols[d.value][0] if isinstance(d, ir.SymbolicDim) and d.value in symbols else d for d in value.shape]
        value.shape = ir.Shape(dims)
    _clear_intermediate_shapes(graph)


def _clear_intermediate_shapes(graph: ir.Graph) -> None:
    outputs = set(id(v) for v in graph.outputs)
    for node in graph:
        for v in node.outputs:
            if id(v) not in outputs:
                v.shape = None
    for v in graph.outputs:  # keep rank/static dims of outputs, drop symbols
        if v.shape is not None and not all(isinstance(d, int) for d in v.shape):
            v.shape = None


def _fmt(shape) -> str:
    return "x".join(str(d) if isinstance(d, int) else (getattr(d, "value", None) or "?") for d in shape)


def apply_dim_values(model: ir.Model, values: dict[str, int]) -> None:
    """Give the named symbolic dims fixed values in every graph input, leaving the other dims
    symbolic (a shape range that fixes the sequence length at 128 for every batch size: the
    positions and masks that depend on it fold, and the plan keeps ``batch``). Graph outputs get the
    values where a dim is exactly one of the names; intermediate shapes are recomputed."""
    if not values:
        return
    graph = model.graph
    inits = set(graph.initializers)
    inputs = [v for v in graph.inputs if v.name not in inits]
    named = {d.value for v in inputs if v.shape is not None for d in v.shape if isinstance(d, ir.SymbolicDim) and d.value}
    for name, value in values.items():
        if name not in named:
            raise ShapeError(f"no input has a dim named {name!r}; the named dims are: {', '.join(sorted(named)) or '(none)'}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ShapeError(f"dim {name!r} must be a whole number >= 0, got {value!r}")

    def fixed(shape):
        return ir.Shape([values.get(d.value, d) if isinstance(d, ir.SymbolicDim) and d.value else d for d in shape])

    for v in inputs:
        if v.shape is not None:
            v.shape = fixed(v.shape)
    outputs = {id(v) for v in graph.outputs}
    for node in graph:
        for v in node.outputs:
            if id(v) not in outputs:
                v.shape = None
    for v in graph.outputs:
        if v.shape is not None:
            v.shape = fixed(v.shape)
