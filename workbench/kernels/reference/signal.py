"""Reference kernels: DFT, STFT, window functions and MelWeightMatrix.

Complex tensors follow the ONNX convention: a trailing dimension of 2 (real, imaginary); a trailing
dimension of 1 is a real signal. float32 signals are transformed in complex64 (what a GPU FFT does,
and what the node tests' expected values carry), float64 in complex128.
"""

from __future__ import annotations

import numpy as np

from workbench import dtypes

from ._base import KernelError


def _as_complex(x):
    cdt = np.complex128 if x.dtype == np.float64 else np.complex64
    if x.shape[-1] == 1:
        return x[..., 0].astype(cdt)
    if x.shape[-1] == 2:
        z = np.empty(x.shape[:-1], dtype=cdt)
        z.real, z.imag = x[..., 0], x[..., 1]
        return z
    raise KernelError(f"signal's last dimension must be 1 (real) or 2 (complex), got {x.shape[-1]}")


def _split(z, dtype):
    return np.stack([z.real, z.imag], axis=-1).astype(dtype)


def _dft(ctx, inputs, attrs):
    x = inputs[0]
    n = inputs[1] if len(inputs) > 1 else None
    if ctx.opset and ctx.opset >= 20:
        # opset 20 moved the axis to an input; the default -2 is the last signal axis
        axis_in = inputs[2] if len(inputs) > 2 else None
        axis = int(np.asarray(axis_in).reshape(-1)[0]) if axis_in is not None else -2
        axis = axis + x.ndim if axis < 0 else axis
    else:
        axis = attrs.get("axis", 1)
        axis = axis + x.ndim if axis < 0 else axis
    if not 0 < axis < x.ndim - 1:
        raise KernelError(f"DFT axis {axis} must be a signal axis of input rank {x.ndim}")
    inverse, onesided = attrs.get("inverse", 0), attrs.get("onesided", 0)
    z = _as_complex(x)
    if inverse and onesided:
        # inverse of a one-sided spectrum: Hermitian-completed, real output
        length = 2 * (z.shape[axis] - 1) if n is None else int(np.asarray(n).reshape(-1)[0])
        return [np.fft.irfft(z, n=length, axis=axis)[..., None].astype(x.dtype)]
    length = z.shape[axis] if n is None else int(np.asarray(n).reshape(-1)[0])
    if inverse:
        out = np.fft.ifft(z, n=length, axis=axis)
    else:
        out = np.fft.fft(z, n=length, axis=axis)
    if onesided:
        out = np.take(out, np.arange(length // 2 + 1), axis=axis)
    return [_split(out, x.dtype)]


def _stft(ctx, inputs, attrs):
    x, step = inputs[0], int(np.asarray(inputs[1]).reshape(-1)[0])
    window = inputs[2] if len(inputs) > 2 else None
    flen = inputs[3] if len(inputs) > 3 else None
    z = _as_complex(x)  # [B, L]
    if flen is not None:
        frame = int(np.asarray(flen).reshape(-1)[0])
    elif window is not None:
        frame = window.shape[0]
    else:
        raise KernelError("STFT needs a window or a frame_length")
    if window is not None and window.shape[0] != frame:
        raise KernelError(f"STFT window length {window.shape[0]} != frame_length {frame}")
    length = z.shape[1]
    n_frames = (length - frame) // step + 1
    if n_frames <= 0 or step <= 0:
        raise KernelError(f"STFT: signal length {length} too short for frame {frame}")
    idx = np.arange(n_frames)[:, None] * step + np.arange(frame)[None, :]
    frames = z[:, idx]  # [B, frames, frame]
    if window is not None:
        frames = frames * window.astype(np.float64)
    spec = np.fft.fft(frames, axis=-1)
    onesided = attrs.get("onesided", 1)
    if onesided:
        spec = spec[..., :frame // 2 + 1]
    return [_split(spec, x.dtype)]


def _window(fn):
    def kernel(ctx, inputs, attrs):
        size = int(np.asarray(inputs[0]).reshape(-1)[0])
        out_dt = dtypes.to_numpy(dtypes.from_onnx_code(attrs.get("output_datatype", 1)))
        denom = size if attrs.get("periodic", 1) else size - 1
        n = np.arange(size, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            phase = 2 * np.pi * n / denom if denom else np.zeros(size)
        return [fn(phase).astype(out_dt)]
    return kernel


def _mel_weight_matrix(ctx, inputs, attrs):
    n_mel, dft_len, rate = (int(np.asarray(v).reshape(-1)[0]) for v in inputs[:3])
    low, high = (float(np.asarray(v).reshape(-1)[0]) for v in inputs[3:5])
    out_dt = dtypes.to_numpy(dtypes.from_onnx_code(attrs.get("output_datatype", 1)))
    n_spec = dft_len // 2 + 1
    # n_mel + 2 points evenly spaced on the mel scale, mapped back to FFT bin indices (the spec's
    # formula: the step divides by the number of points, and bins are floored)
    mel_lo = 2595 * np.log10(1 + low / 700)
    mel_hi = 2595 * np.log10(1 + high / 700)
    pts = np.arange(n_mel + 2) * ((mel_hi - mel_lo) / (n_mel + 2)) + mel_lo
    hz = 700 * (10 ** (pts / 2595) - 1)
    bins = (((dft_len + 1) * hz) // rate).astype(np.int64)
    j = np.arange(n_spec)[:, None]
    left, center, right = bins[None, :-2], bins[None, 1:-1], bins[None, 2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where((j >= left) & (j <= center), (j - left) / (center - left), 0.0)
        down = np.where((j >= center) & (j < right), (right - j) / (right - center), 0.0)
    up = np.where((center == left) & (j == center), 1.0, np.nan_to_num(up))
    out = np.where((j >= center) & (j < right), down, up)
    return [out.astype(out_dt)]


KERNELS = {
    "DFT": _dft,
    "STFT": _stft,
    "HannWindow": _window(lambda p: 0.5 - 0.5 * np.cos(p)),
    "HammingWindow": _window(lambda p: 25 / 46 - (1 - 25 / 46) * np.cos(p)),
    "BlackmanWindow": _window(lambda p: 0.42 - 0.5 * np.cos(p) + 0.08 * np.cos(2 * p)),
    "MelWeightMatrix": _mel_weight_matrix,
}
