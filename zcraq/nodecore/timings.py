"""How long a node waits for what: the knobs its config sets (``[node]`` *_ms keys)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class NodeTimings:
    heartbeat_interval: float = 0.5
    request_timeout: float = 2.0  # version queries, catch-up pages, coordinator calls
    write_timeout: float = 10.0  # a client write still uncommitted after this gets unknown_outcome
    resend_interval: float = 1.0
    catchup_page_items: int = 1000
    peer_lease: float = 1.0  # how long a confirmation to a peer binds this node (see leases.py)
    watch_log_entries: int = 100_000  # committed changes kept for watchers, at most (changes.py)
    watch_log_bytes: int = 64 << 20  # and their keys' and values' bytes, at most
