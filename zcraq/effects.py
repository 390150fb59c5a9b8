"""What a protocol core asks its shell to do. The shell carries these out in order.

Cores never touch sockets: they append effects to an outbox and the shell drains it after each
batch of events, once the store has been flushed (so nothing is acknowledged before it is durable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zcraq.topology import Topology
from zcraq.wire import ChainFrame


@dataclass(frozen=True, slots=True)
class Relink:
    """Point the downstream PUSH at ``down`` and the upstream PUSH at ``up`` (None: disconnect).
    PUSH round-robins over connected peers, so the old peer must be disconnected first."""

    down: str | None
    up: str | None


@dataclass(frozen=True, slots=True)
class SendDown:
    """A chain frame to the successor's write-in PULL."""

    frame: ChainFrame


@dataclass(frozen=True, slots=True)
class SendUp:
    """A chain frame to the predecessor's ack-in PULL."""

    frame: ChainFrame


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer a request that arrived on this process's ROUTER; ``client`` is the shell's routing
    envelope, opaque to the core."""

    client: Any
    frames: list[bytes]


@dataclass(frozen=True, slots=True)
class PeerRequest:
    """Send a request to another process's request endpoint; its reply comes back to the core
    tagged with ``endpoint``."""

    endpoint: str
    frames: list[bytes]


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Subscribe to topology updates published at ``endpoint``."""

    endpoint: str


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish a topology to every subscriber."""

    topology: Topology


@dataclass(frozen=True, slots=True)
class Persist:
    """Durably record the coordinator's state before anything that depends on it is sent."""

    state: dict[str, Any]


Effect = Relink | SendDown | SendUp | Reply | PeerRequest | Subscribe | Publish | Persist
