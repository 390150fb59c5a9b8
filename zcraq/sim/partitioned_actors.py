"""Simulated processes of a partitioned cluster: the real ``PartitionedCoordinator`` and
``PartitionHost`` cores, wired to the simulated network as their shells (zcraq/coordinator_partitioned.py,
zcraq/node_partitioned.py) wire them to sockets.

Requests, replies and chain frames cross the network through the real codec; the published table
crosses it as the JSON the coordinator's PUB socket sends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, assert_never

import orjson
from msgspec import UNSET

from zcraq import wire
from zcraq.coordcore import CoordinatorTimings
from zcraq.coordpartitions import PartitionedCoordinator, PublishTable, Shape
from zcraq.effects import Effect, PeerRequest, Publish, Relink, Respond, SendDown, SendUp, Subscribe
from zcraq.messages import (CaughtUp, CoordinatorRequest, Delete, Drain, Error, Heartbeat, Join, Leave, Malformed,
                            NodeRequest, Ok, Reply, StatusRequest, TopologyRequest, Write)
from zcraq.nodecore import NodeTimings
from zcraq.nodehost import HostEffect, PartitionHost, Push, PushTargets
from zcraq.partitioning import partition_of
from zcraq.sim.actors import COORDINATOR, LIMITS, SimCluster, SimProcess, service_of
from zcraq.sim.world import World
from zcraq.store import MemoryStore
from zcraq.store.base import ReplicaStore
from zcraq.topology import Member


def _check_sim_endpoint(endpoint: str) -> None:
    if "/" not in endpoint:
        raise ValueError(f"not a simulated endpoint: {endpoint!r}")


class PartitionedCluster(SimCluster):
    """Routing between the coordinator, the hosts and the clients of a partitioned cluster."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.hosts: dict[str, SimHost] = {}
        self.partitioned: SimPartitionedCoordinator | None = None

    def deliver_request(self, endpoint: str, ref: tuple[Any, ...], frames: list[bytes]) -> None:
        owner = endpoint.split("/")[0]
        if owner == COORDINATOR and self.partitioned is not None:
            self.partitioned.receive(ref, wire.read_coordinator_request(frames, LIMITS))
        elif owner in self.hosts:
            self.hosts[owner].receive(ref, wire.read_node_request(frames, LIMITS))

    def deliver_reply(self, ref: tuple[Any, ...], frames: list[bytes]) -> None:
        kind, name, tag = ref
        if kind == "client":
            self.clients[name].on_reply(ref, frames)
            return
        process: SimHost | SimPartitionedCoordinator | None = (
            self.partitioned if name == COORDINATOR else self.hosts[name])
        if process is not None and process.incarnation == tag:
            process.receive_reply(*wire.read_reply(frames))


class SimStores:
    """A host's replica stores, one MemoryStore per partition; a crash keeps what was flushed."""

    def __init__(self) -> None:
        self.held: dict[int, MemoryStore] = {}

    def store(self, partition: int) -> ReplicaStore:
        # No progress estimates in catch-up pages, as in the one-chain simulation.
        return self.held.setdefault(partition, MemoryStore(estimates=False))

    def partitions(self) -> list[int]:
        return sorted(self.held)

    def release(self, partition: int) -> None:
        pass  # kept as it is: a replica started here again takes it up

    def drop(self, partition: int) -> None:
        store = self.held.pop(partition, None)
        if store is not None:
            store.close()

    def commit(self) -> None:
        pass  # a MemoryStore's flush is durable by itself

    def crash(self) -> None:
        self.held = {p: s.crash_copy() for p, s in self.held.items()}


class SimHost(SimProcess):
    """A node process of a partitioned cluster: a ``PartitionHost`` and its stores."""

    def __init__(self, cluster: PartitionedCluster, name: str, zone: str, partitions: int, timings: NodeTimings,
                 unsafe: frozenset[str]) -> None:
        super().__init__(cluster, name)
        self.hosts = cluster.hosts
        self.member = Member(name, service_of(name), f"{name}/write", f"{name}/ack")
        self.zone = zone
        self.partitions = partitions
        self.timings = timings
        self.unsafe = unsafe
        self.stores = SimStores()
        self.host: PartitionHost | None = None
        self.subscribed = False
        self.dead = False  # gone for good, its disk with it

    def start(self) -> None:
        self.incarnation += 1
        self.alive = True
        self.subscribed = False
        self.host = PartitionHost(self.member, self.zone, self.partitions, self.stores, self.timings, self.unsafe)
        self.host.start(self.world.now)
        self.after_event()
        self._schedule_tick()

    def crash(self) -> None:
        super().crash()
        self.host = None
        self.stores.crash()

    def die(self) -> None:
        self.crash()
        self.stores = SimStores()
        self.dead = True

    def on_tick(self) -> None:
        if self.host is not None:
            self.host.tick(self.world.now)

    def after_event(self) -> None:
        if self.host is not None:
            self.execute_host(self.host.ready(self.world.now))

    def receive(self, ref: tuple[Any, ...], request: NodeRequest | Malformed) -> None:
        def handle() -> None:
            if self.host is not None:
                self.host.on_request(ref, request, self.world.now)

        self.deliver(handle)

    def receive_reply(self, reply: Reply | Malformed, values: list[bytes]) -> None:
        def handle() -> None:
            if self.host is not None:
                self.host.on_peer_reply(reply, values, self.world.now)

        self.deliver(handle)

    def on_table(self, data: bytes) -> None:
        if self.host is not None and self.subscribed:
            self.host.on_table(orjson.loads(data), self.world.now)

    def execute_host(self, effects: list[HostEffect]) -> None:
        for effect in effects:
            match effect:
                case Push():
                    self._push(effect.endpoint, wire.encode_chain(effect.frame))
                case Respond():
                    self.send_reply(effect.client, effect)
                case PeerRequest():
                    coordinator = effect.endpoint == "coordinator"
                    self.send_request(effect, service_of(COORDINATOR) if coordinator else effect.endpoint)
                case Subscribe():
                    self.subscribed = True
                case PushTargets():
                    pass  # no sockets to close
                case _:
                    assert_never(effect)

    def _push(self, endpoint: str, data: bytes) -> None:
        """A chain frame to a peer's write_in or ack_in: its host routes it by the frame's partition."""
        target = self.hosts[endpoint.split("/")[0]]
        ack = endpoint.endswith("/ack")

        def arrive() -> None:
            host = target.host
            if host is not None:
                frame = wire.read_chain(data, LIMITS)
                if ack:
                    host.on_ack_frame(frame, self.world.now)
                else:
                    host.on_write_frame(frame, self.world.now)

        self.world.send(self.name, endpoint, lambda: target.deliver(arrive), duplicable=True)


class SimPartitionedCoordinator(SimProcess):
    """The coordinator of a partitioned cluster; its TableStore is itself (the state file outlives
    a crash). Requests are routed as the shell routes them."""

    def __init__(self, cluster: PartitionedCluster, shape: Shape, timings: CoordinatorTimings) -> None:
        super().__init__(cluster, COORDINATOR)
        self.hosts = cluster.hosts
        self.shape = shape
        self.timings = timings
        self.saved: dict[str, Any] | None = None
        self.pcore: PartitionedCoordinator | None = None
        self._deferred: list[tuple[Any, TopologyRequest | StatusRequest]] = []

    def load(self) -> dict[str, Any] | None:
        return self.saved

    def save(self, state: dict[str, Any]) -> None:
        self.saved = orjson.loads(orjson.dumps(state))  # durable at once, and as JSON as the file is

    def start(self) -> None:
        self.incarnation += 1
        self.alive = True
        self._deferred = []
        self.pcore = PartitionedCoordinator(f"{COORDINATOR}/publish", self, self.world.now, self.shape,
                                            self.timings, check_endpoint=_check_sim_endpoint)
        self._schedule_tick()

    def crash(self) -> None:
        super().crash()
        self.pcore = None

    def on_tick(self) -> None:
        if self.pcore is not None:
            self.pcore.tick(self.world.now)

    def after_event(self) -> None:
        core = self.pcore
        if core is None:
            return
        self.execute_coordinator(core.ready(self.world.now))
        deferred, self._deferred = self._deferred, []
        for client, request in deferred:  # after ready(): the table they are told is saved
            self.send_reply(client, Respond(client, Ok(request.id, table=core.table())))

    def receive(self, ref: tuple[Any, ...], request: CoordinatorRequest | Malformed) -> None:
        def handle() -> None:
            if self.pcore is not None:
                self._route(self.pcore, ref, request)

        self.deliver(handle)

    def receive_reply(self, reply: Reply | Malformed, values: list[bytes]) -> None:
        def handle() -> None:
            if self.pcore is not None:
                self.pcore.on_peer_reply(reply, values, self.world.now)

        self.deliver(handle)

    def drain(self, node_id: str) -> bool:
        """An administrator drains a node (False: the coordinator is down, try later)."""
        core = self.pcore
        if core is None or not self.alive or self.paused:
            return False
        self.deliver(lambda: core.drain(None, None, node_id))
        return True

    def _route(self, core: PartitionedCoordinator, client: Any, request: CoordinatorRequest | Malformed) -> None:
        now = self.world.now
        if isinstance(request, Malformed):
            self._refuse(client, request.id, request.code, request.message)
            return
        if request.partition is UNSET:
            match request:
                case TopologyRequest() | StatusRequest():
                    self._deferred.append((client, request))
                case Write() | Delete():
                    core.forward_write(client, request, now)
                case Join():
                    core.register(client, request, "" if request.zone is UNSET else request.zone, now)
                case Heartbeat():
                    core.node_heartbeat(client, request, now)
                case Leave():
                    core.leave(client, request, now)
                case Drain():
                    core.drain(client, request.id, request.node_id, request.draining)
                case CaughtUp():
                    self._refuse(client, request.id, "bad_request", "caught_up names a partition")
                case _:
                    assert_never(request)
            return
        self._partition_request(core, client, request.partition, request)

    def _partition_request(self, core: PartitionedCoordinator, client: Any, partition: int,
                           request: CoordinatorRequest) -> None:
        now, partitions = self.world.now, self.shape.partitions
        if partition >= partitions:
            self._refuse(client, request.id, "bad_request", f"no partition {partition}")
            return
        match request:
            case Join() | Heartbeat() | CaughtUp() | Leave():
                core.on_partition_request(client, partition, request, now)
            case Write() | Delete() if partition_of(request.key, partitions) != partition:
                self._refuse(client, request.id, "wrong_partition", f"key {request.key!r} is not in {partition}")
            case TopologyRequest() | StatusRequest() | Write() | Delete():
                core.chains[partition].on_request(client, request, now)
            case Drain():
                self._refuse(client, request.id, "bad_request", "drain names a node, not a partition")
            case _:
                assert_never(request)

    def _refuse(self, client: Any, request_id: Any, code: str, message: str) -> None:
        self.send_reply(client, Respond(client, Error(request_id, code, message)))

    def execute_coordinator(self, effects: list[Effect | PublishTable]) -> None:
        for effect in effects:
            match effect:
                case PublishTable():
                    self._publish(orjson.dumps(effect.table))
                case Respond():
                    if effect.client is not None:  # None: the simulation's own drain
                        self.send_reply(effect.client, effect)
                case PeerRequest():
                    self.send_request(effect, effect.endpoint)
                case Publish() | SendDown() | SendUp() | Relink() | Subscribe():
                    raise AssertionError(f"not an effect of a partitioned coordinator: {effect}")
                case _:
                    assert_never(effect)

    def _publish(self, data: bytes) -> None:
        for host in self.hosts.values():
            self.world.send(self.name, f"{host.name}/sub", _publication(host, data))


def _publication(host: SimHost, data: bytes) -> Callable[[], None]:
    return lambda: host.deliver(lambda: host.on_table(data))
