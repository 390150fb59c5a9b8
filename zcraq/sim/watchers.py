"""Simulated watchers: the client's own watch logic (zcraq/clientwatch.py) driven over the simulated
network, and the checks of what they delivered.

A watcher follows one member's change log and moves to another when that member fails, or when
its log lacks versions the watcher needs (until every member was tried), as ZClient.watch does.
What it delivers is checked against the acknowledged writes (a delivered
version of a key carries the value the write of that version was acknowledged with) and against
itself (a key's versions only grow, and a change not marked ``pruned`` comes right after the one
before it); after the heal, each watcher must have caught up with the final committed state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET

from zcraq import wire
from zcraq.clientwatch import Change, Watcher
from zcraq.messages import MAX_WATCH_ITEMS, Error, Ok, Request, TopologyRequest, Watch, WatchState
from zcraq.sim.actors import COORDINATOR, service_of
from zcraq.topology import Topology

if TYPE_CHECKING:
    from zcraq.sim.scenario import Driver

POLL_WAIT_MS = 200
ANSWER_WITHIN = 0.6  # seconds beyond a poll's wait before the member counts as failed


class SimWatcher:
    def __init__(self, sim: Driver, name: str, key: str | None = None, prefix: str | None = None,
                 partition: int | None = None) -> None:
        self.sim, self.name = sim, name
        self.partition = partition  # of a partitioned cluster: its requests name it
        self.watcher = Watcher(key, prefix)
        self.topology: Topology | None = None
        self.attempt = 0
        self.endpoint: str | None = None
        self.avoid: str | None = None  # the member whose log lacked versions: not asked next
        self.cursor: str | None = None  # the next state page's
        self.delivered: list[Change] = []
        self.last: dict[str, Change] = {}  # each key's last delivered change
        self.resyncs = 0

    def start(self) -> None:
        self._next()

    def _send(self, endpoint: str, request: Request, patience: float) -> None:
        self.attempt += 1
        attempt = self.attempt
        if self.partition is not None:
            request = msgspec.structs.replace(request, partition=self.partition)
        frames = wire.encode_request(request)
        cluster = self.sim.cluster
        ref = ("client", self.name, attempt)
        self.sim.world.send(self.name, endpoint, lambda: cluster.deliver_request(endpoint, ref, frames))
        self.sim.world.after(patience, lambda: self._timeout(attempt))

    def _timeout(self, attempt: int) -> None:
        if attempt == self.attempt:
            self._lose()

    def _lose(self) -> None:
        """The member did not answer or cannot go on: synchronize again, with any member."""
        self.watcher.lose_node()
        self.endpoint = self.topology = None
        self.attempt += 1  # whatever is still on its way is stale
        self.sim.world.after(0.05, self._next)

    def _next(self) -> None:
        world = self.sim.world
        if self.topology is None:
            self._send(service_of(COORDINATOR), TopologyRequest(id=0), ANSWER_WITHIN)
        elif self.watcher.synchronized:
            w = self.watcher
            self._send(w.endpoint or "", Watch(log=w.log, after=w.after, key=w.key, prefix=w.prefix,
                                               limit=MAX_WATCH_ITEMS, wait_ms=POLL_WAIT_MS, id=0),
                       POLL_WAIT_MS / 1000 + ANSWER_WITHIN)
        else:
            if self.endpoint is None:
                if not self.topology.members:
                    self.topology = None
                    world.after(0.05, self._next)
                    return
                members = self.topology.members
                self.watcher.accept_gaps = self.watcher.gap_tries >= len(members)
                choices = [m for m in members if m.service != self.avoid] or list(members)
                self.endpoint = world.rng.choice(choices).service
                self.cursor = None
                self.watcher.begin_state()
                self.resyncs += 1
            w = self.watcher
            self._send(self.endpoint, WatchState(key=w.key, prefix=w.prefix, after=self.cursor, limit=2,
                                                 values=not w.baseline, id=0), ANSWER_WITHIN)

    def on_reply(self, ref: tuple[Any, ...], frames: list[bytes]) -> None:
        if ref[2] != self.attempt:
            return
        self.attempt += 1
        reply, values = wire.read_reply(frames)
        if type(reply) is Ok and reply.topology is not UNSET:
            self.topology = reply.topology
            self._next()
            return
        if type(reply) is Error:
            self._lose()
            return
        if type(reply) is not Ok:
            self._lose()
            return
        if self.watcher.synchronized:
            endpoint = self.watcher.endpoint or ""
            self._deliver(self.watcher.take_changes(reply, values, endpoint))
            if not self.watcher.synchronized:  # a gap: ask another member
                self.avoid = endpoint
                self._lose()
                return
        else:
            assert self.endpoint is not None
            if not self.watcher.take_state(reply, values, self.endpoint):
                self.watcher.begin_state()
                self.cursor = None
            elif reply.cursor is None:
                self.watcher.synchronized_with(self.endpoint)
            else:
                self.cursor = reply.cursor  # type: ignore[assignment]
        self._next()

    def _deliver(self, changes: list[Change]) -> None:
        for change in changes:
            self.delivered.append(change)
            self.sim.note_watch(self.name, change)
            self.last[change.key] = change

    # ------------------------------------------------------------------ the verdict

    def problems(self, acked: dict[tuple[str, int], str | None], final: dict[str, int]) -> list[str]:
        found: list[str] = []
        previous: dict[str, Change] = {}
        for change in self.delivered:
            before = previous.get(change.key)
            if before is not None and change.version <= before.version:
                found.append(f"{self.name}: {change.key} version {change.version} after {before.version}")
            if before is not None and not change.pruned and change.version != before.version + 1:
                found.append(f"{self.name}: {change.key} jumped from {before.version} to {change.version} "
                             "without saying so (pruned)")
            value = None if change.value is None else change.value.decode()
            if (change.key, change.version) in acked and acked[change.key, change.version] != value:
                found.append(f"{self.name}: {change.key} version {change.version} delivered as {value!r}, "
                             f"acknowledged as {acked[change.key, change.version]!r}")
            previous[change.key] = change
        for key, version in final.items():
            if self.watcher.key is not None and key != self.watcher.key:
                continue
            reached = self.watcher.seen.get(key, 0)
            if reached != version:
                found.append(f"{self.name}: {key} reached version {reached}, the chain holds {version}")
        return found
