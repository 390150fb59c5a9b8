"""When each version not yet committed at this node arrived here: how fresh its committed state is.

A version commits at the tail only after every node before it stored it. So a node's newest
committed version of a key stays the chain's committed one at least until the oldest version of
the key that is dirty here arrived: that arrival time bounds how stale the node's committed value
can be, which is what a bounded read needs (PROTOCOL.md §7).

Kept per key as (version, arrival time, deletion, value) in arrival order, so the first entry is
the oldest; a commit of v drops every entry up to v and returns them: the changes that committed
(changes.py logs them for watchers). Entries exist only for versions stored dirty by this run
of the node: a dirty version without one (left by an earlier run) makes the node ask the tail.
Bounded by the versions in flight: an entry lives from a version's arrival to its commit here.
"""

from __future__ import annotations


Arrival = tuple[int, float, bool, bytes]  # version, arrival time, deletion, value


class Arrivals:
    def __init__(self) -> None:
        self._keys: dict[str, list[Arrival]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def arrived(self, key: str, version: int, now: float, tombstone: bool, value: bytes) -> None:
        """``version`` of ``key`` was stored dirty here at ``now``."""
        entries = self._keys.get(key)
        if entries is None:
            self._keys[key] = [(version, now, tombstone, value)]
        else:
            entries.append((version, now, tombstone, value))

    def committed(self, key: str, version: int) -> list[Arrival]:
        """Every version of ``key`` up to ``version`` is committed here: their entries, oldest first."""
        entries = self._keys.get(key)
        if entries is None:
            return []
        if len(entries) == 1:  # the common case: one version in flight
            if entries[0][0] <= version:
                del self._keys[key]
                return entries
            return []
        done = sorted(entry for entry in entries if entry[0] <= version)
        left = [entry for entry in entries if entry[0] > version]
        if left:
            self._keys[key] = left
        else:
            del self._keys[key]
        return done

    def fresh_since(self, key: str) -> float | None:
        """When the oldest version of ``key`` still dirty here arrived; None when none is known."""
        entries = self._keys.get(key)
        return entries[0][1] if entries else None

    def clear(self) -> None:
        self._keys.clear()
