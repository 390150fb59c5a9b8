"""Where a client sends a key's requests: the partition table of a partitioned cluster (pure).

A one-chain cluster answers a ``topology`` request with its chain; a partitioned one with its
table (``{"version", "partitions": [{"partition", "topology", "assigned", "retiring"}], "nodes"}``). A key
belongs to partition ``partition_of(key, P)`` (zcraq/partitioning.py), P the number of partitions,
fixed for the cluster's life: a stale table still names the right partition, only perhaps not the
right nodes. A write goes to the head of its partition's chain, a read to any member of it, and
every request names its partition; a node without a replica of it answers ``wrong_partition``, and
the client then asks for the table again, as after ``not_head``.

A one-chain cluster routes as before: its requests carry no ``partition`` field (``Route.field``
is UNSET).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec import UnsetType

from zcraq.partitioning import check_partition_count, partition_of
from zcraq.topology import Member, Topology


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition's chain, the node assigned to join it and the members retiring from it (the
    two ends of a move under way)."""

    partition: int
    topology: Topology
    assigned: str | None = None
    retiring: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """As ``zcraq client partitions --json`` prints it."""
        learner = self.topology.learner
        return {"partition": self.partition, "chain": [m.id for m in self.topology.members],
                "epoch": self.topology.epoch, "learner": learner.id if learner else None, "assigned": self.assigned,
                "retiring": list(self.retiring)}


@dataclass(frozen=True, slots=True)
class NodeShare:
    """What one node holds of a partitioned cluster, from the table: how many partitions it heads
    and tails, in how many chains it is a member, as a learner (a move in progress), assigned, or
    retiring (a member on its way out)."""

    id: str
    zone: str | None
    draining: bool
    service: str | None  # from any chain that lists it; None when it is in none
    heads: int = 0
    tails: int = 0
    replicas: int = 0
    learners: int = 0
    assigned: int = 0
    retiring: int = 0


@dataclass(frozen=True, slots=True)
class PartitionTable:
    """A partitioned cluster's table as the coordinator sent it: partition p is ``partitions[p]``."""

    version: int
    partitions: tuple[Partition, ...]
    nodes: tuple[dict[str, Any], ...] = ()
    _listed: tuple[Member, ...] = field(default=(), compare=False, repr=False)  # computed once

    def __post_init__(self) -> None:
        seen: dict[str, Member] = {}
        for entry in self.partitions:
            for member in entry.topology.listed():
                seen.setdefault(member.id, member)
        object.__setattr__(self, "_listed", tuple(seen.values()))

    @classmethod
    def parse(cls, data: Any) -> PartitionTable:
        """ValueError says what is wrong with ``data``."""
        if not isinstance(data, dict):
            raise ValueError("a partition table is an object")
        version, entries, nodes = data.get("version"), data.get("partitions"), data.get("nodes", [])
        if type(version) is not int or version < 0 or not isinstance(entries, list) or not isinstance(nodes, list):
            raise ValueError("a partition table has a version (an integer >= 0), partitions and nodes (lists)")
        check_partition_count(len(entries))
        partitions = tuple(_partition(index, entry) for index, entry in enumerate(entries))
        return cls(version, partitions, tuple(node for node in nodes if isinstance(node, dict)))

    @property
    def count(self) -> int:
        return len(self.partitions)

    def partition_of(self, key: str) -> int:
        return partition_of(key, len(self.partitions))

    def topology(self, partition: int) -> Topology:
        return self.partitions[partition].topology

    def listed(self) -> tuple[Member, ...]:
        """Every node some chain lists (member or learner), each once."""
        return self._listed

    def member(self, node_id: str) -> Member | None:
        return next((m for m in self.listed() if m.id == node_id), None)

    def shares(self) -> list[NodeShare]:
        """Each registered node's share of the partitions (and any node listed but not registered)."""
        counts: dict[str, dict[str, int]] = {}
        for entry in self.partitions:
            chain = entry.topology
            for position, member in enumerate(chain.members):
                count = counts.setdefault(member.id, {})
                count["replicas"] = count.get("replicas", 0) + 1
                if position == 0:
                    count["heads"] = count.get("heads", 0) + 1
                if position == len(chain.members) - 1:
                    count["tails"] = count.get("tails", 0) + 1
            if chain.learner is not None:
                count = counts.setdefault(chain.learner.id, {})
                count["learners"] = count.get("learners", 0) + 1
            if entry.assigned is not None:
                count = counts.setdefault(entry.assigned, {})
                count["assigned"] = count.get("assigned", 0) + 1
            for node_id in entry.retiring:
                count = counts.setdefault(node_id, {})
                count["retiring"] = count.get("retiring", 0) + 1
        registered = {str(node.get("id")): node for node in self.nodes}
        listed = {m.id: m for m in self.listed()}
        ids = list(registered) + sorted(set(counts) - set(registered))
        return [NodeShare(node_id, _zone(registered.get(node_id)), bool(registered.get(node_id, {}).get("draining")),
                          listed[node_id].service if node_id in listed else None, **counts.get(node_id, {}))
                for node_id in ids]


def _partition(index: int, entry: Any) -> Partition:
    if not isinstance(entry, dict) or entry.get("partition") != index:
        raise ValueError(f"entry {index} of the partition table is not partition {index}")
    assigned = entry.get("assigned")
    if assigned is not None and not isinstance(assigned, str):
        raise ValueError(f"partition {index}: assigned must be a node id or null")
    retiring = entry.get("retiring", [])  # absent from tables of older coordinators
    if not isinstance(retiring, list) or not all(isinstance(node_id, str) for node_id in retiring):
        raise ValueError(f"partition {index}: retiring must be a list of node ids")
    return Partition(index, Topology.from_dict(entry.get("topology")), assigned, tuple(retiring))


def _zone(node: dict[str, Any] | None) -> str | None:
    zone = node.get("zone") if node else None
    return zone if isinstance(zone, str) else None


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request for one partition goes: ``partition`` (None: a one-chain cluster, whose
    requests name none) and its chain as last known (None: not known yet)."""

    partition: int | None
    topology: Topology | None

    @property
    def field(self) -> int | UnsetType:
        """The request's ``partition`` field."""
        return field_of(self.partition)

    def where(self) -> str:
        """For messages: "" or " of partition N"."""
        return "" if self.partition is None else f" of partition {self.partition}"


def field_of(partition: int | None) -> int | UnsetType:
    """A request's ``partition`` field for ``partition`` (None: left out, as a one-chain cluster's)."""
    return msgspec.UNSET if partition is None else partition


def single(topology: Topology) -> PartitionTable:
    """A one-chain cluster seen as a table of one partition (what ``zcraq client partitions`` shows)."""
    return PartitionTable(topology.epoch, (Partition(0, topology),))


__all__ = ["NodeShare", "Partition", "PartitionTable", "Route", "field_of", "single"]
