"""Can this GPU run an engine? Architecture and library versions must match the build's."""

from __future__ import annotations

from ...errors import EngineCompatibilityError
from .device import gpu_info

# library -> how many leading version parts must match (cubins need the arch; plans need cuDNN minor)
CHECKED = {"cuda": 1, "cudnn": 2, "cublas": 1}


def _parts(v: str, n: int) -> tuple:
    return tuple(str(v).split(".")[:n])


def describe(arch: str, libs: dict) -> str:
    bits = [arch] + [f"{k} {libs[k]}" for k in CHECKED if libs.get(k) not in (None, "unavailable")]
    return " / ".join(bits)


def check_target(built_for: dict, here_arch: str, here_libs: dict) -> None:
    """Raise EngineCompatibilityError if an engine built for ``built_for`` cannot run here."""
    arch = built_for.get("arch")
    libs = built_for.get("libraries") or {}
    bad = arch != here_arch
    for lib, n in CHECKED.items():
        want, have = libs.get(lib), here_libs.get(lib)
        if want in (None, "unavailable"):
            continue
        if have in (None, "unavailable") or _parts(want, n) != _parts(have, n):
            bad = True
    if bad:
        raise EngineCompatibilityError(
            f"engine was built for {describe(arch, libs)}; this GPU is {describe(here_arch, here_libs)} — "
            "rebuild the engine on this machine")


def check_engine(engine) -> None:
    info = gpu_info()
    check_target(engine.target, info.arch, info.libraries)
