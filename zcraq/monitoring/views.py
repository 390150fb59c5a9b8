"""Publishing a process's state to the outside world, from its loop.

A *view* is an immutable object the loop builds from its core: the figures /metrics shows, whether
the process is ready (/readyz, systemd's READY=1) and a one-line status (systemd's STATUS=). The
loop publishes a new one every PUBLISH_INTERVAL by assigning it to a ``ViewSlot``; the HTTP thread
only ever reads the slot, never the core. A view that has grown old means the loop has stopped
turning: /healthz then fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from zcraq.notify import Notifier

PUBLISH_INTERVAL = 0.25  # seconds: fresh enough for probes and systemd, rare enough to cost nothing
STALLED_AFTER = 10.0  # seconds without a new view: the loop is stuck (WatchdogSec in the units)


class View(Protocol):
    @property
    def ready(self) -> bool:
        """Ready for clients: a node serves reads, the coordinator has published a topology."""

    @property
    def status(self) -> str:
        """One line for an operator, e.g. "node1: tail at epoch 7, serving"."""


V = TypeVar("V", bound=View)


class ViewSlot(Generic[V]):
    """The latest view and when it was taken (monotonic seconds). Written by the loop only, as one
    assignment of a tuple, so a reader always sees a view with its own time."""

    def __init__(self) -> None:
        self.latest: tuple[float, V] | None = None

    def put(self, view: V, now: float) -> None:
        self.latest = (now, view)


class Publisher(Generic[V]):
    """The loop's side: ``turn(now)`` once per loop turn pets systemd's watchdog and, every
    PUBLISH_INTERVAL, takes a view, puts it into the slot (if there is an HTTP server to read it)
    and tells systemd the status. With neither, it takes no views at all."""

    def __init__(self, take: Callable[[float], V], slot: ViewSlot[V] | None, notifier: Notifier) -> None:
        self._take = take
        self._slot = slot
        self.notifier = notifier
        self._active = slot is not None or notifier.enabled
        self._due = float("-inf")

    def turn(self, now: float) -> None:
        self.notifier.watchdog(now)
        if not self._active or now < self._due:
            return
        self._due = now + PUBLISH_INTERVAL
        view = self._take(now)
        if self._slot is not None:
            self._slot.put(view, now)
        self.notifier.report(view.status, view.ready)

    def stopping(self) -> None:
        self.notifier.stopping()

    def close(self) -> None:
        self.notifier.close()
