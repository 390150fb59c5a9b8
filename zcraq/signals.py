"""Running a process's loop until SIGINT or SIGTERM asks it to stop; SIGHUP asks it to reload."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("zcraq")


def run_until_signalled(run: Callable[[], None], stop: Callable[[], None],
                        reload: Callable[[], None] | None = None) -> None:
    """Install handlers that call ``stop`` (the loop then ends its turn and shuts down cleanly) and,
    for SIGHUP, ``reload`` (which should only set a flag: the loop does the work between turns)."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        log.info("received SIGHUP")
        if reload is not None:
            reload()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    run()
