"""Which of the configured coordinators a node or client asks.

A cluster may run several coordinators, one leading through the engine (zcraq/coordinator_engine.py)
and the others standing by. A process configured with all of them asks the one that answered last.
A standby answers ``not_leader`` naming the leader: the finder moves there, but only to an endpoint
the config lists (a reply cannot send a process elsewhere). A request left unanswered for
``silence`` seconds moves it on to the next configured endpoint, round the list. A leader that was
just found silent is not gone back to when a standby still names it (the standbys name a dead
leader until its engine lease runs out): until it answers again, or SUSPECT_FOR seconds.
"""

from __future__ import annotations

import logging

from zcraq.messages import Error, Malformed, Reply

log = logging.getLogger("zcraq")

SUSPECT_FOR = 5.0  # seconds a coordinator found silent is not gone back to on another's word


class CoordinatorFinder:
    def __init__(self, endpoints: tuple[str, ...], silence: float) -> None:
        if not endpoints:
            raise ValueError("at least one coordinator endpoint")
        self.endpoints = endpoints
        self.current = endpoints[0]
        self.silence = silence
        self._waiting_since: float | None = None  # the oldest request the current one left unanswered
        self._silent: dict[str, float] = {}  # endpoint -> when it was found silent

    def sent(self, now: float) -> None:
        """A request went to the current coordinator."""
        if self._waiting_since is None:
            self._waiting_since = now

    def answered(self, reply: Reply | Malformed, now: float) -> str | None:
        """The current coordinator answered: the endpoint to move to, or None to stay."""
        self._waiting_since = None
        self._silent.pop(self.current, None)
        if not (isinstance(reply, Error) and reply.code == "not_leader"):
            return None
        leader = reply.leader
        if isinstance(leader, str) and leader in self.endpoints and leader != self.current \
                and now - self._silent.get(leader, float("-inf")) >= SUSPECT_FOR:
            return self._move(leader, now, "it names the leader")
        return self._move(self._next(), now, "it does not lead") if len(self.endpoints) > 1 else None

    def check(self, now: float) -> str | None:
        """Call every loop turn: the endpoint to move to, when the current one stays silent."""
        waiting = self._waiting_since
        if len(self.endpoints) < 2 or waiting is None or now - waiting < self.silence:
            return None
        self._silent[self.current] = now
        return self._move(self._next(), now, f"it did not answer for {self.silence:g}s")

    def _next(self) -> str:
        return self.endpoints[(self.endpoints.index(self.current) + 1) % len(self.endpoints)]

    def _move(self, endpoint: str, now: float, why: str) -> str:
        log.info("asking the coordinator at %s instead of %s: %s", endpoint, self.current, why)
        self.current = endpoint
        self._waiting_since = None
        return endpoint


__all__ = ["CoordinatorFinder"]
