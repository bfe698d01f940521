"""Files from strangers and files we write: regular files only, atomic writes, checked ``.npz``.

``regular_file`` / ``open_regular``: models, engines, feeds and calibration data must be regular
files. A FIFO would block ``open`` forever and a device can stream without end, so both are refused
from ``stat`` before anything is opened, and the open itself is non-blocking and re-checked with
``fstat`` (a FIFO swapped in between the two is still never read).

``atomic_write``: every file workbench writes goes to a temporary file in the destination's folder,
is fsynced and renamed over the destination. Two writers of one path leave one whole file; a full
disk or a file-size limit leaves the old file (or nothing), never a partial one; the error names the
destination, not the temporary file.

``read_npz``: an ``.npz`` is a zip of ``.npy`` members. The zip's central directory gives each
member's name and uncompressed size, and each member's ``.npy`` header (the first bytes of its
stream) gives shape and dtype; all of that is checked — names, dtypes, a byte budget and the
caller's own check — before any array data is decompressed.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from typing import BinaryIO, Callable

import numpy as np

from ..errors import InputError, ResourceLimitError, WorkbenchError


class FileKindError(WorkbenchError, ValueError):
    """A path names a FIFO, device, socket, directory or symlink loop, or cannot be read or written."""


class OutputWriteError(WorkbenchError, OSError):
    """An output file could not be written; nothing was left at its path."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _str_path(path, what: str, error: type[WorkbenchError]) -> str:
    """``path`` (str, bytes or os.PathLike) as a str; anything else is ``error`` naming ``what``."""
    try:
        p = os.fspath(path)
    except TypeError:
        raise error(f"{what} path must be a str or os.PathLike, got {type(path).__name__}") from None
    return os.fsdecode(p) if isinstance(p, bytes) else p


def regular_file(path, what: str, *, error: type[WorkbenchError] = FileKindError) -> str:
    """``path`` as a str if it names an existing regular file (symlinks followed); otherwise raise
    ``error`` with one line naming ``what`` ("model", "engine", "feeds"...) and the path.

    Only ``stat`` is used, so a FIFO or device is never opened."""
    p = _str_path(path, what, error)
    try:
        st = os.stat(p)
    except OSError as exc:
        reason = "a symlink loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise error(f"cannot read {what} {p!r}: {reason}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {p!r} is {_kind(st.st_mode)}; give a regular file")
    return p


def open_regular(path, what: str, *, error: type[WorkbenchError] = FileKindError) -> BinaryIO:
    """Open a regular file for binary reading, never blocking on a FIFO swapped in after the check."""
    p = regular_file(path, what, error=error)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        raise error(f"cannot read {what} {p!r}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {p!r} is {_kind(st.st_mode)}; give a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def atomic_write(path, write: Callable[[BinaryIO], object], *, mode: int = 0o644) -> str:
    """Create or replace ``path`` with what ``write(f)`` writes to a binary file ``f``, atomically.

    On any failure (the callback's own, a full disk, a file-size limit, an interrupt) the temporary
    file is removed and the destination is untouched; ``OSError`` becomes :class:`OutputWriteError`
    naming the destination. Returns the path written."""
    dest = _str_path(path, "output", OutputWriteError)
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputWriteError(f"cannot write {dest!r}: {exc.strerror or exc}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputWriteError(f"cannot write {dest!r}: it is {_kind(st.st_mode)}; give a regular file path")
    folder = os.path.dirname(os.path.abspath(dest))
    try:
        # in the destination's folder so that os.replace is a rename on one file system, never a copy
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)[:64]}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {dest!r}: {exc.strerror or exc}") from None
    try:
        try:
            if hasattr(os, "fchmod"):  # mkstemp's 0600 would make outputs private
                os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as f:
                fd = -1
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except OSError as exc:
            raise OutputWriteError(f"cannot write {dest!r}: {exc.strerror or exc}") from None
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dest


def atomic_write_bytes(path, data: bytes | bytearray | memoryview) -> str:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> str:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# --------------------------------------------------------------------------- .npz


MAX_NPZ_MEMBERS = 65536
_NPY_HEADER_LIMIT = 1 << 16  # numpy's own cap on .npy header length


@dataclass(frozen=True)
class NpyMember:
    """One array of an ``.npz`` as its headers describe it; nothing decompressed yet."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    nbytes: int


def _npy_header(stream: BinaryIO, name: str, what: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """Shape, dtype, order and header length from a .npy stream's first bytes (bounded read)."""
    fmt = np.lib.format
    try:
        major, minor = fmt.read_magic(stream)
        if (major, minor) == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(stream, max_header_size=_NPY_HEADER_LIMIT)
        elif major in (2, 3) and minor == 0:
            shape, fortran, dtype = fmt.read_array_header_2_0(stream, max_header_size=_NPY_HEADER_LIMIT)
        else:
            raise ValueError(f"unsupported .npy version {major}.{minor}")
    except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile) as exc:
        raise InputError(f"{what}: array {name!r} has a malformed .npy header ({str(exc).splitlines()[0][:120]})") from None
    if dtype.hasobject:
        raise InputError(f"{what}: array {name!r} holds Python objects; only numeric and bool arrays are read")
    if any(type(d) is not int or d < 0 for d in shape):
        raise InputError(f"{what}: array {name!r} has an invalid shape {shape!r}")
    return tuple(shape), dtype, bool(fortran), stream.tell()


def npz_members(zf: zipfile.ZipFile, what: str = "feeds") -> dict[str, tuple[NpyMember, zipfile.ZipInfo, int]]:
    """Every member of an open ``.npz``, from the zip directory and the .npy headers only."""
    infos = zf.infolist()
    if len(infos) > MAX_NPZ_MEMBERS:
        raise ResourceLimitError(f"{what}: the .npz has {len(infos)} members; the limit is {MAX_NPZ_MEMBERS}")
    out: dict[str, tuple[NpyMember, zipfile.ZipInfo, int]] = {}
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise InputError(f"{what}: .npz member {info.filename!r} is not a .npy array")
        name = info.filename[:-4]
        if name in out:
            raise InputError(f"{what}: the .npz holds array {name!r} twice")
        with zf.open(info) as stream:
            shape, dtype, fortran, header_len = _npy_header(stream, name, what)
        count = 1
        for d in shape:
            count *= d
        nbytes = count * dtype.itemsize
        # the zip directory's uncompressed size must be exactly header + data: a member claiming
        # less would be cut short, one claiming more hides data we would decompress for nothing
        if info.file_size != header_len + nbytes:
            raise InputError(f"{what}: array {name!r} declares {nbytes} bytes of data but its zip entry holds "
                             f"{info.file_size - header_len}")
        out[name] = (NpyMember(name, shape, dtype, fortran, nbytes), info, header_len)
    return out


ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local header, or the end record of an empty zip
NPY_MAGIC = b"\x93NUMPY"


def npz_problem(head: bytes, what: str, takes: str) -> str | None:
    """Why a file whose first bytes are ``head`` is not an .npz archive of named arrays (a single
    .npy array, or something else), said for ``what`` (e.g. "inputs file 'x'") and what the option
    ``takes``; None when it is one."""
    hint = f"{takes} whose keys are input names (np.savez(path, NAME=array))"
    if head.startswith(NPY_MAGIC):
        return f"{what} is a single .npy array; {hint}"
    if not head.startswith(ZIP_MAGIC):
        return f"{what} is not an .npz archive; {hint}"
    return None


def read_npz(path, *, max_bytes: int, what: str = "feeds",
             check: Callable[[dict[str, NpyMember]], None] | None = None) -> dict[str, np.ndarray]:
    """Read an ``.npz`` of plain arrays without pickle, checking everything before decompressing.

    ``check(members)`` sees every member's name, shape and dtype first and may raise (an unexpected
    name, a wrong shape); then the total size is held against ``max_bytes``; only then are the
    arrays decompressed, each straight into its own preallocated buffer."""
    with open_regular(path, what) as raw:
        try:
            zf = zipfile.ZipFile(raw)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise InputError(f"{what} {os.fspath(path)!r} is not a valid .npz file ({exc})") from None
        with zf:
            try:
                entries = npz_members(zf, what)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError) as exc:
                raise InputError(f"{what} {os.fspath(path)!r} is not a valid .npz file ({exc})") from None
            members = {n: e[0] for n, e in entries.items()}
            if check is not None:
                check(members)
            total = sum(m.nbytes for m in members.values())
            if total > max_bytes:
                big = max(members.values(), key=lambda m: m.nbytes)
                raise ResourceLimitError(
                    f"{what}: the .npz holds {total} bytes of arrays (largest {big.name!r}: {big.nbytes} bytes, "
                    f"shape {list(big.shape)}); the memory budget is {max_bytes} bytes")
            return {n: _read_member(zf, *e, what=what) for n, e in entries.items()}


def _read_member(zf: zipfile.ZipFile, m: NpyMember, info: zipfile.ZipInfo, header_len: int, *, what: str) -> np.ndarray:
    try:
        arr = np.empty(m.shape, dtype=m.dtype, order="F" if m.fortran_order else "C")
    except MemoryError:
        raise ResourceLimitError(f"{what}: out of memory allocating array {m.name!r} ({m.nbytes} bytes)") from None
    flat = memoryview(arr.reshape(-1, order="A").view(np.uint8)) if m.nbytes else memoryview(b"")
    try:
        with zf.open(info) as stream:
            stream.read(header_len)
            got = 0
            while got < m.nbytes:
                chunk = stream.read(min(m.nbytes - got, 1 << 22))
                if not chunk:
                    break
                flat[got: got + len(chunk)] = chunk
                got += len(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise InputError(f"{what}: array {m.name!r} is corrupt ({exc})") from None
    if got != m.nbytes:
        raise InputError(f"{what}: array {m.name!r} is truncated")
    return arr


def npz_bytes(arrays: dict[str, np.ndarray]) -> Callable[[BinaryIO], None]:
    """A writer for :func:`atomic_write` that saves ``arrays`` as an uncompressed ``.npz``."""
    def write(f: BinaryIO) -> None:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    return write


__all__ = ["FileKindError", "OutputWriteError", "NpyMember", "regular_file", "open_regular", "atomic_write",
           "atomic_write_bytes", "atomic_write_text", "npz_members", "read_npz", "npz_bytes", "MAX_NPZ_MEMBERS"]
