"""An in-memory store for tests and the deterministic simulator.

Iteration never depends on hash order: keys are ordered by their UTF-8 bytes (the same order the
LevelDB store uses) and versions numerically.

Like the LevelDB store it separates what is durable from what is only buffered: mutations apply to
the live view at once and reach the durable state on ``flush()``. ``crash_copy()`` returns a new
store holding only the durable state, which is what a node would find after a crash.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

import msgspec

from .base import Item, Page, Row, Rows
from .errors import StoreClosedError, check_key, check_value, check_version

Versions = dict[int, Item]


class MemoryStore:
    def __init__(self, *, estimates: bool = True) -> None:
        """``estimates``: whether ``committed_share`` answers (False: always None)."""
        self.estimates = estimates
        self._live: dict[str, Versions] = {}
        self._durable: dict[str, Versions] = {}
        self._unflushed: set[str] = set()  # keys whose live versions differ from durable ones
        self._order: list[bytes] | None = None  # sorted UTF-8 keys, rebuilt after key-set changes
        self._closed = False

    # -- writes ------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        version: int,
        value: bytes,
        *,
        committed: bool = False,
        tombstone: bool = False,
    ) -> bool:
        self._check_open()
        check_key(key)
        check_version(version)
        value = check_value(value)
        held = self._live.get(key, {})
        if version in held:
            return False
        newest = _newest_committed(held)
        if newest is not None and version <= newest:
            return False
        self._set(key, Item(key, version, value, bool(committed), bool(tombstone)))
        if committed:
            self._remove(key, [v for v in held if v < version])
        return True

    def put_committed(self, rows: Iterable[Row]) -> int:
        return sum(self.put(key, version, value, committed=True, tombstone=tombstone)
                   for key, version, value, tombstone in rows)

    def commit(self, key: str, version: int) -> bool:
        self._check_open()
        check_key(key)
        check_version(version)
        held = self._live.get(key, {})
        item = held.get(version)
        if item is None:
            return False
        newest = _newest_committed(held)
        if newest is not None and newest >= version:
            return False
        self._set(key, msgspec.structs.replace(item, committed=True))
        self._remove(key, [v for v in held if v < version])
        return True

    def prune(self, key: str, below: int) -> int:
        self._check_open()
        check_key(key)
        return self._remove(key, [v for v in self._live.get(key, {}) if v < below])

    def drop_uncommitted(self) -> int:
        self._check_open()
        dropped = 0
        for key in list(self._live):
            held = self._live[key]
            dropped += self._remove(key, [v for v, it in held.items() if not it.committed])
        return dropped

    def delete(self, key: str) -> None:
        self._check_open()
        check_key(key)
        self._remove(key, list(self._live.get(key, {})))

    # -- reads -------------------------------------------------------------------------------

    def latest(self, key: str) -> Item | None:
        self._check_open()
        check_key(key)
        held = self._live.get(key)
        return held[max(held)] if held else None

    def latest_version(self, key: str) -> tuple[int, bool] | None:
        latest = self.latest(key)
        return None if latest is None else (latest.version, latest.tombstone)

    def latest_committed(self, key: str) -> Item | None:
        self._check_open()
        check_key(key)
        held = self._live.get(key, {})
        newest = _newest_committed(held)
        return None if newest is None else held[newest]

    def get(self, key: str, version: int) -> Item | None:
        self._check_open()
        check_key(key)
        return self._live.get(key, {}).get(version)

    def versions(self, key: str) -> list[int]:
        self._check_open()
        check_key(key)
        return sorted(self._live.get(key, {}))

    def committed_page(self, after: str | None, limit: int) -> Page:
        self._check_open()
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        order = self._sorted_keys()
        start = 0 if after is None else bisect_right(order, check_key(after))
        items: list[Item] = []
        for raw in order[start:]:
            item = self.latest_committed(raw.decode("utf-8"))
            if item is None:
                continue
            if len(items) == limit:
                # Another committed key exists, so the caller must ask again.
                return Page(items, items[-1].key)
            items.append(item)
        return Page(items, None)

    def committed_rows(self, after: str | None, limit: int) -> Rows:
        page = self.committed_page(after, limit)
        return Rows([(i.key, i.version, i.value, i.tombstone) for i in page.items], page.cursor)

    def keys(self, start: str, end: str | None, prefix: str, limit: int) -> list[str]:
        self._check_open()
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        order = self._sorted_keys()
        found: list[str] = []
        for raw in order[bisect_left(order, max(start, prefix).encode("utf-8")):]:
            key = raw.decode("utf-8")
            if not key.startswith(prefix) or (end is not None and key >= end):
                break
            if self._live.get(key):
                found.append(key)
                if len(found) == limit:
                    break
        return found

    def committed_share(self, through: str) -> float | None:
        """The share of the keys held (one held only dirty counts too) up to ``through``."""
        self._check_open()
        if not self.estimates:
            return None
        order = self._sorted_keys()
        return bisect_right(order, check_key(through)) / len(order) if order else None

    def dirty_items(self) -> Iterator[Item]:
        self._check_open()
        dirty: list[Item] = []
        for raw in self._sorted_keys():
            held = self._live[raw.decode("utf-8")]
            dirty.extend(held[v] for v in sorted(held) if not held[v].committed)
        # Built eagerly so callers may mutate the store while iterating.
        return iter(dirty)

    # -- lifecycle ---------------------------------------------------------------------------

    def flush(self) -> None:
        self._check_open()
        for key in self._unflushed:
            held = self._live.get(key)
            if held:
                self._durable[key] = dict(held)
            else:
                self._durable.pop(key, None)
        self._unflushed.clear()

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True

    def crash_copy(self) -> MemoryStore:
        """A new open store holding only what was flushed, as if the process had crashed now.
        Allowed on a closed store too: the durable state outlives the handle."""
        copy = MemoryStore(estimates=self.estimates)
        for key, held in self._durable.items():
            copy._live[key] = dict(held)
            copy._durable[key] = dict(held)
        return copy

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("store is closed")

    def _set(self, key: str, item: Item) -> None:
        held = self._live.get(key)
        if held is None:
            held = self._live[key] = {}
            self._order = None
        held[item.version] = item
        self._unflushed.add(key)

    def _remove(self, key: str, versions: list[int]) -> int:
        if not versions:
            return 0
        held = self._live[key]
        for v in versions:
            del held[v]
        if not held:
            del self._live[key]
            self._order = None
        self._unflushed.add(key)
        return len(versions)

    def _sorted_keys(self) -> list[bytes]:
        if self._order is None:
            self._order = sorted(k.encode("utf-8") for k in self._live)
        return self._order


def _newest_committed(held: Versions) -> int | None:
    return max((v for v, it in held.items() if it.committed), default=None)
