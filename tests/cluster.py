"""Test glue for the cluster launcher (zcraq/cluster.py): the settings test clusters run with (short
leases, debug logs), and a wait that fails the test instead of raising TimeoutError."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from zcraq.cluster import Cluster, Hook
from zcraq.layout import Generated
from zcraq.waiting import wait_until

T = TypeVar("T")


def new_cluster(root: Path, nodes: int = 3, *, lease_ms: int = 2000, heartbeat_ms: int = 200,
                durability: str = "async", node: dict[str, Any] | None = None,
                coordinator: dict[str, Any] | None = None, secure: bool = False,
                metrics: bool = False, hooks: Sequence[Hook] = (), cluster: dict[str, Any] | None = None,
                engine: Sequence[str] | None = None) -> Cluster:
    """A cluster of ``nodes`` nodes (not started) with its files under ``root``; ``node`` and
    ``coordinator`` set more keys of every node's and the coordinator's config; ``secure``: CURVE
    keys on every connection; ``metrics``: every process serves /metrics (``Cluster.metrics_url``);
    ``hooks``: see zcraq/cluster.py; ``cluster``: the coordinator's [cluster] table (partitions);
    ``engine``: etcd client URLs, for three coordinators keeping the state there."""
    return Cluster(Generated(
        root, nodes,
        coordinator={"lease_ms": lease_ms, "republish_interval_ms": 500, "log_level": "debug", **(coordinator or {})},
        node={"durability": durability, "heartbeat_interval_ms": heartbeat_ms, "request_timeout_ms": 1000,
              "log_level": "debug", **(node or {})}, secure=secure, metrics=metrics, cluster=cluster, engine=engine),
        hooks=hooks)


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail the test naming ``what`` at the
    deadline. Exceptions from zcraq (a node not ready yet) count as "not yet"."""
    try:
        return wait_until(condition, timeout, what, interval=interval)
    except TimeoutError as error:
        raise AssertionError(str(error)) from None
