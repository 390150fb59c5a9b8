"""LogLimiter: a line per kind per interval, and a count of the lines left out."""

from __future__ import annotations

import logging

import pytest

from zcraq.loglimit import LogLimiter

pytestmark = pytest.mark.timeout(30)


def test_one_line_per_kind_per_interval_then_the_count_of_those_left_out(caplog):
    limiter = LogLimiter(logging.getLogger("zcraq.test"), interval=10.0)
    with caplog.at_level(logging.WARNING, logger="zcraq.test"):
        for step in range(1000):
            limiter.warning("bad frame", step * 0.001, "dropped frame %d", step)
        limiter.warning("other kind", 0.5, "something else")
        limiter.error("bad frame", 10.0, "dropped frame %d", 1000)
    assert [r.getMessage() for r in caplog.records] == [
        "dropped frame 0", "something else", "dropped frame 1000 (999 more like it in the last 10 s not logged)"]
    assert caplog.records[-1].levelno == logging.ERROR
