"""The Ray Serve deployment of one engine: each replica holds one ``EngineModel`` and batches the
rows of concurrent requests with ``@serve.batch``.

Imported only once Ray is known to be installed (``workbench.serve`` checks first). The batcher
counts rows, not requests (``batch_size_fn``), and its limit is the engine's largest batch, so a
batch fills exactly one engine run; a request with more rows than that was already cut into pieces
by ``EngineModel.infer``, each of which joins a batch of its own.
"""

from __future__ import annotations

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from .metrics import RayMetrics
from .model import EngineModel
from .protocol import ProtocolError


def rows_of(pieces) -> int:
    """The batcher's measure of a batch: its rows."""
    return sum(n for _, n in pieces)


@serve.deployment(name="WorkbenchModel")
class WorkbenchModel:
    """An engine behind the Open Inference Protocol (HTTP), or called through a DeploymentHandle:
    ``await handle.infer.remote({"x": array})`` returns {output name: array}."""

    def __init__(self, engine_path: str, name: str | None = None, max_batch: int | None = None,
                 batch_wait_ms: float = 5.0, context_options: dict | None = None,
                 max_body_bytes: int | None = None, check_rows: bool = True):
        options = {} if max_body_bytes is None else {"max_body_bytes": max_body_bytes}
        self.model = EngineModel(engine_path, name, max_batch=max_batch, context_options=context_options,
                                 check_rows=check_rows, **options)
        self.model.sinks.append(RayMetrics(self.model.name))
        if self.model.layout.batched:
            self.run_pieces.set_max_batch_size(self.model.max_batch)
            self.run_pieces.set_batch_wait_timeout_s(max(batch_wait_ms, 0.0) / 1e3)
            self.model.submit = self._submit

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0, batch_size_fn=rows_of)
    async def run_pieces(self, pieces):
        return await self.model.run_batch_async(pieces)

    async def _submit(self, piece):
        out = await self.run_pieces(piece)
        if isinstance(out, BaseException):
            raise out
        return out

    async def __call__(self, request: Request) -> Response:
        path = request.scope.get("path", "/")
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"

        async def read_body(limit: int) -> bytes:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ProtocolError(f"the body is over {limit} bytes, the most this server takes")
                chunks.append(chunk)
            return b"".join(chunks)

        status, headers, body = await self.model.handle(request.method, path, request.headers, read_body)
        return Response(content=body, status_code=status, headers=headers)

    async def infer(self, feeds: dict) -> dict:
        """Outputs for ``feeds`` (one request's rows), for Python callers holding a handle."""
        return await self.model.infer(feeds)

    def metadata(self) -> dict:
        return self.model.metadata

    def stats(self) -> dict:
        return self.model.stats.snapshot()

    def check_health(self) -> None:
        if self.model.ctx is None:
            raise RuntimeError("the engine context is gone")
