"""Reference kernels: sequences (Python lists of arrays) and optionals (None or a value).

Every kernel returns a new list: a sequence value may be shared by several layers, so inserting or
erasing never touches the input list.
"""

from __future__ import annotations

import numpy as np

from ._base import KernelError
from .tensor import norm_axis


def _position(pos, length: int, what: str, allow_end: bool = False) -> int:
    p = int(np.asarray(pos).reshape(-1)[0])
    hi = length + 1 if allow_end else length
    if not -length <= p < hi:
        raise KernelError(f"{what}: position {p} out of range for a sequence of length {length}")
    return p + length if p < 0 else p


def _seq(v, what: str) -> list:
    if not isinstance(v, list):
        raise KernelError(f"{what}: expected a sequence, got {type(v).__name__}")
    return v


def sequence_empty(ctx, inputs, attrs):
    return [[]]


def sequence_construct(ctx, inputs, attrs):
    return [list(inputs)]


def sequence_insert(ctx, inputs, attrs):
    seq = list(_seq(inputs[0], "SequenceInsert"))
    pos = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    p = len(seq) if pos is None else _position(pos, len(seq), "SequenceInsert", allow_end=True)
    seq.insert(p, inputs[1])
    return [seq]


def sequence_at(ctx, inputs, attrs):
    seq = _seq(inputs[0], "SequenceAt")
    return [seq[_position(inputs[1], len(seq), "SequenceAt")]]


def sequence_erase(ctx, inputs, attrs):
    seq = list(_seq(inputs[0], "SequenceErase"))
    pos = inputs[1] if len(inputs) > 1 and inputs[1] is not None else -1
    del seq[_position(pos, len(seq), "SequenceErase")]
    return [seq]


def sequence_length(ctx, inputs, attrs):
    return [np.array(len(_seq(inputs[0], "SequenceLength")), dtype=np.int64)]


def split_to_sequence(ctx, inputs, attrs):
    x = inputs[0]
    split = inputs[1] if len(inputs) > 1 else None
    axis = norm_axis(attrs.get("axis", 0), x.ndim, "SplitToSequence")
    dim = x.shape[axis]
    if split is None:
        parts = np.split(x, dim, axis=axis) if dim else []
        if not int(attrs.get("keepdims", 1)):
            parts = [np.squeeze(p, axis=axis) for p in parts]
        return [[p.copy() for p in parts]]
    split = np.asarray(split).astype(np.int64)
    if split.ndim == 0:
        step = int(split)
        if step <= 0:
            raise KernelError(f"SplitToSequence: split size {step} must be positive")
        bounds = list(range(step, dim, step))
    else:
        if split.sum() != dim or (split < 0).any():
            raise KernelError(f"SplitToSequence: sizes {split.tolist()} do not sum to dim {dim}")
        bounds = np.cumsum(split)[:-1].tolist()
    return [[p.copy() for p in np.split(x, bounds, axis=axis)]]


def concat_from_sequence(ctx, inputs, attrs):
    seq = _seq(inputs[0], "ConcatFromSequence")
    if not seq:
        raise KernelError("ConcatFromSequence: empty sequence")
    if int(attrs.get("new_axis", 0)):
        axis = norm_axis(attrs["axis"], seq[0].ndim + 1, "ConcatFromSequence")
        return [np.stack(seq, axis=axis)]
    axis = norm_axis(attrs["axis"], seq[0].ndim, "ConcatFromSequence")
    return [np.concatenate(seq, axis=axis)]


def sequence_map(ctx, inputs, attrs):
    body = attrs["body"]
    n = len(_seq(inputs[0], "SequenceMap"))
    for extra in inputs[1:]:
        if isinstance(extra, list) and len(extra) != n:
            raise KernelError(f"SequenceMap: sequence inputs differ in length ({len(extra)} vs {n})")
    outs: list[list] = [[] for _ in range(ctx.n_outputs)]
    for i in range(n):
        args = [v[i] if isinstance(v, list) else v for v in inputs]
        for k, r in enumerate(ctx.run_subgraph(body, args)[: ctx.n_outputs]):
            outs[k].append(r)
    return outs


def optional(ctx, inputs, attrs):
    return [inputs[0] if inputs else None]


def optional_has_element(ctx, inputs, attrs):
    return [np.array(bool(inputs) and inputs[0] is not None)]


def optional_get_element(ctx, inputs, attrs):
    if not inputs or inputs[0] is None:
        raise KernelError("OptionalGetElement: the optional is empty")
    return [inputs[0]]


KERNELS = {
    "SequenceEmpty": sequence_empty,
    "SequenceConstruct": sequence_construct,
    "SequenceInsert": sequence_insert,
    "SequenceAt": sequence_at,
    "SequenceErase": sequence_erase,
    "SequenceLength": sequence_length,
    "SplitToSequence": split_to_sequence,
    "ConcatFromSequence": concat_from_sequence,
    "SequenceMap": sequence_map,
    "Optional": optional,
    "OptionalHasElement": optional_has_element,
    "OptionalGetElement": optional_get_element,
}
