"""The commit rules: how a version moves through this node, from stored dirty to committed and
acknowledged. Every store mutation the chain makes happens here.

Owns the client writes waiting for their commit (at the head) and what a new role owes before it
may serve (``Owed``). The links carry what it decides to send; the place says what this node is.

- A middle node stores a record dirty and forwards it; a record it already holds committed is
  answered with its COMMIT again (this repairs a lost COMMIT), unless the successor still owes us
  that commit.
- The tail commits a record on receipt and reports it up. With a learner attached, it forwards the
  record to the learner and commits (and reports, and answers) only when the learner has it, so no
  reader sees a version that would be lost with this tail.
- The learner stores records committed and acknowledges them to the tail.
- COMMIT(k, v) commits v, prunes older versions, and acknowledges every pending write of k up to v:
  an older write overtaken by a newer commit took effect and was overwritten at once.
- A conditional write (``if_version``) is decided at the head, where versions are assigned. The
  condition compares the key's *current version*: its newest version if that is a value, 0 when
  the key has none or its newest is a deletion. When the newest version held matches, dirty or
  not, the write takes the next version at once: it can only commit after that version, so that
  version is what it replaced. When it does not match and the key is clean, the condition failed
  (answered from committed state, as a strong read is). When it does not match and the key is
  dirty, the answer depends on versions not yet committed: the write is held until the key is
  clean and decided then (or refused, not applied, at its deadline).

Every version stored dirty is noted in ``arrivals`` (shared with the reads) with its arrival time,
and forgotten when it commits here: what a bounded read may answer from this node's own state. An
entry left behind (its version dropped another way) only makes the key look older, so reads ask
the tail more; every dirty store must be noted, so that no key looks fresher than it is. What
commits leaves the arrivals for ``changes``, the log watchers read (changes.py).

Defense in depth (should a node's key ever be stolen): a record for a (key, version) held here
with another value is refused, counted (``conflicting_records``) and logged as an error, so two
replicas never differ silently; a record more than MAX_VERSION_STEP versions beyond the newest one
held of its key is refused the same way (no honest chain runs that far ahead of a replica, and a
version near the top of the range would leave the key no room for real writes); a commit for a
version the head never assigned is counted (``foreign_commits``) and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Flag, auto
from typing import Any

from msgspec import UNSET, UnsetType

from zcraq.effects import Effect, Respond
from zcraq.loglimit import LogLimiter
from zcraq.messages import Error, Ok, WriteRecord
from zcraq.nodecore.arrivals import Arrivals
from zcraq.nodecore.changes import ChangeLog
from zcraq.nodecore.links import Links
from zcraq.nodecore.place import Place, Role
from zcraq.store.base import Item, ReplicaStore
from zcraq.topology import EMPTY

log = logging.getLogger("zcraq.node")

# A record may be at most this many versions beyond the newest version held of its key (a key held
# not at all counts as 0, except at a learner still copying, whose pages come after the records).
MAX_VERSION_STEP = 1 << 20


class Owed(Flag):
    """What a new role must commit before this node serves or opens its links."""

    NOTHING = 0
    SENT_LIST = auto()  # a new tail: everything it forwarded (the old tail may have exposed it)
    LEFTOVERS = auto()  # a restarted sole member: what its previous run left uncommitted


# Conditional writes held at the head until their key is clean, at most, and their values' bytes
# together (beyond either: refused, not applied; the client retries).
MAX_HELD_CONDITIONS = 10_000
MAX_HELD_BYTES = 64 << 20


@dataclass(slots=True)
class _HeldCondition:
    client: Any
    request_id: Any
    value: bytes
    tombstone: bool
    if_version: int
    deadline: float


@dataclass(slots=True)
class _PendingWrite:
    version: int
    client: Any
    request_id: Any
    deadline: float
    existed: bool | None  # a deletion: did the key have a value just before it?


class Replication:
    def __init__(self, store: ReplicaStore, links: Links, out: list[Effect], counters: dict[str, int],
                 write_timeout: float, logs: LogLimiter, arrivals: Arrivals, changes: ChangeLog,
                 unsafe: frozenset[str] = frozenset()) -> None:
        self.store = store
        self._arrivals = arrivals
        self._changes = changes
        self.logs = logs
        self.links = links
        self._out = out
        self._counters = counters
        self.write_timeout = write_timeout
        self.place = Place.of(EMPTY, "", joined=False)  # kept current by the core
        self.owed = Owed.NOTHING
        self._pending: dict[str, list[_PendingWrite]] = {}
        self._held: dict[str, list[_HeldCondition]] = {}
        self._held_count = 0
        self._held_bytes = 0
        # A deliberate bug for the simulator to find: conditions compared with the committed
        # version alone, applied at once even while newer versions are dirty.
        self._condition_on_committed = "condition_on_committed" in unsafe

    def committed_version(self, key: str) -> int:
        item = self.store.latest_committed(key)
        return item.version if item else 0

    # ------------------------------------------------------------------ writes from clients

    def client_write(self, client: Any, request_id: Any, key: str, value: bytes, tombstone: bool,
                     now: float) -> None:
        """At a serving head: the next version of ``key``, answered once committed."""
        latest = self.store.latest_version(key)  # (version, tombstone): no need to read the value
        version = (latest[0] if latest else 0) + 1
        self._counters["writes"] += 1
        self.store.put(key, version, value, tombstone=tombstone)
        self._arrivals.arrived(key, version, now, tombstone, value)
        # The newest version held, committed or not, is what the key holds just before this one
        # in version order: every older pending write commits (or is overtaken) first.
        existed = (latest is not None and not latest[1]) if tombstone else None
        self._pending.setdefault(key, []).append(
            _PendingWrite(version, client, request_id, now + self.write_timeout, existed))
        record = WriteRecord(key, version, value, False, tombstone)
        if self.place.is_tail:  # the only member: it commits at once (or when the learner has it)
            self._tail_commit(record, now)
        else:
            self.links.forward(record, now)

    def conditional_write(self, client: Any, request_id: Any, key: str, value: bytes, tombstone: bool,
                          if_version: int, now: float) -> None:
        """At a serving head: write only if the key's current version is ``if_version``."""
        if key in self._held:  # decided in arrival order after those already waiting
            self._hold(key, _HeldCondition(client, request_id, value, tombstone, if_version, now + self.write_timeout))
            return
        decided = self._decide(key, if_version)
        if decided is True:
            self.client_write(client, request_id, key, value, tombstone, now)
        elif decided is None:
            self._hold(key, _HeldCondition(client, request_id, value, tombstone, if_version, now + self.write_timeout))
        else:
            self._condition_failed(client, request_id, key, decided)

    def _decide(self, key: str, if_version: int) -> bool | int | None:
        """True: the condition holds; an int: it failed, the key's current version is that;
        None: it cannot be told until the key's dirty versions commit."""
        if self._condition_on_committed:
            item = self.store.latest_committed(key)
            current = 0 if item is None or item.tombstone else item.version
            return True if current == if_version else current
        latest = self.store.latest_version(key)
        newest = 0 if latest is None or latest[1] else latest[0]
        if newest == if_version:
            return True
        if latest is None:
            return 0
        committed = self.store.latest_committed(key)
        if committed is None or committed.version != latest[0]:
            return None
        return newest

    def _condition_failed(self, client: Any, request_id: Any, key: str, current: int) -> None:
        self._counters["conditions_failed"] += 1
        self._out.append(Respond(client, Error(request_id, "condition_failed",
                                               f"the key's current version is {current}", version=current)))

    def _hold(self, key: str, held: _HeldCondition) -> None:
        if self._held_count >= MAX_HELD_CONDITIONS or self._held_bytes + len(held.value) > MAX_HELD_BYTES:
            self._out.append(Respond(held.client, Error(held.request_id, "unavailable", "too many conditional writes "
                                                        "wait for their keys to commit; not applied, retry")))
            return
        self._held.setdefault(key, []).append(held)
        self._held_count += 1
        self._held_bytes += len(held.value)

    def decide_held(self, now: float, serving_head: bool) -> None:
        """Decide the held conditional writes whose keys are clean now (only a serving head
        decides); refuse, unapplied, those past their deadline."""
        for key in list(self._held):
            waiting = self._held[key]
            while waiting:
                held = waiting[0]
                decided = self._decide(key, held.if_version) if serving_head else None
                if decided is None:
                    if held.deadline > now:
                        break
                    self._out.append(Respond(held.client, Error(
                        held.request_id, "unavailable",
                        "the key's pending writes did not commit in time; the conditional write was not applied")))
                elif decided is True:
                    self.client_write(held.client, held.request_id, key, held.value, held.tombstone, now)
                else:
                    self._condition_failed(held.client, held.request_id, key, decided)
                waiting.pop(0)
                self._held_count -= 1
                self._held_bytes -= len(held.value)
            if not waiting:
                del self._held[key]

    def _acknowledge(self, key: str, version: int) -> None:
        pending = self._pending.get(key)
        if not pending:
            return
        remaining = []
        for write in pending:
            if write.version <= version:
                existed = UNSET if write.existed is None else write.existed
                self._out.append(Respond(write.client, Ok(write.request_id, version=write.version, existed=existed)))
            else:
                remaining.append(write)
        if remaining:
            self._pending[key] = remaining
        else:
            del self._pending[key]

    def expire_writes(self, now: float) -> None:
        for key in list(self._pending):
            pending = self._pending[key]
            alive = [w for w in pending if w.deadline > now]
            for write in pending:
                if write.deadline <= now:
                    self._unknown_outcome(write, "the write did not commit in time; it may still commit")
            if alive:
                self._pending[key] = alive
            else:
                del self._pending[key]

    def fail_pending(self, reason: str) -> None:
        for pending in self._pending.values():
            for write in pending:
                self._unknown_outcome(write, reason)
        self._pending.clear()
        for waiting in self._held.values():
            for held in waiting:
                self._out.append(Respond(held.client, Error(
                    held.request_id, "unavailable",
                    "this node left the chain before the key's pending writes committed; the conditional "
                    "write was not applied")))
        self._held.clear()
        self._held_count = self._held_bytes = 0
        # Out of the chain: what is dirty here is dropped or committed before this node serves again,
        # and it catches up by copying, which its change log does not show: the log starts afresh.
        self._arrivals.clear()
        self._changes.reset()

    def _unknown_outcome(self, write: _PendingWrite, message: str) -> None:
        self._out.append(Respond(write.client, Error(write.request_id, "unknown_outcome", message)))

    # ------------------------------------------------------------------ records from the predecessor

    def apply_write(self, record: WriteRecord, now: float, copying: bool = False) -> None:
        """A record from the predecessor (``copying``: we are a learner still copying pages)."""
        key, version = record.key, record.version
        store = self.store
        role = self.place.role
        if version > MAX_VERSION_STEP and self._too_far(record, copying, now):
            return
        if role is Role.LEARNER:
            stored = store.put(key, version, record.value, committed=True, tombstone=record.tombstone)
            if not stored and self._conflicts(record, now):
                return
            if stored:
                self._changes.add(key, version, record.tombstone, record.value)
            if stored or store.commit(key, version) or self.committed_version(key) >= version:
                self.links.report_commit(key, version)  # the acknowledgement the tail waits for
            return
        stored = store.put(key, version, record.value, tombstone=record.tombstone)
        if not stored and self._conflicts(record, now):
            return
        if stored:
            self._arrivals.arrived(key, version, now, record.tombstone, record.value)
        if role is Role.TAIL or role is Role.SOLE:
            held = None if stored else store.get(key, version)
            if stored or (held is not None and not held.committed):
                self._tail_commit(record, now)
            elif held is not None:
                self._release(key, version)  # a repeat of a version committed here: report again
            elif self.committed_version(key) >= version:
                self._echo_commit(key, version)
            return
        if stored:
            self.links.forward(record, now)
        elif self.committed_version(key) >= version:
            self._echo_commit(key, version)

    def _conflicts(self, record: WriteRecord, now: float) -> bool:
        """A record for a version held here with another value: a protocol violation, refused."""
        held = self.store.get(record.key, record.version)
        if held is None or (held.value == record.value and held.tombstone == record.tombstone):
            return False
        self._counters["conflicting_records"] += 1
        self.logs.error("conflict", now, "refused version %d of %r: it is held here with another value (a "
                        "replica that differs, or a forged frame)", record.version, record.key)
        return True

    def _too_far(self, record: WriteRecord, copying: bool, now: float) -> bool:
        latest = self.store.latest(record.key)
        if latest is None and copying:
            return False
        if record.version - (latest.version if latest else 0) <= MAX_VERSION_STEP:
            return False
        self._counters["conflicting_records"] += 1
        self.logs.error("version jump", now, "refused version %d of %r: more than %d versions beyond the newest "
                        "held here", record.version, record.key, MAX_VERSION_STEP)
        return True

    def _echo_commit(self, key: str, version: int) -> None:
        """Repeat a COMMIT for a version committed here (a lost COMMIT is repaired so) - unless
        our successor still owes us the commit of that version: then it is not ours to give."""
        if not self.links.sent.owes(key, version):
            self.links.report_commit(key, version)

    def _tail_commit(self, record: WriteRecord, now: float) -> None:
        """The tail commits a version it holds dirty; with a learner behind it, only once the
        learner acknowledges it (until then the version stays dirty here and reads get the
        previous one)."""
        key, version = record.key, record.version
        if self.place.successor is not None:
            if (key, version) not in self.links.sent:
                self.links.forward(WriteRecord(key, version, record.value, True, record.tombstone), now)
            return
        self._committed(key, version, self.store.commit(key, version))
        self._counters["commits"] += 1
        self.links.sent.forget(key, version)
        self._release(key, version)

    def _learner_has(self, key: str, version: int) -> None:
        """The learner acknowledged a record: the tail may commit it now."""
        held = self.links.sent.versions_upto(key, version)
        self.links.sent.forget(key, version)
        for v in held:
            done = self.store.commit(key, v)
            if done:
                self._counters["commits"] += 1
            self._committed(key, v, done)
            self._release(key, v)

    def _committed(self, key: str, version: int, stored: bool) -> None:
        """``version`` of ``key`` committed here (``stored``: just now, by this call's caller):
        every version up to it leaves the arrivals and enters the change log, in version order."""
        changes = self._changes
        arrived = self._arrivals.committed(key, version)
        for v, _at, tombstone, value in arrived:
            changes.add(key, v, tombstone, value)
        if stored and (not arrived or arrived[-1][0] != version):
            item = self.store.get(key, version)  # not seen arriving by this run: from the store
            if item is not None:
                changes.add(key, version, item.tombstone, item.value)

    def _release(self, key: str, version: int) -> None:
        """Report a commit upstream and answer the clients waiting for it."""
        self._acknowledge(key, version)
        if self.place.predecessor is not None:
            self.links.report_commit(key, version)

    # ------------------------------------------------------------------ commits from the successor

    def apply_commits(self, commits: tuple[tuple[str, int], ...], now: float) -> None:
        if self.place.is_tail and self.place.successor is not None:
            for key, version in commits:  # from the learner: acknowledgements
                self._learner_has(key, version)
            return
        store, counters, sent, links, committed = (self.store, self._counters, self.links.sent, self.links,
                                                   self._committed)
        has_predecessor = self.place.predecessor is not None
        for key, version in commits:
            done = store.commit(key, version)
            if not done and not has_predecessor:
                self._check_assigned(key, version, now)
            committed(key, version, done)
            counters["commits"] += 1
            sent.forget(key, version)
            self._acknowledge(key, version)
            if has_predecessor:
                links.report_commit(key, version)

    def _check_assigned(self, key: str, version: int, now: float) -> None:
        """At the head: a commit for a version it never assigned means the chain below holds a
        version that no client wrote through it."""
        latest = self.store.latest(key)
        if latest is None or latest.version < version:
            self._counters["foreign_commits"] += 1
            self.logs.error("foreign commit", now, "a commit for version %d of %r, which this head never "
                            "assigned: a replica below holds a version no client wrote", version, key)

    # ------------------------------------------------------------------ a new role

    def settle_new_role(self, now: float) -> None:
        """What a new epoch's role owes, once its fence is over and before its links open."""
        owed, self.owed = self.owed, Owed.NOTHING
        if Owed.LEFTOVERS in owed:
            self._commit_leftovers()
        if Owed.SENT_LIST in owed and self.place.is_tail:
            self._commit_everything_sent(now)
        if self.place.is_tail and self.place.successor is None:
            for record in self.links.sent.records():  # no learner any more: what waited for it commits
                self._learner_has(record.key, record.version)

    def _commit_leftovers(self) -> None:
        dirty = sorted(self.store.dirty_items(), key=lambda item: (item.key, item.version))
        for item in dirty:
            if self.store.commit(item.key, item.version):
                self._changes.add(item.key, item.version, item.tombstone, item.value)  # watchers see them too
        if dirty:
            log.info("committed %d versions left uncommitted by a previous run", len(dirty))

    def _commit_everything_sent(self, now: float) -> None:
        """A node that becomes tail has seen everything the old tail saw: commit it all (and pass
        it to the learner, which may have missed it from the old tail)."""
        for record in self.links.sent.records():
            key, version = record.key, record.version
            self.links.sent.forget(key, version)  # our own entries for the old successor
            # The old tail may have let readers see these: commit them at once, whatever waits
            # on the learner. Reported upstream only when the learner has them, so that our
            # predecessor still holds them should we die first.
            done = self.store.commit(key, version)
            if done:
                self._counters["commits"] += 1
            self._committed(key, version, done)
            if self.place.successor is not None:
                self.links.forward(WriteRecord(key, version, record.value, True, record.tombstone), now)
            else:
                self._release(key, version)

    # ------------------------------------------------------------------ reads

    def version_to_answer(self, key: str, committed: int) -> Item | None | UnsetType:
        """A dirty read's answer once the tail said ``committed``: our own newest committed version
        if it is at least that (it committed here meanwhile), that version, or None for nothing
        committed; UNSET when that version is no longer held here."""
        local = self.store.latest_committed(key)
        if local is not None and local.version >= committed:
            return local
        if committed == 0:
            return None
        item = self.store.get(key, committed)
        return UNSET if item is None else item
