"""The contract every NumPy reference kernel keeps.

A kernel is a function ``kernel(ctx, inputs, attrs) -> list of outputs``:

* ``inputs``: one entry per node input, in order. A tensor is a ``numpy.ndarray`` (0-d for
  scalars; bfloat16 / float8 / int4 through ml_dtypes), a sequence is a Python ``list`` of arrays,
  an absent optional input (empty name) or an empty optional value is ``None``.
* ``attrs``: only the attributes the node sets, as plain values (int, float, str, list of int /
  float / str, ndarray for tensor attributes, list of ndarray, :class:`~workbench.core.plan.Subgraph`
  for graph attributes). Kernels apply the ONNX defaults themselves (``attrs.get("axis", 1)``).
* ``ctx``: a :class:`KernelContext` giving the op's opset version (behaviour that changed between
  opsets keys on it), how many outputs the node declares, and a way to run subgraphs.
* return: a list (or tuple) with the node's outputs in order; it may be longer than ``ctx.n_outputs``
  (extra entries are dropped). Output dtypes follow the ONNX spec exactly: a kernel never lets NumPy
  promote float32 to float64 or int32 to int64.

Kernels never mutate their inputs (the runtime may hand the same array to several layers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np


@dataclass
class KernelContext:
    opset: int = 0
    n_outputs: int = 1
    # run_subgraph(subgraph, inputs) -> list of outputs; set by the runtime
    run_subgraph: Callable[[Any, Sequence[Any]], list] | None = None
    # dtype names the builder inferred for the outputs (None where unknown)
    output_dtypes: list[str | None] = field(default_factory=list)
    # seeded generator for random ops without a seed attribute
    rng: np.random.Generator | None = None
    name: str = ""


Kernel = Callable[[KernelContext, list, dict], "list | tuple"]


class KernelError(ValueError):
    """A kernel was given inputs or attributes it cannot execute (message names the problem)."""
