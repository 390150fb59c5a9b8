"""Simulated processes: the real node and coordinator cores, wired to the simulated network the way
the ZeroMQ shells wire them to sockets, and the registry that routes messages between them.

Messages cross the simulated network as bytes, encoded and decoded by the real codec
(zcraq/wire.py), so a run exercises everything between the sockets and the cores.

A reference to a requester is ("peer", process, incarnation) or ("client", name, attempt): replies
to an old incarnation of a restarted process are dropped, as a closed socket would drop them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, assert_never

from zcraq import wire
from zcraq.coordcore import CoordinatorCore, CoordinatorTimings
from zcraq.effects import Effect, PeerRequest, Publish, Relink, Respond, SendDown, SendUp, Subscribe
from zcraq.messages import CoordinatorRequest, Malformed, NodeRequest, Reply
from zcraq.nodecore import NodeCore, NodeTimings
from zcraq.sim.world import World
from zcraq.store import MemoryStore
from zcraq.topology import Member, Topology

TICK = 0.02
COORDINATOR = "coord"
LIMITS = wire.Limits()


def service_of(process: str) -> str:
    return f"{process}/service"


def _check_sim_endpoint(endpoint: str) -> None:
    if "/" not in endpoint:
        raise ValueError(f"not a simulated endpoint: {endpoint!r}")


class ReplyReceiver(Protocol):
    def on_reply(self, ref: tuple[Any, ...], frames: list[bytes]) -> None: ...


class SimCluster:
    """Every simulated process by name, and the routing of requests and replies between them."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.nodes: dict[str, SimNode] = {}
        self.coordinator: SimCoordinator | None = None
        self.clients: dict[str, ReplyReceiver] = {}

    def deliver_request(self, endpoint: str, ref: tuple[Any, ...], frames: list[bytes]) -> None:
        owner = endpoint.split("/")[0]
        if owner == COORDINATOR and self.coordinator is not None:
            self.coordinator.receive(ref, wire.read_coordinator_request(frames, LIMITS))
        elif owner in self.nodes:
            self.nodes[owner].receive(ref, wire.read_node_request(frames, LIMITS))

    def deliver_reply(self, ref: tuple[Any, ...], frames: list[bytes]) -> None:
        kind, name, tag = ref
        if kind == "client":
            self.clients[name].on_reply(ref, frames)
            return
        process: SimProcess | None = self.coordinator if name == COORDINATOR else self.nodes[name]
        if process is not None and process.incarnation == tag:
            process.receive_reply(*wire.read_reply(frames))


class SimProcess:
    """Shared life cycle: alive/crashed, paused (events wait, like SIGSTOP), incarnations."""

    def __init__(self, cluster: SimCluster, name: str) -> None:
        self.cluster = cluster
        self.world = cluster.world
        self.name = name
        self.alive = False
        self.paused = False
        self.incarnation = 0
        self.core: NodeCore | CoordinatorCore | None = None
        self._backlog: list[Callable[[], None]] = []

    def deliver(self, action: Callable[[], None]) -> None:
        if not self.alive:
            return
        if self.paused:
            self._backlog.append(action)
            return
        action()
        self.after_event()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        backlog, self._backlog = self._backlog, []
        for action in backlog:
            self.deliver(action)

    def _schedule_tick(self) -> None:
        incarnation = self.incarnation
        jitter = self.world.rng.uniform(0, TICK / 4)

        def tick() -> None:
            if self.alive and self.incarnation == incarnation:
                if not self.paused:
                    self.on_tick()
                    self.after_event()
                self._schedule_tick()

        self.world.after(TICK + jitter, tick)

    def crash(self) -> None:
        self.alive = False
        self.paused = False
        self._backlog = []
        self.world.break_connections_of(self.name)

    def on_tick(self) -> None:
        if self.core is not None:
            self.core.tick(self.world.now)

    def after_event(self) -> None:
        if self.core is not None:
            self.execute(self.core.ready())

    def execute(self, effects: list[Effect]) -> None:
        raise NotImplementedError

    def receive_reply(self, reply: Reply | Malformed, values: list[bytes]) -> None:
        def handle() -> None:
            if self.core is not None:
                self.core.on_peer_reply(reply, values, self.world.now)

        self.deliver(handle)

    def send_reply(self, ref: tuple[Any, ...], effect: Respond) -> None:
        frames = wire.encode_reply(effect.reply, effect.values)
        self.world.send(self.name, f"{ref[1]}/reply", lambda: self.cluster.deliver_reply(ref, frames))

    def send_request(self, effect: PeerRequest, endpoint: str) -> None:
        ref = ("peer", self.name, self.incarnation)
        frames = wire.encode_request(effect.request)
        self.world.send(self.name, endpoint, lambda: self.cluster.deliver_request(endpoint, ref, frames))


class SimNode(SimProcess):
    core: NodeCore | None

    def __init__(self, cluster: SimCluster, name: str, timings: NodeTimings, unsafe: frozenset[str]) -> None:
        super().__init__(cluster, name)
        self.member = Member(name, service_of(name), f"{name}/write", f"{name}/ack")
        # No progress estimates in catch-up pages: every message stays byte for byte what it was
        # before pages could carry one, so runs stay comparable with those of older commits.
        self.store = MemoryStore(estimates=False)
        self.timings = timings
        self.unsafe = unsafe
        self.down: str | None = None
        self.up: str | None = None
        self.subscribed = False

    def start(self) -> None:
        self.incarnation += 1
        self.alive = True
        self.down = self.up = None
        self.subscribed = False
        self.core = NodeCore(self.member, self.store, timings=self.timings, unsafe=self.unsafe,
                             boot=f"{self.name}-{self.incarnation}")
        self.core.start(self.world.now)
        self.after_event()
        self._schedule_tick()

    def crash(self) -> None:
        super().crash()
        self.core = None
        self.store = self.store.crash_copy()  # what was not flushed is lost

    def receive(self, ref: tuple[Any, ...], request: NodeRequest | Malformed) -> None:
        def handle() -> None:
            if self.core is not None:
                self.core.on_request(ref, request, self.world.now)

        self.deliver(handle)

    def execute(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case SendDown():
                    if self.down is not None:
                        self._chain(self.down, wire.encode_chain(effect.frame), ack=False)
                case SendUp():
                    if self.up is not None:
                        self._chain(self.up, wire.encode_chain(effect.frame), ack=True)
                case Respond():
                    self.send_reply(effect.client, effect)
                case PeerRequest():
                    coordinator = effect.endpoint == "coordinator"
                    self.send_request(effect, service_of(COORDINATOR) if coordinator else effect.endpoint)
                case Relink():
                    self.down, self.up = effect.down, effect.up
                case Subscribe():
                    self.subscribed = True
                case Publish():
                    raise AssertionError("nodes do not publish")
                case _:
                    assert_never(effect)

    def _chain(self, endpoint: str, data: bytes, ack: bool) -> None:
        target = self.cluster.nodes[endpoint.split("/")[0]]

        def arrive() -> None:
            core = target.core
            if core is not None:
                frame = wire.read_chain(data, LIMITS)
                if ack:
                    core.on_ack_frame(frame, self.world.now)
                else:
                    core.on_write_frame(frame, self.world.now)

        self.world.send(self.name, endpoint, lambda: target.deliver(arrive), duplicable=True)

    def on_topology(self, data: bytes) -> None:
        if self.core is not None and self.subscribed:
            self.core.on_topology(wire.decode_topology(data), self.world.now)


def _publication(node: SimNode, data: bytes) -> Callable[[], None]:
    return lambda: node.deliver(lambda: node.on_topology(data))


class SimCoordinator(SimProcess):
    """Its StateStore is itself: the saved topology outlives a crash, as the state file does."""

    core: CoordinatorCore | None

    def __init__(self, cluster: SimCluster, timings: CoordinatorTimings) -> None:
        super().__init__(cluster, COORDINATOR)
        self.timings = timings
        self.saved: Topology | None = None

    def load(self) -> Topology | None:
        return self.saved

    def save(self, topology: Topology) -> None:
        self.saved = topology  # durable at once (fsync before anything is sent)

    def start(self) -> None:
        self.incarnation += 1
        self.alive = True
        self.core = CoordinatorCore(f"{COORDINATOR}/publish", self, self.world.now, timings=self.timings,
                                    check_endpoint=_check_sim_endpoint)
        self._schedule_tick()

    def crash(self) -> None:
        super().crash()
        self.core = None

    def receive(self, ref: tuple[Any, ...], request: CoordinatorRequest | Malformed) -> None:
        def handle() -> None:
            if self.core is not None:
                self.core.on_request(ref, request, self.world.now)

        self.deliver(handle)

    @property
    def topology(self) -> Topology | None:
        return self.core.topology if self.core is not None else None

    def execute(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case Publish():
                    data = wire.encode_topology(effect.topology)
                    for node in self.cluster.nodes.values():
                        self.world.send(self.name, f"{node.name}/sub", _publication(node, data))
                case Respond():
                    self.send_reply(effect.client, effect)
                case PeerRequest():
                    self.send_request(effect, effect.endpoint)
                case SendDown() | SendUp() | Relink() | Subscribe():
                    raise AssertionError(f"the coordinator has no chain links: {effect}")
                case _:
                    assert_never(effect)
