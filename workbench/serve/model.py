"""One served engine: the Open Inference Protocol endpoints over an execution context.

``EngineModel`` is what a Ray Serve replica holds (``replica.py`` wraps it); it needs no Ray, so its
routing, checks and batching are tested directly. Each request is checked on its own before it
joins a batch, so a bad request is answered 400 and never touches anyone else's rows; engine runs
happen on one thread of their own, off the event loop, so requests keep arriving (and batches keep
forming) while the engine works.

Routes (``{name}`` is the model name, ``/versions/1`` may follow it):
``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``, ``GET /v2/models/{name}``,
``GET /v2/models/{name}/ready``, ``GET /v2/models/{name}/stats``, ``POST /v2/models/{name}/infer``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import InputError, WorkbenchError
from ..runtime.engine import Engine
from . import protocol
from .batching import (
    BatchLayout,
    batch_layout,
    check_request,
    rows_interact,
    run_rows,
    split_rows,
)
from .metrics import ReplicaStats

log = logging.getLogger("workbench.serve")
DEFAULT_MAX_BODY_BYTES = 128 << 20
Piece = tuple[dict[str, np.ndarray], int]


class EngineModel:
    """An engine behind the protocol. ``submit`` runs one piece of a request (at most
    ``max_batch`` rows); by default alone, in a Ray Serve replica through ``@serve.batch``."""

    def __init__(self, engine_path: str, name: str | None = None, *, max_batch: int | None = None,
                 context_options: dict | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 check_rows: bool = True, sinks=()):
        self.engine = Engine.load(engine_path)
        self.name = name or model_name(engine_path)
        problem = protocol.unservable(self.engine)
        if problem:
            raise WorkbenchError(f"cannot serve {engine_path!r}: {problem}")
        # the context is made, probed and run on one thread of its own (a GPU context's stream,
        # captured graphs and memory pool never see another thread)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workbench-engine")
        try:
            self.ctx, layout = self.executor.submit(self._make_context, context_options or {}, check_rows).result()
        except BaseException:
            self.executor.shutdown(wait=False)
            raise
        self.layout = layout
        self.max_batch = layout.batch_limit(max_batch)
        self.max_body_bytes = max_body_bytes
        self.stats = ReplicaStats()
        self.sinks = [self.stats, *sinks]
        self.submit: Callable[[Piece], Awaitable[dict]] = self._run_alone
        self.metadata = protocol.model_metadata(self.name, self.engine, self.layout, self.max_batch)

    def _make_context(self, options: dict, check_rows: bool):
        ctx = self.engine.create_context(**options)
        layout = batch_layout(self.engine)
        try:
            why = rows_interact(ctx, layout) if check_rows else None
        except Exception as exc:  # noqa: BLE001 - random rows the model cannot take: batch as declared
            log.warning("%s: could not check that rows are independent (%s); batching by dim 0", self.name, exc)
            why = None
        if why:
            log.warning("%s: not batching requests: %s", self.name, why)
            layout = BatchLayout(False, reason=f"rows interact: {why}")
        return ctx, layout

    # ---- running ----------------------------------------------------------------------------
    def run_batch(self, pieces: list[Piece]) -> list[dict | BaseException]:
        """Run pieces of checked requests together (on the engine thread); each gets its own outputs,
        or the exception that stopped its batch."""
        return self._timed_batch(pieces)[0]

    def _timed_batch(self, pieces: list[Piece]) -> tuple[list[dict | BaseException], float]:
        start = time.perf_counter()
        try:
            outs = run_rows(self.ctx, self.layout, pieces)
        except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
            outs = [exc] * len(pieces)
        return outs, (time.perf_counter() - start) * 1e3

    async def run_batch_async(self, pieces: list[Piece]) -> list[dict | BaseException]:
        outs, engine_ms = await asyncio.get_running_loop().run_in_executor(self.executor, self._timed_batch, pieces)
        if not any(isinstance(o, BaseException) for o in outs):
            # counted here, on the replica's event loop: Serve's metrics take their replica tags from it
            rows = sum(n for _, n in pieces)
            runs = -(-rows // self.layout.max_rows) if self.layout.batched and self.layout.max_rows else len(pieces)
            for sink in self.sinks:
                sink.batch(rows, runs, engine_ms)
        return outs

    async def _run_alone(self, piece: Piece) -> dict:
        (out,) = await self.run_batch_async([piece])
        if isinstance(out, BaseException):
            raise out
        return out

    async def infer(self, feeds: dict, rows: int | None = None) -> dict[str, np.ndarray]:
        """The outputs for one request's feeds (checked here unless ``rows`` says they were)."""
        if rows is None:
            feeds, rows = check_request(self.layout, self.engine.inputs, feeds)
        pieces = split_rows(feeds, rows, self.max_batch) if self.layout.batched else [(feeds, rows)]
        outs = await asyncio.gather(*(self.submit(p) for p in pieces))
        for out in outs:
            if isinstance(out, BaseException):
                raise out
        if len(outs) == 1:
            return outs[0]
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    # ---- HTTP -------------------------------------------------------------------------------
    async def handle(self, method: str, path: str, headers, read_body: Callable[[int], Awaitable[bytes]]):
        """Answer one HTTP request: returns (status, headers, body). ``read_body(limit)`` returns the
        body or raises ProtocolError when it is longer than ``limit`` bytes."""
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] != "v2":
            return _error(404, f"no such endpoint {path[:200]!r}; the Open Inference Protocol lives under /v2")
        rest = parts[1:]
        if rest in ([], ["health", "live"], ["health", "ready"]):
            if method not in ("GET", "HEAD"):
                return _error(405, f"{path} takes GET")
            doc = ({"live": True} if rest[-1:] == ["live"] else {"ready": True}) if rest else protocol.server_metadata()
            return _json(200, doc)
        if len(rest) < 2 or rest[0] != "models":
            return _error(404, f"no such endpoint {path[:200]!r}")
        name, tail = rest[1], rest[2:]
        if name != self.name:
            return _error(404, f"unknown model {name[:100]!r}; this server serves {self.name!r}")
        if tail[:1] == ["versions"]:
            if len(tail) < 2 or tail[1] != protocol.MODEL_VERSION:
                return _error(404, f"model {self.name!r} has only version {protocol.MODEL_VERSION}")
            tail = tail[2:]
        if tail in ([], ["ready"], ["stats"]):
            if method not in ("GET", "HEAD"):
                return _error(405, f"{path} takes GET")
            if not tail:
                return _json(200, self.metadata)
            if tail == ["ready"]:
                return _json(200, {"name": self.name, "ready": True})
            return _json(200, {"model_stats": [{"name": self.name, "version": protocol.MODEL_VERSION,
                                                "replica": os.getpid(), **self.stats.snapshot()}]})
        if tail != ["infer"]:
            return _error(404, f"no such endpoint {path[:200]!r}")
        if method != "POST":
            return _error(405, f"{path} takes POST")
        return await self._http_infer(headers, read_body)

    async def _http_infer(self, headers, read_body):
        start = time.perf_counter()
        status, out_headers, body = await self._infer_response(headers, read_body)
        ms = (time.perf_counter() - start) * 1e3
        for sink in self.sinks:
            sink.request(status, ms)
        return status, out_headers, body

    async def _infer_response(self, headers, read_body):
        try:
            length = _content_length(headers)
            if length is not None and length > self.max_body_bytes:
                raise protocol.ProtocolError(f"the body is {length} bytes; this server takes at most {self.max_body_bytes}")
            body = await read_body(self.max_body_bytes)
            request = protocol.parse_infer(body, _header(headers, protocol.HEADER_LENGTH),
                                           self.engine.inputs, self.engine.outputs)
            feeds, rows = check_request(self.layout, self.engine.inputs, request.feeds)
        except InputError as exc:
            return _error(getattr(exc, "status", 400), _line(exc))
        try:
            outputs = await self.infer(feeds, rows)
        except InputError as exc:
            return _error(400, _line(exc))
        except Exception as exc:  # noqa: BLE001 - the engine failed: the client gets an error, the server goes on
            log.exception("%s: inference failed", self.name)
            return _error(500, f"inference failed: {type(exc).__name__}: {_line(exc)}")
        body, out_headers = protocol.encode_infer(self.name, request, outputs)
        return 200, out_headers, body

    def close(self) -> None:
        self.executor.shutdown(wait=False)


def model_name(engine_path: str) -> str:
    """The default model name: the engine file's stem."""
    return os.path.splitext(os.path.basename(os.fspath(engine_path)))[0] or "model"


def _content_length(headers) -> int | None:
    raw = _header(headers, "content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise protocol.ProtocolError(f"Content-Length {raw[:40]!r} is not a number") from None


def _header(headers, key: str):
    if headers is None:
        return None
    value = headers.get(key)
    if value is None and isinstance(headers, dict):
        lowered = key.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _json(status: int, doc) -> tuple[int, dict, bytes]:
    return status, {"content-type": "application/json"}, json.dumps(doc).encode("utf-8")


def _error(status: int, message: str) -> tuple[int, dict, bytes]:
    return status, {"content-type": "application/json"}, protocol.error_body(message)
