"""External tensor data, read only from regular, singly-linked files inside the model's folder,
reached without symlinks; locations are checked before any file is opened."""

from __future__ import annotations

import os
import re
import stat
import warnings

from onnx import ModelProto, TensorProto

from ...errors import ExternalDataError, ModelTooLargeError


from .proto_checks import _element_count, _nbytes, _q, _shape, _walk

_KNOWN_EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_DECIMAL = re.compile(r"[0-9]{1,20}")  # 20 digits bounds int() cost; real sizes are far smaller

def _external_entries(t: TensorProto, label: str) -> tuple[str, int, int | None]:
    """Parse a tensor's external_data into (location, offset, length); length None means 'whole tensor'."""
    values: dict[str, str] = {}
    ignored = []
    for entry in t.external_data:
        key, value = entry.key, entry.value  # already checked to be str by _check_utf8
        if key not in _KNOWN_EXTERNAL_KEYS:
            ignored.append(key)  # onnx's loader would setattr() these, dunders included; we never do
            continue
        if key in values:
            raise ExternalDataError(f"{label}: external_data key {_q(key)} is given twice")
        values[key] = value
    if ignored:
        warnings.warn(f"{label}: ignoring unknown external_data keys {[_q(k) for k in ignored]}", stacklevel=4)
    if "location" not in values:
        raise ExternalDataError(f"{label}: external data has no 'location'")
    numbers: dict[str, int | None] = {}
    for key in ("offset", "length"):
        text = values.get(key)
        if text is not None and not _DECIMAL.fullmatch(text):
            raise ExternalDataError(f"{label}: external data {key} {_q(text)} (location "
                                    f"{_q(values['location'])}) is not a non-negative decimal integer")
        numbers[key] = None if text is None else int(text)
    return values["location"], numbers["offset"] or 0, numbers["length"]


def _location_parts(location: str, label: str) -> list[str]:
    """Split a relative location into components, refusing anything that could leave the folder."""
    why = None
    if not location:
        why = "is empty"
    elif "\0" in location:
        why = "contains a NUL byte"
    elif "\\" in location:
        why = "contains a backslash (UNC or Windows path)"
    elif _DRIVE.match(location):
        why = "is a Windows drive path"
    elif location.startswith("/") or os.path.isabs(location):
        why = "is an absolute path"
    parts = [p for p in location.split("/") if p not in ("", ".")]
    if why is None and ".." in parts:
        why = "contains a '..' component"
    if why is None and not parts:
        why = "names no file"
    if why:
        raise ExternalDataError(f"{label}: external data location {_q(location)} {why}; "
                                "it must be a relative path inside the model's folder")
    return parts


class _ExternalFiles:
    """Opens external-data files safely, once per location, and closes them all at the end."""

    def __init__(self, base_dir: str):
        self.base_dir = os.fspath(base_dir)
        self.base_real = os.path.realpath(self.base_dir)
        self.open_files: dict[str, tuple[int, int]] = {}  # location -> (fd, size)

    def close(self) -> None:
        for fd, _ in self.open_files.values():
            os.close(fd)
        self.open_files.clear()

    def open(self, location: str, label: str) -> tuple[int, int]:
        if location in self.open_files:
            return self.open_files[location]
        parts = _location_parts(location, label)  # string checks come before any file-system access
        where = f"{label}: external data file {_q(location)} in {_q(self.base_dir)}"
        path = self.base_dir
        try:
            for part in parts[:-1]:
                path = os.path.join(path, part)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                    raise ExternalDataError(f"{where}: {_q(path)} is a symlink or not a folder")
            path = os.path.join(path, parts[-1])
            st = os.lstat(path)
        except FileNotFoundError:
            raise ExternalDataError(f"{where}: not found") from None
        except OSError as e:
            raise ExternalDataError(f"{where}: cannot be read ({e.strerror})") from None
        if stat.S_ISLNK(st.st_mode):
            raise ExternalDataError(f"{where}: is a symlink")
        if not stat.S_ISREG(st.st_mode):
            raise ExternalDataError(f"{where}: is not a regular file")
        if st.st_nlink != 1:
            raise ExternalDataError(f"{where}: has {st.st_nlink} hard links; only 1 is allowed")
        if not os.path.realpath(path).startswith(self.base_real + os.sep):
            raise ExternalDataError(f"{where}: resolves outside the model's folder")
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        flags |= getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)  # a FIFO swapped in must not block
        try:
            fd = os.open(path, flags)
        except OSError as e:
            raise ExternalDataError(f"{where}: cannot be opened ({e.strerror})") from None
        fst = os.fstat(fd)
        # The file opened must be the one checked: refuse if it was swapped between lstat and open.
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(fst.st_mode) \
                or fst.st_nlink != 1:
            os.close(fd)
            raise ExternalDataError(f"{where}: changed while being opened")
        self.open_files[location] = (fd, fst.st_size)
        return fd, fst.st_size


def _read_exactly(fd: int, offset: int, length: int) -> bytes:
    os.lseek(fd, offset, os.SEEK_SET)
    chunks, got = [], 0
    while got < length:  # Linux returns at most ~2 GiB per read, so loop
        chunk = os.read(fd, min(length - got, 1 << 30))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _load_external(model: ModelProto, base_dir, max_external_bytes: int | None) -> None:
    """Replace every external tensor's reference by its bytes, read safely from inside base_dir."""
    files = _ExternalFiles(base_dir) if base_dir is not None else None
    total = 0
    try:
        for kind, t, label, _ in list(_walk(model, None)):
            if kind != "tensor" or t.data_location != TensorProto.EXTERNAL:
                continue
            location, offset, length = _external_entries(t, label)
            label = f"{label}, location {_q(location)}"
            expected = _nbytes(t.data_type, _element_count(t.dims, label, 1 << 62))
            if length is not None and length != expected:
                raise ExternalDataError(f"{label}: external data length {length} does not match "
                                        f"the {expected} bytes its shape {_shape(t.dims)} needs")
            if files is None:
                _location_parts(location, label)
                raise ExternalDataError(f"{label}: the model has external data but no base_dir was given")
            total += expected
            if max_external_bytes is not None and total > max_external_bytes:
                raise ModelTooLargeError(f"{label}: external data exceeds max_external_bytes={max_external_bytes}")
            fd, size = files.open(location, label)
            if offset > size or expected > size - offset:
                raise ExternalDataError(f"{label}: offset {offset} + length {expected} is past the end "
                                        f"of the {size}-byte file")
            data = _read_exactly(fd, offset, expected)
            if len(data) != expected:
                raise ExternalDataError(f"{label}: file shrank while being read")
            t.raw_data = data
            del t.external_data[:]
            t.data_location = TensorProto.DEFAULT
    finally:
        if files is not None:
            files.close()
