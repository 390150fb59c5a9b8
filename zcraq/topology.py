"""The chain's shape at one epoch: who is in it, in which order, and who is catching up.

The coordinator is the only author of topologies; every change gets a new, larger epoch. Nodes and
clients keep the topology with the largest epoch they have seen and ignore older ones.

Both classes are msgspec Structs, so the wire codec decodes and validates them (types, non-empty
endpoints, no node listed twice) in the same pass as the message that carries them.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Epoch = Annotated[int, msgspec.Meta(ge=0)]
Z85Key = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-zA-Z.:+=^!/*?&<>()\[\]{}@%$#-]{40}$")]


class Member(msgspec.Struct, frozen=True):
    """One node, the endpoints others use to reach it, and (in a cluster with CURVE) the public
    key it registered with: peers and clients connect to it with that key, and a chain frame
    claiming to come from it is accepted only over a connection authenticated with it."""

    id: NonEmpty
    service: NonEmpty  # ROUTER: client requests, version queries, catch-up
    write_in: NonEmpty  # PULL: WRITE frames from the predecessor
    ack_in: NonEmpty  # PULL: COMMIT frames from the successor
    key: Z85Key | None = None  # z85 CURVE public key; None without security

    def to_dict(self) -> dict[str, str | None]:
        return {"id": self.id, "service": self.service, "write_in": self.write_in, "ack_in": self.ack_in,
                "key": self.key}

    @classmethod
    def from_dict(cls, data: Any) -> Member:
        """ValueError says what is wrong with ``data``."""
        return _convert(data, cls, "member")


class Topology(msgspec.Struct, frozen=True):
    """``members`` in chain order: members[0] is the head, members[-1] the tail.

    ``learner`` is a node catching up behind the tail: it receives every write the tail forwards
    but serves no reads and commits nothing until a later epoch makes it the tail.
    """

    epoch: Epoch
    members: tuple[Member, ...]
    learner: Member | None = None

    def __post_init__(self) -> None:
        ids = [m.id for m in self.members] + ([self.learner.id] if self.learner else [])
        if len(set(ids)) != len(ids):
            raise ValueError("topology lists a node twice")

    @property
    def head(self) -> Member | None:
        return self.members[0] if self.members else None

    @property
    def tail(self) -> Member | None:
        return self.members[-1] if self.members else None

    def listed(self) -> tuple[Member, ...]:
        """Every node of this epoch: the members, then the learner."""
        return self.members + ((self.learner,) if self.learner else ())

    def position(self, node_id: str) -> int | None:
        for index, member in enumerate(self.members):
            if member.id == node_id:
                return index
        return None

    def member(self, node_id: str) -> Member | None:
        """The member or learner with that id."""
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
        """ValueError says what is wrong with ``data``."""
        return _convert(data, cls, "topology")


def _convert(data: Any, kind: type[Any], what: str) -> Any:
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as error:
        raise ValueError(f"bad {what}: {error}") from None


EMPTY = Topology(epoch=0, members=())
