"""Catch-up: how a learner copies the committed state, and how a member serves it pages.

Owns the learner's progress through its phases:

    NOT_STARTED --(made learner)--> COPYING --(last page)--> WAITING_FOR_SYNC
        --(the tail's live stream is in sync)--> REPORTED --(made tail)--> MEMBER

COPYING asks the tail for one page at a time (a refused or malformed page is asked for again after
``RETRY_AFTER``). The pages alone are not enough: the learner asks to be promoted only once its
live stream from the tail is in sync too, and repeats the report until the coordinator acts.
Pages already copied stay valid only while the same tail keeps forwarding to the learner.

A page that arrives is not stored in the turn that brought it: that turn asks for the next page
(its cursor is the page's last key), and the page is stored at the first tick of a later turn
(``page_waiting``: the shell must not sleep before that tick), so the source reads the next page
while the learner stores this one. At most one page waits and one is asked for; a page that
arrives while another waits stores the waiting one first, so pages are stored in key order. A
waiting page is dropped when the learner's epoch changes, and asked for again from the last key
stored if the source stays the same.

Why not more pages in flight, over several ranges of the key space: both ends are one loop on one
thread, so more requests would add no CPU to either, only the overlap of the two, which asking
before storing already gives; and the key ranges would have to be guessed from keys the learner
has not seen. Larger pages gain little (the cost is per key, not per page) and pause the source's
loop, and the learner's acknowledgements of live writes, for longer.
"""

from __future__ import annotations

import logging
from enum import Enum, auto

from msgspec import UNSET

from zcraq.messages import TOMBSTONE, CatchupRequest, CaughtUp, Error, Ok, Reply
from zcraq.nodecore.calls import Call, CallKind, Calls
from zcraq.nodecore.place import Place
from zcraq.store.base import ReplicaStore

log = logging.getLogger("zcraq.node")

RETRY_AFTER = 0.1  # seconds before asking again for a page that failed
PROGRESS_EVERY = 2.0  # seconds between the progress lines of a copy


class Phase(Enum):
    NOT_STARTED = auto()  # joining, or not a learner yet
    COPYING = auto()
    WAITING_FOR_SYNC = auto()  # every page copied; the live stream must be in sync too
    REPORTED = auto()  # asked the coordinator to make us the tail
    MEMBER = auto()


class CatchUp:
    def __init__(self, me: str, store: ReplicaStore, calls: Calls, counters: dict[str, int], page_items: int,
                 report_interval: float) -> None:
        self.me = me
        self.store = store
        self.calls = calls
        self._counters = counters
        self.page_items = page_items
        self.report_interval = report_interval
        self.phase = Phase.NOT_STARTED
        self.cursor: str | None = None  # the last key stored
        self._waiting: tuple[Ok, list[bytes], str] | None = None  # a page not stored yet, its values, source
        self._waiting_since = float("-inf")  # the ``now`` of the turn that brought it
        self.copied = 0  # keys copied by the current copy
        self.fraction: float | None = None  # how far the copy is, as its source estimates; None: unknown
        self.started_at = float("-inf")  # when the current copy began
        self._progress_logged_at = float("-inf")
        self._retry_at = float("-inf")
        self._last_report = float("-inf")

    @property
    def caught_up(self) -> bool:
        """The data copy is complete (always true for a member)."""
        return self.phase is Phase.REPORTED or self.phase is Phase.MEMBER

    @property
    def page_waiting(self) -> bool:
        """A page arrived and waits to be stored at the next tick of a later turn."""
        return self._waiting is not None

    @property
    def copying(self) -> bool:
        """Pages are still coming: records may arrive for keys not copied yet."""
        return self.phase is Phase.COPYING

    def learner(self, place: Place, same_source: bool, now: float) -> None:
        """Made (or kept) the learner of a new epoch: copy, unless done from the same source."""
        self._waiting = None  # asked for again, after the last key stored, if still needed
        if not same_source:
            self.cursor = None
            self.copied, self.fraction, self.started_at = 0, None, now
            self._progress_logged_at = now
            if self.caught_up:
                self.phase = Phase.NOT_STARTED
        if not self.caught_up:
            self.phase = Phase.COPYING
            self._request_page(place, now, self.cursor)  # replies of the old epoch are ignored

    def member(self) -> None:
        self._waiting = None
        self.phase = Phase.MEMBER

    def reset(self) -> None:
        self._waiting = None
        self.phase = Phase.NOT_STARTED

    def page_answered(self, call: Call, reply: Reply, values: list[bytes], place: Place, in_sync: bool,
                      now: float) -> None:
        if not place.is_learner or call.epoch != place.epoch or self.phase is not Phase.COPYING:
            return
        if isinstance(reply, Error):
            self._retry_at = now + RETRY_AFTER
            if reply.epoch is not UNSET and reply.epoch > place.epoch:
                self.calls.ask_topology(now, place.epoch)
            return
        if not well_formed(reply, values):
            self._counters["bad_messages"] += 1
            self._retry_at = now + RETRY_AFTER
            return
        if self._waiting is not None:  # the next page came before this tick: keep the key order
            self._store_waiting(now)
        source = place.predecessor.id if place.predecessor is not None else "?"
        self._waiting, self._waiting_since = (reply, values, source), now
        if reply.cursor is not UNSET and reply.cursor is not None:
            self._request_page(place, now, reply.cursor)  # served while this page is stored

    def _store_waiting(self, now: float) -> None:
        assert self._waiting is not None
        page, values, source = self._waiting
        self._waiting = None
        cursor = apply_page(self.store, page, values)
        self.cursor = cursor if isinstance(cursor, str) else None
        self.copied += len(values)
        self.fraction = None if page.progress is UNSET else page.progress
        if cursor is not None:
            self._log_progress(source, now)
        else:
            log.info("catch-up from %s: %s keys copied in %.1f s (%s keys/s)", source, f"{self.copied:,}",
                     now - self.started_at, self._rate(now))
            self.phase = Phase.WAITING_FOR_SYNC

    def _log_progress(self, source: str, now: float) -> None:
        """A line every ``PROGRESS_EVERY`` seconds of a copy; the percentage when the source
        estimates how far its pages reach."""
        if now - self._progress_logged_at < PROGRESS_EVERY:
            return
        self._progress_logged_at = now
        share = "" if self.fraction is None else f" ({self.fraction:.0%})"
        log.info("catch-up from %s: %s keys copied%s, %s keys/s", source, f"{self.copied:,}", share, self._rate(now))

    def _rate(self, now: float) -> str:
        return f"{self.copied / max(now - self.started_at, 1e-3):,.0f}"

    def drive(self, place: Place, in_sync: bool, now: float) -> None:
        """Every tick, as learner: store a page that came in an earlier turn, ask for a page again,
        or report (again) that we are done."""
        if self._waiting is not None and now > self._waiting_since:
            self._store_waiting(now)
        if self.phase is Phase.REPORTED:
            if now - self._last_report >= self.report_interval:  # a report can be lost
                self._report(place, now)
        elif self.phase is Phase.WAITING_FOR_SYNC:
            if in_sync:
                self.phase = Phase.REPORTED
                log.info("caught up at epoch %d; asking to become tail", place.epoch)
                self._report(place, now)
        elif (self.phase is Phase.COPYING and now >= self._retry_at and self._waiting is None
              and not self.calls.pending(CallKind.CATCHUP)):
            self._request_page(place, now, self.cursor)

    def _request_page(self, place: Place, now: float, after: str | None) -> None:
        source = place.predecessor
        if source is None:
            return
        limit, epoch = self.page_items, place.epoch
        self.calls.ask(source, CallKind.CATCHUP, now, epoch, lambda i: CatchupRequest(limit, epoch, after, id=i))

    def _report(self, place: Place, now: float) -> None:
        self._last_report = now
        me, epoch = self.me, place.epoch
        self.calls.ask(None, CallKind.CAUGHT_UP, now, epoch, lambda i: CaughtUp(me, epoch, id=i))


def well_formed(page: Ok, values: list[bytes]) -> bool:
    """A page has its items and one value for each."""
    return page.items is not UNSET and len(page.items) == len(values)


def apply_page(store: ReplicaStore, page: Ok, values: list[bytes]) -> str | None:
    """Store a well-formed page's items as committed, in one call, and return its cursor (None
    after the last page). Like a put each, no item replaces an equal or newer committed version
    of its key (one the live stream brought while the page was on its way)."""
    assert page.items is not UNSET
    store.put_committed([(key, version, value, bool(flags & TOMBSTONE))
                         for (key, version, flags), value in zip(page.items, values)])
    return None if page.cursor is UNSET else page.cursor


def serve_page(store: ReplicaStore, request: CatchupRequest) -> tuple[Ok, list[bytes]]:
    """A page of newest-committed items after ``request.after``, and their values; with the
    store's estimate of how far through its data the page reaches, when it has one."""
    page = store.committed_rows(request.after, request.limit)
    rows = page.rows
    items = [(key, version, TOMBSTONE if tombstone else 0) for key, version, _value, tombstone in rows]
    share = store.committed_share(rows[-1][0]) if rows else None
    progress = UNSET if share is None else round(share, 4)
    return Ok(request.id, items=items, cursor=page.cursor, progress=progress), [row[2] for row in rows]
