"""The nemesis: a fault schedule drawn from a seeded random.Random, carried out by one thread.

Kinds and what they do to a real process (each fault has a start and a heal):

- ``kill``: SIGKILL a random node; restart it after a delay with the same config and data
  directory (it rejoins as a learner and catches up).
- ``pause``: SIGSTOP a random node, SIGCONT it later; half of the pauses are shorter than the
  lease, half longer (the node is removed and must not serve stale data when it wakes up).
- ``coordinator``: SIGKILL the coordinator and restart it later from its durable state; half of
  the outages are longer than the lease (the nodes' coordinator leases run out meanwhile).
- ``partition``: cut one node off from the coordinator, the other nodes and the clients (its
  bridge port in the namespace network goes down), then reconnect it.

With coordinators on an engine (a local etcd, three coordinators), ``coordinator`` kills any of
them (a standby as often as not), and two more kinds exist:

- ``leader``: SIGKILL whichever coordinator leads when the fault starts, restart it later (it
  comes back as a standby): another must take over and go on repairing;
- ``etcd``: SIGKILL one etcd member, restart it later on its data (the engine keeps a majority).

The first faults go through every requested kind once, in a seeded random order, so that a short
run still exercises each of them. Faults may overlap (a new one can start while the previous one
is still in effect) but never two on the same process. The schedule is fixed before the run
starts, so a seed always gives the same faults at the same offsets; what the cluster does in
between is real time and is not reproducible.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from zcraq.chaos.cluster import ChaosCluster
from zcraq.layout import COORDINATOR

KINDS = ("kill", "pause", "partition", "coordinator")
ENGINE_KINDS = ("leader", "etcd")  # only with coordinators on an engine
LEADER = "leader"  # the target of a leader fault until it starts: whichever coordinator leads then


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    target: str
    start: float  # seconds after the workload started
    length: float  # seconds until it is healed


def _length(rng: random.Random, kind: str, lease: float) -> float:
    if kind in ("kill", "etcd"):
        return rng.uniform(0.3, 4.0)
    if kind == "partition":
        return rng.uniform(0.5, 3.0 * lease)
    # pause and coordinator: half shorter than a lease, half longer
    if rng.random() < 0.5:
        return rng.uniform(0.2, 0.8 * lease)
    return rng.uniform(1.2 * lease, 2.5 * lease)


def plan(seed: int, kinds: tuple[str, ...], nodes: list[str], duration: float, *, lease: float,
         warmup: float = 2.0, quiet_end: float = 1.0, coordinators: tuple[str, ...] = (COORDINATOR,),
         engine_members: tuple[str, ...] = ()) -> list[Fault]:
    """The fault schedule: faults start after ``warmup`` and are healed ``quiet_end`` before the
    end of the workload. ``coordinators``: the coordinator processes' names; ``engine_members``:
    the etcd members' (with coordinators on an engine)."""
    if not kinds:
        return []
    rng = random.Random(f"{seed}/nemesis")
    first = list(kinds)
    rng.shuffle(first)
    faults: list[Fault] = []
    busy_until: dict[str, float] = {}
    t = warmup
    end = duration - quiet_end
    while t < end:
        kind = first.pop(0) if first else rng.choice(kinds)
        length = _length(rng, kind, lease)
        if t + length > end:
            length = end - t
            if length < 0.3:
                break
        if kind == "coordinator":  # not while a leader fault lasts: its target is known only then
            candidates = [c for c in coordinators if busy_until.get(c, 0.0) <= t] \
                if busy_until.get(LEADER, 0.0) <= t else []
        elif kind == "leader":  # one leader fault at a time, and none while a coordinator is down
            candidates = [LEADER] if all(busy_until.get(c, 0.0) <= t for c in (*coordinators, LEADER)) else []
        elif kind == "etcd":  # one member down at most: the engine keeps its majority
            candidates = [m for m in engine_members if busy_until.get(m, 0.0) <= t] \
                if all(busy_until.get(m, 0.0) <= t for m in engine_members) else []
        else:
            candidates = [n for n in nodes if busy_until.get(n, 0.0) <= t]
        if candidates:
            target = rng.choice(candidates)
            faults.append(Fault(kind, target, round(t, 3), round(length, 3)))
            busy_until[target] = t + length
            # Usually wait for the fault to end; sometimes start the next one while it lasts.
            t += (length if rng.random() < 0.7 else rng.uniform(0.0, length)) + rng.uniform(1.0, 3.0)
        else:
            t += 0.5
    return faults


class Nemesis(threading.Thread):
    def __init__(self, cluster: ChaosCluster, faults: list[Fault], log_path: Path) -> None:
        super().__init__(name="chaos-nemesis", daemon=True)
        self.cluster = cluster
        self.faults = faults
        self.log_path = log_path
        self.stopping = threading.Event()
        self.active: dict[Fault, float] = {}
        self.counts: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.targets: dict[Fault, str] = {}  # a leader fault's coordinator, once it started
        self.origin = time.monotonic()
        self._log = open(log_path, "wb")

    def run(self) -> None:
        timeline: list[tuple[float, int, Fault]] = []
        for fault in self.faults:
            timeline.append((fault.start, 1, fault))
            timeline.append((fault.start + fault.length, 0, fault))
        timeline.sort(key=lambda item: (item[0], item[1]))
        self.origin = time.monotonic()
        try:
            for at, is_start, fault in timeline:
                if self.stopping.wait(max(0.0, self.origin + at - time.monotonic())):
                    break
                if is_start:
                    self._start(fault)
                elif fault in self.active:
                    self._heal(fault)
        finally:
            for fault in list(self.active):
                self._heal(fault)
            self._log.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)

    def _note(self, action: str, fault: Fault, **extra: Any) -> None:
        event = {"time": time.monotonic_ns(), "offset": round(time.monotonic() - self.origin, 3),
                 "action": action, **asdict(fault), **extra}
        self.events.append(event)
        self._log.write(orjson.dumps(event) + b"\n")
        self._log.flush()

    def _start(self, fault: Fault) -> None:
        c, target = self.cluster, fault.target
        try:
            if fault.kind == "leader":
                target = self.targets[fault] = c.leader()
            if fault.kind in ("kill", "coordinator", "leader"):
                c.kill(target)
            elif fault.kind == "etcd":
                c.kill_engine_member(target)
            elif fault.kind == "pause":
                c.pause(target)
            elif fault.kind == "partition":
                assert c.network is not None, "partitions need the namespace network"
                c.network.isolate(target)
            else:
                raise ValueError(f"unknown nemesis kind {fault.kind!r}")
        except Exception as error:  # noted, and the run goes on: the verdict lists it
            self.errors.append(f"start {fault.kind} {target}: {type(error).__name__}: {error}")
            self._note("start-failed", fault, error=str(error))
            return
        self.active[fault] = time.monotonic()
        self.counts[fault.kind] += 1
        self._note("start", fault, **({"coordinator": target} if fault.kind == "leader" else {}))

    def _heal(self, fault: Fault) -> None:
        c, target = self.cluster, self.targets.get(fault, fault.target)
        began = self.active.pop(fault)
        try:
            if fault.kind in ("kill", "coordinator", "leader"):
                c.start(target)
            elif fault.kind == "etcd":
                c.start_engine_member(target)
            elif fault.kind == "pause":
                c.resume(target)
            else:
                assert c.network is not None
                c.network.rejoin(target)
        except Exception as error:
            self.errors.append(f"heal {fault.kind} {target}: {type(error).__name__}: {error}")
            self._note("heal-failed", fault, error=str(error))
            return
        self._note("heal", fault, lasted=round(time.monotonic() - began, 3))
