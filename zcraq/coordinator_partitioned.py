"""The coordinator process of a partitioned cluster (``[cluster] partitions`` above 1): the shell
of zcraq/coordpartitions.py's ``PartitionedCoordinator``, on the sockets of the one-chain
coordinator (``CoordinatorShell``, zcraq/coordinator.py).

A request that names no ``partition`` is about the cluster or a node: the table (``topology``,
``status``), a node's registration (``join``, ``heartbeat``, ``leave``), ``drain``, and writes,
which go to the head of their key's partition. A request naming partition p goes to that
partition's chain core as a one-chain coordinator would take it (PROTOCOL.md: the coordinator of
a partitioned cluster). The table is published on topic ``b"table"`` whenever it changes and
again every republish interval.

State: ``state_dir/state.json`` holds the PartitionedCoordinator's state (the registry and every
partition's topology), saved atomically before any reply or publication that depends on it. Its
shape (partitions, replication) is fixed when the cluster is created; a one-chain state is
refused, as the one-chain coordinator refuses this one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, assert_never

import orjson
from msgspec import UNSET

from zcraq import sockets
from zcraq.access import coordinator_request_refusal
from zcraq.callers import TRUSTED, Caller
from zcraq.config import CoordinatorConfig
from zcraq.coordinator import STATE_FILE, CoordinatorShell, StateError, limits_of, read_state, save_state, timings_of
from zcraq.coordpartitions import PartitionedCoordinator, PublishTable, Shape, TableStore
from zcraq.effects import Effect, PeerRequest, Publish, Relink, Respond, SendDown, SendUp, Subscribe
from zcraq.loglimit import LogLimiter
from zcraq.messages import (CaughtUp, CoordinatorRequest, Delete, Drain, Error, Heartbeat, Join, Leave, Malformed, Ok,
                            Reply, StatusRequest, TopologyRequest, Write, request_type)
from zcraq.monitoring.coordinator import CoordinatorView
from zcraq.partitioning import partition_of
from zcraq.topology import EMPTY

log = logging.getLogger("zcraq.coordinator")

TABLE_TOPIC = b"table"


class TableFile:
    """The partitioned coordinator's TableStore: ``state_dir/state.json``."""

    def __init__(self, state_dir: Path, partitions: int) -> None:
        self.state_dir = state_dir
        self.partitions = partitions

    def load(self) -> dict[str, Any] | None:
        state = read_state(self.state_dir)
        return None if state is None else check_table_state(state, self.partitions, str(self.state_dir / STATE_FILE))

    def save(self, state: dict[str, Any]) -> None:
        save_state(self.state_dir, state)


def check_table_state(state: dict[str, Any], partitions: int, where: str) -> dict[str, Any]:
    """``state``, if it is a partitioned cluster's saved state; ``where`` names it in errors."""
    if "topology" in state:
        raise StateError(f"coordinator state {where} is of a one-chain cluster, and this config has [cluster] "
                         f"partitions = {partitions}: a cluster's shape is fixed when it is created")
    if not isinstance(state.get("topologies"), list) or not isinstance(state.get("nodes"), list):
        raise StateError(f"coordinator state {where} is not a partitioned cluster's")
    return state


@dataclass(frozen=True, slots=True)
class _Deferred:
    """A request the shell answers itself, once the turn's state is saved (the table then is)."""

    client: Any
    request: TopologyRequest | StatusRequest


def shape_of(config: CoordinatorConfig) -> Shape:
    cluster = config.cluster
    return Shape(cluster.partitions, cluster.replication, cluster.max_moves, cluster.formation_grace_ms / 1000)


class PartitionedProcess(CoordinatorShell):
    """The coordinator of a partitioned cluster."""

    def __init__(self, config: CoordinatorConfig, store: TableStore | None = None) -> None:
        """``store``: where the state is kept (default: ``state_dir``, zcraq/coordinator_engine.py: the engine)."""
        shape = shape_of(config)
        where = "the engine" if store else config.state_dir
        try:
            self.core = PartitionedCoordinator(config.publish_endpoint,
                                               store or TableFile(config.state_dir, shape.partitions),
                                               time.monotonic(), shape, timings_of(config), limits=limits_of(config))
        except (ValueError, KeyError, TypeError) as error:  # a saved state of another shape, or damaged
            raise StateError(f"coordinator state in {where}: {error}") from None
        self.core.counters.setdefault("internal_errors", 0)
        if self.core.version > 0:
            log.info("restored table version %d (%d nodes) from %s", self.core.version, len(self.core.nodes), where)
        self._logs = LogLimiter(log)
        self._deferred: list[_Deferred] = []
        super().__init__(config)

    @property
    def counters(self) -> dict[str, int]:
        return self.core.counters

    @property
    def logs(self) -> LogLimiter:
        return self._logs

    def run(self) -> None:
        shape = self.core.shape
        log.info("coordinator: requests %s, table %s (%d partitions of %d replicas), state %s", self.config.endpoint,
                 self.config.publish_endpoint, shape.partitions, shape.replication, self.config.state_dir)
        super().run()

    def _flush_logs(self, now: float) -> None:
        super()._flush_logs(now)
        for chain in self.core.chains:
            chain.logs.flush(now)

    def _view(self) -> CoordinatorView:
        """For /metrics and systemd: the table's version stands in for the epoch, the registered
        nodes for the members."""
        core = self.core
        return CoordinatorView(
            epoch=core.version, members=tuple(core.nodes), learner=None, lease=core.timings.lease,
            published=self.published, counters=MappingProxyType(self._counters()),
            requests=None if self.requests is None else self.requests.figures())

    def _counters(self) -> dict[str, int]:
        """The cluster's counters and every partition's, summed."""
        total = dict(self.core.counters)
        for chain in self.core.chains:
            for name, value in chain.counters.items():
                total[name] = total.get(name, 0) + value
        return total

    # ------------------------------------------------------------------ requests

    def _on_request(self, client: Any, request: CoordinatorRequest | Malformed, now: float, caller: Caller) -> None:
        if isinstance(request, Malformed):
            self.counters["bad_messages"] += 1
            self._respond(Respond(client, Error(request.id, request.code, request.message)))
        elif request.partition is UNSET:
            self._cluster_request(client, request, now, caller)
        else:
            self._partition_request(client, request.partition, request, now, caller)

    def _cluster_request(self, client: Any, request: CoordinatorRequest, now: float, caller: Caller) -> None:
        core = self.core
        match request:
            case TopologyRequest() | StatusRequest():
                if not self._forbidden(client, request, caller):
                    self._deferred.append(_Deferred(client, request))
            case Write() | Delete():
                core.forward_write(client, request, now, caller)
            case Join():
                core.register(client, request, "" if request.zone is UNSET else request.zone, now, caller)
            case Heartbeat():
                core.node_heartbeat(client, request, now, caller)
            case Leave():
                core.leave(client, request, now, caller)
            case Drain():
                core.drain(client, request.id, request.node_id, request.draining, caller)
            case CaughtUp():
                self._refuse(client, request.id, "bad_request", "caught_up names a partition: a replica is caught up, "
                                                                "not a node")
            case _:
                assert_never(request)

    def _partition_request(self, client: Any, partition: int, request: CoordinatorRequest, now: float,
                           caller: Caller) -> None:
        partitions = self.core.shape.partitions
        if partition >= partitions:
            self._refuse(client, request.id, "bad_request", f"no partition {partition}: the cluster has {partitions}")
            return
        match request:
            case Join() | Heartbeat() | CaughtUp() | Leave():
                self.core.on_partition_request(client, partition, request, now, caller)
            case Write() | Delete() if partition_of(request.key, partitions) != partition:
                self._refuse(client, request.id, "wrong_partition",
                             f"key {request.key!r} is in partition {partition_of(request.key, partitions)}, "
                             f"not {partition}")
            case TopologyRequest() | StatusRequest() | Write() | Delete():
                self.core.chains[partition].on_request(client, request, now, caller)
            case Drain():
                self._refuse(client, request.id, "bad_request", "drain names a node, not a partition")
            case _:
                assert_never(request)

    def _forbidden(self, client: Any, request: TopologyRequest | StatusRequest, caller: Caller) -> bool:
        """Refuse (True) a request this caller may not make (the cluster's own requests: the
        core's methods check theirs)."""
        refusal = None if caller is TRUSTED else coordinator_request_refusal(request, caller, EMPTY)
        if refusal is None:
            return False
        self.counters["forbidden"] += 1
        self.logs.warning("forbidden request", time.monotonic(), "refused a %s request: %s (key %s)",
                          request_type(request), refusal, caller.key)
        self._refuse(client, request.id, "forbidden", refusal)
        return True

    def _refuse(self, client: Any, request_id: Any, code: str, message: str) -> None:
        self._respond(Respond(client, Error(request_id, code, message)))

    def _on_peer_reply(self, reply: Reply | Malformed, values: list[bytes], now: float) -> None:
        self.core.on_peer_reply(reply, values, now)

    # ------------------------------------------------------------------ end of a turn

    def _turn(self, now: float) -> None:
        self.core.tick(now)
        self._execute(self.core.ready(now))
        deferred, self._deferred = self._deferred, []
        for item in deferred:  # after ready(): the table they are told is saved
            self._respond(Respond(item.client, self._answer(item.request)))

    def _answer(self, request: TopologyRequest | StatusRequest) -> Ok:
        if isinstance(request, TopologyRequest):
            return Ok(request.id, table=self.core.table(), limits=self.limits)
        return Ok(request.id, table=self.core.table(), counters=self._counters(),
                  lease_ms=int(self.core.timings.lease * 1000))

    def _execute(self, effects: list[Effect | PublishTable]) -> None:
        for effect in effects:
            match effect:
                case PublishTable():
                    sockets.send_nowait(self.pub, [TABLE_TOPIC, orjson.dumps(effect.table)])
                    # Writes are forwarded to heads only: connections to nodes in no chain may go.
                    self.peers.keep_only(m.service for chain in self.core.chains for m in chain.topology.members)
                    self.published = True
                case Respond():
                    self._respond(effect)
                case PeerRequest():
                    self._forward(effect)
                case Publish():
                    raise AssertionError("a partition's topology goes out in the table")
                case SendDown() | SendUp() | Relink() | Subscribe():
                    raise AssertionError(f"the coordinator has no chain links: {effect}")
                case _:
                    assert_never(effect)


__all__ = ["PartitionedProcess", "TABLE_TOPIC", "TableFile", "shape_of"]
