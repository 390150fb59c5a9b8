"""Running a process's loop until SIGINT or SIGTERM asks it to stop."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("zcraq")


def run_until_signalled(run: Callable[[], None], stop: Callable[[], None]) -> None:
    """Install handlers that call ``stop`` (the loop then ends its turn and shuts down cleanly)."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    run()
