"""Reference kernels: If, Loop, Scan.

Bodies run through ``ctx.run_subgraph(subgraph, inputs) -> outputs``, which the runtime provides
(it also resolves names the body reads from enclosing scopes). Scan outputs are collected per
iteration and stacked once at the end. Loop and Scan stop with a ResourceLimitError past the
iteration cap in force (limits.element_cap, max_loop_iterations).
"""

from __future__ import annotations

import numpy as np

from ._base import KernelError
from .limits import check_iterations
from .tensor import norm_axis


def _run(ctx, graph, args, what: str) -> list:
    if ctx.run_subgraph is None:
        raise KernelError(f"{what}: no subgraph runner in this context")
    return list(ctx.run_subgraph(graph, args))


def _scalar_bool(v, what: str) -> bool:
    a = np.asarray(v)
    if a.size != 1:
        raise KernelError(f"{what}: condition must have one element, got shape {list(a.shape)}")
    return bool(a.reshape(-1)[0])


def if_(ctx, inputs, attrs):
    branch = attrs["then_branch"] if _scalar_bool(inputs[0], "If") else attrs["else_branch"]
    return _run(ctx, branch, [], "If")


def _stack(items: list, what: str) -> np.ndarray:
    if not items:
        return np.zeros((0,), dtype=np.float32)  # element type is not known without an iteration
    try:
        return np.stack(items)
    except ValueError as e:
        raise KernelError(f"{what}: scan outputs change shape between iterations ({e})") from None


def loop(ctx, inputs, attrs):
    body = attrs["body"]
    trip = inputs[0] if inputs and inputs[0] is not None else None
    cond = inputs[1] if len(inputs) > 1 and inputs[1] is not None else None
    carried = list(inputs[2:])
    n_scan = ctx.n_outputs - len(carried)
    if trip is None and cond is None:
        raise KernelError("Loop: neither a trip count nor a condition is given, the loop never ends")
    max_trip = None if trip is None else int(np.asarray(trip).reshape(-1)[0])
    keep_going = True if cond is None else _scalar_bool(cond, "Loop")
    scans: list[list] = [[] for _ in range(n_scan)]
    i = 0
    while keep_going and (max_trip is None or i < max_trip):
        check_iterations(i + 1, f"Loop {ctx.name!r}")  # a 2^62 trip count or a never-false condition
        args = [np.array(i, dtype=np.int64), np.array(keep_going)] + carried
        out = _run(ctx, body, args, "Loop")
        if len(out) != 1 + len(carried) + n_scan:
            raise KernelError(f"Loop: body returned {len(out)} values, expected {1 + len(carried) + n_scan}")
        # without a cond input the body's cond output is computed but ignored (spec)
        keep_going = _scalar_bool(out[0], "Loop") if cond is not None else True
        carried = out[1: 1 + len(carried)]
        for k in range(n_scan):
            scans[k].append(out[1 + len(carried) + k])
        i += 1
    return carried + [_stack(s, "Loop") for s in scans]


def _scan_core(ctx, body, states, xs, attrs, n_out, in_axes, in_dirs, out_axes, out_dirs):
    """One Scan-9 style pass: xs already have their scan axis, states no batch dim."""
    length = xs[0].shape[in_axes[0]] if xs else 0
    for x, a in zip(xs, in_axes):
        if x.shape[a] != length:
            raise KernelError(f"Scan: scan inputs differ in length ({x.shape[a]} vs {length})")
    check_iterations(length, f"Scan {ctx.name!r}")
    n_scan_out = n_out - len(states)
    outs: list[list] = [[] for _ in range(n_scan_out)]
    for t in range(length):
        slices = [np.take(x, length - 1 - t if d else t, axis=a) for x, a, d in zip(xs, in_axes, in_dirs)]
        res = _run(ctx, body, list(states) + slices, "Scan")
        states = res[: len(states)]
        for k in range(n_scan_out):
            outs[k].append(res[len(states) + k])
    stacked = []
    for k, items in enumerate(outs):
        if out_dirs[k]:
            items = items[::-1]
        s = _stack(items, "Scan")
        stacked.append(np.moveaxis(s, 0, norm_axis(out_axes[k], s.ndim, "Scan")) if items else s)
    return list(states) + stacked


def scan(ctx, inputs, attrs):
    body = attrs["body"]
    m = int(attrs["num_scan_inputs"])
    if ctx.opset < 9:  # Scan-8: leading optional sequence_lens and a batch axis on everything
        return _scan8(ctx, body, inputs, attrs, m)
    n_state = len(inputs) - m
    states, xs = inputs[:n_state], inputs[n_state:]
    n_scan_out = ctx.n_outputs - n_state
    in_axes = [norm_axis(a, x.ndim, "Scan") for a, x in zip(attrs.get("scan_input_axes", [0] * m), xs)]
    in_dirs = attrs.get("scan_input_directions", [0] * m)
    out_axes = attrs.get("scan_output_axes", [0] * n_scan_out)
    out_dirs = attrs.get("scan_output_directions", [0] * n_scan_out)
    return _scan_core(ctx, body, states, xs, attrs, ctx.n_outputs, in_axes, in_dirs, out_axes, out_dirs)


def _scan8(ctx, body, inputs, attrs, m):
    lens = inputs[0]
    rest = inputs[1:]
    n_state = len(rest) - m
    states, xs = rest[:n_state], rest[n_state:]
    batch = (states[0] if states else xs[0]).shape[0]
    dirs = attrs.get("directions", [0] * m)
    per_batch = []
    for b in range(batch):
        steps = xs[0].shape[1] if lens is None else int(np.asarray(lens).reshape(-1)[b])
        bx = [x[b, :steps] for x in xs]
        n_scan_out = ctx.n_outputs - n_state
        res = _scan_core(ctx, body, [s[b] for s in states], bx, attrs, ctx.n_outputs,
                         [0] * m, dirs, [0] * n_scan_out, [0] * n_scan_out)
        full = xs[0].shape[1]
        for k in range(n_state, len(res)):  # pad short sequences' scan outputs with zeros
            if res[k].shape[0] < full:
                pad = [(0, full - res[k].shape[0])] + [(0, 0)] * (res[k].ndim - 1)
                res[k] = np.pad(res[k], pad)
        per_batch.append(res)
    return [np.stack([r[k] for r in per_batch]) for k in range(ctx.n_outputs)]


KERNELS = {"If": if_, "Loop": loop, "Scan": scan}
