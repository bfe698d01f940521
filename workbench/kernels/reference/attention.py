"""Reference kernels: Attention (opset 23-25), RotaryEmbedding, SwiGLU, LinearAttention,
CausalConvWithState and ai.onnx.preview FlexAttention.

Attention builds one additive bias [.., Lq, Lkv] from the mask, causal frontier, sliding window and
padding, then runs softmax(QK^T + bias) V batched over heads. Half-precision inputs are computed in
float32 and rounded at the outputs.
"""

from __future__ import annotations

import numpy as np

from workbench import dtypes

from ._base import KernelError

_NEG_INF = -np.inf


def _compute_dtype(dt):
    dt = np.dtype(dt)
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float32)


def _to_heads(x, n_heads):
    """[B, S, H*D] -> [B, H, S, D]."""
    b, s, hd = x.shape
    if not n_heads or hd % n_heads:
        raise KernelError(f"hidden size {hd} not divisible by num_heads {n_heads}")
    return x.reshape(b, s, n_heads, hd // n_heads).transpose(0, 2, 1, 3)


def _opt(inputs, i):
    return inputs[i] if len(inputs) > i else None


def _frontier(lq, lkv, offset, allowed_fn):
    """An additive 0/-inf bias where ``allowed_fn(diff)`` holds; diff = (i + offset) - j.
    ``offset`` is a scalar or a per-batch vector (result then [B, 1, Lq, Lkv])."""
    i = np.arange(lq).reshape(lq, 1)
    j = np.arange(lkv).reshape(1, lkv)
    if np.ndim(offset):
        diff = i + np.reshape(offset, (-1, 1, 1)) - j
        return np.where(allowed_fn(diff), 0.0, _NEG_INF)[:, None]
    return np.where(allowed_fn(i + int(offset) - j), 0.0, _NEG_INF)


def _attention_bias(attrs, mask, lq, lkv, past_len, nonpad, batch, cd):
    bias = np.zeros((lq, lkv), dtype=cd)
    if mask is not None:
        if mask.shape[-1] < lkv:
            # a mask shorter than the key sequence leaves the remaining keys masked out
            fill = False if mask.dtype == np.bool_ else _NEG_INF
            mask = np.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, lkv - mask.shape[-1])],
                          constant_values=fill)
        mask = np.where(mask, 0.0, _NEG_INF).astype(cd) if mask.dtype == np.bool_ else mask.astype(cd)
        bias = bias + mask
    # external cache: the frontier moves with each batch's valid length
    offset = (nonpad.reshape(-1).astype(np.int64) - lq) if (nonpad is not None and past_len == 0) \
        else past_len
    if attrs.get("is_causal", 0):
        bias = bias + _frontier(lq, lkv, offset, lambda d: d >= 0).astype(cd)
    left, right = attrs.get("left_window_size", -1), attrs.get("right_window_size", -1)
    if left >= 0 or right >= 0:
        def in_window(d):
            ok = np.ones(d.shape, dtype=bool)
            if left >= 0:
                ok &= d <= left
            if right >= 0:
                ok &= -d <= right
            return ok
        bias = bias + _frontier(lq, lkv, offset, in_window).astype(cd)
    if nonpad is not None:
        valid = np.arange(lkv)[None, :] < nonpad.reshape(-1, 1)
        bias = bias + np.where(valid, 0.0, _NEG_INF).astype(cd).reshape(batch, 1, 1, lkv)
    return bias


def masked_softmax(x, bias_rows_dead=None):
    """Softmax over the last axis; rows with every score -inf give zeros, not NaN."""
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(x, axis=-1, keepdims=True)
        dead = np.isneginf(m)
        e = np.exp(x - np.where(dead, 0, m))
        s = np.sum(e, axis=-1, keepdims=True)
        p = e / np.where(s == 0, 1, s)
    dead = dead if bias_rows_dead is None else (dead | bias_rows_dead)
    return np.where(dead, 0, p).astype(x.dtype)


def _attention(ctx, inputs, attrs):
    q, k, v = inputs[0], inputs[1], inputs[2]
    mask, past_k, past_v, nonpad = (_opt(inputs, i) for i in range(3, 7))
    out_dt = q.dtype
    three_d = q.ndim == 3
    if three_d:
        q = _to_heads(q, attrs.get("q_num_heads"))
        k = _to_heads(k, attrs.get("kv_num_heads"))
        v = _to_heads(v, attrs.get("kv_num_heads"))
    if (past_k is None) != (past_v is None):
        raise KernelError("Attention: past_key and past_value must be given together")
    present_k = k if past_k is None else np.concatenate([past_k, k], axis=2)
    present_v = v if past_v is None else np.concatenate([past_v, v], axis=2)
    # the spec computes Attention in the input precision, every step rounded to it; the node
    # tests for float16/bfloat16 pin that rounding, so the reference does the same
    cd = np.dtype(out_dt)
    batch, hq, lq, dh = q.shape
    hkv, lkv = present_k.shape[1], present_k.shape[2]
    if hq % hkv:
        raise KernelError(f"Attention: {hq} query heads not a multiple of {hkv} kv heads")
    scale = attrs.get("scale")
    scale = 1.0 / np.sqrt(dh) if scale is None else scale
    # the spec scales Q and K by sqrt(scale) each, which keeps half-precision products in range
    root = np.asarray(np.sqrt(scale), dtype=out_dt)
    qs = (q * root).astype(cd)
    ks = (present_k * root).astype(cd)
    vs = present_v.astype(cd)
    if hq != hkv:
        ks = np.repeat(ks, hq // hkv, axis=1)
        vs = np.repeat(vs, hq // hkv, axis=1)
    past_len = 0 if past_k is None else past_k.shape[2]
    bias = _attention_bias(attrs, mask, lq, lkv, past_len, nonpad, batch, cd)
    # (NumPy's bfloat16 matmul returns float32; round it back as the spec's MatMul would)
    qk = np.matmul(qs, np.swapaxes(ks, -1, -2)).astype(cd, copy=False)
    softcap = attrs.get("softcap", 0.0)
    if softcap and softcap > 0:
        qk = np.tanh(qk / cd.type(softcap)) * cd.type(softcap)
    with np.errstate(invalid="ignore"):
        qk_bias = qk + bias
    mode = attrs.get("qk_matmul_output_mode", 0)
    prec = attrs.get("softmax_precision")
    sm_dt = dtypes.to_numpy(dtypes.from_onnx_code(prec)) if prec else cd
    dead = np.isneginf(np.max(bias, axis=-1, keepdims=True))
    probs = masked_softmax(qk_bias.astype(sm_dt), dead).astype(cd)
    qk_out = {2: qk_bias, 3: probs}.get(mode, qk)
    y = np.matmul(probs, vs).astype(cd, copy=False)
    if three_d:
        y = y.transpose(0, 2, 1, 3).reshape(batch, lq, -1)
    return [y.astype(out_dt), present_k, present_v, qk_out.astype(out_dt)]


def _rotary(ctx, inputs, attrs):
    x, cos, sin = inputs[0], inputs[1], inputs[2]
    pos = _opt(inputs, 3)
    shape = x.shape
    if x.ndim == 4:
        xs = x.transpose(0, 2, 1, 3)  # [B, S, H, D]
    else:
        n_heads = attrs.get("num_heads", 0)
        if not n_heads:
            raise KernelError("RotaryEmbedding on 3-D input needs num_heads")
        xs = x.reshape(shape[0], shape[1], n_heads, -1)
    cd = _compute_dtype(x.dtype)
    xs = xs.astype(cd)
    rot = attrs.get("rotary_embedding_dim", 0) or xs.shape[-1]
    half = rot // 2
    if pos is not None:
        cos, sin = cos[pos], sin[pos]  # [B, S, rot/2]
    if cos.shape[-1] != half:
        raise KernelError(f"cos/sin cache last dim {cos.shape[-1]} != rotary dim / 2 = {half}")
    c = cos.astype(cd)[:, :, None, :]
    s = sin.astype(cd)[:, :, None, :]
    xr = xs[..., :rot]
    if attrs.get("interleaved", 0):
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
    else:
        x1, x2 = xr[..., :half], xr[..., half:]
    real, imag = c * x1 - s * x2, s * x1 + c * x2
    if attrs.get("interleaved", 0):
        rotated = np.stack([real, imag], axis=-1).reshape(xr.shape)
    else:
        rotated = np.concatenate([real, imag], axis=-1)
    out = np.concatenate([rotated, xs[..., rot:]], axis=-1)
    out = out.transpose(0, 2, 1, 3) if x.ndim == 4 else out.reshape(shape)
    return [out.astype(x.dtype)]


def _swiglu(ctx, inputs, attrs):
    a, b = inputs[0], inputs[1]
    if a.shape != b.shape:
        raise KernelError(f"SwiGLU inputs must have equal shapes, got {a.shape} and {b.shape}")
    cd = _compute_dtype(a.dtype)
    aw = a.astype(cd)
    alpha = cd.type(attrs.get("alpha", 1.0))
    with np.errstate(over="ignore"):
        swish = aw / (1 + np.exp(-alpha * aw))
    return [(swish * b.astype(cd)).astype(a.dtype)]


def _linear_attention(ctx, inputs, attrs):
    q, k, v = inputs[0], inputs[1], inputs[2]
    past, decay, beta = _opt(inputs, 3), _opt(inputs, 4), _opt(inputs, 5)
    rule = attrs.get("update_rule", "gated_delta")
    hq, hkv = attrs.get("q_num_heads"), attrs.get("kv_num_heads")
    if not hq or not hkv or hq % hkv:
        raise KernelError(f"LinearAttention: bad head counts q={hq} kv={hkv}")
    gating, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    if rule not in ("linear", "gated", "delta", "gated_delta"):
        raise KernelError(f"LinearAttention: unknown update_rule {rule!r}")
    if gating != (decay is not None) or delta != (beta is not None):
        raise KernelError(f"LinearAttention: update_rule {rule!r} does not match decay/beta inputs")
    f32 = np.float32
    b, t, _ = q.shape
    q4, k4, v4 = (_to_heads(x, h).astype(f32) for x, h in ((q, hq), (k, hkv), (v, hkv)))
    dk, dv = q4.shape[-1], v4.shape[-1]
    if gating:
        g4 = decay.reshape(b, t, hkv, -1).transpose(0, 2, 1, 3).astype(f32)  # [B,H,T,1|dk]
        g4 = np.exp(g4)
    if delta:
        b4 = beta.reshape(b, t, beta.shape[-1], 1).transpose(0, 2, 1, 3).astype(f32)
    state = np.zeros((b, hkv, dk, dv), f32) if past is None else past.astype(f32)
    scale = attrs.get("scale", 0.0) or 1.0 / np.sqrt(dk)
    group = hq // hkv
    out = np.empty((b, hq, t, dv), f32)
    # a recurrence: the state after step i feeds step i+1, so time is the one loop
    for i in range(t):
        kt, vt = k4[:, :, i], v4[:, :, i]
        if gating:
            state = state * g4[:, :, i][..., None]
        if delta:
            vt = b4[:, :, i] * (vt - np.einsum("bhdm,bhd->bhm", state, kt))
        state = state + kt[..., :, None] * vt[..., None, :]
        read = state if group == 1 else np.repeat(state, group, axis=1)
        out[:, :, i] = f32(scale) * np.einsum("bhd,bhdm->bhm", q4[:, :, i], read)
    y = out.transpose(0, 2, 1, 3).reshape(b, t, hq * dv).astype(q.dtype)
    return [y, state.astype(q.dtype if past is None else past.dtype)]


def _causal_conv_with_state(ctx, inputs, attrs):
    x, w = inputs[0], inputs[1]
    bias, past = _opt(inputs, 2), _opt(inputs, 3)
    act = attrs.get("activation", "none")
    if act not in ("none", "silu", "swish"):
        raise KernelError(f"CausalConvWithState: unknown activation {act!r}")
    if x.ndim != 3 or w.ndim != 3:
        raise KernelError("CausalConvWithState wants input [B, C, L] and weight [C, 1, K]")
    n, c, length = x.shape
    kk = w.shape[2]
    cd = _compute_dtype(x.dtype)
    pad = np.zeros((n, c, kk - 1), dtype=x.dtype) if past is None else past
    padded = np.concatenate([pad, x], axis=2)
    # depthwise: y[b, c, t] = sum_j w[c, 0, j] * padded[b, c, t + j]
    win = np.lib.stride_tricks.sliding_window_view(padded.astype(cd), kk, axis=2)[:, :, :length]
    y = np.einsum("bctk,ck->bct", win, w[:, 0].astype(cd))
    if bias is not None:
        y = y + bias.astype(cd)[None, :, None]
    y = y.astype(x.dtype)
    if act in ("silu", "swish"):
        yw = y.astype(np.float32)
        y = (yw / (1 + np.exp(-yw))).astype(x.dtype)
    return [y, padded[:, :, padded.shape[2] - (kk - 1):]]


def _flex_attention(ctx, inputs, attrs):
    q, k, v = inputs[0], inputs[1], inputs[2]
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise KernelError("FlexAttention wants rank-4 Q, K, V")
    hq, hkv, dh = q.shape[1], k.shape[1], q.shape[3]
    if hq % hkv:
        raise KernelError(f"FlexAttention: {hq} query heads not a multiple of {hkv}")
    if hq != hkv:
        k = np.repeat(k, hq // hkv, axis=1)
        v = np.repeat(v, hq // hkv, axis=1)
    scale = attrs.get("scale")
    scale = 1.0 / np.sqrt(dh) if scale is None else scale
    root = np.asarray(np.sqrt(np.float32(scale)), dtype=q.dtype)
    mm = _compute_dtype(q.dtype)
    scores = np.matmul((q * root).astype(mm), np.swapaxes((k * root).astype(mm), -1, -2))
    prec = attrs.get("softmax_precision")
    cd = dtypes.to_numpy(dtypes.from_onnx_code(prec)) if prec else _compute_dtype(q.dtype)
    scores = scores.astype(q.dtype).astype(cd)
    for name in ("score_mod",):
        if name in attrs:
            scores = np.asarray(_run_mod(ctx, attrs[name], scores), dtype=cd)
    m = np.max(scores, axis=-1, keepdims=True)
    e = np.exp(scores - m)
    probs = e / np.sum(e, axis=-1, keepdims=True)
    if "prob_mod" in attrs:
        probs = np.asarray(_run_mod(ctx, attrs["prob_mod"], probs), dtype=cd)
    return [np.matmul(probs, v.astype(cd)).astype(v.dtype)]


def _run_mod(ctx, graph, value):
    if ctx.run_subgraph is None:
        raise KernelError("FlexAttention score_mod/prob_mod needs a runtime that runs subgraphs")
    outs = ctx.run_subgraph(graph, [value])
    if len(outs) != 1:
        raise KernelError("FlexAttention modifier graph must have exactly one output")
    return outs[0]


KERNELS = {
    "Attention": _attention,
    "RotaryEmbedding": _rotary,
    "SwiGLU": _swiglu,
    "LinearAttention": _linear_attention,
    "CausalConvWithState": _causal_conv_with_state,
    "ai.onnx.preview::FlexAttention": _flex_attention,
}
