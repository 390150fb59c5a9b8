"""A deterministic world for the protocol cores: a fake clock, an event queue and a network.

Everything random comes from one ``random.Random(seed)``, and events at equal times run in the
order they were scheduled, so a seed replays the same run exactly.

The network behaves like ZeroMQ over TCP: messages on one connection (sender, receiver endpoint)
arrive in order; a connection can break, losing what is in flight, after which new messages flow
again (possibly overtaking nothing: order across connections is free). Partitions drop messages
between processes on different sides at send and at delivery time.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count


@dataclass(slots=True)
class NetworkFaults:
    min_delay: float = 0.0002
    max_delay: float = 0.004
    drop_rate: float = 0.0  # independent loss per message (a broken connection, in effect)
    duplicate_rate: float = 0.0  # chain frames delivered twice (resends overlapping)
    slow_rate: float = 0.0  # occasional long delay (a busy peer)


@dataclass(slots=True)
class _Connection:
    generation: int = 0
    last_arrival: float = 0.0


@dataclass(order=True, slots=True)
class _Event:
    time: float
    seq: int
    action: Callable[[], None] = field(compare=False)


class World:
    def __init__(self, seed: int, faults: NetworkFaults | None = None) -> None:
        self.rng = random.Random(seed)
        self.faults = faults or NetworkFaults()
        self.now = 0.0
        self._queue: list[_Event] = []
        self._seq = count()
        self._connections: dict[tuple[str, str], _Connection] = {}
        self.partitions: list[tuple[frozenset[str], frozenset[str]]] = []
        self.delivered = 0
        self.dropped = 0

    # ------------------------------------------------------------------ scheduling

    def at(self, time: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, _Event(time, next(self._seq), action))

    def after(self, delay: float, action: Callable[[], None]) -> None:
        self.at(self.now + delay, action)

    def run_until(self, end: float) -> None:
        while self._queue and self._queue[0].time <= end:
            event = heapq.heappop(self._queue)
            self.now = event.time
            event.action()
        self.now = max(self.now, end)

    # ------------------------------------------------------------------ network

    def cut(self, a: str, b: str) -> bool:
        return any((a in left and b in right) or (a in right and b in left) for left, right in self.partitions)

    def break_connection(self, sender: str, endpoint: str) -> None:
        """Everything in flight on this connection is lost."""
        self._connections.setdefault((sender, endpoint), _Connection()).generation += 1

    def break_connections_of(self, process: str) -> None:
        for (sender, endpoint), connection in self._connections.items():
            if sender == process or endpoint.split("/")[0] == process:
                connection.generation += 1

    def send(self, sender: str, endpoint: str, deliver: Callable[[], None], duplicable: bool = False) -> None:
        receiver = endpoint.split("/")[0]
        rng, faults = self.rng, self.faults
        if self.cut(sender, receiver) or rng.random() < faults.drop_rate:
            self.dropped += 1
            return
        connection = self._connections.setdefault((sender, endpoint), _Connection())
        delay = rng.uniform(faults.min_delay, faults.max_delay)
        if rng.random() < faults.slow_rate:
            delay += rng.uniform(0.05, 0.5)
        # In order on one connection: never arrive before the previous message.
        arrival = max(self.now + delay, connection.last_arrival)
        connection.last_arrival = arrival
        generation = connection.generation

        def arrive() -> None:
            if connection.generation != generation or self.cut(sender, receiver):
                self.dropped += 1
                return
            self.delivered += 1
            deliver()

        self.at(arrival, arrive)
        if duplicable and rng.random() < faults.duplicate_rate:
            self.at(arrival + rng.uniform(0.0, faults.max_delay), arrive)
