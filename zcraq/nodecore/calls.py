"""Requests this node sends to peers or the coordinator, and the calls waiting for their replies.

Owns the call ids (a reply names the request it answers by id) and each call's deadline. What a
reply means is the asker's business; this table only remembers who asked what, when, and for whom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, auto
from itertools import count
from typing import Any

from zcraq.effects import Effect, PeerRequest
from zcraq.messages import Request, TopologyRequest
from zcraq.topology import Member


class CallKind(Enum):
    JOIN = auto()
    HEARTBEAT = auto()
    TOPOLOGY = auto()
    CAUGHT_UP = auto()
    VERSION = auto()  # dirty reads asking the tail; ``waiters`` wait for the answer
    CONFIRM = auto()  # ``peer`` is the node asked
    CATCHUP = auto()


@dataclass(slots=True)
class Call:
    kind: CallKind
    sent_at: float
    deadline: float
    epoch: int  # ours when we asked: a reply counts only if we are still in it
    waiters: list[tuple[Any, Any]] = field(default_factory=list)  # dirty reads: (client, request id) each
    key: str | None = None  # the dirty reads' key
    peer: str | None = None  # who was asked to confirm


class Calls:
    def __init__(self, timeout: float, out: list[Effect]) -> None:
        self.timeout = timeout
        self._out = out
        self._ids = count(1)
        self._pending: dict[int, Call] = {}

    def ask(self, to: Member | None, kind: CallKind, now: float, epoch: int, build: Callable[[int], Request],
            **context: Any) -> None:
        """Send the request ``build(call_id)`` to ``to``'s service (None: the coordinator) and
        remember the call; ``epoch`` is the asker's, ``context`` what the reply's handler needs."""
        call_id = next(self._ids)
        self._pending[call_id] = Call(kind, now, now + self.timeout, epoch, **context)
        if to is None:
            self._out.append(PeerRequest("coordinator", build(call_id)))
        else:
            self._out.append(PeerRequest(to.service, build(call_id), to.key))

    def ask_topology(self, now: float, epoch: int) -> None:
        """Ask the coordinator for the current topology (once: not while a request for it is out)."""
        if not self.pending(CallKind.TOPOLOGY):
            self.ask(None, CallKind.TOPOLOGY, now, epoch, lambda i: TopologyRequest(id=i))

    def take(self, call_id: Any) -> Call | None:
        """The call a reply answers, no longer pending; None for a late or foreign reply."""
        return self._pending.pop(call_id, None) if type(call_id) is int else None

    def pending(self, kind: CallKind) -> bool:
        return any(call.kind is kind for call in self._pending.values())

    def expire(self, now: float) -> list[Call]:
        """Calls past their deadline, no longer pending."""
        expired = [call_id for call_id, call in self._pending.items() if call.deadline <= now]
        return [self._pending.pop(call_id) for call_id in expired]
