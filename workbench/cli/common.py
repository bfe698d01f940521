"""What every command shares: the one-line user error, the files the CLI reads (regular files only,
feeds checked before any array is decompressed) and writes (atomically, into a folder that exists),
and numbers printed for people."""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np

from ..core.budget import default_memory_budget
from ..core.files import atomic_write, npz_problem, open_regular, read_npz, regular_file
from ..errors import InputError, WorkbenchError

EXIT_USAGE = 2



class CliError(WorkbenchError):
    """A user error found by the command line itself (bad option values, wrong kinds of files)."""


def printable(text: str) -> str:
    """``text`` with control and other non-printable characters escaped, so that a name taken from
    a file cannot move the cursor, clear the screen or split a one-line error."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))


def fail(message: str) -> int:
    print(f"workbench: error: {printable(message)}", file=sys.stderr)
    return EXIT_USAGE


# ---- files read -----------------------------------------------------------------------------

def existing_file(path: str, what: str) -> str:
    """``path`` if it is a regular file; a FIFO, device or directory is refused without opening it."""
    if not os.path.lexists(path):
        raise CliError(f"{what} {path!r} does not exist")
    return regular_file(path, what)


def load_feeds(path: str, inputs=None, budget: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` feeds file. A single ``.npy`` array, a text file or anything else
    that is not an .npz archive is refused by its first bytes, before NumPy reads it; the archive's
    member names (against ``inputs``, the engine's input specs) and sizes (against the memory
    budget) are checked from its headers before any array is decompressed."""
    existing_file(path, "inputs file")
    head = _head(path, 8)
    problem = npz_problem(head, f"inputs file {path!r}", "--inputs takes an .npz")
    if problem:
        raise CliError(problem)
    known = None if inputs is None else [spec.name for spec in inputs]

    def check(members) -> None:
        if known is None:
            return
        expected = ", ".join(map(repr, known))
        for name in known:
            if name not in members:
                raise InputError(f"missing input {name!r} in {path!r}; the engine expects: {expected}")
        for name in members:
            if name not in known:
                raise InputError(f"unexpected input {name!r} in {path!r}; the engine expects: {expected}")

    return read_npz(path, max_bytes=budget or default_memory_budget(), what=f"inputs file {path!r}", check=check)


def _head(path: str, n: int) -> bytes:
    with open_regular(path, "file") as f:
        return f.read(n)


def is_engine_file(path: str) -> bool:
    return _head(path, 8) == b"WBENGINE"


def load_engine(path: str):
    from ..runtime.engine import Engine

    existing_file(path, "engine")
    if not is_engine_file(path):
        raise CliError(f"{path!r} is not a workbench engine (wrong magic); build one with 'workbench build'")
    return Engine.load(path)


# ---- files written --------------------------------------------------------------------------

def check_destination(path: str, what: str) -> str:
    """Refuse an output path whose folder is missing or which is a directory, before any work is done."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CliError(f"cannot write {what} {path!r}: folder {os.path.dirname(path) or folder!r} does not exist")
    if os.path.isdir(path):
        raise CliError(f"cannot write {what} {path!r}: it is a directory")
    return path


def write_text(path: str, text: str, what: str) -> None:
    """Write ``text`` to ``path`` atomically: a reader sees the old file or the whole new one."""
    check_destination(path, what)
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def write_npz(path: str, arrays: dict, what: str) -> None:
    check_destination(path, what)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def write_json_file(path: str, obj, what: str) -> None:
    write_text(path, json.dumps(obj, default=_json_default), what)


def print_json(obj) -> None:
    print(json.dumps(obj, indent=1, default=_json_default, allow_nan=True))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def json_number(x: float):
    """A float for JSON (NaN and infinities as strings, which every JSON reader accepts)."""
    x = float(x)
    return x if math.isfinite(x) else str(x)


# ---- numbers for people ---------------------------------------------------------------------

def fmt_ms(ms: float) -> str:
    """Milliseconds with about three significant digits: 0.0213 ms, 4.56 ms, 1,234 ms."""
    if not math.isfinite(ms):
        return f"{ms} ms"
    if ms >= 100:
        return f"{ms:,.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    if ms >= 1:
        return f"{ms:.2f} ms"
    return f"{ms:.3g} ms"


def fmt_rate(per_s: float) -> str:
    if per_s >= 100:
        return f"{per_s:,.0f}"
    return f"{per_s:.3g}"


def fmt_bytes(n: float) -> str:
    n = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{int(n):,} bytes" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"


def fmt_err(x: float) -> str:
    """An error measure in scientific notation (0 stays 0)."""
    return "0" if x == 0 else f"{x:.3g}" if not math.isfinite(x) else f"{x:.2e}"
