"""Ray itself: start it locally or connect to a cluster, what the cluster offers, and where Ray's output goes."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sweeper.backend.cluster import DRIVER_RESOURCE, live_node_types, node_types_of
from sweeper.core.errors import UserError, first_line

DRIVER_SLOTS = 1000  # trial drivers local Ray can hold at once (as cluster.yaml's head declares)


def start_ray(address: str | None) -> bool:
    """Start local Ray (with the dashboard: Tune's trial cleanup needs the State API) or connect.
    False when Ray was already up in this process (then the caller leaves it up)."""
    import ray

    if ray.is_initialized():
        return False
    if address not in (None, "local", "auto") and not address.startswith("ray://"):
        _check_reachable(address)
    try:
        if address in (None, "local"):
            ray.init(address="local", include_dashboard=True, log_to_driver=False,
                     logging_level=logging.WARNING, resources={DRIVER_RESOURCE: DRIVER_SLOTS})
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        target = f"--address {address}" if address not in (None, "local") else "local Ray"
        raise UserError(f"{target}: Ray could not start or connect ({first_line(err)})") from None
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r}: expected host:port of a Ray head, 'auto' or 'local'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        raise UserError(f"--address {address}: no Ray head reachable there ({err.strerror or err})") from None


def stop_ray() -> None:
    import ray

    ray.shutdown()


def cluster_node_types() -> list[Any]:
    """The node types a launch can use: the alive nodes, plus the autoscaler's node types when this
    is the head of a `ray up` cluster (its workers may not be started yet)."""
    import ray
    import yaml

    types = live_node_types(ray.nodes())
    bootstrap = Path("~/ray_bootstrap_config.yaml").expanduser()
    if bootstrap.is_file():
        types.extend(node_types_of(yaml.safe_load(bootstrap.read_text()), source=str(bootstrap)))
    return types


def has_driver_resource() -> bool:
    """A `ray up` cluster from cluster.yaml marks its head for trial drivers (sweeper.backend.cluster)."""
    import ray

    return DRIVER_RESOURCE in ray.cluster_resources()


def alive_nodes() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


@contextlib.contextmanager
def quiet_ray(log_path: Path) -> Iterator[None]:
    """Ray's console output (Tune's banners, warnings) goes to the sweep's ray.log, not the terminal."""
    log_file = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed in finally
    handler = logging.StreamHandler(log_file)
    loggers = [logging.getLogger(name) for name in ("ray", "ray.tune", "ray.train", "ray.air")]
    saved = [(lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers = [handler]
        lg.propagate = False
    try:
        with contextlib.redirect_stdout(log_file), contextlib.redirect_stderr(log_file):
            yield
    finally:
        for lg, (handlers, propagate) in zip(loggers, saved, strict=True):
            lg.handlers, lg.propagate = handlers, propagate
        log_file.close()
