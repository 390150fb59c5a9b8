"""Which partitions' replicas a node hosts, from the coordinator's partition table (pure).

The table (zcraq/coordpartitions.py) lists each partition's chain and the node assigned to join
it, under a version that grows with every change. A node hosts a replica of a partition while
the newest table it has seen lists it in that partition's chain (as a member or the learner) or
assigns the partition to it: it starts the replica when that becomes true, and stops it when that
stops being true. A stopped replica's data are kept until the partition is *settled* elsewhere:
its chain has R members (the table's ``replication``), none of them this node. Until then they
may be the last copy of the partition's acknowledged writes (its other replicas died while this
one was away), and deleting them would lose those for good. A replica placed here again starts
from what it kept and catches up as any learner does. A table older than one already seen is
ignored. Each hosted partition's topology goes to its replica's core, which keeps the newest
epoch it has seen, as a one-chain node does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zcraq.partitioning import MAX_PARTITIONS
from zcraq.topology import Topology


@dataclass(frozen=True, slots=True)
class Changes:
    """What a table asks of the node: replicas to start and to stop, and the topology of every
    partition hosted from now on."""

    start: list[int] = field(default_factory=list)
    stop: list[int] = field(default_factory=list)
    topologies: dict[int, Topology] = field(default_factory=dict)
    settled: frozenset[int] = frozenset()  # partitions whose chain has R members, none of them this node


@dataclass(frozen=True, slots=True)
class _Entry:
    topology: Topology
    assigned: str | None


class Hosting:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.version = -1
        self.hosted: set[int] = set()

    def on_table(self, table: Any) -> Changes | None:
        """The changes ``table`` asks for; None when it is older than one already seen. Raises
        ValueError, before changing anything, when the table is malformed."""
        version, entries = parse_table(table)
        if version < self.version:
            return None
        self.version = version
        wanted = {p for p, e in entries.items()
                  if e.assigned == self.node_id or e.topology.member(self.node_id) is not None}
        replication = table.get("replication")
        settled = frozenset() if type(replication) is not int or replication < 1 else frozenset(
            p for p, e in entries.items() if p not in wanted and len(e.topology.members) >= replication)
        changes = Changes(start=sorted(wanted - self.hosted), stop=sorted(self.hosted - wanted),
                          topologies={p: entries[p].topology for p in sorted(wanted)}, settled=settled)
        self.hosted = wanted
        return changes


def parse_table(table: Any) -> tuple[int, dict[int, _Entry]]:
    """The version and each partition's entry of a published table; ValueError says what is wrong."""
    if not isinstance(table, dict):
        raise ValueError("a partition table is an object")
    version, partitions = table.get("version"), table.get("partitions")
    if type(version) is not int or version < 0 or not isinstance(partitions, list):
        raise ValueError("a partition table has a version (an integer >= 0) and a list of partitions")
    entries: dict[int, _Entry] = {}
    for entry in partitions:
        if not isinstance(entry, dict):
            raise ValueError("each partition of a table is an object")
        partition, assigned = entry.get("partition"), entry.get("assigned")
        if type(partition) is not int or not 0 <= partition < MAX_PARTITIONS or partition in entries:
            raise ValueError(f"bad or repeated partition number {partition!r}")
        if assigned is not None and not isinstance(assigned, str):
            raise ValueError(f"partition {partition}: assigned must be a node id or null")
        entries[partition] = _Entry(Topology.from_dict(entry.get("topology")), assigned)
    return version, entries


__all__ = ["Changes", "Hosting", "parse_table"]
