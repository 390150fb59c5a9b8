"""This node's two chain links in its current epoch: write records down to the successor, commits
and resync requests up to the predecessor. Never touches the store.

Owns:
- the *sent list*: records forwarded downstream and not yet committed (PROTOCOL.md §10.4);
- the outgoing sequence numbers and the records and commits buffered during a loop turn, sent as
  one frame per direction when the turn ends;
- what each incoming link expects next, and whether its sync frame has arrived.

Reliability. Frame 0 of a downward link is a *sync* frame: it carries the whole sent list. A
receiver that sees a gap, or that adopts a new epoch, asks for a resync; the sender answers with a
new sync frame. A commit frame with a gap also makes the sender resync (the successor then echoes
the commits that were lost). Entries still uncommitted after ``resend_interval`` are resent.

A new epoch's links wait (``LinkState.WAITING``) until the node's fence is over and it has done
what the new epoch owes; the core opens them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum, auto

from zcraq.effects import Effect, SendDown, SendUp
from zcraq.messages import CommitFrame, ResyncFrame, WriteFrame, WriteRecord
from zcraq.topology import Member

log = logging.getLogger("zcraq.node")


@dataclass(slots=True)
class Sent:
    record: WriteRecord
    sent_at: float


class SentList:
    """Records forwarded downstream and not yet committed, oldest send first."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[str, int], Sent] = OrderedDict()
        self._versions: dict[str, set[int]] = {}  # key -> versions in _entries

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key_version: tuple[str, int]) -> bool:
        return key_version in self._entries

    @property
    def key_count(self) -> int:
        """How many keys have a version here waiting for its commit (for monitoring)."""
        return len(self._versions)

    def add(self, record: WriteRecord, now: float) -> None:
        key_version = (record.key, record.version)
        entry = self._entries.get(key_version)
        if entry is None:
            self._entries[key_version] = Sent(record, now)
            self._versions.setdefault(record.key, set()).add(record.version)
        else:  # sent again: keeps its place
            entry.record, entry.sent_at = record, now

    def versions_upto(self, key: str, version: int) -> list[int]:
        """Versions of ``key`` at or below ``version`` still waiting for their commit, ascending."""
        return sorted(v for v in self._versions.get(key, ()) if v <= version)

    def owes(self, key: str, version: int) -> bool:
        """Is our successor yet to acknowledge ``version`` of ``key``, or a newer one?"""
        return any(v >= version for v in self._versions.get(key, ()))

    def forget(self, key: str, version: int) -> None:
        """Every version of ``key`` up to ``version`` is committed."""
        versions = self._versions.get(key)
        if not versions:
            return
        for v in [v for v in versions if v <= version]:
            versions.discard(v)
            self._entries.pop((key, v), None)
        if not versions:
            del self._versions[key]

    def records(self) -> list[WriteRecord]:
        return [entry.record for entry in self._entries.values()]

    def touch_all(self, now: float) -> list[WriteRecord]:
        """Every record, marked as sent now (a sync frame carries them all)."""
        for entry in self._entries.values():
            entry.sent_at = now
        return self.records()

    def due(self, now: float, cutoff: float) -> list[WriteRecord]:
        """Records last sent at or before ``cutoff``, marked as sent now and moved to the end."""
        due = []
        for key_version, entry in self._entries.items():
            if entry.sent_at > cutoff:
                break  # ordered by send time
            entry.sent_at = now
            due.append(key_version)
        for key_version in due:
            self._entries.move_to_end(key_version)
        return [self._entries[kv].record for kv in due]

    def clear(self) -> None:
        self._entries.clear()
        self._versions.clear()


@dataclass(slots=True)
class InLink:
    """What we expect from a neighbour on one incoming link."""

    sender: str
    epoch: int
    expected: int = 0
    synced: bool = False  # its sync frame (seq 0) has arrived


class LinkState(Enum):
    WAITING = auto()  # this epoch's links start when the core opens them
    OPEN = auto()


class Links:
    def __init__(self, me: str, resend_interval: float, out: list[Effect], counters: dict[str, int],
                 partition: int = 0) -> None:
        self.me = me
        self.partition = partition  # every frame names it (PROTOCOL.md §10.1)
        self.resend_interval = resend_interval
        self._out = out
        self._counters = counters
        self.sent = SentList()
        self.state = LinkState.OPEN
        self.epoch = 0
        self.predecessor: Member | None = None
        self.successor: Member | None = None
        self.write_in: InLink | None = None  # writes from the predecessor
        self.ack_in: InLink | None = None  # commits and resync requests from the successor
        self._down: list[WriteRecord] = []
        self._up: list[tuple[str, int]] = []
        self._down_seq = 0
        self._up_seq = 0
        self._last_resync_request = float("-inf")

    @property
    def open(self) -> bool:
        return self.state is LinkState.OPEN

    def retarget(self, epoch: int, predecessor: Member | None, successor: Member | None) -> None:
        """A new epoch: fresh sequence numbers and incoming links; wait until opened."""
        self.epoch, self.predecessor, self.successor = epoch, predecessor, successor
        self._down_seq = self._up_seq = 0
        self.write_in = InLink(predecessor.id, epoch) if predecessor else None
        self.ack_in = InLink(successor.id, epoch) if successor else None
        self.state = LinkState.WAITING

    def close(self) -> None:
        """This incarnation is over: forget everything in flight."""
        self.sent.clear()
        self._down.clear()
        self._up.clear()
        self.predecessor = self.successor = None
        self.write_in = self.ack_in = None

    def sync(self, now: float) -> None:
        """Start this epoch's links afresh: a sync frame down, a resync request up."""
        self.send_sync(now)
        self.request_resync(now, force=True)

    # ------------------------------------------------------------------ outgoing

    def forward(self, record: WriteRecord, now: float) -> None:
        """Send a record down (in this turn's frame) and keep it until its commit comes back."""
        if self.successor is None:
            return
        self.sent.add(record, now)
        self._down.append(record)

    def report_commit(self, key: str, version: int) -> None:
        """Pass a commit up (in this turn's frame)."""
        self._up.append((key, version))

    def flush(self) -> None:
        """End of a turn: one frame per direction with what the turn buffered."""
        self._flush_down()
        self._flush_up()

    def send_sync(self, now: float) -> None:
        """Start the downward link afresh: frame 0 carries every uncommitted record sent."""
        if self.successor is None or not self.open:
            return
        self._flush_down()
        self._down_seq = 0
        self._emit_down(self.sent.touch_all(now))

    def request_resync(self, now: float, force: bool = False) -> None:
        """Ask the predecessor for a sync frame (at most twice per resend interval unless forced)."""
        if self.predecessor is None or not self.open:
            return
        if not force and now - self._last_resync_request < self.resend_interval / 2:
            return
        self._last_resync_request = now
        self._flush_up()
        self._out.append(SendUp(ResyncFrame(self.me, self.epoch, self._next_up_seq(), self.partition)))

    def resend_stale(self, now: float) -> None:
        """Records uncommitted ``resend_interval`` after they were sent go again (a last resort)."""
        if not len(self.sent) or self.successor is None or not self.open:
            return
        records = self.sent.due(now, now - self.resend_interval)
        self._down.extend(records)
        self._counters["resends"] += len(records)

    def _next_up_seq(self) -> int:
        seq = self._up_seq
        self._up_seq += 1
        return seq

    def _emit_down(self, records: list[WriteRecord]) -> None:
        frame = WriteFrame(self.me, self.epoch, self._down_seq, tuple(records), self.partition)
        self._down_seq += 1
        self._out.append(SendDown(frame))

    def _flush_down(self) -> None:
        if self._down:
            records, self._down = self._down, []
            if self.successor is not None and self.open:
                self._emit_down(records)

    def _flush_up(self) -> None:
        if self._up:
            commits, self._up = self._up, []
            if self.predecessor is not None and self.open:
                self._out.append(SendUp(CommitFrame(self.me, self.epoch, self._next_up_seq(), tuple(commits),
                                                    self.partition)))

    # ------------------------------------------------------------------ incoming

    def received_writes(self, frame: WriteFrame, now: float) -> None:
        """Sequence bookkeeping for an accepted write frame (its records are applied whatever its
        seq: storing is idempotent)."""
        link = self.write_in
        assert link is not None
        if frame.seq == 0:
            link.synced = True
            link.expected = 1
        elif frame.seq > link.expected:
            log.debug("gap on write link from %s: expected %d got %d", frame.sender, link.expected, frame.seq)
            link.expected = frame.seq + 1
            self.request_resync(now)
        elif frame.seq == link.expected:
            link.expected += 1

    def received_ack(self, frame: CommitFrame | ResyncFrame, now: float) -> None:
        """Sequence bookkeeping for an accepted frame from the successor; answers a resync."""
        link = self.ack_in
        assert link is not None
        if type(frame) is ResyncFrame:
            self._counters["resyncs"] += 1
            link.expected = max(link.expected, frame.seq + 1)
            self.send_sync(now)
            return
        if frame.seq > link.expected:
            # Commits were lost: resending what is uncommitted makes the successor echo them.
            self.send_sync(now)
        link.expected = max(link.expected, frame.seq + 1)

    def in_sync(self) -> bool:
        """The predecessor's sync frame of this epoch has arrived."""
        return self.write_in is not None and self.write_in.synced
