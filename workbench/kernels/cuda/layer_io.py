"""Specs of a layer's inputs aligned with ``layer.inputs`` (``input_specs`` skips absent inputs)."""

from __future__ import annotations

from ...engine.plan import Layer, TensorSpec


def aligned_inputs(layer: Layer) -> list[TensorSpec | None]:
    specs = iter(layer.input_specs)
    return [next(specs, None) if name else None for name in layer.inputs]
