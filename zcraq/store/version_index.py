"""Which versions a store holds for each key, with their committed and tombstone flags, in memory.

A store keeps this beside its data so that ``latest``, ``put``, ``commit`` and the rest decide from
memory and read at most one value, instead of scanning the key's versions on disk. In a chain a key
nearly always holds one committed version and at most a few dirty ones, so an entry is small.

An entry is a tuple of ints, ascending, each ``version << 2 | flags`` (``FLAGS`` are the two low
bits): packing keeps one entry to a tuple and one int per version, and the packed order is version
order. ``()`` is a key known to hold nothing.

The index holds at most ``max_keys`` entries and forgets the least recently used beyond that; a
store asks it with ``get``, and on None (not known) reads the key's versions itself and hands them
back with ``set``. While nothing has been forgotten or skipped the index is *complete*: a key it does
not know holds nothing, so a miss costs nothing. ``max_keys = 0`` turns it off: nothing is known.

Keys holding an uncommitted version are also kept in a plain set, whatever the cap (it is not
bounded by it), so a store can list its dirty versions without reading all of its keys. It stays
small: a version is dirty only while its write is on its way down the chain, and a node that
rejoins the chain drops or commits what a previous run left dirty.

Memory, measured with tracemalloc over 100,000 and 1,000,000 keys of 10 characters: 190 to 230
bytes per key holding one version (the lower figure while its version is below 64, whose packed int
Python shares), the key's string (64 bytes of it) included; about 40 more per further version, and
about 40 more while the key is dirty. So the default cap of 1,000,000 keys costs about 200 MB at
most; a longer key costs one byte more per ASCII character. tests/test_version_index.py checks a
bound.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable

COMMITTED = 0x01
TOMBSTONE = 0x02
FLAGS = COMMITTED | TOMBSTONE
_SHIFT = 2

Entry = tuple[int, ...]

DEFAULT_MAX_KEYS = 1_000_000


def pack(version: int, flags: int) -> int:
    return version << _SHIFT | flags


def version_of(packed: int) -> int:
    return packed >> _SHIFT


def find(entry: Entry, version: int) -> int:
    """The position of ``version`` in ``entry``, or -1 when it is not held."""
    i = bisect_left(entry, version << _SHIFT)
    return i if i < len(entry) and entry[i] >> _SHIFT == version else -1


def below(entry: Entry, version: int) -> int:
    """How many of the entry's versions are older than ``version`` (they come first)."""
    return bisect_left(entry, version << _SHIFT)


def newest_committed(entry: Entry) -> int:
    """The position of the newest committed version, or -1."""
    for i in range(len(entry) - 1, -1, -1):
        if entry[i] & COMMITTED:
            return i
    return -1


def is_dirty(entry: Entry) -> bool:
    for packed in entry:
        if not packed & COMMITTED:
            return True
    return False


class VersionIndex:
    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 0:
            raise ValueError(f"max_keys must be at least 0, got {max_keys}")
        self.max_keys = max_keys
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self._dirty: set[str] = set()
        self.complete = max_keys > 0  # every key holding a version has an entry

    @property
    def enabled(self) -> bool:
        """Whether the index knows anything: with it off, the dirty keys are not tracked either."""
        return self.max_keys > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, touch: bool = True) -> Entry | None:
        """The key's entry, or None when the index does not know it. ``touch``: count this as a use
        (a scan through every key should not push the busy keys out)."""
        entry = self._entries.get(key)
        if entry is not None:
            if touch:
                self._entries.move_to_end(key)
            return entry
        return () if self.complete else None

    def set(self, key: str, entry: Entry) -> None:
        """The key's versions as they now are (after a change, or read from the store)."""
        if not self.enabled:
            return
        self._note_dirty(key, entry)
        if not entry and self.complete:
            self._entries.pop(key, None)  # holding nothing is what a missing entry says
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)
            self.complete = False

    def set_many(self, changed: Iterable[tuple[str, Entry]]) -> None:
        """``set`` of each (key, entry) in order: one call for a whole catch-up page."""
        if not self.enabled:
            return
        entries, dirty, complete, cap = self._entries, self._dirty, self.complete, self.max_keys
        for key, entry in changed:
            if is_dirty(entry):
                dirty.add(key)
            else:
                dirty.discard(key)
            if not entry and complete:
                entries.pop(key, None)
                continue
            if key in entries:
                entries.move_to_end(key)
            entries[key] = entry  # a new key goes to the end by itself
            if len(entries) > cap:
                entries.popitem(last=False)
                self.complete = complete = False

    def fill(self, stored: Iterable[tuple[str, Entry]]) -> None:
        """Every key a store holds, in key order, when it opens: kept while there is room; past the
        cap only a dirty key is noted."""
        if not self.enabled:
            return
        entries, dirty = self._entries, self._dirty
        room = self.max_keys - len(entries)
        for key, entry in stored:
            if is_dirty(entry):
                dirty.add(key)
            if room > 0:
                entries[key] = entry
                room -= 1
            else:
                self.complete = False

    def dirty_keys(self) -> list[str]:
        """Every key holding an uncommitted version, in code point order (which is UTF-8 byte
        order). Only meaningful while ``enabled``."""
        return sorted(self._dirty)

    def _note_dirty(self, key: str, entry: Entry) -> None:
        if is_dirty(entry):
            self._dirty.add(key)
        else:
            self._dirty.discard(key)
