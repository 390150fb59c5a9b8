"""Who sent a message, as the cores see it: the key its connection authenticated and that key's
roles at the moment the message arrived (zcraq/security.py looks them up).

Without a ``[security]`` table every process on the machine is trusted (zcraq binds only
loopback then): messages come from ``TRUSTED``, which may do everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    NODE = "node"  # chain frames, join, heartbeat, confirm, version queries, catch-up
    CLIENT = "client"  # read, write, delete, topology, status
    ADMIN = "admin"  # what a client may, and removing another node
    COORDINATOR = "coordinator"  # the coordinator's own key: writes it forwards to the head


@dataclass(frozen=True, slots=True)
class Caller:
    key: str | None  # z85 public key; None when not authenticated (no security)
    roles: frozenset[Role]

    def is_(self, *roles: Role) -> bool:
        """Has one of ``roles``."""
        return not self.roles.isdisjoint(roles)

    def owns(self, key: str | None) -> bool:
        """Is this caller the holder of ``key`` (a registered node's)? Always, when trusted."""
        return self is TRUSTED or (self.key is not None and self.key == key)


TRUSTED = Caller(None, frozenset(Role))
