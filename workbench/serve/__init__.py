"""Serving engines online on Ray Serve, speaking the Open Inference Protocol (KServe v2).

    import workbench as wb
    server = wb.serve.start("resnet.wbe", port=8000)     # local Ray instance, one replica per GPU
    server.url, server.model_url                         # http://127.0.0.1:8000, .../v2/models/resnet
    server.stop()

    from ray import serve                                # or inside your own Ray application:
    serve.run(wb.serve.deployment("resnet.wbe", replicas=4), route_prefix="/")

Every replica loads the engine once, batches the rows of concurrent requests up to the engine's
largest batch (``batching.py``), and answers ``/v2/...`` (``model.py``, ``protocol.py``). Ray is an
optional dependency (``pip install workbench[serve]``): importing this package never imports it.

Modules: ``batching`` (rows in, rows out; no Ray), ``protocol`` (the wire format; no Ray),
``model`` (one engine behind the endpoints; no Ray), ``metrics``, ``replica`` (the Ray Serve
deployment), ``ray_support`` (finding and starting Ray).
"""

from __future__ import annotations

import os
import re
import time

from ..errors import WorkbenchError
from .model import DEFAULT_MAX_BODY_BYTES, model_name
from .ray_support import RayMissingError, require_ray

__all__ = ["DEFAULT_MAX_BODY_BYTES", "RayMissingError", "Server", "default_max_ongoing", "deployment", "start"]


def _engine_facts(engine_path):
    """(absolute path, engine) of a servable engine; a one-line WorkbenchError otherwise."""
    from ..core.files import regular_file
    from ..runtime.engine import Engine
    from .protocol import unservable

    path = os.path.abspath(regular_file(os.fspath(engine_path), "engine"))
    engine = Engine.load(path)
    problem = unservable(engine)
    if problem:
        raise WorkbenchError(f"cannot serve {os.fspath(engine_path)!r}: {problem}")
    return path, engine


def deployment(engine_path, *, name: str | None = None, replicas: int = 1, max_batch: int | None = None,
               batch_wait_ms: float = 5.0, num_cpus: float | None = None, num_gpus: float | None = None,
               max_ongoing_requests: int | None = None, threads: int | None = None,
               max_body_bytes: int | None = None, check_rows: bool = True):
    """A Ray Serve application serving ``engine_path``: pass it to ``serve.run`` or to another
    deployment's ``bind``. ``name`` is the model name in the URLs (default: the file's stem).

    Replicas of a GPU engine take one GPU each (``num_gpus``, default 1), of a CPU engine one CPU
    (``num_cpus``, default 1; its BLAS runs on that many threads unless ``threads`` says otherwise).
    ``max_batch``: rows gathered into one batch (default: the engine's largest batch);
    ``batch_wait_ms``: how long a batch waits to fill; ``max_ongoing_requests``: requests one replica
    holds at once (default ``default_max_ongoing``). The path must be readable on every node that
    may run a replica (a shared or copied file)."""
    require_ray("workbench.serve.deployment")
    path, engine = _engine_facts(engine_path)
    backend = engine.backend
    name = name or model_name(path)
    for what, value in (("replicas", replicas), ("max_batch", max_batch), ("max_ongoing_requests", max_ongoing_requests)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise WorkbenchError(f"{what} must be a positive whole number, got {value!r}")
    if not batch_wait_ms >= 0:
        raise WorkbenchError(f"batch_wait_ms must be 0 or more, got {batch_wait_ms!r}")
    from .batching import batch_layout
    from .replica import WorkbenchModel

    actor: dict = {}
    if backend == "gpu":
        actor["num_gpus"] = 1 if num_gpus is None else num_gpus
        actor["num_cpus"] = 1 if num_cpus is None else num_cpus
        context_options = {}
    else:
        actor["num_cpus"] = 1 if num_cpus is None else num_cpus
        context_options = {"threads": threads or max(1, int(actor["num_cpus"]))}
    ongoing = max_ongoing_requests or default_max_ongoing(batch_layout(engine).batch_limit(max_batch))
    dep = WorkbenchModel.options(name=name, num_replicas=replicas, ray_actor_options=actor,
                                 max_ongoing_requests=ongoing)
    return dep.bind(path, name, max_batch, float(batch_wait_ms), context_options, max_body_bytes, check_rows)


def default_max_ongoing(batch_limit: int) -> int:
    """Requests one replica holds at once unless told: enough for several full batches of one-row
    requests. Serve's default of 5 keeps batches from filling, and a request that finds every replica
    full waits in Serve's router with a backoff of up to half a second before it tries again, which
    turns a burst of clients into second-long tails; waiting in the replica's batch queue is FIFO."""
    return max(8 * batch_limit, 64)


def start(engine_path, *, name: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          replicas: int | None = None, max_batch: int | None = None, batch_wait_ms: float = 5.0,
          address: str | None = None, route_prefix: str = "/", ready_timeout_s: float = 60.0,
          **options) -> Server:
    """Serve ``engine_path`` over HTTP and return once it answers: a local Ray instance unless
    ``address`` names a cluster (``"auto"``, ``"ray://head:10001"``) or Ray is already initialized
    in this process. ``replicas`` defaults to one per GPU of the cluster for a GPU engine, one for
    a CPU engine. On a local instance it returns once ``/ready`` answers (``ready_timeout_s``).
    Other keywords go to ``deployment``."""
    ray, serve = require_ray("workbench serve")
    path, engine = _engine_facts(engine_path)
    name = name or model_name(path)
    from .ray_support import connect, serve_http_address

    started_ray = connect(address, host=host, port=port)
    serve_was_running = True
    try:
        gpu = engine.backend == "gpu"
        if replicas is None:
            replicas = int(ray.cluster_resources().get("GPU", 0)) if gpu else 1
        _check_resources(ray, replicas, gpu, options, fixed_size=address is None)
        status = serve.status()
        serve_was_running = bool(status.proxies) or bool(status.applications)
        serve.start(http_options={"host": host, "port": port})
        app = deployment(path, name=name, replicas=replicas, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                         **options)
        try:
            serve.run(app, name=name, route_prefix=route_prefix, logging_config={"log_level": "WARNING"})
        except RuntimeError as exc:  # a replica failed to start
            raise WorkbenchError(f"model {name!r} failed to start: {_cause(exc)}") from None
    except BaseException:
        if started_ray:
            ray.shutdown()
        elif not serve_was_running and not serve.status().applications:
            serve.shutdown()  # leave a Ray that was running as it was
        raise
    http_host, http_port = serve_http_address(host, port)
    prefix = route_prefix.rstrip("/")
    server = Server(name, f"http://{http_host}:{http_port}{prefix}", started_ray, not serve_was_running)
    if address is None:  # the proxy learns the new route a moment after serve.run returns
        try:
            wait_until_ready(f"{server.model_url}/ready", ready_timeout_s)
        except BaseException:
            server.stop()
            raise
    return server


def wait_until_ready(url: str, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200; a WorkbenchError after ``timeout_s`` seconds."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - our own local server
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        if time.monotonic() > deadline:
            raise WorkbenchError(f"the model started but {url} does not answer ({last}) after {timeout_s:g} s")
        time.sleep(0.1)


def _cause(exc: BaseException) -> str:
    """The last ``SomeError: message`` line of a replica's traceback that Serve passes on."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    found = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception)\b.*:", ln)]
    return (found[-1] if found else lines[-1] if lines else type(exc).__name__)[:300]


def _check_resources(ray, replicas: int, gpu: bool, options: dict, fixed_size: bool) -> None:
    """Refuse replicas that the cluster cannot hold, which Serve would wait for forever. A cluster
    named by ``address`` may scale up, so there (``fixed_size`` False) only a GPU must exist."""
    have = ray.cluster_resources()
    if gpu and have.get("GPU", 0) < 1:
        raise WorkbenchError("the engine runs on the GPU and the Ray cluster has no GPU; rebuild it with --device cpu "
                             "or point --address at a cluster with GPUs")
    if not fixed_size:
        return
    need = {"CPU": replicas * (options.get("num_cpus") or 1), "GPU": replicas * (options.get("num_gpus") or 1) if gpu else 0}
    for key, amount in need.items():
        if amount > have.get(key, 0):
            raise WorkbenchError(f"{replicas} replicas need {amount:g} {key}s; the Ray cluster has "
                                 f"{have.get(key, 0):g} — use fewer --replicas")


class Server:
    """A running deployment of one engine (what ``start`` returns): ``url``, ``model_url``,
    ``curl_example()``, ``stop()``; a context manager that stops it on exit."""

    def __init__(self, name: str, url: str, started_ray: bool, started_serve: bool):
        self.name = name
        self.url = url
        self.started_ray = started_ray
        self.started_serve = started_serve
        self.stopped = False

    @property
    def model_url(self) -> str:
        return f"{self.url}/v2/models/{self.name}"

    def handle(self):
        """The application's DeploymentHandle (``await handle.infer.remote(feeds)``)."""
        _, serve = require_ray()
        return serve.get_app_handle(self.name)

    def curl_example(self, engine=None) -> str:
        """A curl command that asks for the model's metadata, and one that runs it when the
        engine (given) has small inputs of fixed shape."""
        lines = [f"curl {self.model_url}"]
        if engine is not None:
            from .protocol import example_request

            body = example_request(engine)
            if body is not None:
                lines.append(f"curl -X POST {self.model_url}/infer -H 'Content-Type: application/json' -d '{body}'")
        return "\n".join(lines)

    def stop(self) -> None:
        """Delete this model's application; shut Serve (and Ray) down when ``start`` started them."""
        if self.stopped:
            return
        ray, serve = require_ray()
        self.stopped = True
        if not ray.is_initialized():
            return
        serve.delete(self.name)
        if self.started_serve and not serve.status().applications:
            serve.shutdown()
        if self.started_ray:
            ray.shutdown()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<workbench.serve.Server {self.name!r} at {self.url}{' (stopped)' if self.stopped else ''}>"
