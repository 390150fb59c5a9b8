"""Where this node stands in its current topology: its role and its neighbours.

Owns nothing that changes by itself: a Place is computed once per topology the node adopts (and
when it joins or is reset), and every rule that depends on the node's position reads it from here
instead of searching the topology again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from zcraq.topology import Member, Topology


class Role(StrEnum):
    """The ``role`` a node reports in its status (PROTOCOL.md §8.6)."""

    JOINING = "joining"  # not registered with the coordinator (yet, or again)
    OUTSIDE = "outside"  # registered but not listed in its topology
    LEARNER = "learner"  # catching up behind the tail
    HEAD = "head"
    MIDDLE = "middle"
    TAIL = "tail"
    SOLE = "head+tail"  # the only member


@dataclass(frozen=True, slots=True)
class Place:
    role: Role
    epoch: int
    predecessor: Member | None  # sends us writes (the tail, for the learner)
    successor: Member | None  # receives our writes (the learner, for the tail)
    head: Member | None
    tail: Member | None
    peers: tuple[Member, ...]  # every other node of the epoch, learner included

    @property
    def in_chain(self) -> bool:
        """A member (not the learner): may serve once leased."""
        return self.role in _MEMBER_ROLES

    @property
    def is_head(self) -> bool:
        return self.role is Role.HEAD or self.role is Role.SOLE

    @property
    def is_tail(self) -> bool:
        return self.role is Role.TAIL or self.role is Role.SOLE

    @property
    def is_learner(self) -> bool:
        return self.role is Role.LEARNER

    @classmethod
    def of(cls, topology: Topology, me: str, joined: bool) -> Place:
        if not joined:
            return cls(Role.JOINING, topology.epoch, None, None, topology.head, topology.tail, ())
        position = topology.position(me)
        if topology.learner is not None and topology.learner.id == me:
            role = Role.LEARNER
        elif position is None:
            role = Role.OUTSIDE
        elif len(topology.members) == 1:
            role = Role.SOLE
        elif position == 0:
            role = Role.HEAD
        elif position == len(topology.members) - 1:
            role = Role.TAIL
        else:
            role = Role.MIDDLE
        peers = tuple(m for m in topology.listed() if m.id != me)
        return cls(role, topology.epoch, topology.predecessor(me), topology.successor(me), topology.head,
                   topology.tail, peers)


_MEMBER_ROLES = frozenset({Role.HEAD, Role.MIDDLE, Role.TAIL, Role.SOLE})
