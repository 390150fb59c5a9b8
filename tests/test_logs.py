"""What an operator reads: the log files of real processes (zcraq/cluster.py writes each process's
output to logs/NAME.log). Every line names its process, in text and in JSON; a learner reports
the progress of its copy; a node reports its version index at start; repeated warnings come out
once per 10 s with a count; a bad ``log_format`` stops the process with an error naming the key."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import zmq

from cluster import wait_for
from zcraq import config
from zcraq.cluster import Cluster
from zcraq.layout import Generated
from zcraq.logs import FORMATTERS, formatter, for_partition
from zcraq.store import LevelDBStore

pytestmark = pytest.mark.timeout(180)

LEVELS = "DEBUG|INFO|WARNING|ERROR|CRITICAL"
ISO_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def text_line(name: str) -> re.Pattern[str]:
    """A text line of process ``name``: ``2026-11-30 23:00:00,123 INFO    node1 zcraq.node: ...``."""
    return re.compile(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} ({LEVELS}) +{re.escape(name)} [\w.]+: ")


def log_lines(cluster: Cluster, name: str) -> list[str]:
    """The lines process ``name`` wrote to its log file: all but the launcher's line before each
    start (``===== start #1 of node1 at ...``)."""
    mark = "===== start #"
    lines = [line for line in cluster.log(name).splitlines() if line.strip() and not line.startswith(mark)]
    assert lines, f"{name} logged nothing"
    return lines


def exercise(cluster: Cluster) -> None:
    """Give every process something to log: writes, the tail restarted (it leaves, rejoins as the
    learner, catches up and is the tail again)."""
    client = cluster.client()
    for i in range(20):
        client.write(f"k{i}", b"v")
    cluster.restart("node3")
    cluster.wait_chain()


# ---------------------------------------------------------------------------------- real processes


def test_every_line_of_every_log_names_its_process(make_cluster):
    cluster = make_cluster(3).start_all()
    exercise(cluster)
    cluster.close()  # the nodes leave the chain, the coordinator stops: the logs are complete
    for name in ("coordinator", "node1", "node2", "node3"):
        pattern = text_line(name)
        for line in log_lines(cluster, name):
            assert pattern.match(line) or line.startswith(f"{name} | "), f"{name}.log: {line!r}"


def test_json_logs_are_one_object_per_line(make_cluster):
    cluster = make_cluster(3, node={"log_format": "json"}, coordinator={"log_format": "json"}).start_all()
    exercise(cluster)
    cluster.close()
    for name in ("coordinator", "node1", "node2", "node3"):
        lines = log_lines(cluster, name)
        for line in lines:
            entry = orjson.loads(line)
            assert set(entry) >= {"ts", "level", "process", "logger", "msg"}, line
            assert ISO_UTC_MS.fullmatch(entry["ts"]) and entry["process"] == name, line
            assert re.fullmatch(LEVELS, entry["level"]) and entry["logger"].startswith("zcraq"), line
        messages = [orjson.loads(line)["msg"] for line in lines]
        if name == "coordinator":
            assert any(m.startswith("coordinator: requests ") for m in messages), messages
        else:
            assert any(m.startswith(f"node {name}: service ") for m in messages), messages


def fill_committed(data_dir: Path, keys: int) -> None:
    """Committed items written straight into a node's LevelDB store, before the node runs."""
    with LevelDBStore(data_dir, "async") as store:
        for i in range(keys):
            store.put(f"key{i:07d}", 1, b"value %07d" % i, committed=True)
            if i % 10_000 == 9_999:
                store.flush()


PROGRESS = re.compile(r"catch-up from node1: ([\d,]+) keys copied(?: \((\d+)%\))?, ([\d,]+) keys/s$")
DONE = re.compile(r"catch-up from node1: ([\d,]+) keys copied in ([\d.]+) s \(([\d,]+) keys/s\)$")


def number(text: str) -> int:
    return int(text.replace(",", ""))


def test_a_learner_logs_the_progress_of_its_copy(make_cluster):
    # Pages of 1 item: 50,000 round trips, which take well over the 2 s between progress lines
    # (10,000 round trips took 1.9 s on the development machine).
    cluster = make_cluster(1, node={"catchup_page_items": 1, "log_level": "info"})
    fill_committed(cluster.data_dir("node1"), 50_000)
    cluster.start_all()
    cluster.add_node("node2")
    cluster.start("node2")
    wait_for(lambda: cluster.serving("node2"), 120, "node2 to catch up and serve")
    entries = [(line[:23], line.split(": ", 1)[1]) for line in log_lines(cluster, "node2")
               if "catch-up from" in line]
    progress = [(stamp, PROGRESS.match(message)) for stamp, message in entries[:-1]]
    done = DONE.match(entries[-1][1])
    assert progress and all(found for _, found in progress) and done, entries
    copied = [number(found.group(1)) for _, found in progress if found]
    shares = [int(found.group(2)) for _, found in progress if found and found.group(2)]
    assert copied == sorted(copied) and 0 < copied[0] and copied[-1] < 50_000, entries
    # The source's LevelDB store has its data on disk (reopening it wrote the log to a table),
    # so it can estimate how far each page reaches.
    assert shares and shares == sorted(shares) and all(0 <= s <= 100 for s in shares), entries
    assert all(number(found.group(3)) > 0 for _, found in progress if found)
    times = [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f") for stamp, _ in progress]
    assert all((b - a).total_seconds() > 1.9 for a, b in zip(times, times[1:])), entries  # every 2 s at most
    assert number(done.group(1)) == 50_000 and float(done.group(2)) > 0 and number(done.group(3)) > 0
    assert cluster.client().read("key0049999", "node2") == b"value 0049999"


@pytest.mark.parametrize(("cap", "expected"), [
    (1000, r"version index: 1,000 keys \(at most 1,000\), filled in \d+\.\d\d s"),
    (0, r"version index off \(index_max_keys = 0\): every read and write searches LevelDB"),
])
def test_a_node_reports_its_version_index_and_serves_keys_beyond_it(make_cluster, cap, expected):
    # 5,000 keys on disk and room for 1,000 (or none): the others are searched for when used.
    cluster = make_cluster(1, node={"index_max_keys": cap})
    fill_committed(cluster.data_dir("node1"), 5_000)
    cluster.start_all()
    client = cluster.client()
    assert client.read("key0004999") == b"value 0004999"
    client.write("key0004999", b"new")
    client.write("key0000000", b"new too")
    assert client.read("key0004999") == b"new" and client.read("key0000000") == b"new too"

    def reported() -> list[str]:
        return [line.split(": ", 1)[1] for line in log_lines(cluster, "node1") if "version index" in line]

    wait_for(reported, 10, "the version index line in node1's log")
    assert len(reported()) == 1 and re.fullmatch(expected, reported()[0]), reported()


def test_repeated_warnings_come_out_once_with_the_count_of_the_others(make_cluster):
    cluster = make_cluster(1).start_all()
    ctx = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 5000)
        push.connect(cluster.node_configs["node1"].write_endpoint)
        for _ in range(50):
            push.send(b"\xff" + b"not a chain frame")  # its length prefix points past its end
        push.close()
    finally:
        ctx.term()
    wait_for(lambda: cluster.node_status("node1")["counters"]["bad_messages"] == 50, 20, "the 50 frames counted")
    warning = "dropped a malformed chain frame"

    def warnings() -> list[str]:
        return [line for line in log_lines(cluster, "node1") if warning in line]

    def two_lines() -> list[str] | None:
        found = warnings()
        return found if len(found) >= 2 else None

    # The first is logged at once; 10 s later the newest of the other 49, with the count of the rest.
    lines = wait_for(two_lines, 40, "the line with the count of those left out")
    assert len(lines) == 2 and not lines[0].endswith("in the last 10 s)"), lines
    assert lines[1].endswith("(48 more like this in the last 10 s)"), lines


def run_zcraq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zcraq", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("process", ["node", "coordinator"])
def test_an_unknown_log_format_is_a_config_error_naming_the_key(tmp_path, process):
    layout = Generated(tmp_path, 1, node={"log_format": "xml"}, coordinator={"log_format": "xml"})
    path = layout.nodes[0] if process == "node" else layout.coordinator
    result = run_zcraq(process, "--config", str(path))
    assert result.returncode == 2, result
    assert f'{path}: {process}.log_format: expected one of "text", "json", got "xml"' in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------- the formats


def formatted(log_format: str, emit: Callable[[logging.Logger], None]) -> str:
    """What ``emit`` logs as process node7's logger ``zcraq.node``, in ``log_format``."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter("node7", log_format))
    logger = logging.Logger("zcraq.node")  # outside the logger tree: nothing else sees its records
    logger.addHandler(handler)
    emit(logger)
    return out.getvalue()


def test_setup_logging_names_the_process_in_the_root_handler(tmp_path):
    script = ("import logging, sys; from zcraq.logs import setup_logging; "
              "setup_logging('node7', 'warning', sys.argv[1]); "
              "logging.getLogger('zcraq.node').info('hidden'); logging.getLogger('zcraq.node').warning('shown')")
    text = subprocess.run([sys.executable, "-c", script, "text"], capture_output=True, text=True, timeout=30)
    assert text_line("node7").match(text.stderr) and text.stderr.endswith(" node7 zcraq.node: shown\n"), text
    json = subprocess.run([sys.executable, "-c", script, "json"], capture_output=True, text=True, timeout=30)
    assert orjson.loads(json.stderr)["msg"] == "shown" and "hidden" not in json.stderr, json


def test_an_uncaught_exception_is_logged_in_the_process_format():
    script = ("import sys; from zcraq.logs import setup_logging; "
              "setup_logging('coordinator', 'info', 'json'); raise RuntimeError('the end')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    entry = orjson.loads(line)
    assert (entry["level"], entry["process"], entry["msg"]) == (
        "CRITICAL", "coordinator", "uncaught exception: the process stops")
    assert entry["exc"].endswith("RuntimeError: the end")


def fail(logger: logging.Logger) -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        logger.error("handling %s failed", "a message", exc_info=True)


def test_text_lines_name_the_process_also_in_a_traceback():
    lines = formatted("text", fail).splitlines()
    assert text_line("node7").match(lines[0]) and lines[0].endswith("ERROR   node7 zcraq.node: handling a message failed")
    assert len(lines) > 2 and all(line.startswith("node7 | ") for line in lines[1:])
    assert lines[-1] == "node7 | ValueError: broken"


def test_json_lines_carry_the_exception():
    [line] = formatted("json", fail).splitlines()
    entry = orjson.loads(line)
    assert ISO_UTC_MS.fullmatch(entry["ts"])
    assert {k: entry[k] for k in ("level", "process", "logger", "msg")} == {
        "level": "ERROR", "process": "node7", "logger": "zcraq.node", "msg": "handling a message failed"}
    assert entry["exc"].startswith("Traceback") and entry["exc"].endswith("ValueError: broken")
    [plain] = formatted("json", lambda logger: logger.info("no %s here", "exception")).splitlines()
    assert "exc" not in orjson.loads(plain) and orjson.loads(plain)["msg"] == "no exception here"


def test_lines_of_a_partitions_replica_name_the_partition():
    def log_in_partition(logger: logging.Logger) -> None:
        with for_partition(3):
            logger.info("epoch %d", 5)
        logger.info("the node's own")
    text = formatted("text", log_in_partition).splitlines()
    assert text[0].endswith("INFO    node7/p3 zcraq.node: epoch 5")
    assert text[1].endswith("node7 zcraq.node: the node's own")
    first, second = (orjson.loads(line) for line in formatted("json", log_in_partition).splitlines())
    assert first["partition"] == 3 and first["process"] == "node7" and "partition" not in second


def test_the_config_accepts_exactly_the_formats_there_are():
    assert set(config.LOG_FORMATS) == set(FORMATTERS)
