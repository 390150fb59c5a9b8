"""Waiting for a condition with a deadline: how tests, benchmarks and the chaos runner wait for a
chain to reach a state, instead of sleeping and hoping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from zcraq.errors import ZcraqError

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str, *, interval: float = 0.05,
               retry_on: tuple[type[BaseException], ...] = (ZcraqError,)) -> T:
    """Poll ``condition`` until it returns something truthy and return that.

    An exception of a ``retry_on`` type counts as "not yet" (a node that is still starting
    answers with one); the last one is named in the TimeoutError raised at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except retry_on as error:
            last_error = error
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}"
                               + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(interval)
