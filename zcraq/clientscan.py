"""The client's range scans, without sockets: one page of a scan as a plan (zcraq/clientcore.py
explains plans), shared by ZClient and AsyncZClient, which page through a range with it.

A page is one ``scan`` request (PROTOCOL.md §8.9) to any member: the node lists the keys of the
range it holds after the cursor and reads each as a read of the chosen mode would, leaving out
keys without a value. A key it could not read (``unavailable``: the tail did not confirm a dirty
version) ends the page early at the key before it, and the rest is asked again, of another node;
a page that read nothing is retried until the deadline, like a read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgspec

from zcraq import wire
from zcraq.clientcore import READ_RETRYABLE, ClientState, Plan, ReadMode, call, node_endpoint, pause, pick_reader
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


def scan_page(state: ClientState, span: Range, after: str | None, page_keys: int, node: str | None,
              how: ReadMode, deadline: float) -> Plan[tuple[list[ScanItem], str | None]]:
    """The next items of ``span`` after the key ``after`` (None: from its start), in key order,
    and the key to continue after (None: the range is done)."""
    last_error: ZcraqError = Unavailable("no node answered")
    while time.monotonic() < deadline:
        endpoint = (yield from node_endpoint(state, node, deadline)) if node else (yield from pick_reader(state, deadline))
        if endpoint is None:
            if node:
                raise Unavailable(f"no node {node!r} in the chain (or the coordinator did not answer)")
            last_error = Unavailable("no node to read from: the chain is empty or the coordinator did not answer")
        else:
            request = Scan(start=span.start, end=span.end, prefix=span.prefix, after=after, limit=page_keys,
                           id=state.next_id(), mode=how.mode,  # type: ignore[arg-type]
                           max_staleness_ms=how.max_staleness_ms)
            outcome = yield from call(endpoint, request, state.attempt_deadline(deadline))
            if isinstance(outcome, Timeout):
                last_error = Timeout(f"{endpoint} did not answer in time")
                state.avoid(endpoint)
            else:
                reply, frames = outcome
                if not isinstance(reply, Ok):
                    if reply.code not in READ_RETRYABLE:
                        raise error_for(reply.code, reply.message or reply.code)
                    last_error = error_for(reply.code, f"{endpoint}: {reply.message}")
                    state.avoid(endpoint)
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
            return items, cursor, error_for(str(result), f"{endpoint} could not read {key!r}")
        items.append((key, value, result))
    return items, cursor, None


__all__ = ["DEFAULT_PAGE_KEYS", "Paging", "Range", "ScanItem", "scan_page"]
