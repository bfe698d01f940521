"""The memory budget: how many bytes one build or one context may ask for at once.

The default is a share of what this process can actually get: the smallest of the memory the
kernel reports available, the cgroup limit left (containers) and the address-space / data rlimits.
An element cap alone is not enough: 2^31 float64 elements are 16 GiB, more than many machines hold,
and a budget in bytes is what a server sizing its workers thinks in.
"""

from __future__ import annotations

from ..errors import ResourceLimitError

DEFAULT_SHARE = 0.5  # of the memory available when the budget is computed
_FALLBACK = 4 << 30  # where the platform tells us nothing


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_left() -> int | None:
    for limit_path, used_path in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                  ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                   "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_path, encoding="ascii") as f:
                raw = f.read().strip()
            if raw == "max":
                return None
            limit = int(raw)
            with open(used_path, encoding="ascii") as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit >= 1 << 60:  # cgroup v1's "unlimited"
            return None
        return max(limit - used, 0)
    return None


def _rlimit() -> int | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    best = None
    for which in ("RLIMIT_AS", "RLIMIT_DATA"):
        lim = getattr(resource, which, None)
        if lim is None:
            continue
        soft, _ = resource.getrlimit(lim)
        if soft != resource.RLIM_INFINITY and soft > 0:
            best = soft if best is None else min(best, soft)
    return best


def available_memory() -> int:
    """Bytes this process could still allocate, as far as the platform says."""
    known = [v for v in (_meminfo_available(), _cgroup_left(), _rlimit()) if v is not None]
    return min(known) if known else _FALLBACK


def default_memory_budget() -> int:
    return max(int(available_memory() * DEFAULT_SHARE), 1 << 20)


def check_budget(value, what: str = "memory_budget") -> int:
    """A user-given budget as a positive int of bytes (None -> the default); one-line errors."""
    if value is None:
        return default_memory_budget()
    if isinstance(value, bool) or not isinstance(value, int):
        raise ResourceLimitError(f"{what} must be a positive int of bytes, got {type(value).__name__} {value!r:.60}")
    if value <= 0:
        raise ResourceLimitError(f"{what} must be a positive int of bytes, got {value}")
    return value


def over_budget(nbytes: int, budget: int, what: str) -> ResourceLimitError:
    """The one error for an allocation that would not fit (the caller raises it)."""
    return ResourceLimitError(f"{what} needs {nbytes} bytes; the memory budget is {budget} bytes")


def parse_size(text: str, what: str = "memory budget") -> int:
    """'512M', '2G', '1000000' -> bytes (for command lines)."""
    s = str(text).strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    for suffix, mult in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)):
        if s.endswith(suffix):
            s, scale = s[:-1], mult
            break
    try:
        n = float(s) * scale
    except ValueError:
        raise ResourceLimitError(f"{what} must be a size like 512M or 2G, got {text!r:.60}") from None
    if not (n >= 1) or n > 1 << 62:
        raise ResourceLimitError(f"{what} must be a positive size, got {text!r:.60}")
    return int(n)

