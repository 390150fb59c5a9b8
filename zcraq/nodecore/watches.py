"""Watch requests: a page of this node's committed state with its change log position
(``watch_state``), and the changes after a position (``watch``), held until there is one.

A watcher's position belongs to one node's change log (changes.py): it starts from a state page,
replays the log from the oldest entry kept, and then follows it, checking per key that versions
come without a gap (zcraq/clientwatch.py). The node keeps nothing per watcher but the polls it
holds, at most MAX_HELD of them, each until its ``wait_ms`` runs out; a watcher that falls behind
the log's oldest entry is told ``watch_pruned`` and resynchronizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zcraq.effects import Effect, Respond
from zcraq.messages import TOMBSTONE, Error, Ok, Watch, WatchState
from zcraq.nodecore.changes import Change, ChangeLog
from zcraq.store.base import ReplicaStore

MAX_HELD = 1000  # polls held at once, at most; more are refused (``unavailable``)
MAX_REPLY_BYTES = 4 << 20  # values in one reply, beyond its first item (a state page ends early)
MAX_EXAMINED = 10_000  # log entries one prefix poll looks at, at most (it says how far it got)


@dataclass(slots=True)
class _HeldPoll:
    client: Any
    request: Watch
    after: int  # how far the log was already looked at for it
    deadline: float


class Watches:
    def __init__(self, store: ReplicaStore, changes: ChangeLog, out: list[Effect], counters: dict[str, int]) -> None:
        self._store = store
        self._counters = counters
        self.changes = changes
        self._out = out
        self._held: list[_HeldPoll] = []
        self._looked = (changes.token, changes.last)  # the log as the held polls last saw it

    @property
    def held(self) -> int:
        return len(self._held)

    def state(self, client: Any, request: WatchState) -> None:
        """Committed versions of the key or of a page of the prefix's keys (keys without a
        committed version are left out), all as of the log position ``seq``."""
        store, changes = self._store, self.changes
        if request.key is not None:
            keys, cursor = [request.key], None
        else:
            prefix, after, limit = request.prefix or "", request.after, request.limit
            start = after if after is not None and after >= prefix else prefix
            keys = store.keys(start, None, prefix, limit + 1)
            if keys and keys[0] == after:
                del keys[0]
            cursor = keys[limit - 1] if len(keys) > limit else None
            del keys[limit:]
        items: list[tuple[str, int, int]] = []
        values: list[bytes] = []
        size = 0
        for index, key in enumerate(keys):
            item = store.latest_committed(key)
            if item is None:
                continue
            if request.values:
                value = b"" if item.tombstone else item.value
                if items and size + len(value) > MAX_REPLY_BYTES:
                    cursor = keys[index - 1]  # the page ends before this key's value
                    break
                values.append(value)
                size += len(value)
            items.append((key, item.version, TOMBSTONE if item.tombstone else 0))
        self._out.append(Respond(client, Ok(request.id, items=items, cursor=cursor, log=changes.token,
                                            seq=changes.last, first=changes.first), values))

    def poll(self, client: Any, request: Watch, now: float) -> None:
        changes = self.changes
        if request.log != changes.token or not changes.first - 1 <= request.after <= changes.last:
            self._pruned(client, request)
            return
        found, reached = self._find(request, request.after)
        if found or request.wait_ms == 0 or reached < changes.last:
            self._answer(client, request, found, reached)
        elif len(self._held) >= MAX_HELD:
            self._out.append(Respond(client, Error(request.id, "unavailable",
                                                   "too many watchers wait at this node; ask another")))
        else:
            self._held.append(_HeldPoll(client, request, reached, now + request.wait_ms / 1000))

    def answer_new(self) -> None:
        """End of a loop turn: answer the held polls that the turn's commits concern (or whose log
        is gone)."""
        changes = self.changes
        looked = (changes.token, changes.last)
        if not self._held or looked == self._looked:
            return
        self._looked = looked
        waiting: list[_HeldPoll] = []
        for held in self._held:
            if held.request.log != changes.token or held.after < changes.first - 1:
                self._pruned(held.client, held.request)
                continue
            found, reached = self._find(held.request, held.after) if held.after < changes.last else ([], held.after)
            if found or reached < changes.last:
                self._answer(held.client, held.request, found, reached)
            else:
                held.after = reached
                waiting.append(held)
        self._held = waiting

    def expire(self, now: float) -> None:
        """Answer the held polls whose wait is over: nothing new (yet)."""
        if self._held and any(held.deadline <= now for held in self._held):
            waiting: list[_HeldPoll] = []
            for held in self._held:
                if held.deadline <= now:
                    self._answer(held.client, held.request, [], held.after)
                else:
                    waiting.append(held)
            self._held = waiting

    def _find(self, request: Watch, after: int) -> tuple[list[tuple[int, Change]], int]:
        if request.key is not None:
            return self.changes.of_key(request.key, after, request.limit, MAX_REPLY_BYTES)
        return self.changes.with_prefix(request.prefix or "", after, request.limit, MAX_REPLY_BYTES, MAX_EXAMINED)

    def _answer(self, client: Any, request: Watch, found: list[tuple[int, Change]], reached: int) -> None:
        items = [(key, version, TOMBSTONE if tombstone else 0) for _seq, (key, version, tombstone, _value) in found]
        values = [b"" if change[2] else change[3] for _seq, change in found]
        self._out.append(Respond(client, Ok(request.id, items=items, log=self.changes.token, seq=reached), values))

    def _pruned(self, client: Any, request: Watch) -> None:
        self._counters["watches_pruned"] += 1
        changes = self.changes
        if request.log != changes.token:
            message = "this node's change log is not the one that position belongs to (it restarted or rejoined)"
        else:
            message = f"the changes after position {request.after} are no longer kept here (oldest: {changes.first})"
        self._out.append(Respond(client, Error(request.id, "watch_pruned", message)))
