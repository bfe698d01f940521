"""Convolution and pooling window geometry: attribute defaults, auto_pad resolution, output dims.

One home for what the reference kernels (``kernels/reference/conv.py``, ``pool.py``), the GPU
tactics (``kernels/cuda``), the epilogue fusion (which writes ``auto_pad`` out as explicit pads) and
the fused ops' shape functions (``ops/fused.py``) compute about a sliding window. Dims may be
symbolic (a str) or unknown (None) where a shape function asks: what depends on them is None.
"""

from __future__ import annotations


def window_attrs(attrs: dict, nd: int) -> tuple[list, list, list]:
    """(strides, dilations, pads) of a window op over ``nd`` spatial dims, ONNX defaults applied
    (an absent or empty attribute: stride 1, dilation 1, no padding)."""
    return (list(attrs.get("strides") or [1] * nd), list(attrs.get("dilations") or [1] * nd),
            list(attrs.get("pads") or [0] * (2 * nd)))


def same_pads(n_in: int, k_eff: int, stride: int, upper: bool) -> tuple[int, int]:
    """(begin, end) padding of ``auto_pad`` SAME_UPPER (``upper``) / SAME_LOWER: the output has
    ceil(n_in / stride) positions; an odd total goes at the end (UPPER) or the beginning (LOWER)."""
    o = -(-n_in // stride)
    total = max(0, (o - 1) * stride + k_eff - n_in)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def _known(d) -> bool:
    return d is not None and not isinstance(d, str)


def conv_geometry(in_dims, kernel, strides, dilations, pads, auto_pad="NOTSET", ceil_mode=False):
    """(pads_begin, pads_end, out_dims) of a convolution or pooling window over the spatial dims
    ``in_dims``. ``pads`` is ONNX's [begin..., end...] (None or empty: zeros), used unless
    ``auto_pad`` is SAME_UPPER / SAME_LOWER / VALID. ``ceil_mode`` (pooling) rounds the output up,
    never starting a window past the input and its leading pad. An out dim may be <= 0 (the
    caller says why that is an error); a symbolic (str) or unknown (None) dim gives None where it
    matters."""
    nd = len(in_dims)
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    begin, end, out = [], [], []
    for i in range(nd):
        n_in, k, s = in_dims[i], kernel[i], strides[i]
        k_eff = dilations[i] * (k - 1) + 1 if _known(k) else None
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            b, e = (same_pads(n_in, k_eff, s, auto_pad == "SAME_UPPER") if _known(n_in) and k_eff is not None
                    else (None, None))
        elif auto_pad == "VALID":
            b = e = 0
        else:
            b, e = (pads[i], pads[i + nd]) if pads else (0, 0)
        begin.append(b)
        end.append(e)
        if not _known(n_in) or k_eff is None or b is None:
            out.append(None)
            continue
        span = n_in + b + e - k_eff
        if ceil_mode:
            o = -(-span // s) + 1
            if (o - 1) * s >= n_in + b:  # the last window must start inside the input or its leading pad
                o -= 1
        else:
            o = span // s + 1
        out.append(o)
    return begin, end, out
