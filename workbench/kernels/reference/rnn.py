"""Reference kernels: RNN, LSTM, GRU.

The input projection X W^T is one matmul over all time steps; only the recurrence loops over time
(each step depends on the last). Variable sequence lengths freeze a batch row's state after its last
step and zero its outputs; a reverse direction walks each row back from its own last step.
"""

from __future__ import annotations

import numpy as np

from ._base import KernelError


def _activation(name, alpha, beta):
    n = name.lower()
    if n == "relu":
        return lambda x: np.maximum(x, 0)
    if n == "tanh":
        return np.tanh
    if n == "sigmoid":
        return lambda x: 1 / (1 + np.exp(-x))
    if n == "affine":
        return lambda x: alpha * x + beta
    if n == "leakyrelu":
        return lambda x: np.where(x >= 0, x, alpha * x)
    if n == "thresholdedrelu":
        return lambda x: np.where(x > alpha, x, 0)
    if n == "scaledtanh":
        return lambda x: alpha * np.tanh(beta * x)
    if n == "hardsigmoid":
        return lambda x: np.clip(alpha * x + beta, 0, 1)
    if n == "elu":
        return lambda x: np.where(x >= 0, x, alpha * (np.exp(np.minimum(x, 0)) - 1))
    if n == "softsign":
        return lambda x: x / (1 + np.abs(x))
    if n == "softplus":
        return lambda x: np.log1p(np.exp(x))
    raise KernelError(f"unknown RNN activation {name!r}")


# (alpha, beta) defaults for activations that take parameters
_ACT_DEFAULTS = {"affine": (1.0, 0.0), "leakyrelu": (0.01, None), "thresholdedrelu": (1.0, None),
                 "scaledtanh": (1.0, 1.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, None)}


def _activations(attrs, defaults, n_dirs):
    names = list(attrs.get("activations") or defaults * n_dirs)
    alphas = list(attrs.get("activation_alpha") or [])
    betas = list(attrs.get("activation_beta") or [])
    fns = []
    for name in names:
        da, db = _ACT_DEFAULTS.get(name.lower(), (None, None))
        a = alphas.pop(0) if da is not None and alphas else da
        b = betas.pop(0) if db is not None and betas else db
        fns.append(_activation(name, a, b))
    per = len(defaults)
    if len(fns) < per * n_dirs:
        fns = fns * n_dirs
    return [fns[d * per:(d + 1) * per] for d in range(n_dirs)]


def _reverse_rows(x, lens):
    """Reverse each batch row of ``x`` [T, B, ...] within its own length (padding stays put)."""
    t = x.shape[0]
    steps = np.arange(t)[:, None]
    src = np.where(steps < lens[None, :], lens[None, :] - 1 - steps, steps)
    return x[src, np.arange(x.shape[1])[None, :]]


def _run(kind, ctx, inputs, attrs):
    x, w, r = inputs[0], inputs[1], inputs[2]
    get = lambda i: inputs[i] if len(inputs) > i else None  # noqa: E731
    b, lens, h0 = get(3), get(4), get(5)
    c0, peep = (get(6), get(7)) if kind == "LSTM" else (None, None)
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    defaults = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}[kind]
    layout = attrs.get("layout", 0)
    direction = attrs.get("direction", "forward")
    n_dirs = 2 if direction == "bidirectional" else 1
    hidden = attrs.get("hidden_size") or r.shape[-1]
    clip = attrs.get("clip")
    dt = x.dtype
    cd = dt if dt in (np.float32, np.float64) else np.float32
    if layout:
        x = x.transpose(1, 0, 2)
        h0 = None if h0 is None else h0.transpose(1, 0, 2)
        c0 = None if c0 is None else c0.transpose(1, 0, 2)
    seq, batch = x.shape[:2]
    lens = np.full(batch, seq, np.int64) if lens is None else lens.astype(np.int64)
    acts = _activations(attrs, defaults, n_dirs)
    xs = x.astype(cd)
    ys, hs, cs = [], [], []
    for d in range(n_dirs):
        reverse = direction == "reverse" or d == 1
        wd, rd = w[d].astype(cd), r[d].astype(cd)
        bd = np.zeros(2 * gates * hidden, cd) if b is None else b[d].astype(cd)
        wb, rb = bd[:gates * hidden], bd[gates * hidden:]
        xin = _reverse_rows(xs, lens) if reverse else xs
        proj = xin @ wd.T + wb  # [T, B, G*H]
        h = np.zeros((batch, hidden), cd) if h0 is None else h0[d].astype(cd)
        c = np.zeros((batch, hidden), cd) if c0 is None else c0[d].astype(cd)
        pd = np.zeros(3 * hidden, cd) if peep is None else peep[d].astype(cd)
        f = acts[d]
        out = np.zeros((seq, batch, hidden), cd)
        for t in range(seq):
            live = (t < lens)[:, None]
            xp = proj[t]
            if kind == "RNN":
                pre = xp + h @ rd.T + rb
                h_new = f[0](_clip(pre, clip))
                c_new = c
            elif kind == "GRU":
                h_new = _gru_step(xp, h, rd, rb, f, hidden, clip, attrs.get("linear_before_reset", 0))
                c_new = c
            else:
                h_new, c_new = _lstm_step(xp, h, c, rd, rb, pd, f, hidden, clip,
                                          attrs.get("input_forget", 0))
            h = np.where(live, h_new, h)
            c = np.where(live, c_new, c)
            out[t] = np.where(live, h_new, 0)
        if reverse:
            out = _reverse_rows(out, lens)
        ys.append(out)
        hs.append(h)
        cs.append(c)
    y = np.stack(ys, axis=1)  # [T, dirs, B, H]
    yh, yc = np.stack(hs), np.stack(cs)
    if layout:
        y = y.transpose(2, 0, 1, 3)
        yh, yc = yh.transpose(1, 0, 2), yc.transpose(1, 0, 2)
    return [y.astype(dt), yh.astype(dt), yc.astype(dt)]


def _clip(x, clip):
    return x if clip is None else np.clip(x, -clip, clip)


def _gru_step(xp, h, rd, rb, f, hidden, clip, lbr):
    hs = slice(2 * hidden, 3 * hidden)
    rz = xp[:, :2 * hidden] + h @ rd[:2 * hidden].T + rb[:2 * hidden]
    z = f[0](_clip(rz[:, :hidden], clip))
    rg = f[0](_clip(rz[:, hidden:], clip))
    if lbr:
        cand = xp[:, hs] + rg * (h @ rd[hs].T + rb[hs])
    else:
        cand = xp[:, hs] + (rg * h) @ rd[hs].T + rb[hs]
    hh = f[1](_clip(cand, clip))
    return (1 - z) * hh + z * h


def _lstm_step(xp, h, c, rd, rb, pd, f, hidden, clip, input_forget):
    g = xp + h @ rd.T + rb  # gate order i, o, f, c
    gi, go, gf, gc = (g[:, k * hidden:(k + 1) * hidden] for k in range(4))
    pi, po, pf = pd[:hidden], pd[hidden:2 * hidden], pd[2 * hidden:]
    i = f[0](_clip(gi + pi * c, clip))
    fg = 1 - i if input_forget else f[0](_clip(gf + pf * c, clip))
    cand = f[1](_clip(gc, clip))
    c_new = fg * c + i * cand
    o = f[0](_clip(go + po * c_new, clip))
    return o * f[2](c_new), c_new


KERNELS = {
    "RNN": lambda ctx, inputs, attrs: _run("RNN", ctx, inputs, attrs)[:2],
    "GRU": lambda ctx, inputs, attrs: _run("GRU", ctx, inputs, attrs)[:2],
    "LSTM": lambda ctx, inputs, attrs: _run("LSTM", ctx, inputs, attrs),
}
