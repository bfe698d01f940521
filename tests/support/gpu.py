"""Whether this machine can run the `gpu`-marked tests."""

from __future__ import annotations


def gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False
