"""The client's range scans, without sockets: one page of a scan as a plan (zcraq/clientcore.py
explains plans), shared by ZClient and AsyncZClient, which page through a range with it.

A page is one ``scan`` request (PROTOCOL.md §8.9) to any member: the node lists the keys of the
range it holds after the cursor and reads each as a read of the chosen mode would, leaving out
keys without a value. A key it could not read (``unavailable``: the tail did not confirm a dirty
version) ends the page early at the key before it, and the rest is asked again, of another node;
a page that read nothing is retried until the deadline, like a read.

In a partitioned cluster a key's partition is a hash of it, so every partition holds keys of any
range: each partition is paged through on its own (its requests name it and go to its members),
and ``Merge`` yields their items in key order, each item only once no partition can still hold a
smaller key (its cursor is past that key), up to the scan's limit. A one-chain cluster is one
partition: its pages are yielded as they come, as ``Paging`` would.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import msgspec

from zcraq import wire
from zcraq.clientcore import (READ_RETRYABLE, ClientState, Plan, ReadMode, call, error_of, node_endpoint, pause,
                              pick_reader)
from zcraq.clientroutes import field_of
from zcraq.errors import Timeout, Unavailable, ZcraqError, error_for
from zcraq.messages import MAX_SCAN_KEYS, Ok, Scan

DEFAULT_PAGE_KEYS = 100

ScanItem = tuple[str, bytes, int]  # key, value, version


@dataclass(frozen=True, slots=True)
class Range:
    """What a scan covers: keys from ``start`` (inclusive) to ``end`` (exclusive, None: no end)
    that begin with ``prefix``."""

    start: str = ""
    end: str | None = None
    prefix: str = ""

    def __post_init__(self) -> None:
        for name in ("start", "end", "prefix"):
            bound = getattr(self, name)
            if bound is not None and not isinstance(bound, str):
                raise TypeError(f"{name} must be a str, not {type(bound).__name__}")


class Paging:
    """Where a scan stands: the key to continue after, and how many keys it may still yield
    (``limit``; None: all). Both clients ask ``next_size()`` for each page's size (None: done)
    and hand each page's outcome to ``advance``."""

    def __init__(self, page_keys: int, limit: int | None) -> None:
        if type(page_keys) is not int or not 1 <= page_keys <= MAX_SCAN_KEYS:
            raise ValueError(f"page_keys must be an integer from 1 to {MAX_SCAN_KEYS}, not {page_keys!r}")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValueError(f"limit must be a non-negative integer or None, not {limit!r}")
        self.page_keys, self.left = page_keys, limit
        self.after: str | None = None
        self.done = False

    def next_size(self) -> int | None:
        if self.done or self.left == 0:
            return None
        return self.page_keys if self.left is None else min(self.page_keys, self.left)

    def advance(self, items: list[ScanItem], after: str | None) -> None:
        self.after, self.done = after, after is None
        if self.left is not None:
            self.left -= len(items)


@dataclass(slots=True)
class _Stream:
    """One partition's part of a merged scan: items fetched not yet yielded, and its cursor."""

    items: deque[ScanItem] = field(default_factory=deque)
    after: str | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    """What to ask next: a page of ``size`` keys of ``partition`` after the key ``after``."""

    partition: int | None
    after: str | None
    size: int


class Merge:
    """A scan over partitions, merged in key order. Both clients ``place`` it on the cluster's
    partitions (``[None]``: one chain), then ask ``next_page()`` what to fetch (None: done) and
    hand each page to ``take``, which returns the items that may be yielded now."""

    def __init__(self, page_keys: int, limit: int | None) -> None:
        Paging(page_keys, limit)  # the same checks
        self.page_keys, self.left = page_keys, limit
        self.streams: dict[int | None, _Stream] = {}

    @property
    def wanted(self) -> bool:
        """More items may still be yielded (the limit is not reached)."""
        return self.left != 0

    def place(self, partitions: list[int | None]) -> None:
        self.streams = {partition: _Stream() for partition in partitions}

    def next_page(self) -> Page | None:
        """The page that blocks the smallest key: of the unfinished partition with nothing left
        to yield and the smallest cursor."""
        if not self.wanted:
            return None
        blocking = [(p, s) for p, s in self.streams.items() if not s.done and not s.items]
        if not blocking:
            return None
        partition, stream = min(blocking, key=lambda ps: (ps[1].after is not None, ps[1].after or ""))
        size = self.page_keys if self.left is None else min(self.page_keys, self.left)
        return Page(partition, stream.after, size)

    def take(self, partition: int | None, items: list[ScanItem], after: str | None) -> list[ScanItem]:
        """A page of ``partition`` (its items, and its cursor: None when it is done); the items
        that may be yielded now, in key order, within the limit."""
        stream = self.streams[partition]
        stream.items.extend(items)
        stream.after, stream.done = after, after is None
        return self._ready()

    def _ready(self) -> list[ScanItem]:
        out: list[ScanItem] = []
        while self.left != 0:
            holding = [s for s in self.streams.values() if s.items]
            if not holding:
                break
            first = min(holding, key=lambda s: s.items[0][0])
            key = first.items[0][0]
            # A partition with nothing fetched may still hold a smaller key, unless its cursor is past it.
            if any(not s.done and not s.items and (s.after is None or s.after < key) for s in self.streams.values()):
                break
            out.append(first.items.popleft())
            if self.left is not None:
                self.left -= 1
        return out


def scan_page(state: ClientState, span: Range, after: str | None, page_keys: int, node: str | None,
              how: ReadMode, deadline: float, partition: int | None = None) -> Plan[tuple[list[ScanItem], str | None]]:
    """The next items of ``span`` (of ``partition``'s keys, in a partitioned cluster) after the key
    ``after`` (None: from its start), in key order, and the key to continue after (None: the range
    is done)."""
    last_error: ZcraqError = Unavailable("no node answered")
    while time.monotonic() < deadline:
        endpoint = (yield from node_endpoint(state, node, deadline)) if node \
            else (yield from pick_reader(state, deadline, partition))
        if endpoint is None:
            if node:
                raise Unavailable(f"no node {node!r} in the chain (or the coordinator did not answer)")
            last_error = Unavailable("no node to read from: the chain is empty or the coordinator did not answer")
        else:
            request = Scan(start=span.start, end=span.end, prefix=span.prefix, after=after, limit=page_keys,
                           id=state.next_id(), mode=how.mode,  # type: ignore[arg-type]
                           max_staleness_ms=how.max_staleness_ms, partition=field_of(partition))
            outcome = yield from call(endpoint, request, state.attempt_deadline(deadline))
            if isinstance(outcome, Timeout):
                last_error = Timeout(f"{endpoint} did not answer in time")
                state.avoid(endpoint)
            else:
                reply, frames = outcome
                if not isinstance(reply, Ok):
                    if reply.code not in READ_RETRYABLE:
                        raise error_for(reply.code, reply.message or reply.code)
                    last_error = error_of(reply.code, f"{endpoint}: {reply.message}")
                    if node and reply.code == "wrong_partition":
                        raise last_error  # the node named has no replica of this partition
                    state.note_refusal(endpoint, reply.code)
                else:
                    items, cursor, failure = _page(reply, frames, endpoint)
                    if failure is None:
                        return items, cursor
                    if items:  # what was read before the failed key counts; the rest is asked again
                        return items, items[-1][0]
                    last_error = failure
                    state.avoid(endpoint)
        state.forget_topology()
        if node and isinstance(last_error, Timeout):
            break
        yield from pause(deadline)
    raise last_error


def _page(reply: Ok, frames: list[bytes], endpoint: str) -> tuple[list[ScanItem], str | None, ZcraqError | None]:
    """A scan reply's items up to the first key that failed, its cursor, and that key's error."""
    keys, results, sizes, cursor = reply.keys, reply.results, reply.sizes, reply.cursor
    if keys is msgspec.UNSET or results is msgspec.UNSET or sizes is msgspec.UNSET or cursor is msgspec.UNSET \
            or not len(keys) == len(results) == len(sizes) or len(frames) != 1 or sum(sizes) != len(frames[0]):
        raise ZcraqError(f"{endpoint} answered a scan with a malformed reply")
    items: list[ScanItem] = []
    for key, result, value in zip(keys, results, wire.split_values(frames[0], sizes)):
        if type(result) is not int:
            if result not in READ_RETRYABLE:
                raise error_for(str(result), f"{endpoint} could not read {key!r}: {result}")
            return items, cursor, error_of(str(result), f"{endpoint} could not read {key!r}")
        items.append((key, value, result))
    return items, cursor, None


__all__ = ["DEFAULT_PAGE_KEYS", "Merge", "Page", "Paging", "Range", "ScanItem", "scan_page"]
