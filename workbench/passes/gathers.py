"""gather_positions: a Gather / GatherND that reads a tensor at its own positions is a Reshape.

HF's mask code picks the padding mask's entries with index arithmetic over ``Range`` positions:
``GatherND(mask, stack(b_idx, kv_idx))`` (dynamo), ``Gather(Flatten(mask), b_idx * seq + kv_idx)``
(legacy). Such indices visit the data in row-major order, one output axis per data axis, every
other axis of length 1: the result is the data itself, reshaped. At static shapes the index is a
constant (``positions.fit_affine`` reads it back as the same form); with symbolic dims it is
position arithmetic (``positions.affine``); both become one Reshape, so neither keeps the index
computation nor the gather.

Invariant (exactness): the rewrite is taken only when, for every shape, output element
``[.., i_a0, .., i_a1, .., rest]`` is ``x[i_a0, i_a1, .., rest]``: each data axis k is walked by one
index axis a_k (increasing with k) over its whole length with the row-major stride of k, offset 0.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..ir.symdims import equal, known, product, sdims
from ..ir.values import attr, const, producer
from ..rewrite.engine import Match, Rule
from .fold_shapes import reshape_target
from .positions import Affine, affine, fit_affine


def _form(v: ir.Value) -> Affine | None:
    """``v`` as positions: position arithmetic, or a constant that equals it."""
    c = const(v)
    return fit_affine(c) if c is not None else affine(v)


def _components(idx: ir.Value, k: int) -> list[Affine] | None:
    """The ``k`` index components of a GatherND index [..., k], each over idx's leading axes."""
    c = const(idx)
    if c is not None:
        return [fit_affine(c[..., j]) for j in range(k)] if c.shape[-1] == k else None
    cat = producer(idx, "Concat")
    parts = list(cat.inputs) if cat is not None and attr(cat, "axis", 0) in (-1, len(sdims(idx) or ()) - 1) else [idx]
    out = []
    for part in parts:
        d = sdims(part)
        if not known(d) or d[-1] != 1:
            return None
        form = _form(part)
        if form is None or any(ax == -1 for ax, _ in form.coeffs):
            return None
        # drop the trailing axis of 1: the same coordinates over idx's leading axes
        out.append(Affine(tuple((ax + 1, c) for ax, c in form.coeffs), tuple((ax + 1, n) for ax, n in form.lengths),
                          form.offset))
    return out if len(out) == k else None


def _walks_rows(form: Affine, rows: tuple, idx_dims: tuple) -> list[int] | None:
    """The index axis that walks each of ``rows`` (row-major, whole length), in order, or None.
    A row of length 1 needs no axis."""
    coeffs, lengths = form.coeff(), dict(form.lengths)
    if not equal(form.offset, 0):
        return None
    axes, used = [], set()
    for k, n in enumerate(rows):
        if equal(n, 1):
            continue
        stride = product(rows[k + 1:])
        hit = [ax for ax, c in coeffs.items() if equal(c, stride) and ax not in used]
        if len(hit) != 1 or not equal(lengths[hit[0]], n) or -hit[0] > len(idx_dims) or not equal(idx_dims[hit[0]], n):
            return None
        ax = hit[0]
        used.add(ax)
        axes.append(ax)
    if used != set(coeffs) or axes != sorted(axes):
        return None
    return axes


class GatherPositions(Rule):
    """Gather(Flatten(x) or x, positions) / GatherND(x, stacked positions) reading x in order -> Reshape(x)."""

    name = "gather_positions"
    ops = ("Gather", "GatherND")

    def pattern(self, root):
        data, idx = root.inputs[0], root.inputs[1]
        dd, idd, out = sdims(data), sdims(idx), sdims(root.outputs[0])
        if not (known(dd) and known(idd) and known(out)) or not idd:
            return None
        if root.op_type == "GatherND":
            k = idd[-1]
            if attr(root, "batch_dims", 0) or not isinstance(k, int) or k > len(dd):
                return None
            comps = _components(idx, k)
            if comps is None:
                return None
            axes = []
            for j, form in enumerate(comps):
                got = _walks_rows(form, (dd[j],), idd[:-1])
                if got is None:
                    return None
                axes += got
            if axes != sorted(axes) or len(set(axes)) != len(axes):
                return None
            x, used = data, axes
            lead = idd[:-1]
        else:
            if attr(root, "axis", 0) not in (0, -len(dd)):
                return None
            flat = producer(data, "Flatten")
            x = flat.inputs[0] if flat is not None else data
            xd = sdims(x)
            if not known(xd):
                return None
            t = attr(flat, "axis", 1) if flat is not None else 1
            t = t + len(xd) if t < 0 else t
            form = _form(idx)
            used = _walks_rows(form, tuple(xd[:t]), idd) if form is not None else None
            if used is None:
                return None
            lead = idd
        # every other index axis has length 1, so the output is x's elements in order
        if any(not (d == 1) for i, d in enumerate(lead) if i - len(lead) not in used):
            return None
        target = reshape_target(sdims(x), np.array(list(out) + [None], dtype=object)[:-1], 0)
        if target is None:
            return None
        nodes = [root] + ([producer(data, "Flatten")] if root.op_type == "Gather" and producer(data, "Flatten") is not None
                          and len(list(data.uses())) == 1 else [])
        return Match(root, nodes, b={"x": x, "target": target})

    def rewrite(self, m, emit):
        return [emit.op("Reshape", [m.b["x"], m.b["target"]], domain="")]


GATHER_RULES = [GatherPositions()]
