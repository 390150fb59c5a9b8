"""Reads, CRAQ's apportioned queries: any member answers from its own store when its newest
version of a key is committed, and asks the tail which version is committed when it is dirty.
Also the tail's side of that exchange: answering version queries.

A dirty read waits as a call (calls.py) until the tail answers. The dirty reads of one key that
arrive in one loop turn share one version query, sent at the turn's end (``send_queries``): it
leaves after every one of them arrived, so the committed version it learns is one the tail held
after each read began, which is all linearizability asks. (A read must never join a query sent
before it arrived: that answer could predate a write acknowledged before the read began.)

Bounded reads (mode ``bounded``, a limit of ``max_staleness_ms``) answer a dirty key from this
node's own committed version when that version was still the committed one no longer than the
limit ago: it was at least until the oldest version dirty here arrived (arrivals.py). A dirty key
whose versions' arrival is not known (from before this node's last join) asks the tail.

Mind the race a dirty read runs: while we wait for the tail, a newer version may commit here and
prune the one the tail named. Our own newest committed version is then a correct answer (it
committed during the read), never "not found".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from msgspec import UNSET

from zcraq.effects import Effect, Respond
from zcraq.messages import DEFAULT_STALENESS_MS, Error, Ok, Read, ReadMany, Reply, Scan, VersionQuery
from zcraq.nodecore.arrivals import Arrivals
from zcraq.nodecore.calls import Call, CallKind, Calls
from zcraq.nodecore.place import Place
from zcraq.store.base import Item, ReplicaStore
from zcraq.topology import Member


@dataclass(slots=True)
class _Query:
    """The version query a key's dirty reads of this turn will share."""

    tail: Member
    asked_at: float
    waiters: list[tuple[Any, Any]]  # (client, request id) of each read


class NeedsTail:
    """The answer to a read is not known locally: the tail must be asked."""


NEEDS_TAIL = NeedsTail()


def fresh_since(request: Read | ReadMany | Scan, now: float) -> float:
    """The oldest moment at which a bounded read's answer may have been current."""
    limit = request.max_staleness_ms
    return now - (DEFAULT_STALENESS_MS if limit is UNSET else limit) / 1000


class Reads:
    def __init__(self, store: ReplicaStore, calls: Calls, out: list[Effect], counters: dict[str, int],
                 arrivals: Arrivals, unsafe: frozenset[str]) -> None:
        self.store = store
        self._arrivals = arrivals
        self.calls = calls
        self._out = out
        self._counters = counters
        # "dirty_read_local": answer dirty reads without asking the tail (a test-only bug).
        self._dirty_read_local = "dirty_read_local" in unsafe
        # "bounded_any_age": bounded reads answer dirty keys locally however old (a test-only bug).
        self._bounded_any_age = "bounded_any_age" in unsafe
        self._queries: dict[tuple[str, str, int], _Query] = {}  # (key, tail id, epoch): this turn's

    def local(self, key: str, mode: str, place: Place, fresh_since: float) -> Item | None | NeedsTail:
        """What a read of ``key`` answers from this node's store alone (None: no value), or
        NEEDS_TAIL when its newest version is dirty and only the tail can say which is committed.
        ``fresh_since``: for a bounded read, the oldest moment its answer may have been current."""
        store = self.store
        if mode == "eventual":
            return store.latest_committed(key)
        latest = store.latest(key)
        if latest is None or latest.committed:
            return latest
        if place.is_tail:  # it decides what is committed: its newest committed version is the answer
            return store.latest_committed(key)
        if mode == "bounded" and ((self._arrivals.fresh_since(key) or fresh_since - 1.0) >= fresh_since
                                  or self._bounded_any_age):
            self._counters["bounded_local_reads"] += 1
            return store.latest_committed(key)
        return NEEDS_TAIL

    def read(self, client: Any, request: Read, place: Place, now: float) -> None:
        """A read at a serving member."""
        self._counters["reads"] += 1
        key = request.key
        mode = request.mode
        found = self.local(key, mode, place, fresh_since(request, now) if mode == "bounded" else now)
        if not isinstance(found, NeedsTail):
            self._answer(client, request.id, key, found)
            return
        self.ask_tail(client, request.id, key, place, now)

    def ask_tail(self, client: Any, request_id: Any, key: str, place: Place, now: float) -> None:
        """A strong read of a key whose newest version here is dirty (counted in ``reads`` already)."""
        self._counters["dirty_reads"] += 1
        if self._dirty_read_local:
            self._answer(client, request_id, key, self.store.latest(key))
            return
        tail, epoch = place.tail, place.epoch
        assert tail is not None
        query = self._queries.get((key, tail.id, epoch))
        if query is None:
            query = self._queries[(key, tail.id, epoch)] = _Query(tail, now, [])
        query.waiters.append((client, request_id))

    def send_queries(self) -> None:
        """End of a loop turn: one version query per key for the turn's dirty reads of it."""
        for (key, _, epoch), query in self._queries.items():
            self.calls.ask(query.tail, CallKind.VERSION, query.asked_at, epoch,
                           lambda i, key=key, epoch=epoch: VersionQuery(key, epoch, id=i),  # type: ignore[misc]
                           waiters=query.waiters, key=key)
        self._queries.clear()

    def tail_answered(self, call: Call, reply: Reply, epoch: int, now: float) -> None:
        """The tail's answer to a version query for dirty reads (``epoch``: ours now)."""
        key = call.key
        assert key is not None
        if isinstance(reply, Error):
            if reply.epoch is not UNSET and reply.epoch > epoch:
                self.calls.ask_topology(now, epoch)
            self._unavailable(call, f"the tail could not confirm the committed version: {reply.message}")
            return
        committed = reply.version
        if committed is UNSET:
            self._unavailable(call, "bad version reply from the tail")
            return
        local = self.store.latest_committed(key)
        if local is not None and local.version >= committed:
            item: Item | None = local
        elif committed == 0:
            item = None
        else:
            item = self.store.get(key, committed)
            if item is None:
                self._unavailable(call, "the committed version is not held here; retry")
                return
        for client, request_id in call.waiters:
            self._answer(client, request_id, key, item)

    def tail_timed_out(self, call: Call) -> None:
        self._unavailable(call, "the tail did not answer in time")

    def version_query(self, client: Any, request: VersionQuery, place: Place, serving: bool) -> None:
        """As tail: which version of the key is committed, in the asker's epoch only."""
        if not place.is_tail or not serving:
            self._out.append(Respond(client, Error(request.id, "not_tail", "this node is not a serving tail",
                                                   epoch=place.epoch)))
        elif request.epoch != place.epoch:
            self._out.append(Respond(client, Error(request.id, "wrong_epoch", "epochs differ", epoch=place.epoch)))
        else:
            item = self.store.latest_committed(request.key)
            self._out.append(Respond(client, Ok(request.id, version=item.version if item else 0)))

    def _answer(self, client: Any, request_id: Any, key: str, item: Item | None) -> None:
        if item is None or item.tombstone:
            self._out.append(Respond(client, Error(request_id, "not_found", f"key {key!r} does not exist")))
        else:
            self._out.append(Respond(client, Ok(request_id, version=item.version), (item.value,)))

    def _unavailable(self, call: Call, message: str) -> None:
        for client, request_id in call.waiters:
            self._out.append(Respond(client, Error(request_id, "unavailable", message)))
