"""The storage interface every zcraq store implements.

A store keeps versioned items: for each key, every version the node has seen that is not yet
superseded by a newer committed version. Versions are positive integers assigned by the head;
version order is numeric order. A version is *dirty* until the tail has committed it; committing
version v of a key makes every older version of that key obsolete, so the store prunes them.

Rules every implementation follows (the conformance suite in ``zcraq.store.conformance`` checks
them):

- ``put`` never stores a version that is older than, or equal to, the newest committed version of
  its key: a late duplicate of an old write can never resurrect old data.
- ``commit`` and ``put(committed=True)`` are idempotent and monotone: a commit that arrives after a
  newer commit of the same key changes nothing, so commits arriving out of order never lose the
  newest committed version.
- deletions are tombstone versions (``tombstone=True``): they take part in versioning like any
  other write, so the head never reuses a version number after a delete.
- mutations are buffered until ``flush``; reads see buffered mutations at once. ``flush`` makes
  them durable as one atomic batch according to the store's durability policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import msgspec


class Item(msgspec.Struct, frozen=True, gc=False):
    """One version of one key. (A msgspec Struct: made for every read, it is built ten times
    faster than a frozen dataclass.)"""

    key: str
    version: int
    value: bytes
    committed: bool = False
    tombstone: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    """A page of committed items for catch-up; ``cursor`` is None on the last page."""

    items: list[Item]
    cursor: str | None


Row = tuple[str, int, bytes, bool]
"""A committed version as catch-up moves it: (key, version, value, tombstone)."""


@dataclass(frozen=True, slots=True)
class Rows:
    """``committed_page`` as plain rows, with no Item built per key (catch-up pages are large)."""

    rows: list[Row]
    cursor: str | None


class ReplicaStore(Protocol):
    """What a node's protocol core uses: versioned puts and commits, the reads that serve clients
    and the chain, catch-up pages, and the turn's durable flush."""

    def put(
        self,
        key: str,
        version: int,
        value: bytes,
        *,
        committed: bool = False,
        tombstone: bool = False,
    ) -> bool:
        """Store one version. Returns False (and changes nothing) when the version is already held
        or is not newer than the newest committed version of the key. With ``committed=True`` the
        version is stored as committed and older versions are pruned."""

    def commit(self, key: str, version: int) -> bool:
        """Mark a held version committed and prune every older version of the key.
        Returns False (and changes nothing) when the version is not held or an equal or newer
        version is already committed."""

    def latest(self, key: str) -> Item | None:
        """The newest version held, dirty or committed, or None."""

    def latest_version(self, key: str) -> tuple[int, bool] | None:
        """The newest version held, dirty or committed, and whether it is a tombstone; None when
        none is held. What ``latest`` says without reading the value (a head's next version)."""

    def latest_committed(self, key: str) -> Item | None:
        """The newest committed version held (possibly a tombstone), or None."""

    def get(self, key: str, version: int) -> Item | None:
        """That exact version, or None if not held."""

    def committed_page(self, after: str | None, limit: int) -> Page:
        """Up to ``limit`` newest-committed items (tombstones included), one per key, for keys
        strictly after the cursor ``after`` in the store's key order (None = from the start)."""

    def committed_rows(self, after: str | None, limit: int) -> Rows:
        """Exactly ``committed_page(after, limit)``, as rows."""

    def put_committed(self, rows: Iterable[Row]) -> int:
        """``put(key, version, value, committed=True, tombstone=tombstone)`` for each row, in
        order (a catch-up page applied in one call); returns how many rows were stored."""

    def keys(self, start: str, end: str | None, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` keys holding any version (dirty or committed, tombstones too), in the
        order of their UTF-8 bytes: from ``start`` (inclusive) to ``end`` (exclusive; None: no
        end), only those that begin with ``prefix``."""

    def committed_share(self, through: str) -> float | None:
        """Roughly what share of the committed data lies at keys up to and including ``through``,
        from 0 to 1, or None when the store cannot tell. For progress reports only: it is an
        estimate (a store may weigh keys by their size on disk), but while the store does not
        change it never goes down as ``through`` goes up."""

    def dirty_items(self) -> Iterator[Item]:
        """Every uncommitted version held."""

    def drop_uncommitted(self) -> int:
        """Delete every uncommitted version; returns how many were deleted."""

    def flush(self) -> None:
        """Write buffered mutations as one atomic batch, durable per the store's policy."""


class Store(ReplicaStore, Protocol):
    """A whole store: what the core uses, plus what the conformance suite, the simulator and
    maintenance tools inspect and manage."""

    def versions(self, key: str) -> list[int]:
        """Every version held for the key, ascending."""

    def prune(self, key: str, below: int) -> int:
        """Delete every version older than ``below``; returns how many were deleted."""

    def delete(self, key: str) -> None:
        """Remove every version of the key, committed or not."""

    def close(self) -> None:
        """Flush and release the store. Further use raises."""
