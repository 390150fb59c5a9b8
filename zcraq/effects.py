"""What a protocol core asks its shell to do. The shell carries these out in order.

Cores never touch sockets: they collect effects during a loop turn and hand them over at its end
(``ready()``), after making the turn's changes durable themselves, so a shell cannot send anything
that depends on state it has not stored. Effects hold typed messages (zcraq/messages.py); the
shell encodes them (zcraq/wire.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zcraq.messages import CommitFrame, Reply, Request, ResyncFrame, WriteFrame
from zcraq.topology import Topology


@dataclass(frozen=True, slots=True)
class Relink:
    """Point the downstream PUSH at ``down`` and the upstream PUSH at ``up`` (None: disconnect).
    PUSH round-robins over connected peers, so the old peer must be disconnected first."""

    down: str | None
    up: str | None
    down_key: str | None = None  # the peers' CURVE keys (None without security)
    up_key: str | None = None


@dataclass(frozen=True, slots=True)
class SendDown:
    """A chain frame to the successor's write-in PULL."""

    frame: WriteFrame


@dataclass(frozen=True, slots=True)
class SendUp:
    """A chain frame to the predecessor's ack-in PULL."""

    frame: CommitFrame | ResyncFrame


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer a request that arrived on this process's ROUTER; ``client`` is the shell's routing
    envelope, opaque to the core. ``values`` travel as frames after the reply's header."""

    client: Any
    reply: Reply
    values: tuple[bytes, ...] | list[bytes] = ()


@dataclass(frozen=True, slots=True)
class PeerRequest:
    """Send a request to another process's request endpoint ("coordinator" names this node's
    coordinator); its reply comes back to the core with the request's id."""

    endpoint: str
    request: Request
    key: str | None = None  # the peer's CURVE key; for "coordinator" the shell knows it


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Subscribe to topology updates published at ``endpoint``."""

    endpoint: str


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish a topology to every subscriber."""

    topology: Topology


Effect = Relink | SendDown | SendUp | Respond | PeerRequest | Subscribe | Publish
