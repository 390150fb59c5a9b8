"""LogLimiter: a line per kind per interval, and a count of the lines left out."""

from __future__ import annotations

import logging

import pytest

from zcraq.loglimit import LogLimiter

pytestmark = pytest.mark.timeout(30)


def limiter() -> LogLimiter:
    return LogLimiter(logging.getLogger("zcraq.test"), interval=10.0)


def test_one_line_per_kind_per_interval_then_the_count_of_those_left_out(caplog):
    logs = limiter()
    with caplog.at_level(logging.WARNING, logger="zcraq.test"):
        for step in range(1000):
            logs.warning("bad frame", step * 0.001, "dropped frame %d", step)
        logs.warning("other kind", 0.5, "something else")
        logs.error("bad frame", 10.0, "dropped frame %d", 1000)
    assert [r.getMessage() for r in caplog.records] == [
        "dropped frame 0", "something else", "dropped frame 1000 (999 more like this in the last 10 s)"]
    assert caplog.records[-1].levelno == logging.ERROR


def test_flush_logs_the_newest_line_left_out_with_the_count_of_the_others(caplog):
    logs = limiter()
    with caplog.at_level(logging.WARNING, logger="zcraq.test"):
        for step in range(38):
            logs.warning("bad frame", step * 0.1, "dropped frame %d", step)
        logs.flush(9.99)  # the interval is not over yet
        assert [r.getMessage() for r in caplog.records] == ["dropped frame 0"]
        logs.flush(10.0)
        logs.flush(10.5)  # nothing more to say
    assert [r.getMessage() for r in caplog.records] == [
        "dropped frame 0", "dropped frame 37 (36 more like this in the last 10 s)"]


def test_the_flushed_line_opens_a_new_interval(caplog):
    logs = limiter()
    with caplog.at_level(logging.WARNING, logger="zcraq.test"):
        logs.warning("bad frame", 0.0, "first")
        logs.warning("bad frame", 1.0, "second")
        logs.flush(10.0)  # the one line left out, without a count: there are no others
        logs.warning("bad frame", 12.0, "third")  # within the interval the flushed line opened
        logs.flush(20.0)
    assert [r.getMessage() for r in caplog.records] == ["first", "second", "third"]


def test_a_single_line_left_out_and_then_a_new_one_counts_it(caplog):
    logs = limiter()
    with caplog.at_level(logging.INFO, logger="zcraq.test"):
        logs.info("kind", 0.0, "a")
        logs.info("kind", 5.0, "b")
        logs.info("kind", 25.0, "c")  # no flush in between: the count comes with this line
    assert [r.getMessage() for r in caplog.records] == ["a", "c (1 more like this in the last 25 s)"]


def test_quiet_kinds_are_forgotten():
    logs = limiter()
    for index in range(100):
        logs.warning(f"kind {index}", 0.0, "line")
    logs.flush(10.0)
    assert logs._kinds == {}
