"""One simulated run: a coordinator, nodes and clients under a nemesis, then the verdict.

The run has three phases: a workload under faults, a heal (every process restarted or resumed,
partitions removed) with a quiet period, and final reads of every key at every member. The history
goes to the linearizability checker; the stores are checked for lost writes and convergence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from msgspec import UNSET

from zcraq import wire
from zcraq.checker import check_history, operations_from_events
from zcraq.coordcore import CoordinatorTimings
from zcraq.messages import Delete, Error, Ok, Read, Request, Scan, TopologyRequest, Write
from zcraq.nodecore import NodeTimings
from zcraq.clientwatch import Change
from zcraq.sim.actors import COORDINATOR, SimCluster, SimCoordinator, SimNode, service_of
from zcraq.sim.watchers import SimWatcher
from zcraq.sim.world import NetworkFaults, World
from zcraq.topology import Topology

NEMESIS_KINDS = ("crash", "pause", "partition", "coordinator", "flaky")
KEYS = ("k0", "k1", "k2")
RETRYABLE_WRITE = {"not_head", "unavailable", "busy"}
BOUNDED_READ_LIMIT_MS = 300


def strike(world: World, kind: str, name: str, process: Any, everyone: frozenset[str], heal_after: float,
           heal: Callable[[str, Callable[[], None]], None]) -> None:
    """Crash, pause or cut off (``kind``) the process ``name`` now; ``heal`` undoes it after
    ``heal_after`` seconds (unless something healed it first)."""
    if kind == "crash":
        process.crash()
        world.after(heal_after, lambda: heal(name, process.start))
    elif kind == "pause":
        process.pause()
        world.after(heal_after, lambda: heal(name, process.resume))
    else:
        side = frozenset({name})
        others = everyone - side
        world.partitions.append((side, others))
        world.after(heal_after, lambda: heal(name, lambda: world.partitions.remove((side, others))))


@dataclass(slots=True)
class SimConfig:
    seed: int
    nodes: int = 3
    clients: int = 4
    duration: float = 12.0
    settle: float = 8.0
    nemesis: tuple[str, ...] = NEMESIS_KINDS
    unsafe: frozenset[str] = frozenset()
    partitions: int = 1  # above 1: a partitioned cluster (zcraq/sim/partitioned.py)
    network: NetworkFaults = field(default_factory=lambda: NetworkFaults(drop_rate=0.002, duplicate_rate=0.01,
                                                                         slow_rate=0.005))


@dataclass(slots=True)
class SimResult:
    seed: int
    problems: list[str]
    history: list[dict[str, Any]]
    stats: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.problems

    def history_jsonl(self) -> bytes:
        return b"".join(orjson.dumps(event) + b"\n" for event in self.history)


class Driver(Protocol):
    """What clients and watchers need of the run that drives them (one chain or partitioned)."""

    config: SimConfig
    world: World
    acked: dict[tuple[str, int], str | None]

    @property
    def cluster(self) -> SimCluster: ...

    def record(self, process: int | str, kind: str, f: str, key: str, value: Any, time: int | None = None,
               **extra: Any) -> None: ...

    def note_watch(self, watcher: str, change: Change) -> None: ...


class SimClient:
    """One process of the workload: one operation at a time, like a Jepsen client."""

    keys: tuple[str, ...] = KEYS

    def __init__(self, sim: Driver, index: int) -> None:
        self.sim = sim
        self.name = f"client{index}"
        self.process = index
        self.topology: Topology | None = None
        self.attempt = 0
        self.op: dict[str, Any] | None = None
        self.writes = 0
        self.final = False
        self.seen: dict[str, tuple[str | None, int]] = {}  # key -> (value, version) last read

    # A reply or a timeout for an attempt that is no longer current is ignored.
    def _send(self, endpoint: str, request: Request) -> None:
        attempt = self.attempt
        ref = ("client", self.name, attempt)
        frames = wire.encode_request(request)
        cluster = self.sim.cluster
        self.sim.world.send(self.name, endpoint, lambda: cluster.deliver_request(endpoint, ref, frames))
        self.sim.world.after(0.6, lambda: self._timeout(attempt))

    def _next_attempt(self) -> int:
        self.attempt += 1
        return self.attempt

    def start_op(self) -> None:
        world = self.sim.world
        if world.now >= self.sim.config.duration and not self.final:
            return
        rng = world.rng
        roll = rng.random()
        key = rng.choice(self.keys)
        if roll < 0.05:
            # A scan of every key: recorded as a read of each key over the scan's whole time.
            self.begin("scan", "", None)
            return
        if roll < 0.15:
            # Bounded-staleness: recorded with its limit, which the checker takes off its invoke.
            self.begin("read", key, None, staleness=BOUNDED_READ_LIMIT_MS)
            return
        if roll < 0.45:
            f, value = "read", None
        elif roll < 0.75:
            self.writes += 1
            f, value = "write", f"v{self.process}-{self.writes}"
        elif roll < 0.9 and key in self.seen:
            # Compare-and-set on what this process last read of the key (values are unique, so
            # the value names the version: 0 and None for no value).
            self.writes += 1
            expected, if_version = self.seen[key]
            self.begin("cas", key, [expected, f"v{self.process}-{self.writes}"], if_version=if_version)
            return
        elif roll < 0.9:
            f, value = "read", None
        else:
            f, value = "delete", None
        self.begin(f, key, value)

    def begin(self, f: str, key: str, value: Any, node: str | None = None, if_version: int = 0,
              staleness: int | None = None) -> None:
        now = self.sim.world.now
        self.op = {"f": f, "key": key, "value": value, "deadline": now + 3.0, "maybe": False, "node": node,
                   "if_version": if_version, "staleness": staleness, "start": now}
        if f != "scan":
            self.sim.record(self.process, "invoke", f, key, value,
                            **({"staleness": staleness * 1_000_000} if staleness is not None else {}))
        self._try()

    def _try(self) -> None:
        op = self.op
        assert op is not None
        world = self.sim.world
        if world.now >= op["deadline"]:
            self._finish("info" if op["maybe"] else "fail", None)
            return
        if self.topology is None:
            self._send(service_of(COORDINATOR), TopologyRequest(id=self._next_attempt()))
            return
        members = self.topology.members
        if op["f"] == "scan":
            if not members:
                self._refresh_later()
                return
            self._send(world.rng.choice(members).service, Scan(prefix="k", limit=10, id=self._next_attempt()))
        elif op["f"] == "read":
            if op["node"] is not None:
                target = service_of(op["node"])
            elif not members:
                self._refresh_later()
                return
            else:
                target = world.rng.choice(members).service
            if op["staleness"] is None:
                self._send(target, Read(op["key"], id=self._next_attempt()))
            else:
                self._send(target, Read(op["key"], id=self._next_attempt(), mode="bounded",
                                        max_staleness_ms=op["staleness"]))
        else:
            target = members[0].service if members else service_of(COORDINATOR)
            if op["f"] == "write":
                self._send(target, Write(op["key"], op["value"].encode(), id=self._next_attempt()))
            elif op["f"] == "cas":
                self._send(target, Write(op["key"], op["value"][1].encode(), id=self._next_attempt(),
                                         if_version=op["if_version"]))
            else:
                self._send(target, Delete(op["key"], id=self._next_attempt()))

    def _refresh_later(self) -> None:
        self.topology = None
        attempt = self.attempt
        self.sim.world.after(0.05, lambda: self._try_if_open(attempt))

    def _try_if_open(self, attempt: int) -> None:
        # Only if nothing was sent since this retry was planned: a retry planned for an earlier
        # attempt (or an earlier operation) would send the operation twice.
        if self.op is not None and self.attempt == attempt:
            self._try()

    def _timeout(self, attempt: int) -> None:
        if attempt != self.attempt or self.op is None:
            return
        if self.op["f"] not in ("read", "scan") and self.topology is not None:
            # The write may have been applied: retrying could apply it twice.
            self._finish("info", None)
            return
        self._refresh_later()

    def on_reply(self, ref: tuple[Any, ...], frames: list[bytes]) -> None:
        if ref[2] != self.attempt or self.op is None:
            return
        reply, values = wire.read_reply(frames)
        if type(reply) is Ok and reply.topology is not UNSET:
            self.topology = reply.topology
            self._try()
            return
        f = self.op["f"]
        if f == "scan" and type(reply) is Ok:
            self._finish_scan(reply, values)
            return
        if type(reply) is Ok and f != "read" and isinstance(reply.version, int):
            written = self.op["value"][1] if f == "cas" else self.op["value"]
            self.sim.acked[self.op["key"], reply.version] = written
        if type(reply) is Ok:
            value = values[0].decode() if f == "read" and values else self.op["value"]
            if f == "read" and isinstance(reply.version, int):
                self.seen[self.op["key"]] = (value, reply.version)
            self._finish("ok", value if f != "delete" else None)
            return
        if type(reply) is not Error:
            return  # malformed: as good as lost
        if f == "read" and reply.code == "not_found":
            self.seen[self.op["key"]] = (None, 0)
            self._finish("ok", None)
        elif f == "cas" and reply.code == "condition_failed":
            self._finish("fail", None)
        elif f in ("read", "scan") and self.op["node"] is None or reply.code in RETRYABLE_WRITE:
            self._refresh_later()
        elif reply.code == "unknown_outcome":
            self._finish("info", None)
        else:
            self._finish("fail", None)

    def _finish_scan(self, reply: Ok, values: list[bytes]) -> None:
        """Each key's part of a scan, as a read invoked when the scan began and completed now: a
        key left out of the page had no value; a key the node could not read is not recorded."""
        op = self.op
        assert op is not None and reply.keys is not UNSET and reply.results is not UNSET
        assert reply.sizes is not UNSET
        found = dict(zip(reply.keys, zip(reply.results, wire.split_values(values[0], reply.sizes))))
        invoked = int(op["start"] * 1e9)
        for key in self.scanned_keys():
            result, value = found.get(key, (0, b""))
            if type(result) is not int:
                continue
            text = value.decode() if result else None
            self.seen[key] = (text, result)
            process = f"{self.process}/scan/{key}"
            self.sim.record(process, "invoke", "read", key, None, time=invoked)
            self.sim.record(process, "ok", "read", key, text)
        self._finish("ok", None)

    def scanned_keys(self) -> tuple[str, ...]:
        return self.keys

    def _finish(self, outcome: str, value: Any) -> None:
        op = self.op
        assert op is not None
        self.op = None
        if op["f"] == "scan":
            if not self.final:
                self.sim.world.after(self.sim.world.rng.uniform(0.0, 0.02), self.start_op)
            return
        if op["f"] == "read" and outcome == "info":
            outcome = "fail"  # a read that never answered had no effect
        recorded = value if op["f"] == "read" else op["value"]
        self.sim.record(self.process, outcome, op["f"], op["key"], recorded)
        if not self.final:
            self.sim.world.after(self.sim.world.rng.uniform(0.0, 0.02), self.start_op)


class Simulation:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.world = World(config.seed, config.network)
        self.cluster = SimCluster(self.world)
        node_timings = NodeTimings(heartbeat_interval=0.2, request_timeout=0.5, write_timeout=2.0,
                                   resend_interval=0.5, catchup_page_items=2, peer_lease=0.5)
        self.coordinator = self.cluster.coordinator = SimCoordinator(
            self.cluster, CoordinatorTimings(lease=1.0, republish_interval=0.5, request_timeout=1.5))
        self.nodes = self.cluster.nodes
        for i in range(1, config.nodes + 1):
            self.nodes[f"n{i}"] = SimNode(self.cluster, f"n{i}", node_timings, config.unsafe)
        self.clients: dict[str, SimClient] = {}
        for i in range(config.clients):
            self._add_client(SimClient(self, i))
        self.history: list[dict[str, Any]] = []
        self._faulty: set[str] = set()
        # Watchers of one key and of every key, checked against what the writes were acknowledged with.
        self.watchers = [SimWatcher(self, "watch-k0", key="k0"), SimWatcher(self, "watch-all", prefix="k")]
        for watcher in self.watchers:
            self.cluster.clients[watcher.name] = watcher
        self.acked: dict[tuple[str, int], str | None] = {}  # (key, version) -> value written (None: deleted)
        self.watched = 0

    # ------------------------------------------------------------------ plumbing

    def record(self, process: int | str, kind: str, f: str, key: str, value: Any, time: int | None = None,
               **extra: Any) -> None:
        self.history.append({"process": process, "type": kind, "f": f, "key": key, "value": value,
                             "time": int(self.world.now * 1e9) if time is None else time, **extra})

    def note_watch(self, watcher: str, change: Change) -> None:
        self.watched += 1

    def _add_client(self, client: SimClient) -> None:
        self.clients[client.name] = self.cluster.clients[client.name] = client

    # ------------------------------------------------------------------ nemesis

    def _schedule_nemesis(self, at: float) -> None:
        if at >= self.config.duration - 1.0 or not self.config.nemesis:
            return
        self.world.at(at, self._strike)

    def _strike(self) -> None:
        world = self.world
        rng = world.rng
        kind = rng.choice(self.config.nemesis)
        healthy = [n for n in self.nodes if n not in self._faulty]
        heal_after = rng.uniform(0.3, 4.0)
        if kind == "coordinator" and COORDINATOR not in self._faulty:
            self._faulty.add(COORDINATOR)
            self.coordinator.crash()
            world.after(heal_after, lambda: self._heal(COORDINATOR, self.coordinator.start))
        elif kind == "flaky":
            world.break_connections_of(rng.choice([*self.nodes, COORDINATOR]))
        elif healthy and kind in ("crash", "pause", "partition"):
            name = rng.choice(healthy)
            self._faulty.add(name)
            strike(world, kind, name, self.nodes[name], frozenset([*self.nodes, COORDINATOR, *self.clients]),
                   heal_after, self._heal)
        self._schedule_nemesis(world.now + rng.uniform(0.3, 2.0))

    def _heal(self, name: str, action: Any) -> None:
        if name in self._faulty:
            self._faulty.discard(name)
            action()

    # ------------------------------------------------------------------ the run

    def run(self) -> SimResult:
        config, world = self.config, self.world
        self.coordinator.start()
        for index, node in enumerate(self.nodes.values()):
            world.at(0.01 + 0.05 * index, node.start)
        for client in self.clients.values():
            world.at(0.5 + world.rng.uniform(0, 0.1), client.start_op)
        for watcher in self.watchers:
            world.at(0.4 + world.rng.uniform(0, 0.2), watcher.start)
        self._schedule_nemesis(1.0)
        world.run_until(config.duration)
        # Heal everything that is still broken; let the chain settle.
        world.partitions.clear()
        if not self.coordinator.alive:
            self.coordinator.start()
        for node in self.nodes.values():
            if not node.alive:
                node.start()
            elif node.paused:
                node.resume()
        self._faulty.clear()
        world.run_until(config.duration + config.settle)
        self._final_reads()
        return SimResult(config.seed, self._check(), self.history,
                         {"delivered": world.delivered, "dropped": world.dropped, "watched": self.watched,
                          "watch_resyncs": sum(w.resyncs for w in self.watchers),
                          "watch_pruned": sum(c.pruned for w in self.watchers for c in w.delivered)})

    def _final_reads(self) -> None:
        topology = self.coordinator.topology
        members = [m.id for m in topology.members] if topology else []
        reader = SimClient(self, 1000)
        reader.final = True
        self._add_client(reader)
        for key in KEYS:
            for member in members:
                start = self.world.now
                reader.begin("read", key, None, node=member)
                self.world.run_until(start + 3.5)
                if reader.op is not None:
                    reader._finish("fail", None)  # noqa: SLF001

    def _check(self) -> list[str]:
        problems: list[str] = []
        result = check_history(operations_from_events(self.history))
        if not result.ok:
            problems.append("history is not linearizable:\n" + result.describe())
        topology = self.coordinator.topology
        members = [self.nodes[m.id] for m in topology.members] if topology else []
        learner = topology.learner if topology else None
        if len(members) != len(self.nodes) or learner is not None:
            problems.append(f"after healing, the chain is {[m.name for m in members]}"
                            f" (learner {learner.id if learner else None})")
        # A lost acknowledged write shows up in the history: the final reads miss it.
        for key in KEYS:
            states = {n.name: n.store.latest_committed(key) for n in members}
            seen = {(i.version, i.value, i.tombstone) if i else None for i in states.values()}
            if len(seen) > 1:
                problems.append(f"replicas disagree on {key}: {states}")
        final = {}
        for key in KEYS:
            item = members[0].store.latest_committed(key) if members else None
            if item is not None:
                final[key] = item.version
        for watcher in self.watchers:
            problems.extend(watcher.problems(self.acked, final))
        for node in members:
            dirty = list(node.store.dirty_items())
            if dirty:
                problems.append(f"{node.name} still holds {len(dirty)} uncommitted versions after settling")
        final_failures = [e for e in self.history if e["process"] == 1000 and e["type"] == "fail"]
        if final_failures:
            problems.append(f"{len(final_failures)} final reads failed after healing")
        return problems


def simulate(config: SimConfig) -> SimResult:
    if config.partitions > 1:
        from zcraq.sim.partitioned import PartitionedSimulation  # it builds on this module

        return PartitionedSimulation(config).run()
    return Simulation(config).run()
