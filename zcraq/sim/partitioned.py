"""One simulated run of a partitioned cluster: a ``PartitionedCoordinator``, ``PartitionHost`` nodes
and clients under a nemesis, then the verdict.

Besides the one-chain nemeses (crash, pause, network partition, coordinator crash, broken
connections) the membership changes: a node joins mid-run (replicas move to it), one is drained
(replicas move off it), one dies for good with its disk (its replicas are created elsewhere).
After the heal and a quiet period, every key is read at every member of its partition. Checked:
each key's history is linearizable; no acknowledged write is missing from the final state; every
partition has R replicas (fewer only while fewer nodes serve) on serving nodes, agreeing and
clean; no node hosts a replica its table does not place there; the watchers.
"""

from __future__ import annotations

from typing import Any

from zcraq.checker import check_history, operations_from_events
from zcraq.clientwatch import Change
from zcraq.coordcore import CoordinatorTimings
from zcraq.coordpartitions import Shape
from zcraq.nodecore import NodeTimings
from zcraq.partitioning import partition_of
from zcraq.sim.actors import COORDINATOR
from zcraq.sim.partitioned_actors import PartitionedCluster, SimHost, SimPartitionedCoordinator
from zcraq.sim.partitioned_checks import check_run, placed
from zcraq.sim.partitioned_client import PartitionedClient
from zcraq.sim.scenario import NEMESIS_KINDS, SimConfig, SimResult, strike
from zcraq.sim.watchers import SimWatcher
from zcraq.sim.world import World
from zcraq.topology import Topology

MEMBERSHIP_KINDS = ("join", "drain", "die")
PARTITIONED_NEMESIS_KINDS = NEMESIS_KINDS + MEMBERSHIP_KINDS
KEYS = tuple(f"k{i}" for i in range(8))
REPLICATION = 3
FINAL_READER = 1000
MORE_SETTLE = 30.0  # seconds the heal may take beyond the settle time, for placement to finish
FIRST_FAULT = 2.5  # chains form a replica at a time (placement's throttle): faults once they have formed


class PartitionedSimulation:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.keys = KEYS
        self.world = World(config.seed, config.network)
        self.cluster = PartitionedCluster(self.world)
        self.shape = Shape(config.partitions, REPLICATION, max_moves=2, formation_grace=1.0)
        self.coordinator = self.cluster.partitioned = SimPartitionedCoordinator(
            self.cluster, self.shape, CoordinatorTimings(lease=1.0, republish_interval=0.5, request_timeout=1.5))
        timings = NodeTimings(heartbeat_interval=0.2, request_timeout=0.5, write_timeout=2.0, resend_interval=0.5,
                              catchup_page_items=2, peer_lease=0.5)
        joiners = 1 if "join" in config.nemesis else 0
        for i in range(1, config.nodes + joiners + 1):
            name = f"n{i}"
            self.cluster.hosts[name] = SimHost(self.cluster, name, f"z{i % 3}", config.partitions, timings,
                                               config.unsafe)
        self.hosts = self.cluster.hosts
        self.joiner = f"n{config.nodes + 1}" if joiners else None
        self.clients: dict[str, PartitionedClient] = {}
        for i in range(config.clients):
            self._add_client(PartitionedClient(self, i, KEYS))
        self.history: list[dict[str, Any]] = []
        self.acked: dict[tuple[str, int], str | None] = {}
        self.watched = 0
        self._faulty: set[str] = set()
        self.drained: str | None = None
        self.drain_seen = False  # the coordinator has marked the drained node draining
        self.dying = False
        first = partition_of(KEYS[0], config.partitions)
        self.watchers = [SimWatcher(self, "watch-k0", key=KEYS[0], partition=first),
                         SimWatcher(self, "watch-part", prefix="k", partition=first)]
        for watcher in self.watchers:
            self.cluster.clients[watcher.name] = watcher

    # ------------------------------------------------------------------ what clients and watchers use

    def record(self, process: int | str, kind: str, f: str, key: str, value: Any, time: int | None = None,
               **extra: Any) -> None:
        self.history.append({"process": process, "type": kind, "f": f, "key": key, "value": value,
                             "time": int(self.world.now * 1e9) if time is None else time, **extra})

    def note_watch(self, watcher: str, change: Change) -> None:
        self.watched += 1

    def _add_client(self, client: PartitionedClient) -> None:
        self.clients[client.name] = client
        self.cluster.clients[client.name] = client

    # ------------------------------------------------------------------ nemesis

    def _up(self) -> list[str]:
        """Nodes a fault may strike: started, not dead, not already faulty."""
        return [n for n, h in self.hosts.items() if h.incarnation and not h.dead and n not in self._faulty]

    def _schedule_nemesis(self, at: float) -> None:
        if at < self.config.duration - 1.0 and set(self.config.nemesis) & set(NEMESIS_KINDS):
            self.world.at(at, self._strike)

    def _strike(self) -> None:
        world = self.world
        rng = world.rng
        kind = rng.choice([k for k in self.config.nemesis if k in NEMESIS_KINDS])
        healthy = [] if self.dying or self._dead_listed() else self._up()
        heal_after = rng.uniform(0.3, 4.0)
        if kind == "coordinator" and COORDINATOR not in self._faulty and healthy:
            self._faulty.add(COORDINATOR)
            self.coordinator.crash()
            world.after(heal_after, lambda: self._heal(COORDINATOR, self.coordinator.start))
        elif kind == "flaky":
            world.break_connections_of(rng.choice([*self.hosts, COORDINATOR]))
        elif healthy and kind in ("crash", "pause", "partition"):
            name = rng.choice(healthy)
            self._faulty.add(name)
            strike(world, kind, name, self.hosts[name], frozenset([*self.hosts, COORDINATOR, *self.cluster.clients]),
                   heal_after, self._heal)
        self._schedule_nemesis(world.now + rng.uniform(0.3, 2.0))

    def _heal(self, name: str, action: Any) -> None:
        if name in self._faulty:
            self._faulty.discard(name)
            action()

    def _schedule_membership(self) -> None:
        """The joiner starts, a node is drained, another dies: once each, at seeded times."""
        world, rng, nemesis = self.world, self.world.rng, self.config.nemesis
        latest = max(2.0, self.config.duration - 3.0)
        if self.joiner is not None:
            world.at(rng.uniform(1.5, latest), self.hosts[self.joiner].start)
        initial = [n for n in self.hosts if n != self.joiner]
        rng.shuffle(initial)
        if "drain" in nemesis:
            self.drained = initial.pop()
            world.at(rng.uniform(2.0, latest), self._drain)
        if "die" in nemesis:
            world.at(rng.uniform(2.0, latest), lambda: self._die(initial))

    def _drain(self) -> None:
        """The administrator drains a node (again until the coordinator took it): once taken, the
        mark must hold through the node's restarts and silences (checked at the end)."""
        drained, core = self.drained, self.coordinator.pcore
        assert drained is not None
        known = core.nodes.get(drained) if core is not None else None
        if known is not None and known.draining:
            self.drain_seen = True
        elif not self.drain_seen:
            self.coordinator.drain(drained)
        if self.world.now < self.config.duration + self.config.settle + MORE_SETTLE:
            self.world.after(0.5, self._drain)

    def _die(self, candidates: list[str]) -> None:
        """A node dies for good, its disk with it: when nothing else is broken, one whose every chain
        has another member (the last replica of a partition dying loses it, whatever the system does)."""
        chains = self.chains()
        safe = [n for n in candidates if self.hosts[n].alive
                and all(self._backed(p, c, n) for p, c in enumerate(chains) if c.position(n) is not None)]
        self.dying = True  # no new faults meanwhile: those under way heal
        if not safe or self._faulty or not chains:
            if self.world.now < self.config.duration - 1.0:
                self.world.after(0.25, lambda: self._die(candidates))
            else:
                self.dying = False
            return
        self.dying = False
        self.hosts[self.world.rng.choice(safe)].die()

    def _backed(self, partition: int, chain: Topology, victim: str) -> bool:
        """Does another member of the chain serve it, in the coordinator's epoch (not a member that
        restarted unnoticed: it rejoins as a learner, its copy dropped)?"""
        for member in chain.members:
            host = self.hosts[member.id].host if member.id != victim else None
            core = host.cores.get(partition) if host is not None else None
            if core is not None and core.joined and core.topology.epoch == chain.epoch \
                    and core.serving(self.world.now):
                return True
        return False

    def _dead_listed(self) -> bool:
        """Is a dead node still in some chain? Until the coordinator has removed it, another
        failure of its chain's members would leave the chain waiting for it forever (a restarted
        member rejoins as a learner, its copy dropped; the last member is kept)."""
        dead = [n for n, h in self.hosts.items() if h.dead]
        chains = self.chains()
        return bool(dead) and (not chains or any(c.member(n) is not None for c in chains for n in dead))

    # ------------------------------------------------------------------ the run

    def run(self) -> SimResult:
        config, world = self.config, self.world
        self.coordinator.start()
        for index, name in enumerate(n for n in self.hosts if n != self.joiner):
            world.at(0.01 + 0.05 * index, self.hosts[name].start)
        for client in self.clients.values():
            world.at(0.5 + world.rng.uniform(0, 0.1), client.start_op)
        for watcher in self.watchers:
            world.at(0.4 + world.rng.uniform(0, 0.2), watcher.start)
        self._schedule_nemesis(FIRST_FAULT)
        self._schedule_membership()
        world.run_until(config.duration)
        self._heal_all()
        world.run_until(config.duration + config.settle)
        # Placement moves replicas a few at a time: give it until it is done (or clearly is not).
        while not placed(self) and world.now < config.duration + config.settle + MORE_SETTLE:
            world.run_until(world.now + 0.5)
        settled = world.now - config.duration
        self._final_reads()
        return SimResult(config.seed, self._check(), self.history,
                         {"delivered": world.delivered, "dropped": world.dropped, "watched": self.watched,
                          "watch_resyncs": sum(w.resyncs for w in self.watchers),
                          "watch_pruned": sum(c.pruned for w in self.watchers for c in w.delivered),
                          "settle_ms": int(settled * 1000), "died": sum(h.dead for h in self.hosts.values())})

    def _heal_all(self) -> None:
        self.world.partitions.clear()
        if not self.coordinator.alive:
            self.coordinator.start()
        for host in self.hosts.values():
            if host.dead:
                continue
            if not host.alive:
                host.start()
            elif host.paused:
                host.resume()
        self._faulty.clear()

    def chains(self) -> list[Topology]:
        core = self.coordinator.pcore
        return [chain.topology for chain in core.chains] if core is not None else []

    def _final_reads(self) -> None:
        chains = self.chains()
        reader = PartitionedClient(self, FINAL_READER, KEYS)
        reader.final = True
        self._add_client(reader)
        for key in KEYS:
            for member in chains[partition_of(key, self.config.partitions)].members if chains else ():
                end = self.world.now + 3.5
                reader.begin("read", key, None, node=member.id)
                while reader.op is not None and self.world.now < end:  # on as soon as it is answered
                    self.world.run_until(min(end, self.world.now + 0.05))
                if reader.op is not None:
                    reader._finish("fail", None)  # noqa: SLF001

    def _check(self) -> list[str]:
        problems: list[str] = []
        result = check_history(operations_from_events(self.history))
        if not result.ok:
            problems.append("history is not linearizable:\n" + result.describe())
        problems.extend(check_run(self))
        final_failures = [e for e in self.history if e["process"] == FINAL_READER and e["type"] == "fail"]
        if final_failures:
            problems.append(f"{len(final_failures)} final reads failed after healing")
        return problems
