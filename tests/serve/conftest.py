"""One local Ray instance for the Ray tests of this folder (``num_cpus=2``, HTTP on 127.0.0.1, metrics
exported every half second so a test can read them), started on first use and shut down at the end
of the session. Tests that need it ask for the ``ray_instance`` fixture; the others never import Ray."""

from __future__ import annotations

import os
import socket

import pytest

try:  # imported here, at collection: Ray's serializer keeps the pickle.loads it finds at import, and a
    import ray  # noqa: F401  # test that first imports it while tests/conftest.py forbids pickle would
    import ray.data  # noqa: F401  # leave Ray unable to unpickle for the rest of the session
    import ray.serve  # noqa: F401
except ImportError:
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_instance():
    """{"metrics_port"}: the port of the node's Prometheus metrics."""
    ray = pytest.importorskip("ray", reason="the serving tests need workbench[serve]")
    pytest.importorskip("ray.serve")
    if ray.is_initialized():
        pytest.skip("Ray is already running in this process")
    os.environ.setdefault("RAY_metrics_report_interval_ms", "500")
    metrics_port = free_port()
    for attempt in (1, 2):  # a raylet whose agents start too slowly on a loaded machine gives up: once more
        try:
            ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                     _metrics_export_port=metrics_port)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    try:
        yield {"metrics_port": metrics_port}
    finally:
        from ray import serve

        try:
            serve.shutdown()
        finally:
            ray.shutdown()
