"""The engine container: a checksummed, self-describing file of one JSON header and raw blobs.

Layout (all integers little-endian)::

    0   8 bytes   magic b"WBENGINE"
    8   2 + 2     format version (major, minor), uint16 each
    12  8         header length H, uint64
    20  H         canonical JSON header (UTF-8, sorted keys, no NaN), with a "blobs" table
                  {name: {"offset", "size", "sha256"}}, offsets from the start of the file
    ..            zero padding up to the next multiple of 64
    ..            blobs, each at a 64-aligned offset, zero padding between them, no gaps
    -32 32        sha256 of every byte before it

Engines come from strangers, so the reader trusts nothing: it checks the fixed prefix, streams the
file through sha256, parses the header strictly (duplicate keys, NaN / Infinity, depth and size are
refused), checks that the blob table tiles the data region exactly, and only then allocates one
buffer of the (already known) file size and verifies each blob's own sha256. A checksum catches
corruption, not forgery: only a signature could prove where an engine came from.

Nothing here can run code: the header is JSON, blobs are raw bytes handed out as read-only
memoryviews. The writer is deterministic (no timestamps, blobs sorted by name) so the same inputs
give byte-identical files.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import struct
import sys
from typing import BinaryIO

import numpy as np

from workbench.core.files import atomic_write, open_regular
from workbench.errors import EngineCompatibilityError, EngineFormatError

MAGIC = b"WBENGINE"
# (major, minor): a reader reads every minor of its major. Major 2: the plan carries what the
# runtime needs (each layer's tactic config and binaries, the arena, the run options); major 1
# engines kept them in report sections, so they are refused, not guessed at
FORMAT_VERSION = (2, 0)
ALIGN = 64
MAX_HEADER_BYTES = 64 << 20
MAX_JSON_DEPTH = 128  # deep enough for ~16 levels of nested If/Loop bodies, far below RecursionError

_PREFIX = struct.Struct("<8sHHQ")
_TRAILER = 32
_CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")

Blob = bytes | bytearray | memoryview | np.ndarray


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# --------------------------------------------------------------------------- header JSON


def canonical_json(obj) -> bytes:
    """The one byte string an object has as a header: sorted keys, no spaces, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")


def _json_depth(data: bytes) -> int:
    """Deepest nesting of [ and { outside JSON strings, without recursion.

    Vectorized over 1 MiB chunks (state carried across): a regex that strips strings is quadratic
    on an unterminated string, and json's own recursion guard depends on the interpreter's
    recursion limit, which a notebook may have raised far past what the C stack holds.
    """
    depth = best = in_string = bs_run = 0
    for start in range(0, len(data), _CHUNK):
        b = np.frombuffer(data, np.uint8, count=min(_CHUNK, len(data) - start), offset=start)
        idx = np.arange(b.size)
        is_bs = b == ord("\\")
        last_other = np.maximum.accumulate(np.where(is_bs, -1, idx))
        run = np.where(last_other >= 0, idx - last_other, idx + 1 + bs_run)  # backslashes ending at i
        before = np.concatenate(([bs_run], run[:-1]))  # backslashes just before i
        quotes = (b == ord('"')) & (before % 2 == 0)  # an odd run of backslashes escapes the quote
        seen = np.cumsum(quotes) + in_string
        step = ((b == ord("[")) | (b == ord("{"))).astype(np.int64) - ((b == ord("]")) | (b == ord("}")))
        level = np.cumsum(np.where(seen % 2 == 0, step, 0)) + depth
        best, depth = max(best, int(level.max())), int(level[-1])
        in_string, bs_run = int(seen[-1]) % 2, int(run[-1])
    return best


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    d: dict = {}
    for k, v in pairs:
        if k in d:
            raise EngineFormatError(f"engine header has duplicate key {k!r}")
        d[k] = v
    return d


def _no_constant(name: str):
    raise EngineFormatError(f"engine header contains {name}, which JSON does not allow")


def _finite_float(s: str) -> float:
    x = float(s)
    if not math.isfinite(x):  # 1e999 parses to inf
        raise EngineFormatError(f"engine header has a number out of range: {s[:40]}")
    return x


def parse_header(data: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> dict:
    """Strictly parse header bytes into a dict; any deviation raises :class:`EngineFormatError`."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise EngineFormatError(f"engine header is not valid UTF-8 (byte {e.start})") from None
    depth = _json_depth(bytes(data))
    if depth > max_depth:
        raise EngineFormatError(f"engine header nests {depth} levels deep; the limit is {max_depth}")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                         parse_float=_finite_float)
    except EngineFormatError:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError, over-long ints
        raise EngineFormatError(f"engine header is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise EngineFormatError(f"engine header must be a JSON object, got {type(obj).__name__}")
    return obj


# --------------------------------------------------------------------------- writing


def _as_bytes_view(name: str, blob: Blob) -> memoryview:
    """A flat read-only byte view of a blob, without copying contiguous little-endian data."""
    if isinstance(blob, np.ndarray):
        if blob.dtype.hasobject:  # object arrays hold pointers, never data
            raise TypeError(f"blob {name!r}: object arrays cannot be stored as raw bytes")
        if blob.dtype.byteorder == ">" or (blob.dtype.byteorder == "=" and sys.byteorder == "big"):
            blob = blob.astype(blob.dtype.newbyteorder("<"))
        flat = np.ascontiguousarray(blob).reshape(-1)
        return memoryview(flat.view(np.uint8)).toreadonly()
    if isinstance(blob, (bytes, bytearray, memoryview)):
        mv = memoryview(blob)
        return mv.cast("B") if mv.c_contiguous else memoryview(mv.tobytes())
    raise TypeError(f"blob {name!r}: expected bytes, memoryview or numpy array, got {type(blob).__name__}")


def _layout(header: dict, views: dict[str, memoryview]) -> tuple[bytes, dict[str, int], int, int]:
    """Header bytes, blob offsets, data start and data end.

    The header holds the offsets, and the offsets depend on the header's length; offsets only grow
    with the data start, so iterating from the smallest start reaches the fixed point.
    """
    names = sorted(views)
    digests = {n: hashlib.sha256(views[n]).hexdigest() for n in names}
    data_start = _align(_PREFIX.size + len(canonical_json({**header, "blobs": {}})))
    while True:
        offsets, cursor = {}, data_start
        for n in names:
            offsets[n] = _align(cursor)
            cursor = offsets[n] + views[n].nbytes
        table = {n: {"offset": offsets[n], "size": views[n].nbytes, "sha256": digests[n]} for n in names}
        header_bytes = canonical_json({**header, "blobs": table})
        needed = _align(_PREFIX.size + len(header_bytes))
        if needed == data_start:
            return header_bytes, offsets, data_start, cursor
        data_start = needed


def write_container(path, header: dict, blobs: dict[str, Blob]) -> dict:
    """Write ``header`` and ``blobs`` as one engine file, atomically; return path, size and sha256.

    Engines are shareable artifacts, so the file is 0644 (``atomic_write``'s default).

    ``header`` must be JSON-able without NaN and must not use the key "blobs" (the container's own
    table). Blobs are written in name order; numpy arrays as their little-endian C-order bytes.
    """
    if not isinstance(header, dict):
        raise TypeError(f"engine header must be a dict, got {type(header).__name__}")
    if "blobs" in header:
        raise ValueError("engine header key 'blobs' is reserved for the container's blob table")
    views = {}
    for name, blob in blobs.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"blob names must be non-empty str, got {name!r}")
        views[name] = _as_bytes_view(name, blob)
    header_bytes, offsets, data_start, data_end = _layout(header, views)
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ValueError(f"engine header is {len(header_bytes)} bytes; readers accept {MAX_HEADER_BYTES}")
    depth = _json_depth(header_bytes)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"engine header nests {depth} levels deep; readers accept {MAX_JSON_DEPTH}")

    digest = hashlib.sha256()  # of everything before the trailer
    trailer = b""

    def write(f) -> None:
        nonlocal trailer

        def put(b) -> None:
            digest.update(b)
            f.write(b)

        put(_PREFIX.pack(MAGIC, *FORMAT_VERSION, len(header_bytes)))
        put(header_bytes)
        put(bytes(data_start - _PREFIX.size - len(header_bytes)))
        pos = data_start
        for name in sorted(views):
            put(bytes(offsets[name] - pos))
            put(views[name])
            pos = offsets[name] + views[name].nbytes
        assert pos == data_end
        trailer = digest.digest()
        f.write(trailer)

    path = atomic_write(path, write)  # temp file + fsync + rename: a failed write leaves nothing
    whole = digest.copy()  # the sha256 of the whole file, as `sha256sum` would print it
    whole.update(trailer)
    return {"path": path, "size": data_end + _TRAILER, "sha256": whole.hexdigest()}


# --------------------------------------------------------------------------- reading


def _read_exact(f: BinaryIO, n: int) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise EngineFormatError("engine file is truncated (it changed or ended while being read)")
    return b


def _check_blob_table(header: dict, data_start: int, data_end: int) -> list[tuple[str, int, int, str]]:
    """Validate the blob table against the data region; return (name, offset, size, sha256) by offset."""
    table = header.get("blobs")
    if not isinstance(table, dict):
        raise EngineFormatError("engine header has no 'blobs' table (expected an object)")
    entries = []
    for name, e in table.items():
        if not isinstance(e, dict) or set(e) != {"offset", "size", "sha256"}:
            raise EngineFormatError(f"blob {name!r}: entry must have exactly 'offset', 'size' and 'sha256'")
        off, size, sha = e["offset"], e["size"], e["sha256"]
        for key, v in (("offset", off), ("size", size)):
            if type(v) is not int or v < 0:
                raise EngineFormatError(f"blob {name!r}: {key} must be a non-negative int, got {v!r}")
        if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
            raise EngineFormatError(f"blob {name!r}: sha256 must be 64 lowercase hex digits")
        if off % ALIGN:
            raise EngineFormatError(f"blob {name!r} is misaligned: offset {off} is not a multiple of {ALIGN}")
        if off < data_start or off + size > data_end:
            raise EngineFormatError(f"blob {name!r} (offset {off}, size {size}) is out of bounds: "
                                    f"the data region is [{data_start}, {data_end})")
        entries.append((name, off, size, sha))
    entries.sort(key=lambda t: (t[1], t[2], t[0]))
    cursor, prev = data_start, None
    for name, off, size, _ in entries:
        if off < cursor:
            raise EngineFormatError(f"blob {name!r} overlaps blob {prev!r}")
        if off != _align(cursor):
            raise EngineFormatError(f"engine file has a gap of {off - cursor} bytes before blob {name!r}")
        cursor, prev = off + size, name
    if cursor != data_end:
        raise EngineFormatError(f"engine file has {data_end - cursor} bytes after its last blob that no blob covers")
    return entries


def _diagnose_mismatch(header_bytes: bytes, data_start: int, size: int) -> str:
    """Tell a truncated file from a corrupt one, best effort, for the error message."""
    try:
        header = parse_header(header_bytes)
        table = header.get("blobs") or {}
        end = max([data_start] + [e["offset"] + e["size"] for e in table.values()])
        if isinstance(end, int) and end + _TRAILER > size:
            return f"engine file is truncated: it has {size} bytes, its header describes {end + _TRAILER}"
    except Exception:  # noqa: BLE001, S110 - only choosing the wording; the file is refused either way
        pass
    return "checksum mismatch: file is corrupt"


def read_container(source, *, max_header_bytes: int = MAX_HEADER_BYTES) -> tuple[dict, dict[str, memoryview]]:
    """Read and fully verify an engine file (a path, or its bytes); return (header, blobs).

    The header is returned as stored, "blobs" table included. Blobs are read-only memoryviews into
    one 64-byte-aligned buffer holding the file's data region; they stay valid on their own.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        f: BinaryIO = io.BytesIO(bytes(source))
        size = len(f.getbuffer())
    else:
        path = os.fspath(source)
        # a FIFO, device or directory is refused before it is opened (opening a FIFO blocks)
        f = open_regular(path, "engine", error=EngineFormatError)
        try:
            size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            f.close()
            raise EngineFormatError(f"cannot read engine {path!r}: {exc.strerror or exc}") from None
    with f:
        return _read(f, size, max_header_bytes)


def _read(f: BinaryIO, size: int, max_header_bytes: int) -> tuple[dict, dict[str, memoryview]]:
    if size < len(MAGIC):
        raise EngineFormatError(f"engine file is truncated: {size} bytes is too short to be an engine")
    prefix = f.read(_PREFIX.size)
    if prefix[: len(MAGIC)] != MAGIC:
        raise EngineFormatError(f"not a workbench engine: magic is {prefix[:len(MAGIC)]!r}, expected {MAGIC!r}")
    if size < _PREFIX.size + _TRAILER:
        raise EngineFormatError(f"engine file is truncated: {size} bytes is too short to be an engine")
    _, major, minor, header_len = _PREFIX.unpack(prefix)
    if major != FORMAT_VERSION[0]:
        raise EngineCompatibilityError(
            f"engine file built by format {major}.{minor}, this workbench reads format "
            f"{FORMAT_VERSION[0]}.{FORMAT_VERSION[1]} — rebuild it")
    if header_len > max_header_bytes:
        raise EngineFormatError(f"engine header length {header_len} exceeds the limit of {max_header_bytes} bytes")
    data_start = _align(_PREFIX.size + header_len)
    data_end = size - _TRAILER
    if data_start > data_end:
        raise EngineFormatError(f"engine file is truncated: its {header_len}-byte header does not fit "
                                f"in {size} bytes")

    # pass 1: the whole file through sha256 in chunks, keeping only the (bounded) header and padding
    digest = hashlib.sha256(prefix)
    header_bytes = _read_exact(f, header_len)
    padding = _read_exact(f, data_start - _PREFIX.size - header_len)
    digest.update(header_bytes)
    digest.update(padding)
    left = data_end - data_start
    while left:
        chunk = _read_exact(f, min(left, _CHUNK))
        digest.update(chunk)
        left -= len(chunk)
    if digest.digest() != _read_exact(f, _TRAILER):
        raise EngineFormatError(_diagnose_mismatch(header_bytes, data_start, size))
    if any(padding):
        raise EngineFormatError("engine file has non-zero padding after its header")

    header = parse_header(header_bytes)
    entries = _check_blob_table(header, data_start, data_end)

    # pass 2: the data region into one aligned buffer (its size is the file's, known and checked)
    n = data_end - data_start
    raw = np.empty(n + ALIGN, dtype=np.uint8)
    shift = (-raw.ctypes.data) % ALIGN
    buf = raw[shift: shift + n]
    f.seek(data_start)
    into, got = memoryview(buf), 0
    while got < n:
        k = f.readinto(into[got:])
        if not k:
            raise EngineFormatError("engine file is truncated (it changed or ended while being read)")
        got += k
    buf.flags.writeable = False
    view = memoryview(buf)

    blobs: dict[str, memoryview] = {}
    cursor = data_start
    for name, off, size_, sha in entries:
        if buf[cursor - data_start: off - data_start].any():
            raise EngineFormatError(f"engine file has non-zero padding before blob {name!r}")
        mv = view[off - data_start: off - data_start + size_]
        if hashlib.sha256(mv).hexdigest() != sha:
            raise EngineFormatError(f"blob {name!r} checksum mismatch: file is corrupt")
        blobs[name] = mv
        cursor = max(cursor, off + size_)
    return header, blobs
