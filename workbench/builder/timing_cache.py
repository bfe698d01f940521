"""TimingCache: autotuning results kept across builds (``BuilderConfig(timing_cache=PATH)``).

One JSON file. Its ``env`` (GPU name and architecture, library versions, cache format) must match
the build's, otherwise the file's entries are ignored (and replaced on save): timings from another
GPU or cuDNN say nothing about this one. ``entries`` maps a layer signature (op, attributes,
input/output shapes and dtypes, precision, small constant values) to the chosen tactic, its config
and the whole tactic table; ``kernels`` keeps compiled cubins (base64) by source hash so that a
warm build neither times nor compiles. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

import numpy as np

from ..core.files import FileKindError, atomic_write_text, open_regular

FORMAT = 1
SMALL_CONSTANT = 64  # constants up to this many elements are part of the signature (e.g. Slice starts)


def _canon(value):
    if isinstance(value, np.ndarray):
        return {"ndarray": [str(value.dtype), list(value.shape), hashlib.sha256(value.tobytes()).hexdigest()]}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in sorted(value.items())}
    if isinstance(value, bytes):
        return {"bytes": hashlib.sha256(value).hexdigest()}
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return {"object": type(value).__name__, "name": getattr(value, "name", "")}


def layer_signature(layer, constants: dict) -> str:
    """Stable hash of everything about a layer that can change which tactic wins."""
    ins = []
    for name, spec in zip(layer.inputs, layer.aligned_input_specs()):
        if not name:
            ins.append(None)
            continue
        entry = {"dtype": spec.dtype if spec else None, "shape": spec.shape if spec else None,
                 "const": name in constants}
        c = constants.get(name)
        if c is not None and c.size <= SMALL_CONSTANT:
            entry["value"] = _canon(np.asarray(c))
        ins.append(entry)
    doc = {"op": layer.op, "domain": layer.domain, "opset": layer.opset, "precision": layer.precision,
           "attrs": _canon(layer.attrs), "inputs": ins,
           "outputs": [{"dtype": s.dtype, "shape": s.shape, "used": bool(s.name)} for s in layer.output_specs]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


class TimingCache:
    def __init__(self, path: str | os.PathLike | None, env: dict):
        self.path = os.fspath(path) if path is not None else None
        self.env = {"format": FORMAT, **env}
        self.entries: dict[str, dict] = {}
        self.kernels: dict[str, bytes] = {}
        self.hits = 0
        self.misses = 0
        self.stale = False  # the file was written for another GPU / library set
        if self.path and os.path.exists(self.path):
            self._read()

    def _read(self) -> None:
        try:
            # a FIFO or device at the cache path is refused, never opened (it would block the build)
            with open_regular(self.path, "timing cache") as f:
                doc = json.loads(f.read().decode("utf-8"))
        except FileKindError:
            raise
        except (OSError, ValueError):
            self.stale = True  # unreadable: start over rather than fail the build
            return
        if not isinstance(doc, dict) or doc.get("env") != self.env:
            self.stale = True
            return
        entries = doc.get("entries")
        kernels = doc.get("kernels")
        if not isinstance(entries, dict) or not isinstance(kernels, (dict, type(None))):
            self.stale = True  # a cache of another shape is ignored like a stale one
            return
        self.entries = {k: v for k, v in entries.items() if isinstance(v, dict) and "tactic" in v}
        for k, v in (kernels or {}).items():
            try:
                self.kernels[k] = base64.b64decode(v, validate=True)
            except (ValueError, TypeError):
                continue

    def get(self, key: str) -> dict | None:
        e = self.entries.get(key)
        if e is None:
            self.misses += 1
        else:
            self.hits += 1
        return e

    def put(self, key: str, tactic: str, config: dict, table: list[dict]) -> None:
        self.entries[key] = {"tactic": tactic, "config": config, "table": table}

    def save(self) -> None:
        if not self.path:
            return
        doc = {"env": self.env, "entries": dict(sorted(self.entries.items())),
               "kernels": {k: base64.b64encode(v).decode() for k, v in sorted(self.kernels.items())}}
        atomic_write_text(self.path, json.dumps(doc, sort_keys=True))

    def stats(self) -> dict:
        return {"path": self.path, "hits": self.hits, "misses": self.misses, "stale_file_ignored": self.stale,
                "entries": len(self.entries), "kernels": len(self.kernels)}
