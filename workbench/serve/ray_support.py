"""Finding Ray (an optional dependency) and connecting to it: a local instance or a cluster."""

from __future__ import annotations

import logging
import os
import socket

from ..errors import WorkbenchError


class RayMissingError(WorkbenchError, ImportError):
    """Ray (with Serve and Data) is not installed."""


def require_ray(what: str = "serving and batch inference"):
    """(ray, ray.serve), or RayMissingError saying how to install them."""
    try:
        import ray  # noqa: PLC0415 - optional dependency, imported on first use
        from ray import serve  # noqa: PLC0415
    except ImportError as exc:
        raise RayMissingError(f"{what} needs Ray Serve and Ray Data, which are not installed ({exc.name or exc}): "
                              "pip install workbench[serve]") from None
    return ray, serve


def require_ray_data(what: str = "batch inference"):
    """ray.data, or RayMissingError."""
    require_ray(what)
    try:
        import ray.data  # noqa: PLC0415
    except ImportError as exc:
        raise RayMissingError(f"{what} needs Ray Data, which is not installed ({exc.name or exc}): "
                              "pip install workbench[serve]") from None
    return ray.data


def port_free(host: str, port: int) -> bool:
    """Whether a listening socket can be bound on (host, port) right now."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise WorkbenchError(f"--host {host!r} is not an address of this machine") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError:
            return False
    return True


def connect(address: str | None, *, host: str | None = None, port: int | None = None, num_cpus: int | None = None) -> bool:
    """Make sure this process is connected to Ray: the cluster at ``address``, else a new local
    instance (checking first that the HTTP port is free). Returns whether this call started it
    (so that the caller shuts it down again); a process already connected is left as it is."""
    ray, _ = require_ray()
    if ray.is_initialized():
        return False
    local = address is None and not os.environ.get("RAY_ADDRESS")
    if local and port is not None and not port_free(host or "127.0.0.1", port):
        raise WorkbenchError(f"port {port} on {host} is in use; pick another with --port")
    kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": False}
    if local:
        kwargs.update(include_dashboard=False, num_cpus=num_cpus)
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "a local instance"
        raise WorkbenchError(f"cannot start or reach Ray at {where}: {str(exc).splitlines()[0][:200]}") from None
    return True


def serve_http_address(host: str, port: int) -> tuple[str, int]:
    """Where Serve's HTTP proxy listens: what it was started with, which differs from (host, port)
    when Serve was already running on the cluster."""
    try:
        from ray.serve.context import _get_global_client  # noqa: PLC0415 - no public getter for this

        config = _get_global_client(raise_if_no_controller_running=False).http_config
        host, port = config.host, config.port
    except Exception:  # noqa: BLE001 - fall back to what was asked for
        pass
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return host, int(port)
