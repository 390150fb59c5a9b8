"""The chain's shape at one epoch: who is in it, in which order, and who is catching up.

The coordinator is the only author of topologies; every change gets a new, larger epoch. Nodes and
clients keep the topology with the largest epoch they have seen and ignore older ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Member:
    """One node and the endpoints others use to reach it."""

    id: str
    service: str  # ROUTER: client requests, version queries, catch-up
    write_in: str  # PULL: WRITE frames from the predecessor
    ack_in: str  # PULL: COMMIT frames from the successor

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "service": self.service, "write_in": self.write_in, "ack_in": self.ack_in}

    @classmethod
    def from_dict(cls, data: Any) -> Member:
        if not isinstance(data, dict):
            raise ValueError("member must be an object")
        fields = {}
        for name in ("id", "service", "write_in", "ack_in"):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"member.{name} must be a non-empty string")
            fields[name] = value
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class Topology:
    """``members`` in chain order: members[0] is the head, members[-1] the tail.

    ``learner`` is a node catching up behind the tail: it receives every write the tail forwards
    but serves no reads and commits nothing until a later epoch makes it the tail.
    """

    epoch: int
    members: tuple[Member, ...]
    learner: Member | None = None

    @property
    def head(self) -> Member | None:
        return self.members[0] if self.members else None

    @property
    def tail(self) -> Member | None:
        return self.members[-1] if self.members else None

    def position(self, node_id: str) -> int | None:
        for index, member in enumerate(self.members):
            if member.id == node_id:
                return index
        return None

    def member(self, node_id: str) -> Member | None:
        index = self.position(node_id)
        if index is not None:
            return self.members[index]
        if self.learner is not None and self.learner.id == node_id:
            return self.learner
        return None

    def predecessor(self, node_id: str) -> Member | None:
        """The node that sends WRITEs to ``node_id`` (the tail, for the learner)."""
        if self.learner is not None and self.learner.id == node_id:
            return self.tail
        index = self.position(node_id)
        if index is None or index == 0:
            return None
        return self.members[index - 1]

    def successor(self, node_id: str) -> Member | None:
        """The node ``node_id`` sends WRITEs to (the learner, for the tail)."""
        index = self.position(node_id)
        if index is None:
            return None
        if index + 1 < len(self.members):
            return self.members[index + 1]
        return self.learner

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "members": [m.to_dict() for m in self.members],
            "learner": self.learner.to_dict() if self.learner else None,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Topology:
        if not isinstance(data, dict):
            raise ValueError("topology must be an object")
        epoch = data.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError("topology.epoch must be a non-negative integer")
        members = data.get("members")
        if not isinstance(members, list):
            raise ValueError("topology.members must be a list")
        learner = data.get("learner")
        topology = cls(
            epoch=epoch,
            members=tuple(Member.from_dict(m) for m in members),
            learner=Member.from_dict(learner) if learner is not None else None,
        )
        ids = [m.id for m in topology.members] + ([learner["id"]] if learner else [])
        if len(set(ids)) != len(ids):
            raise ValueError("topology lists a node twice")
        return topology


EMPTY = Topology(epoch=0, members=())
