"""The GPU as the builder and runtime see it: CuPy (imported lazily), device facts, dtype storage.

Half-precision tensors are stored as raw 16-bit words: CuPy has float16 but no bfloat16, so every
bfloat16 tensor on the device is a ``uint16`` array, and our generated kernels read the bits. CuPy
has no float8 either: a float8e4m3fn tensor (an fp8 layer's weight) is a ``uint8`` array of its
e4m3 bytes, which cuBLASLt reads as CUDA_R_8F_E4M3.
"""

from __future__ import annotations

import functools

import numpy as np

from ...dtypes import to_numpy
from .tactic import GpuInfo


def cupy():
    import cupy as cp  # noqa: PLC0415 - only GPU builds and GPU engines import CuPy

    return cp


def storage_dtype(name: str) -> np.dtype:
    """The CuPy/NumPy dtype a tensor of canonical type ``name`` is stored as on the device."""
    if name == "bfloat16":
        return np.dtype(np.uint16)
    if name == "float8e4m3fn":
        return np.dtype(np.uint8)
    return to_numpy(name)


def to_device_bits(host: np.ndarray, name: str) -> np.ndarray:
    """Host array converted to ``name`` and laid out as the device stores it (saturating for
    fp16/bf16: a float32 -3.4e38 attention-mask fill must stay finite, not become -inf)."""
    if name in ("float16", "bfloat16") and host.dtype.kind == "f":
        lim = 65504.0 if name == "float16" else 3.3895e38
        host = np.clip(host.astype(np.float32), -lim, lim)
        conv = host.astype(to_numpy(name))
        return conv.view(np.uint16) if name == "bfloat16" else conv
    if name == "float8e4m3fn":
        return np.ascontiguousarray(host.astype(to_numpy(name), copy=False)).view(np.uint8)
    return np.ascontiguousarray(host.astype(to_numpy(name), copy=False))


def from_device_bits(arr: np.ndarray, name: str) -> np.ndarray:
    if name in ("bfloat16", "float8e4m3fn"):
        return arr.view(to_numpy(name))
    return arr


def _version(fn) -> str:
    try:
        return str(fn())
    except Exception:
        return "unavailable"


def library_versions() -> dict[str, str]:
    """Versions that decide whether an engine's kernels and plans still apply."""
    cp = cupy()
    rt = cp.cuda.runtime.runtimeGetVersion()
    libs = {"cuda": f"{rt // 1000}.{rt % 1000 // 10}", "cupy": cp.__version__}

    def cudnn_v():
        import cudnn  # noqa: PLC0415

        v = cudnn.backend_version()
        return f"{v // 10000}.{v % 10000 // 100}.{v % 100}" if isinstance(v, int) and v > 10000 else str(v)

    def cublas_v():
        from cupy_backends.cuda.libs import cublas  # noqa: PLC0415

        v = cublas.getVersion(cp.cuda.device.get_cublas_handle())
        return f"{v // 10000}.{v % 10000 // 100}.{v % 100}"

    def nvmath_v():
        import nvmath  # noqa: PLC0415

        return nvmath.__version__

    libs["cudnn"] = _version(cudnn_v)
    libs["cublas"] = _version(cublas_v)
    libs["nvmath"] = _version(nvmath_v)
    return libs


@functools.lru_cache(maxsize=None)
def gpu_info(device_id: int | None = None) -> GpuInfo:
    cp = cupy()
    dev = cp.cuda.Device(device_id) if device_id is not None else cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    arch = f"sm_{props['major']}{props['minor']}"
    return GpuInfo(name=name, arch=arch, sm_count=int(props["multiProcessorCount"]), libraries=library_versions())
