"""Simulated processes: the real node and coordinator cores, wired to the simulated network the way
the ZeroMQ shells wire them to sockets, plus clients that record a history.

A reference to a requester is ("peer", process, incarnation) or ("client", name, attempt): replies
to an old incarnation of a restarted process are dropped, as a closed socket would drop them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zcraq import wire
from zcraq.coordcore import CoordinatorCore, CoordinatorTimings
from zcraq.effects import Effect, PeerRequest, Persist, Publish, Relink, Reply, SendDown, SendUp, Subscribe
from zcraq.nodecore import NodeCore, NodeTimings
from zcraq.store import MemoryStore
from zcraq.topology import Member, Topology

if TYPE_CHECKING:
    from zcraq.sim.scenario import Simulation

TICK = 0.02
COORDINATOR = "coord"


def service_of(process: str) -> str:
    return f"{process}/service"


def _check_sim_endpoint(endpoint: str) -> None:
    if "/" not in endpoint:
        raise ValueError(f"not a simulated endpoint: {endpoint!r}")


class SimProcess:
    """Shared life cycle: alive/crashed, paused (events wait, like SIGSTOP), incarnations."""

    name: str

    def __init__(self, sim: Simulation, name: str) -> None:
        self.sim = sim
        self.name = name
        self.alive = False
        self.paused = False
        self.incarnation = 0
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
        jitter = self.sim.world.rng.uniform(0, TICK / 4)

        def tick() -> None:
            if self.alive and self.incarnation == incarnation:
                if not self.paused:
                    self.on_tick()
                    self.after_event()
                self._schedule_tick()

        self.sim.world.after(TICK + jitter, tick)

    def crash(self) -> None:
        self.alive = False
        self.paused = False
        self._backlog = []
        self.sim.world.break_connections_of(self.name)

    def on_tick(self) -> None:
        raise NotImplementedError

    def after_event(self) -> None:
        raise NotImplementedError

    def send_reply(self, ref: tuple[Any, ...], frames: list[bytes]) -> None:
        self.sim.world.send(self.name, f"{ref[1]}/reply", lambda: self.sim.deliver_reply(ref, frames))


class SimNode(SimProcess):
    def __init__(self, sim: Simulation, name: str, timings: NodeTimings, unsafe: frozenset[str]) -> None:
        super().__init__(sim, name)
        self.member = Member(name, service_of(name), f"{name}/write", f"{name}/ack")
        self.store = MemoryStore()
        self.timings = timings
        self.unsafe = unsafe
        self.core: NodeCore | None = None
        self.down: str | None = None
        self.up: str | None = None
        self.subscribed = False

    def start(self) -> None:
        self.incarnation += 1
        self.alive = True
        self.down = self.up = None
        self.subscribed = False
        self.core = NodeCore(self.member, self.store, timings=self.timings, unsafe=self.unsafe)
        self.core.start(self.sim.world.now)
        self.after_event()
        self._schedule_tick()

    def crash(self) -> None:
        super().crash()
        self.core = None
        self.store = self.store.crash_copy()  # what was not flushed is lost

    def on_tick(self) -> None:
        assert self.core is not None
        self.core.tick(self.sim.world.now)

    def after_event(self) -> None:
        if self.core is None:
            return
        self.store.flush()
        self._execute(self.core.drain())

    def _execute(self, effects: list[Effect]) -> None:
        world = self.sim.world
        for effect in effects:
            if isinstance(effect, SendDown) and self.down is not None:
                self._chain(self.down, wire.encode_chain(effect.frame), "write")
            elif isinstance(effect, SendUp) and self.up is not None:
                self._chain(self.up, wire.encode_chain(effect.frame), "ack")
            elif isinstance(effect, Reply):
                self.send_reply(effect.client, effect.frames)
            elif isinstance(effect, PeerRequest):
                endpoint = service_of(COORDINATOR) if effect.endpoint == "coordinator" else effect.endpoint
                ref = ("peer", self.name, self.incarnation)
                world.send(self.name, endpoint, lambda e=endpoint, f=effect.frames: self.sim.deliver_request(e, ref, f))
            elif isinstance(effect, Relink):
                self.down, self.up = effect.down, effect.up
            elif isinstance(effect, Subscribe):
                self.subscribed = True

    def _chain(self, endpoint: str, data: bytes, kind: str) -> None:
        target = self.sim.nodes[endpoint.split("/")[0]]

        def arrive() -> None:
            core = target.core
            if core is None:
                return
            if kind == "write":
                core.on_write_frame(data, self.sim.world.now)
            else:
                core.on_ack_frame(data, self.sim.world.now)

        self.sim.world.send(self.name, endpoint, lambda: target.deliver(arrive), duplicable=True)

    def on_topology(self, topology: Topology) -> None:
        if self.core is not None and self.subscribed:
            self.core.on_topology(topology, self.sim.world.now)


class SimCoordinator(SimProcess):
    def __init__(self, sim: Simulation, timings: CoordinatorTimings) -> None:
        super().__init__(sim, COORDINATOR)
        self.timings = timings
        self.persisted: dict[str, Any] | None = None
        self.core: CoordinatorCore | None = None

    def start(self) -> None:
        self.incarnation += 1
        self.alive = True
        self.core = CoordinatorCore(f"{COORDINATOR}/publish", self.persisted, self.sim.world.now,
                                    timings=self.timings, check_endpoint=_check_sim_endpoint)
        self._schedule_tick()

    def crash(self) -> None:
        super().crash()
        self.core = None

    def on_tick(self) -> None:
        assert self.core is not None
        self.core.tick(self.sim.world.now)

    def after_event(self) -> None:
        if self.core is None:
            return
        world = self.sim.world
        for effect in self.core.drain():
            if isinstance(effect, Persist):
                self.persisted = effect.state  # durable at once (fsync before anything is sent)
            elif isinstance(effect, Publish):
                for node in self.sim.nodes.values():
                    world.send(self.name, f"{node.name}/sub",
                               lambda n=node, t=effect.topology: n.deliver(lambda: n.on_topology(t)))
            elif isinstance(effect, Reply):
                self.send_reply(effect.client, effect.frames)
            elif isinstance(effect, PeerRequest):
                ref = ("peer", self.name, self.incarnation)
                world.send(self.name, effect.endpoint,
                           lambda e=effect.endpoint, f=effect.frames: self.sim.deliver_request(e, ref, f))
