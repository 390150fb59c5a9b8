"""May this node serve? The two kinds of lease and the fence (PROTOCOL.md §7, README "Leases").

Owns every timestamp that decides it:
- the coordinator's lease, renewed by heartbeat replies and counted from when the heartbeat was
  *sent* (the coordinator counts from when it received it, so its view always ends later);
- peer confirmations: each other node of the epoch said "I am still in your epoch", counted from
  when we asked. Every peer confirming is a lease too: it keeps the chain serving while the
  coordinator is down;
- the fence: after confirming peers, a node that adopts an epoch removing one of them (or that
  starts again) takes part in no commit for a peer lease, so the removed node's confirmations have
  run out before anything it does not hold can commit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from zcraq.topology import Member

NEVER = float("-inf")


class Leases:
    def __init__(self, peer_lease: float) -> None:
        self.peer_lease = peer_lease
        self.coordinator_until = NEVER
        self.fenced_until = NEVER
        self._confirmed_until: dict[str, float] = {}  # peer -> its confirmation of our epoch ends
        self._last_confirm_slot: int | None = None

    def held(self, now: float, peers: Iterable[Member]) -> bool:
        return now < self.coordinator_until or self.peers_confirm(now, peers)

    def peers_confirm(self, now: float, peers: Iterable[Member]) -> bool:
        """Every other node of our epoch confirmed, recently enough, that it is still in it (true
        when there is no other node: a sole member is never removed)."""
        confirmed = self._confirmed_until
        return all(confirmed.get(m.id, NEVER) > now for m in peers)

    def renew(self, sent_at: float, lease_ms: int) -> None:
        """A heartbeat sent at ``sent_at`` was answered with a lease."""
        self.coordinator_until = max(self.coordinator_until, sent_at + lease_ms / 1000.0)

    def confirmed(self, peer: str, asked_at: float, lease_ms: int) -> None:
        self._confirmed_until[peer] = asked_at + lease_ms / 1000.0

    def new_epoch(self) -> None:
        """Confirmations were for the epoch we leave."""
        self._confirmed_until.clear()

    def lose_coordinator_lease(self) -> None:
        self.coordinator_until = NEVER

    def confirm_round_due(self, now: float) -> bool:
        """Time to ask every peer again: once per quarter of a peer lease, counted in quarters of
        the clock rather than from the last round, so the replicas a partitioned node hosts ask in
        the same turn and their confirms travel together (zcraq/nodehost.py)."""
        slot = math.floor(now / (self.peer_lease / 4))
        if slot == self._last_confirm_slot:
            return False
        self._last_confirm_slot = slot
        return True

    # ------------------------------------------------------------------ the fence

    def fence(self, now: float) -> None:
        """Take part in no commit for a peer lease from now."""
        self.fenced_until = max(self.fenced_until, now + self.peer_lease)

    def fenced(self, now: float) -> bool:
        return now < self.fenced_until
