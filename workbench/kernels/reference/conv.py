"""Reference kernels: Conv, ConvTranspose, ConvInteger, QLinearConv, DeformConv, Col2Im.

Conv is an im2col: ``sliding_window_view`` exposes every receptive field without copying, one
transpose+reshape materialises the column matrix, and one batched matmul per call does all groups.
ConvTranspose and Col2Im are the adjoint: one matmul to columns, then a scatter-add whose Python
loop runs over kernel offsets (at most a few dozen), never over pixels.
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...ops.geometry import conv_geometry, window_attrs
from ._base import KernelError
from .linalg import acc_dtype


def windows(xp, kernel, strides, dilations, out_shape):
    """View [N, C, *out, *kernel] of the receptive fields of the padded input ``xp``."""
    nd = len(kernel)
    k_eff = [dilations[i] * (kernel[i] - 1) + 1 for i in range(nd)]
    v = sliding_window_view(xp, k_eff, axis=tuple(range(2, 2 + nd)))
    sl = (slice(None), slice(None))
    sl += tuple(slice(0, out_shape[i] * strides[i], strides[i]) for i in range(nd))
    sl += tuple(slice(None, None, dilations[i]) for i in range(nd))
    return v[sl]


def conv_nd(x, w, b, attrs, pad_value=0):
    """Forward convolution in ``x``'s dtype (``x``, ``w`` already in the accumulate dtype)."""
    if x.ndim < 3 or w.ndim != x.ndim:
        raise KernelError(f"Conv wants X rank >= 3 and W of equal rank, got {x.shape} and {w.shape}")
    group = attrs.get("group", 1)
    n, c = x.shape[:2]
    m = w.shape[0]
    kernel = list(attrs.get("kernel_shape") or w.shape[2:])
    if c != w.shape[1] * group or m % group:
        raise KernelError(f"Conv channels: X has {c}, W {w.shape} with group {group}")
    strides, dilations, pads = window_attrs(attrs, x.ndim - 2)
    begin, end, out_shape = conv_geometry(x.shape[2:], kernel, strides, dilations, pads,
                                          attrs.get("auto_pad", "NOTSET"))
    for i, o in enumerate(out_shape):
        if o <= 0:
            raise KernelError(f"convolution output dim {i} would be {o} (input {x.shape[2 + i]}, "
                              f"kernel {kernel[i]}, pads {begin[i]}+{end[i]})")
    nd = len(kernel)
    k_size = int(np.prod(kernel))
    p = int(np.prod(out_shape))
    if k_size == 1 and all(s == 1 for s in strides) and not any(begin) and not any(end):
        cols = x.reshape(n, c, p)  # 1x1 convolution: the input already is the column matrix
    else:
        if any(begin) or any(end):
            xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(begin, end)), constant_values=pad_value)
        else:
            xp = x
        v = windows(xp, kernel, strides, dilations, out_shape)
        order = (0, 1) + tuple(range(2 + nd, 2 + 2 * nd)) + tuple(range(2, 2 + nd))
        cols = v.transpose(order).reshape(n, c * k_size, p)
    cg = c // group
    w3 = w.reshape(group, m // group, cg * k_size)
    y = np.matmul(w3, cols.reshape(n, group, cg * k_size, p)).reshape(n, m, *out_shape)
    if b is not None:
        y = y + b.astype(y.dtype).reshape((1, m) + (1,) * nd)
    return y


def _conv(ctx, inputs, attrs):
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    acc = acc_dtype(x.dtype)
    y = conv_nd(x.astype(acc, copy=False), w.astype(acc, copy=False), b, attrs)
    return [np.asarray(y).astype(x.dtype, copy=False)]


def scatter_cols(cols, strides, dilations, buf_shape):
    """Adjoint of im2col: ``cols`` [N, C, *kernel, *inner] added into a zero [N, C, *buf_shape]."""
    nd = len(strides)
    n, c = cols.shape[:2]
    kernel = cols.shape[2:2 + nd]
    inner = cols.shape[2 + nd:]
    buf = np.zeros((n, c) + tuple(buf_shape), dtype=cols.dtype)
    for kk in itertools.product(*[range(k) for k in kernel]):
        dst = (slice(None), slice(None)) + tuple(
            slice(kk[i] * dilations[i], kk[i] * dilations[i] + (inner[i] - 1) * strides[i] + 1,
                  strides[i]) for i in range(nd))
        buf[dst] += cols[(slice(None), slice(None)) + kk]
    return buf


def _conv_transpose(ctx, inputs, attrs):
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    acc = acc_dtype(x.dtype)
    xa, wa = x.astype(acc, copy=False), w.astype(acc, copy=False)
    nd = x.ndim - 2
    group = attrs.get("group", 1)
    n, c = x.shape[:2]
    cg, mg = c // group, w.shape[1]
    kernel = list(attrs.get("kernel_shape") or w.shape[2:])
    strides = list(attrs.get("strides") or [1] * nd)
    dil = list(attrs.get("dilations") or [1] * nd)
    out_pad = list(attrs.get("output_padding") or [0] * nd)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    pads = attrs.get("pads")
    out_shape = attrs.get("output_shape")
    in_sp = x.shape[2:]
    full = [strides[i] * (in_sp[i] - 1) + out_pad[i] + (kernel[i] - 1) * dil[i] + 1
            for i in range(nd)]
    if pads is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = list(out_shape or [in_sp[i] * strides[i] for i in range(nd)])
        total = [full[i] - out_shape[i] for i in range(nd)]
        small = [t // 2 for t in total]
        if auto_pad == "SAME_UPPER":
            begin, end = small, [t - s for t, s in zip(total, small)]
        else:
            begin, end = [t - s for t, s in zip(total, small)], small
    else:
        pads = list(pads or [0] * (2 * nd))
        begin, end = pads[:nd], pads[nd:]
        if out_shape is None:
            out_shape = [full[i] - begin[i] - end[i] for i in range(nd)]
        out_shape = list(out_shape)[-nd:]
    # columns: [N, g, mg*K, P_in] = W^T [g, mg*K, cg] @ X [N, g, cg, P_in]
    k_size = int(np.prod(kernel))
    wt = wa.reshape(group, cg, mg * k_size).transpose(0, 2, 1)
    cols = np.matmul(wt, xa.reshape(n, group, cg, -1))
    cols = cols.reshape((n, group * mg) + tuple(kernel) + tuple(in_sp))
    buf_shape = [max(full[i], begin[i] + out_shape[i]) for i in range(nd)]
    buf = scatter_cols(cols, strides, dil, buf_shape)
    y = buf[(slice(None), slice(None)) + tuple(slice(begin[i], begin[i] + out_shape[i])
                                              for i in range(nd))]
    if b is not None:
        y = y + b.astype(acc).reshape((1, -1) + (1,) * nd)
    return [np.ascontiguousarray(y).astype(x.dtype, copy=False)]


def _col2im(ctx, inputs, attrs):
    data, image_shape, block_shape = inputs[0], list(inputs[1]), list(inputs[2])
    nd = len(image_shape)
    strides = list(attrs.get("strides") or [1] * nd)
    dil = list(attrs.get("dilations") or [1] * nd)
    pads = list(attrs.get("pads") or [0] * (2 * nd))
    n = data.shape[0]
    k_size = int(np.prod(block_shape))
    c = data.shape[1] // k_size
    blocks = [(image_shape[i] + pads[i] + pads[i + nd] - dil[i] * (block_shape[i] - 1) - 1)
              // strides[i] + 1 for i in range(nd)]
    if int(np.prod(blocks)) != data.shape[2]:
        raise KernelError(f"Col2Im: input has {data.shape[2]} blocks, geometry gives {blocks}")
    cols = data.reshape((n, c) + tuple(block_shape) + tuple(blocks))
    padded = [image_shape[i] + pads[i] + pads[i + nd] for i in range(nd)]
    buf = scatter_cols(cols, strides, dil, padded)
    y = buf[(slice(None), slice(None)) + tuple(slice(pads[i], pads[i] + image_shape[i])
                                              for i in range(nd))]
    return [np.ascontiguousarray(y)]


def _int_conv(x, w, x_zp, w_zp, attrs):
    """Integer convolution, exact: int8 products summed in float64 stay below 2**53."""
    xf = x.astype(np.float64) - (0 if x_zp is None else np.asarray(x_zp, np.float64))
    wf = w.astype(np.float64)
    if w_zp is not None:
        z = np.asarray(w_zp, np.float64)
        wf = wf - (z.reshape((-1,) + (1,) * (w.ndim - 1)) if z.size > 1 else z.reshape(()))
    return np.rint(conv_nd(xf, wf, None, attrs)).astype(np.int64)


def _conv_integer(ctx, inputs, attrs):
    x, w = inputs[0], inputs[1]
    x_zp = inputs[2] if len(inputs) > 2 else None
    w_zp = inputs[3] if len(inputs) > 3 else None
    return [_int_conv(x, w, x_zp, w_zp, attrs).astype(np.int32)]


def _qlinear_conv(ctx, inputs, attrs):
    x, x_s, x_zp, w, w_s, w_zp, y_s, y_zp = inputs[:8]
    b = inputs[8] if len(inputs) > 8 else None
    acc = _int_conv(x, w, x_zp, w_zp, attrs)
    if b is not None:
        acc = acc + b.astype(np.int64).reshape((1, -1) + (1,) * (x.ndim - 2))
    w_s = np.asarray(w_s)
    scale = x_s * (w_s.reshape((1, -1) + (1,) * (x.ndim - 2)) if w_s.size > 1 else w_s) / y_s
    r = acc.astype(np.int32) * scale
    out_dtype = (y_zp if y_zp is not None else x).dtype
    if y_zp is not None:
        r = r + y_zp
    info = np.iinfo(out_dtype)
    return [np.round(np.clip(r, info.min, info.max)).astype(out_dtype)]


def _bilinear_gather(xg, h, w):
    """Sample ``xg`` [N, G, Cg, H, W] at float coords ``h``, ``w`` [N, G, S]; zero outside."""
    n, g, cg, hh, ww = xg.shape
    flat = xg.reshape(n, g, cg, hh * ww)
    h0, w0 = np.floor(h), np.floor(w)
    out = 0
    for dh, dw in ((0, 0), (0, 1), (1, 0), (1, 1)):
        hi, wi = h0 + dh, w0 + dw
        weight = (1 - np.abs(h - hi)) * (1 - np.abs(w - wi))
        valid = (hi >= 0) & (hi < hh) & (wi >= 0) & (wi < ww)
        idx = (np.clip(hi, 0, hh - 1) * ww + np.clip(wi, 0, ww - 1)).astype(np.int64)
        idx = np.broadcast_to(idx[:, :, None, :], (n, g, cg, idx.shape[-1]))
        vals = np.take_along_axis(flat, idx, axis=3)
        out = out + vals * (weight * valid)[:, :, None, :]
    return out  # [N, G, Cg, S]


def _deform_conv(ctx, inputs, attrs):
    x, w, offset = inputs[0], inputs[1], inputs[2]
    b = inputs[3] if len(inputs) > 3 else None
    mask = inputs[4] if len(inputs) > 4 else None
    if x.ndim != 4:
        raise KernelError("DeformConv reference kernel supports 2-D images only")
    acc = acc_dtype(x.dtype)
    xa, wa = x.astype(acc), w.astype(acc)
    n, c, hh, ww = x.shape
    m = w.shape[0]
    kernel = list(attrs.get("kernel_shape") or w.shape[2:])
    strides = list(attrs.get("strides") or [1, 1])
    dil = list(attrs.get("dilations") or [1, 1])
    pads = list(attrs.get("pads") or [0, 0, 0, 0])
    group, og = attrs.get("group", 1), attrs.get("offset_group", 1)
    kh, kw = kernel
    oh, ow = offset.shape[2], offset.shape[3]
    k_size = kh * kw
    off = offset.astype(acc).reshape(n, og, k_size, 2, oh, ow)
    # base sampling coordinates [K, oH, oW]
    ki, kj = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    base_h = (np.arange(oh) * strides[0] - pads[0])[None, :, None] + (ki.reshape(-1) * dil[0])[:, None, None]
    base_w = (np.arange(ow) * strides[1] - pads[1])[None, None, :] + (kj.reshape(-1) * dil[1])[:, None, None]
    h = (base_h[None, None] + off[:, :, :, 0]).reshape(n, og, -1)
    wc = (base_w[None, None] + off[:, :, :, 1]).reshape(n, og, -1)
    sampled = _bilinear_gather(xa.reshape(n, og, c // og, hh, ww), h, wc)  # [N, og, Cog, K*P]
    sampled = sampled.reshape(n, c, k_size, oh * ow)
    if mask is not None:
        mk = mask.astype(acc).reshape(n, og, 1, k_size, oh * ow)
        sampled = (sampled.reshape(n, og, c // og, k_size, oh * ow) * mk).reshape(n, c, k_size, -1)
    cg = c // group
    cols = sampled.reshape(n, group, cg * k_size, oh * ow)
    y = np.matmul(wa.reshape(group, m // group, cg * k_size), cols).reshape(n, m, oh, ow)
    if b is not None:
        y = y + b.astype(acc).reshape(1, m, 1, 1)
    return [y.astype(x.dtype, copy=False)]


KERNELS = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "ConvInteger": _conv_integer,
    "QLinearConv": _qlinear_conv,
    "DeformConv": _deform_conv,
    "Col2Im": _col2im,
}
