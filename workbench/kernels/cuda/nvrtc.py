"""NVRTC: CUDA C++ source -> cubin, and cubin -> loaded module, with a process-wide cache.

Cubins (not PTX) are what engines store: loading one is a ``cuModuleLoadData`` with no compiler in
the loop. ``COMPILES`` counts real NVRTC compilations so tests can prove that an engine load does
not recompile. Generated code includes no headers (fp16/bf16 conversions are inline PTX), so it
compiles without a CUDA include path.
"""

from __future__ import annotations

import hashlib

from ...errors import BuildError
from .device import cupy

COMPILES = {"count": 0}
_MODULES: dict[str, object] = {}  # sha256(cubin) -> loaded cupy Module
_CUBINS: dict[str, bytes] = {}  # sha256(source, options) -> cubin (this process)
# a persistent store (the timing cache's kernel section) may be attached by the builder
external_store: dict[str, bytes] | None = None


def options_for(arch: str) -> tuple[str, ...]:
    return ("-std=c++17", f"--gpu-architecture={arch}", "--use_fast_math", "-default-device")


def source_key(source: str, arch: str) -> str:
    return hashlib.sha256((arch + "\0" + " ".join(options_for(arch)) + "\0" + source).encode()).hexdigest()


def compile_cubin(source: str, arch: str, name: str = "wb_kernel.cu") -> bytes:
    key = source_key(source, arch)
    if key in _CUBINS:
        return _CUBINS[key]
    if external_store is not None and key in external_store:
        _CUBINS[key] = external_store[key]
        return _CUBINS[key]
    from cupy_backends.cuda.libs import nvrtc  # noqa: PLC0415

    prog = nvrtc.createProgram(source, name, (), ())
    try:
        try:
            nvrtc.compileProgram(prog, list(options_for(arch)))
        except nvrtc.NVRTCError as exc:
            log = nvrtc.getProgramLog(prog)
            raise BuildError(f"NVRTC failed to compile generated kernel {name}: {exc}\n{log}\n--- source ---\n{source}") from None
        cubin = bytes(nvrtc.getCUBIN(prog))
    finally:
        nvrtc.destroyProgram(prog)
    COMPILES["count"] += 1
    _CUBINS[key] = cubin
    if external_store is not None:
        external_store[key] = cubin
    return cubin


def load_module(cubin: bytes):
    key = hashlib.sha256(cubin).hexdigest()
    mod = _MODULES.get(key)
    if mod is None:
        cp = cupy()
        mod = cp.cuda.function.Module()
        mod.load(cubin)
        _MODULES[key] = mod
    return mod


def get_function(source: str, kernel: str, arch: str, binaries: dict[str, bytes] | None, out: dict[str, bytes]):
    """The launchable ``kernel`` of ``source``: from ``binaries`` (stored in the engine) when there,
    else compiled. The cubin used is recorded in ``out`` under ``kernel``."""
    cubin = (binaries or {}).get(kernel)
    if cubin is None:
        cubin = compile_cubin(source, arch, kernel + ".cu")
    out[kernel] = cubin
    return load_module(cubin).get_function(kernel)
