"""The CRAQ protocol for one node: pure state transitions, no sockets, threads or clocks.

Everything that changes a node's protocol state lives in this module. The shell (zcraq/node.py)
calls one ``on_*`` method per incoming message or ``tick`` for time, always passing the current
monotonic time, then flushes the store and carries out ``drain()``'s effects in order. The same
class runs under the deterministic simulator.

Theory of operation
-------------------
Versions. The head gives each write of a key the next version (newest held + 1) and stores it
dirty. WRITE records flow down the chain; each node stores them dirty and remembers them in its
*sent* list until they commit. The tail stores them committed and sends COMMIT(key, version) up;
each node commits, prunes older versions, forgets the sent entry and passes the COMMIT on. The
head answers the client when the COMMIT reaches it. COMMIT(k, v) means "every version of k up to
v is committed or superseded", so it also acknowledges older pending writes of k.

Idempotence. A record is identified by (key, version); storing, committing and forwarding are
idempotent and commute across keys, so duplicates and reordering are harmless. A node that gets a
WRITE it already holds committed echoes the COMMIT, which repairs a lost COMMIT.

Reliability. Frames on a link (sender, receiver, epoch) carry sequence numbers. Frame 0 of a link
is a *sync* frame: it carries everything the sender holds uncommitted for the receiver. A receiver
that sees a gap, or that adopts a new epoch, asks for a resync ("r"); the sender answers with a new
sync frame. Sent entries not committed after ``resend_interval`` are resent as a last resort.

Epochs. Every topology has an epoch; chain frames carry it. A node accepts chain traffic only from
its predecessor/successor of its current epoch and only in that epoch, so a node removed from the
chain cannot inject writes or commits.

Reads. A node serves reads only while it is in the chain and its lease from the coordinator is
valid. Newest version clean: answer it. Dirty: ask the tail which version is committed and answer
that, or the newest version committed here if that is newer (it committed at the tail during the
read, so it is a correct answer, never "not found"). The tail answers version queries only in the
querier's epoch.

Joining. A node (re)starts empty of dirty versions, registers with the coordinator, and is made
the *learner* behind the tail: the tail forwards it every write (flagged committed) while the
learner copies the committed state in pages. When the copy is complete it tells the coordinator,
which makes it the tail in a new epoch. A new tail serves only after the sync frame from its
predecessor in that epoch, so it holds everything the old tail had committed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from itertools import count
from typing import Any

from zcraq import wire
from zcraq.effects import Effect, PeerRequest, Relink, Reply, SendDown, SendUp, Subscribe
from zcraq.store.base import Item, Store
from zcraq.topology import EMPTY, Member, Topology
from zcraq.wire import ChainFrame, Limits, Request, WireError, WriteRecord

log = logging.getLogger("zcraq.node")

# Test-only protocol bugs that can be switched on to check that the checkers catch them.
UNSAFE_FAULTS = frozenset({"dirty_read_local"})  # answer dirty reads without asking the tail

# Requests a node's service endpoint accepts.
NODE_REQUESTS = frozenset({"read", "write", "delete", "version", "catchup", "status", "confirm"})


@dataclass(slots=True)
class NodeTimings:
    heartbeat_interval: float = 0.5
    request_timeout: float = 2.0  # version queries, catch-up pages, coordinator calls
    write_timeout: float = 10.0  # a client write still uncommitted after this gets unknown_outcome
    resend_interval: float = 1.0
    catchup_page_items: int = 1000
    peer_lease: float = 1.0  # how long a confirmation to a peer binds this node (see "Leases")


@dataclass(slots=True)
class _PendingWrite:
    version: int
    client: Any
    request_id: Any
    deadline: float


@dataclass(slots=True)
class _PendingCall:
    """A request this node sent to a peer or the coordinator, awaiting its reply."""

    kind: str
    deadline: float
    sent_at: float
    client: Any = None
    request_id: Any = None
    key: str | None = None
    epoch: int = 0


@dataclass(slots=True)
class _LinkIn:
    sender: str
    epoch: int
    expected: int = 0
    synced: bool = False  # sync frame (seq 0) received on this link


def _listed_ids(topology: Topology) -> set[str]:
    return {m.id for m in topology.members} | ({topology.learner.id} if topology.learner else set())


class NodeCore:
    def __init__(self, me: Member, store: Store, limits: Limits | None = None,
                 timings: NodeTimings | None = None, unsafe: frozenset[str] = frozenset()) -> None:
        self.me = me
        # Deliberate protocol bugs, for tests proving that the simulator and the chaos runner
        # catch them. Never set in production: see UNSAFE_FAULTS.
        self.unsafe = unsafe
        self.store = store
        self.limits = limits or Limits()
        self.timings = timings or NodeTimings()
        self.topology: Topology = EMPTY
        self.lease_until = float("-inf")
        self.joined = False  # the coordinator accepted this incarnation
        self.caught_up = False  # as learner: the committed copy is complete
        self._outbox: list[Effect] = []
        self._ids = count(1)
        self._sent: OrderedDict[tuple[str, int], list[Any]] = OrderedDict()  # -> [record, sent_at]
        self._sent_versions: dict[str, set[int]] = {}
        self._pending_writes: dict[str, list[_PendingWrite]] = {}
        self._calls: dict[int, _PendingCall] = {}
        self._down_buffer: list[WriteRecord] = []
        self._up_buffer: list[tuple[str, int]] = []
        self._down_seq = 0
        self._up_seq = 0
        self._link_in: _LinkIn | None = None  # writes from the predecessor
        self._ack_in: _LinkIn | None = None  # commits from the successor
        self._last_resync_request = float("-inf")
        self._last_heartbeat = float("-inf")
        self._join_sent_at = float("-inf")
        self._incompatible_logged_at = float("-inf")
        self._catchup_cursor: str | None = None
        self._catchup_active = False
        self._catchup_complete = False  # pages done, waiting for the live stream's sync
        self._next_catchup_try = 0.0
        self._confirmed_until: dict[str, float] = {}  # peer -> its confirmation of our epoch ends
        self._last_confirm_round = float("-inf")
        self.fenced_until = float("-inf")
        self._link_start_pending = False
        self._commit_sent_pending = False
        self._commit_dirty_pending = False
        self._last_caught_up_report = float("-inf")
        self.counters: dict[str, int] = {
            "reads": 0, "dirty_reads": 0, "writes": 0, "commits": 0, "bad_messages": 0,
            "stale_chain_frames": 0, "resyncs": 0, "resends": 0, "internal_errors": 0,
            "fenced_frames": 0, "unleased_frames": 0,
        }

    # ------------------------------------------------------------------ derived state

    @property
    def position(self) -> int | None:
        return self.topology.position(self.me.id) if self.joined else None

    @property
    def is_head(self) -> bool:
        return self.position == 0

    @property
    def is_tail(self) -> bool:
        position = self.position
        return position is not None and position == len(self.topology.members) - 1

    @property
    def is_learner(self) -> bool:
        learner = self.topology.learner
        return self.joined and learner is not None and learner.id == self.me.id

    @property
    def role(self) -> str:
        if self.is_learner:
            return "learner"
        position = self.position
        if position is None:
            return "joining" if not self.joined else "outside"
        if len(self.topology.members) == 1:
            return "head+tail"
        if position == 0:
            return "head"
        return "tail" if self.is_tail else "middle"

    def serving(self, now: float) -> bool:
        """May this node answer reads, version queries and writes right now?"""
        if self.position is None:
            return False
        if not self._has_lease(now):
            return False
        if self._commit_sent_pending or self._commit_dirty_pending:
            return False  # a new tail holds versions an old tail may have committed: commit first
        if self.is_tail and self.topology.predecessor(self.me.id) is not None:
            # A new tail must first hold everything its predecessor forwarded (sync frame).
            link = self._link_in
            return link is not None and link.synced and link.epoch == self.topology.epoch
        return True

    def _has_lease(self, now: float) -> bool:
        return now < self.lease_until or self._peers_confirm(now)

    def fenced(self, now: float) -> bool:
        return now < self.fenced_until

    def _peers(self) -> list[Member]:
        listed = [*self.topology.members, *([self.topology.learner] if self.topology.learner else [])]
        return [m for m in listed if m.id != self.me.id]

    def _peers_confirm(self, now: float) -> bool:
        """Every other node of our epoch confirmed, recently enough, that it is still in it."""
        return all(self._confirmed_until.get(m.id, float("-inf")) > now for m in self._peers())

    # ------------------------------------------------------------------ lifecycle

    def start(self, now: float) -> None:
        """A fresh incarnation: register with the coordinator. What becomes of versions left
        uncommitted by the previous run depends on where the coordinator puts us (see
        ``_settle_uncommitted``). A previous incarnation may have confirmed peers: keep the
        promise by staying fenced for a peer lease."""
        self._fence(now)
        self._send_join(now)

    def _fence(self, now: float) -> None:
        """Take part in no commit for a peer lease (see "Leases" above)."""
        self.fenced_until = max(self.fenced_until, now + self.timings.peer_lease)

    def _settle_uncommitted(self, now: float) -> None:
        """Uncommitted versions from a previous incarnation, once the join is answered.

        As a learner they go: the chain holds everything that was committed, and a stale dirty
        version could clash with a version number the head assigns again. As the only member they
        are committed: a tail removed since may have committed them (and served them to readers),
        and this node is the only copy left; a write that never committed anywhere was never
        acknowledged, so letting it take effect now is a correct outcome of an unknown write.
        """
        if self.is_learner:
            dropped = self.store.drop_uncommitted()
            if dropped:
                log.info("dropped %d uncommitted versions from before this node (re)joined the chain", dropped)
        elif self.is_tail:
            self._commit_dirty_pending = True
            self._start_links_when_unfenced(now)

    def _commit_leftover_dirty(self) -> None:
        dirty = [(item.key, item.version) for item in self.store.dirty_items()]
        for key, version in dirty:
            self.store.commit(key, version)
        if dirty:
            log.info("committed %d versions left uncommitted by a previous run", len(dirty))

    def _send_join(self, now: float) -> None:
        self._join_sent_at = now
        self._call_coordinator("join", now, node=self.me.to_dict(), protocol=wire.PROTOCOL_VERSION)

    def drain(self) -> list[Effect]:
        """Effects accumulated since the last drain, with buffered chain records framed."""
        self._flush_chain_buffers()
        effects, self._outbox = self._outbox, []
        return effects

    # ------------------------------------------------------------------ topology

    def on_topology(self, topology: Topology, now: float) -> None:
        if topology.epoch <= self.topology.epoch or not self.joined:
            return
        self._flush_chain_buffers()  # frames of the old epoch go to the old peers
        old = self.topology
        old_pred = old.predecessor(self.me.id)
        was_tail = self.is_tail
        was_learner = self.is_learner
        self.topology = topology
        pred = topology.predecessor(self.me.id)
        succ = topology.successor(self.me.id)
        if self.topology.member(self.me.id) is None:
            # Removed from the chain while running: start over as a new incarnation.
            log.warning("removed from the chain at epoch %d; rejoining", topology.epoch)
            self._reset_incarnation(now)
            return
        log.info("epoch %d: %s (%d members%s)", topology.epoch, self.role, len(topology.members),
                 ", learner " + topology.learner.id if topology.learner else "")
        self._outbox.append(Relink(down=succ.write_in if succ else None, up=pred.ack_in if pred else None))
        self._down_seq = 0
        self._up_seq = 0
        self._link_in = _LinkIn(pred.id, topology.epoch) if pred else None
        self._ack_in = _LinkIn(succ.id, topology.epoch) if succ else None
        self._confirmed_until.clear()  # confirmations were for the old epoch
        if _listed_ids(old) - _listed_ids(topology):
            # Someone was removed: it may still serve on our earlier confirmations.
            self._fence(now)
        if self.is_tail and not was_tail and not was_learner:
            self._commit_sent_pending = True
        self._start_links_when_unfenced(now)
        if self.is_learner:
            # Pages already copied stay valid only while the same source keeps forwarding to us:
            # a new source may hold commits the old one never forwarded.
            if not (was_learner and old_pred is not None and pred is not None and old_pred.id == pred.id):
                self._catchup_cursor = None
                self.caught_up = False
        if self.is_learner and not self.caught_up:
            self._catchup_complete = False
            self._catchup_active = True
            self._request_catchup_page(now)  # replies of the old epoch are ignored
        if not self.is_learner and self.position is not None:
            self.caught_up = True
            self._catchup_active = False

    def _start_links_when_unfenced(self, now: float) -> None:
        self._link_start_pending = True
        if not self.fenced(now):
            self._start_links(now)

    def _start_links(self, now: float) -> None:
        """Begin this epoch's chain traffic: commit what a new tail must, then sync both links."""
        self._link_start_pending = False
        if self._commit_dirty_pending:
            self._commit_dirty_pending = False
            self._commit_leftover_dirty()
        if self._commit_sent_pending:
            self._commit_sent_pending = False
            if self.is_tail:
                self._commit_everything_sent(now)
        if self.is_tail and self.topology.successor(self.me.id) is None:
            # No learner any more: what waited for it commits now.
            for key, version in list(self._sent):
                self._learner_has(key, version)
        self._send_sync(now)
        self._request_resync(now, force=True)

    def _reset_incarnation(self, now: float) -> None:
        self._fence(now)
        self.joined = False
        self.caught_up = False
        self.lease_until = float("-inf")
        self._catchup_active = False
        self._sent.clear()
        self._sent_versions.clear()
        self._down_buffer.clear()
        self._up_buffer.clear()
        self._link_in = self._ack_in = None
        self._outbox.append(Relink(down=None, up=None))
        for pending in self._pending_writes.values():
            for write in pending:
                self._reply_error(write.client, write.request_id, "unknown_outcome",
                                  "this node left the chain before the write committed")
        self._pending_writes.clear()
        self._send_join(now)

    def _commit_everything_sent(self, now: float) -> None:
        """A node that becomes tail has seen everything the old tail saw: commit it all (and pass
        it to the learner, which may have missed it from the old tail)."""
        for (key, version), entry in list(self._sent.items()):
            record = entry[0]
            self._forget_sent(key, version)  # our own entries for the old successor
            # The old tail may have let readers see these: commit them at once, whatever waits
            # on the learner. Reported upstream only when the learner has them, so that our
            # predecessor still holds them should we die first.
            if self.store.commit(key, version):
                self.counters["commits"] += 1
            if self.topology.learner is not None:
                self._forward(WriteRecord(key, version, record.value, True, record.tombstone), now)
            else:
                self._release(key, version)

    # ------------------------------------------------------------------ chain: downstream writes

    def on_write_frame(self, data: bytes, now: float) -> None:
        frame = self._decode_chain(data)
        if frame is None:
            return
        link = self._link_in
        if not self._accept_link(frame, link, now, kinds=("w",)):
            return
        assert link is not None
        if self.is_tail and not self._has_lease(now):
            # Only a tail that is surely still the tail may commit: one removed while paused or
            # cut off would otherwise commit writes the chain never will. Resent later.
            self.counters["unleased_frames"] += 1
            return
        if frame.seq == 0:
            link.synced = True
            link.expected = 1
        elif frame.seq > link.expected:
            log.debug("gap on write link from %s: expected %d got %d", frame.sender, link.expected, frame.seq)
            link.expected = frame.seq + 1
            self._request_resync(now)
        elif frame.seq == link.expected:
            link.expected += 1
        for record in frame.writes:
            self._apply_write(record, now)

    def _apply_write(self, record: WriteRecord, now: float) -> None:
        key, version = record.key, record.version
        if self.is_learner:
            stored = (self.store.put(key, version, record.value, committed=True, tombstone=record.tombstone)
                      or self.store.commit(key, version))
            if stored or self._committed_version(key) >= version:
                self._up_buffer.append((key, version))  # the acknowledgement the tail waits for
            return
        stored = self.store.put(key, version, record.value, tombstone=record.tombstone)
        if self.is_tail:
            held = None if stored else self.store.get(key, version)
            if stored or (held is not None and not held.committed):
                self._tail_commit(record, now)
            elif held is not None:
                self._release(key, version)  # a repeat of a version committed here: report again
            elif self._committed_version(key) >= version:
                self._echo_commit(key, version)
            return
        if stored:
            self._forward(record, now)
        elif self._committed_version(key) >= version:
            self._echo_commit(key, version)

    def _echo_commit(self, key: str, version: int) -> None:
        """Repeat a COMMIT for a version committed here (a lost COMMIT is repaired so) - unless
        our successor still owes us the commit of that version: then it is not ours to give."""
        if not any(v >= version for v in self._sent_versions.get(key, ())):
            self._up_buffer.append((key, version))

    def _tail_commit(self, record: WriteRecord, now: float) -> None:
        """The tail commits a version it holds dirty. With a learner behind it, it first hands the
        learner the record and commits (and reports upstream, and answers) only when the learner
        acknowledges it: until then the version stays dirty here and reads get the previous one,
        so no reader can see a version that would be lost with this tail."""
        key, version = record.key, record.version
        if self.topology.learner is not None:
            if (key, version) not in self._sent:
                self._forward(WriteRecord(key, version, record.value, True, record.tombstone), now)
            return
        self.store.commit(key, version)
        self.counters["commits"] += 1
        self._forget_sent(key, version)
        self._release(key, version)

    def _learner_has(self, key: str, version: int) -> None:
        """The learner acknowledged a record: the tail may commit it now."""
        held = [v for v in self._sent_versions.get(key, ()) if v <= version]
        self._forget_sent(key, version)
        for v in sorted(held):
            if self.store.commit(key, v):
                self.counters["commits"] += 1
            self._release(key, v)

    def _committed_version(self, key: str) -> int:
        item = self.store.latest_committed(key)
        return item.version if item else 0

    def _forward(self, record: WriteRecord, now: float) -> None:
        if self.topology.successor(self.me.id) is None:
            return
        self._sent[(record.key, record.version)] = [record, now]
        self._sent_versions.setdefault(record.key, set()).add(record.version)
        self._down_buffer.append(record)

    def _release(self, key: str, version: int) -> None:
        """Report a commit upstream and answer the clients waiting for it."""
        self._acknowledge_writes(key, version)
        if self.topology.predecessor(self.me.id) is not None:
            self._up_buffer.append((key, version))

    # ------------------------------------------------------------------ chain: upstream commits

    def on_ack_frame(self, data: bytes, now: float) -> None:
        frame = self._decode_chain(data)
        if frame is None:
            return
        link = self._ack_in
        if not self._accept_link(frame, link, now, kinds=("c", "r")):
            return
        assert link is not None
        if frame.kind == "r":
            self.counters["resyncs"] += 1
            link.expected = max(link.expected, frame.seq + 1)
            self._send_sync(now)
            return
        if frame.seq > link.expected:
            # Commits were lost: resending what is uncommitted makes the successor echo them.
            self._send_sync(now)
        link.expected = max(link.expected, frame.seq + 1)
        from_learner = self.is_tail and self.topology.learner is not None
        for key, version in frame.commits:
            if from_learner:
                self._learner_has(key, version)
                continue
            self.store.commit(key, version)
            self.counters["commits"] += 1
            self._forget_sent(key, version)
            self._acknowledge_writes(key, version)
            if self.topology.predecessor(self.me.id) is not None:
                self._up_buffer.append((key, version))

    def _forget_sent(self, key: str, version: int) -> None:
        versions = self._sent_versions.get(key)
        if not versions:
            return
        for v in [v for v in versions if v <= version]:
            versions.discard(v)
            self._sent.pop((key, v), None)
        if not versions:
            del self._sent_versions[key]

    def _acknowledge_writes(self, key: str, version: int) -> None:
        pending = self._pending_writes.get(key)
        if not pending:
            return
        remaining = []
        for write in pending:
            if write.version <= version:
                # An older pending version superseded by a newer commit took effect and was
                # overwritten at once: acknowledging it is linearizable.
                self._reply_ok(write.client, write.request_id, version=write.version)
            else:
                remaining.append(write)
        if remaining:
            self._pending_writes[key] = remaining
        else:
            del self._pending_writes[key]

    # ------------------------------------------------------------------ chain helpers

    def _decode_chain(self, data: bytes) -> ChainFrame | None:
        try:
            return wire.decode_chain(data, self.limits)
        except WireError as error:
            self.counters["bad_messages"] += 1
            log.warning("dropped a malformed chain frame: %s", error)
            return None

    def _accept_link(self, frame: ChainFrame, link: _LinkIn | None, now: float, kinds: tuple[str, ...]) -> bool:
        if frame.kind not in kinds:
            self.counters["bad_messages"] += 1
            return False
        if self.fenced(now) or self._link_start_pending:
            self.counters["fenced_frames"] += 1
            return False  # resent after the fence: the link starts afresh then
        if frame.epoch > self.topology.epoch:
            self._ask_topology(now)
        if link is None or frame.sender != link.sender or frame.epoch != link.epoch:
            self.counters["stale_chain_frames"] += 1
            return False
        return True

    def _send_sync(self, now: float) -> None:
        """Start the downstream link afresh: frame 0 carries every uncommitted record sent."""
        if self.topology.successor(self.me.id) is None or self._link_start_pending:
            return
        self._flush_down()
        records = []
        for entry in self._sent.values():
            entry[1] = now
            records.append(entry[0])
        self._down_seq = 0
        self._emit_down(records)

    def _request_resync(self, now: float, force: bool = False) -> None:
        if self.topology.predecessor(self.me.id) is None or self._link_start_pending:
            return
        if not force and now - self._last_resync_request < self.timings.resend_interval / 2:
            return
        self._last_resync_request = now
        self._flush_up()
        self._outbox.append(SendUp(ChainFrame("r", self.me.id, self.topology.epoch, self._next_up_seq())))

    def _next_up_seq(self) -> int:
        seq = self._up_seq
        self._up_seq += 1
        return seq

    def _emit_down(self, records: list[WriteRecord]) -> None:
        frame = ChainFrame("w", self.me.id, self.topology.epoch, self._down_seq, tuple(records))
        self._down_seq += 1
        self._outbox.append(SendDown(frame))

    def _flush_down(self) -> None:
        if self._down_buffer:
            records, self._down_buffer = self._down_buffer, []
            if self.topology.successor(self.me.id) is not None and not self._link_start_pending:
                self._emit_down(records)

    def _flush_up(self) -> None:
        if self._up_buffer:
            commits, self._up_buffer = self._up_buffer, []
            if self.topology.predecessor(self.me.id) is not None and not self._link_start_pending:
                self._outbox.append(SendUp(ChainFrame("c", self.me.id, self.topology.epoch,
                                                      self._next_up_seq(), commits=tuple(commits))))

    def _flush_chain_buffers(self) -> None:
        self._flush_down()
        self._flush_up()

    # ------------------------------------------------------------------ client requests

    def on_request(self, client: Any, frames: list[bytes], now: float) -> None:
        try:
            request = wire.decode_request(frames, self.limits, NODE_REQUESTS)
        except WireError as error:
            self.counters["bad_messages"] += 1
            self._reply_error(client, error.request_id, error.code, str(error))
            return
        handler = getattr(self, "_handle_" + request.type)
        handler(client, request, now)

    def _handle_status(self, client: Any, request: Request, now: float) -> None:
        self._reply_ok(client, request.id, node=self.me.id, epoch=self.topology.epoch, role=self.role,
                       serving=self.serving(now), caught_up=self.caught_up, counters=self.counters,
                       sent=len(self._sent))

    def _handle_read(self, client: Any, request: Request, now: float) -> None:
        if not self.serving(now):
            self._reply_error(client, request.id, "unavailable", self._not_serving_reason(now))
            return
        self.counters["reads"] += 1
        key = request.key
        assert key is not None
        if request.fields.get("mode") == "eventual":
            self._answer_item(client, request.id, key, self.store.latest_committed(key))
            return
        latest = self.store.latest(key)
        if latest is None or latest.committed or self.is_tail:
            self._answer_item(client, request.id, key, latest if latest is None or latest.committed
                              else self.store.latest_committed(key))
            return
        self.counters["dirty_reads"] += 1
        if "dirty_read_local" in self.unsafe:
            self._answer_item(client, request.id, key, latest)
            return
        tail = self.topology.tail
        assert tail is not None
        self._call(tail.service, "version", now, client=client, request_id=request.id, key=key,
                   fields={"key": key, "epoch": self.topology.epoch})

    def _answer_item(self, client: Any, request_id: Any, key: str, item: Item | None) -> None:
        if item is None or item.tombstone:
            self._reply_error(client, request_id, "not_found", f"key {key!r} does not exist")
        else:
            self._reply_ok(client, request_id, [item.value], version=item.version)

    def _not_serving_reason(self, now: float) -> str:
        if not self.joined:
            return "node is registering with the coordinator"
        if self.is_learner:
            return "node is catching up and serves no reads yet"
        if self.position is None:
            return "node is not in the chain"
        if now >= self.lease_until and not self._peers_confirm(now):
            return "node has no valid lease (neither from the coordinator nor from every peer)"
        return "node is waiting for its predecessor to sync"

    def _handle_write(self, client: Any, request: Request, now: float) -> None:
        self._client_write(client, request, request.value or b"", tombstone=False, now=now)

    def _handle_delete(self, client: Any, request: Request, now: float) -> None:
        self._client_write(client, request, b"", tombstone=True, now=now)

    def _client_write(self, client: Any, request: Request, value: bytes, tombstone: bool, now: float) -> None:
        if not self.is_head:
            head = self.topology.head
            self._reply_error(client, request.id, "not_head", "writes go to the head of the chain",
                              head=head.service if head else None)
            return
        if not self.serving(now) or self._link_start_pending:
            reason = self._not_serving_reason(now) if not self.serving(now) else "the chain is reconfiguring"
            self._reply_error(client, request.id, "unavailable", reason)
            return
        key = request.key
        assert key is not None
        latest = self.store.latest(key)
        version = (latest.version if latest else 0) + 1
        self.counters["writes"] += 1
        record = WriteRecord(key, version, value, False, tombstone)
        if self.is_tail:  # single-member chain: the head is the tail
            self.store.put(key, version, value, tombstone=tombstone)
            self._pending_writes.setdefault(key, []).append(
                _PendingWrite(version, client, request.id, now + self.timings.write_timeout))
            self._tail_commit(record, now)  # answers at once, or when the learner has it
            return
        self.store.put(key, version, value, tombstone=tombstone)
        self._pending_writes.setdefault(key, []).append(
            _PendingWrite(version, client, request.id, now + self.timings.write_timeout))
        self._forward(record, now)

    def _handle_version(self, client: Any, request: Request, now: float) -> None:
        if not self.is_tail or not self.serving(now):
            self._reply_error(client, request.id, "not_tail", "this node is not a serving tail",
                              epoch=self.topology.epoch)
            return
        if request.fields["epoch"] != self.topology.epoch:
            self._reply_error(client, request.id, "wrong_epoch", "epochs differ", epoch=self.topology.epoch)
            return
        assert request.key is not None
        self._reply_ok(client, request.id, version=self._committed_version(request.key))

    def _handle_confirm(self, client: Any, request: Request, now: float) -> None:
        """A peer asks whether we are still in its epoch. Saying yes binds us: should we later
        adopt an epoch that removes it, we take part in no commit for ``peer_lease``."""
        asker = request.fields["node_id"]
        if (not self.joined or request.fields["epoch"] != self.topology.epoch
                or self.topology.member(asker) is None or self.topology.member(self.me.id) is None):
            self._reply_error(client, request.id, "wrong_epoch", "not in that epoch with you",
                              epoch=self.topology.epoch)
            return
        self._reply_ok(client, request.id, epoch=self.topology.epoch,
                       lease_ms=int(self.timings.peer_lease * 1000))

    def _handle_catchup(self, client: Any, request: Request, now: float) -> None:
        if self.position is None or request.fields["epoch"] != self.topology.epoch:
            self._reply_error(client, request.id, "wrong_epoch", "catch-up source is not in that epoch",
                              epoch=self.topology.epoch)
            return
        if self._link_start_pending:
            # Commits this node still owes (a new tail, a restarted last member) must be in the pages.
            self._reply_error(client, request.id, "unavailable", "catch-up source is reconfiguring; retry")
            return
        page = self.store.committed_page(request.fields.get("after"), request.fields["limit"])
        items = [[i.key, i.version, wire.TOMBSTONE if i.tombstone else 0] for i in page.items]
        self._reply_ok(client, request.id, [i.value for i in page.items], items=items, cursor=page.cursor)

    # ------------------------------------------------------------------ calls to peers

    def _call(self, endpoint: str, kind: str, now: float, *, client: Any = None, request_id: Any = None,
              key: str | None = None, fields: dict[str, Any]) -> int:
        call_id = next(self._ids)
        self._calls[call_id] = _PendingCall(kind, now + self.timings.request_timeout, now, client,
                                            request_id, key, self.topology.epoch)
        self._outbox.append(PeerRequest(endpoint, wire.encode_request(kind, call_id, **fields)))
        return call_id

    def _call_coordinator(self, kind: str, now: float, **fields: Any) -> None:
        self._call("coordinator", kind, now, fields=fields)

    def _ask_topology(self, now: float) -> None:
        if any(call.kind == "topology" for call in self._calls.values()):
            return
        self._call_coordinator("topology", now)

    def on_peer_reply(self, frames: list[bytes], now: float) -> None:
        try:
            reply = wire.decode_reply(frames)
        except WireError as error:
            self.counters["bad_messages"] += 1
            log.warning("dropped a malformed reply: %s", error)
            return
        call = self._calls.pop(reply.id, None) if isinstance(reply.id, int) else None
        if call is None:
            return  # late reply to a call that already timed out
        getattr(self, "_reply_to_" + call.kind)(call, reply, now)

    def _reply_to_version(self, call: _PendingCall, reply: wire.Reply, now: float) -> None:
        key = call.key
        assert key is not None
        if not reply.ok:
            if reply.header.get("epoch", 0) > self.topology.epoch:
                self._ask_topology(now)
            self._reply_error(call.client, call.request_id, "unavailable",
                              f"the tail could not confirm the committed version: {reply.message}")
            return
        committed = reply.header.get("version")
        if not wire.is_int(committed) or committed < 0:
            self._reply_error(call.client, call.request_id, "unavailable", "bad version reply from the tail")
            return
        local = self.store.latest_committed(key)
        if local is not None and local.version >= committed:
            self._answer_item(call.client, call.request_id, key, local)
        elif committed == 0:
            self._answer_item(call.client, call.request_id, key, None)
        else:
            item = self.store.get(key, committed)
            if item is None:
                self._reply_error(call.client, call.request_id, "unavailable",
                                  "the committed version is not held here; retry")
            else:
                self._answer_item(call.client, call.request_id, key, item)

    def _reply_to_join(self, call: _PendingCall, reply: wire.Reply, now: float) -> None:
        if not reply.ok:
            # "busy" is routine (another node is catching up); anything else needs an operator.
            level = logging.INFO if reply.code == "busy" else logging.ERROR
            log.log(level, "the coordinator did not register this node yet: %s", reply.message)
            return
        try:
            topology = Topology.from_dict(reply.header.get("topology"))
        except ValueError as error:
            log.warning("bad topology in join reply: %s", error)
            return
        publish = reply.header.get("publish")
        if isinstance(publish, str):
            self._outbox.append(Subscribe(publish))
        self.joined = True
        self.topology = EMPTY  # adopt the join reply's topology whatever its epoch
        self.on_topology(topology, now)
        self._settle_uncommitted(now)
        self._last_heartbeat = float("-inf")

    def _reply_to_topology(self, call: _PendingCall, reply: wire.Reply, now: float) -> None:
        if reply.ok:
            try:
                self.on_topology(Topology.from_dict(reply.header.get("topology")), now)
            except ValueError as error:
                log.warning("bad topology reply: %s", error)

    def _reply_to_heartbeat(self, call: _PendingCall, reply: wire.Reply, now: float) -> None:
        if not reply.ok:
            if reply.code == "unknown_node" and self.joined:
                log.warning("the coordinator does not know this node; rejoining")
                self._reset_incarnation(now)
            elif reply.code == "incompatible" and now - self._incompatible_logged_at >= 60.0:
                # Every heartbeat is refused until someone acts: say so loudly, but once a minute.
                self._incompatible_logged_at = now
                log.error("the coordinator refuses this node's heartbeats: %s", reply.message)
            return
        epoch = reply.header.get("epoch")
        lease = reply.header.get("lease_ms")
        if isinstance(epoch, int) and epoch > self.topology.epoch:
            self._ask_topology(now)
        if reply.header.get("status") == "member" and isinstance(lease, int) and epoch == call.epoch:
            # Measured from when the heartbeat was sent: the coordinator's clock started later.
            self.lease_until = max(self.lease_until, call.sent_at + lease / 1000.0)

    def _reply_to_confirm(self, call: _PendingCall, reply: wire.Reply, now: float) -> None:
        lease = reply.header.get("lease_ms")
        if not reply.ok:
            if wire.is_int(reply.header.get("epoch")) and reply.header["epoch"] > self.topology.epoch:
                self._ask_topology(now)
            return
        if call.epoch == self.topology.epoch and wire.is_int(lease) and lease > 0 and call.key is not None:
            # Measured from when we asked: the peer's promise started later.
            self._confirmed_until[call.key] = call.sent_at + lease / 1000.0

    def _reply_to_caught_up(self, call: _PendingCall, reply: wire.Reply, now: float) -> None:
        if not reply.ok:
            log.info("coordinator did not take the catch-up report: %s", reply.message)

    def _reply_to_catchup(self, call: _PendingCall, reply: wire.Reply, now: float) -> None:
        if not self.is_learner or call.epoch != self.topology.epoch or not self._catchup_active:
            return
        if not reply.ok:
            self._next_catchup_try = now + 0.1
            if reply.header.get("epoch", 0) > self.topology.epoch:
                self._ask_topology(now)
            return
        items = reply.header.get("items")
        cursor = reply.header.get("cursor")
        if not isinstance(items, list) or len(items) != len(reply.values) or not (
                cursor is None or isinstance(cursor, str)):
            self.counters["bad_messages"] += 1
            self._next_catchup_try = now + 0.1
            return
        for entry, value in zip(items, reply.values):
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                    and wire.is_int(entry[1]) and entry[1] > 0 and wire.is_int(entry[2])
                    and 0 <= entry[2] <= 3):
                self.counters["bad_messages"] += 1
                self._next_catchup_try = now + 0.1
                return
            self.store.put(entry[0], entry[1], value, committed=True, tombstone=bool(entry[2] & wire.TOMBSTONE))
        self._catchup_cursor = cursor
        if cursor is None:
            # Pages done; the live stream must be in sync too before we may become tail.
            self._catchup_active = False
            self._catchup_complete = True
            self._drive_catchup(now)
        else:
            self._request_catchup_page(now)

    def _report_caught_up(self, now: float) -> None:
        self.caught_up = True
        log.info("caught up at epoch %d; asking to become tail", self.topology.epoch)
        self._last_caught_up_report = now
        self._call_coordinator("caught_up", now, node_id=self.me.id, epoch=self.topology.epoch)

    def _request_catchup_page(self, now: float) -> None:
        source = self.topology.predecessor(self.me.id)
        if source is None:
            return
        self._call(source.service, "catchup", now, fields={
            "after": self._catchup_cursor, "limit": self.timings.catchup_page_items,
            "epoch": self.topology.epoch})

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Heartbeats, time-outs and retransmission. Call often (every few tens of ms)."""
        if not self.joined:
            if now - self._join_sent_at >= self.timings.request_timeout:
                self._send_join(now)
        elif now - self._last_heartbeat >= self.timings.heartbeat_interval:
            self._last_heartbeat = now
            self._call_coordinator("heartbeat", now, node_id=self.me.id, epoch=self.topology.epoch,
                                   protocol=wire.PROTOCOL_VERSION)
        if self._link_start_pending and not self.fenced(now) and self.joined:
            self._start_links(now)
        if self.joined and now - self._last_confirm_round >= self.timings.peer_lease / 4:
            self._last_confirm_round = now
            for peer in self._peers():
                self._call(peer.service, "confirm", now, key=peer.id,
                           fields={"node_id": self.me.id, "epoch": self.topology.epoch})
        link = self._link_in
        if link is not None and not link.synced:
            self._request_resync(now)  # the sync frame or our request for it may have been lost
        self._expire_calls(now)
        self._expire_writes(now)
        self._resend_stale(now)
        if self.is_learner:
            self._drive_catchup(now)

    def _drive_catchup(self, now: float) -> None:
        if self.caught_up:
            # Repeat the report until the coordinator promotes this node (a report can be lost).
            if now - self._last_caught_up_report >= self.timings.heartbeat_interval:
                self._last_caught_up_report = now
                self._call_coordinator("caught_up", now, node_id=self.me.id, epoch=self.topology.epoch)
        elif self._catchup_complete and self._link_in is not None and self._link_in.synced:
            self._catchup_complete = False
            self._report_caught_up(now)
        elif self._catchup_active and now >= self._next_catchup_try and not any(
                call.kind == "catchup" for call in self._calls.values()):
            self._request_catchup_page(now)

    def _expire_calls(self, now: float) -> None:
        expired = [call_id for call_id, call in self._calls.items() if call.deadline <= now]
        for call_id in expired:
            call = self._calls.pop(call_id)
            if call.kind == "version":
                self._reply_error(call.client, call.request_id, "unavailable", "the tail did not answer in time")

    def _expire_writes(self, now: float) -> None:
        for key in list(self._pending_writes):
            pending = self._pending_writes[key]
            alive = [w for w in pending if w.deadline > now]
            for write in pending:
                if write.deadline <= now:
                    self._reply_error(write.client, write.request_id, "unknown_outcome",
                                      "the write did not commit in time; it may still commit")
            if alive:
                self._pending_writes[key] = alive
            else:
                del self._pending_writes[key]

    def _resend_stale(self, now: float) -> None:
        if not self._sent or self.topology.successor(self.me.id) is None or self._link_start_pending:
            return
        cutoff = now - self.timings.resend_interval
        records = []
        for key_version, entry in self._sent.items():
            if entry[1] > cutoff:
                break  # ordered by send time
            entry[1] = now
            records.append((key_version, entry[0]))
        for key_version, record in records:
            self._sent.move_to_end(key_version)
            self._down_buffer.append(record)
        self.counters["resends"] += len(records)

    def next_deadline(self, now: float) -> float:
        """When ``tick`` next has work; the shell may sleep until then."""
        return now + min(0.05, self.timings.heartbeat_interval)

    # ------------------------------------------------------------------ replies

    def _reply_ok(self, client: Any, request_id: Any, values: list[bytes] = (), **fields: Any) -> None:
        if client is not None:
            self._outbox.append(Reply(client, wire.encode_reply(request_id, fields, list(values))))

    def _reply_error(self, client: Any, request_id: Any, code: str, message: str, **extra: Any) -> None:
        if client is not None:
            self._outbox.append(Reply(client, wire.encode_error(request_id, code, message, **extra)))
