"""``zcraq client`` as scripts and people use it: a separate process against real clusters, its
exit code, its stdout (text, raw bytes or one JSON object) and its stderr.

Exit codes (zcraq/exit_codes.py): 0 success, 1 not found, 2 usage or config error, 3 unavailable
or timeout, 4 outcome unknown, 5 refused, 6 authentication failed, 7 any other error, 8 condition
failed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import click
import pytest
import zmq.auth

from cluster import wait_for
from commands import CONSOLE_SCRIPT, ZCRAQ, assert_exit
from commands import zcraq_binary as zcraq
from zcraq import exit_codes
from zcraq.chain_report import ChainReport, NodeReport
from zcraq.cli_client import client as client_group
from zcraq.errors import (ERROR_CODES, AuthenticationError, BadRequest, ConditionFailed, Forbidden, KeyNotFound,
                          Timeout, TooLarge, Unavailable, WriteOutcomeUnknown, ZcraqError)
from zcraq.layout import COORDINATOR, free_ports
from zcraq.toml_tables import ConfigError
from zcraq.topology import Member, Topology

pytestmark = pytest.mark.timeout(120)

README = Path(__file__).resolve().parent.parent / "README.md"
MIB = 1 << 20  # the default max_value_bytes


def json_out(result: subprocess.CompletedProcess[bytes], code: int) -> dict[str, Any]:
    """The one JSON object a --json command printed (and nothing on stderr)."""
    assert_exit(result, code)
    assert result.stderr == b"", result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    return data


def json_error(result: subprocess.CompletedProcess[bytes], code: int, error: str) -> str:
    data = json_out(result, code)
    assert set(data) == {"error", "message"} and data["error"] == error, data
    assert isinstance(data["message"], str) and data["message"]
    return data["message"]


def unused_endpoint() -> str:
    (port,) = free_ports(1)
    return f"tcp://127.0.0.1:{port}"


# ------------------------------------------------------------------------------------------ values


def test_binary_values_through_stdin_a_file_and_the_argument_come_back_byte_exact(make_cluster, tmp_path):
    cluster = make_cluster(3).start_all()
    c = ("client", "-c", cluster.coordinator_endpoint)
    tricky = b"\x00\xff\n"

    assert_exit(result := zcraq(*c, "write", "stdin", "-", stdin=tricky), 0)
    assert result.stdout == b"ok version 1\n"
    every_byte = bytes(range(256)) * 3
    path = tmp_path / "value.bin"
    path.write_bytes(every_byte)
    assert_exit(zcraq(*c, "write", "file", f"@{path}"), 0)
    not_utf8 = b"caf\xe9 \xff"  # the shell passes bytes; so does this test
    assert_exit(zcraq(*c, "write", "argv", not_utf8), 0)

    for key, value in (("stdin", tricky), ("file", every_byte), ("argv", not_utf8)):
        for node in cluster.node_ids:  # every replica holds the same bytes
            result = zcraq(*c, "-n", node, "read", "--raw", key)
            assert_exit(result, 0)
            assert result.stdout == value, (key, node)
    with cluster.client() as zclient:
        assert zclient.read("stdin") == tricky and zclient.read("file") == every_byte


def test_literal_stores_dash_and_at_as_given(make_cluster, tmp_path):
    cluster = make_cluster(1).start_all()
    c = ("client", "-c", cluster.coordinator_endpoint)
    assert_exit(zcraq(*c, "write", "--literal", "dash", "-", stdin=b"not this"), 0)
    assert_exit(zcraq(*c, "write", "at", "@no-such-file", "--literal"), 0)
    assert_exit(zcraq(*c, "write", "empty", "-", stdin=b""), 0)
    with cluster.client() as zclient:
        assert zclient.read("dash") == b"-"
        assert zclient.read("at") == b"@no-such-file"
        assert zclient.read("empty") == b""


def test_a_value_of_the_largest_size_goes_through_stdin(make_cluster):
    cluster = make_cluster(1).start_all()
    c = ("client", "-c", cluster.coordinator_endpoint)
    value = os.urandom(MIB)  # exactly max_value_bytes: far beyond what one argument may hold
    result = zcraq(*c, "write", "big", "-", stdin=value)
    assert_exit(result, 0)
    result = zcraq(*c, "read", "--raw", "big")
    assert_exit(result, 0)
    assert result.stdout == value


def test_a_value_over_the_limit_is_refused_at_once_with_exit_5(make_cluster, tmp_path):
    cluster = make_cluster(1).start_all()
    c = ("client", "-c", cluster.coordinator_endpoint, "-t", "20")
    started = time.monotonic()
    result = zcraq(*c, "write", "big", "-", stdin=bytes(4 * MIB))
    assert_exit(result, 5)
    assert b"value is larger than 1048576 bytes" in result.stderr, result.stderr
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(MIB + 1))
    assert json_error(zcraq(*c, "--json", "write", "big", f"@{path}"), 5, "too_large")
    assert time.monotonic() - started < 15, "refused at once, not after the timeout"
    assert_exit(zcraq(*c, "write", "k" * 1025, "v"), 5)  # a key over max_key_bytes
    assert_exit(zcraq(*c, "read", "big"), 1)  # nothing was written


def test_a_nodes_own_too_large_reply_is_exit_5(make_cluster):
    """The coordinator allows 1 MiB, the head only 100 bytes: the client's own check passes, the
    head's wire check answers too_large."""
    cluster = make_cluster(1)
    with open(cluster.config_path("node1"), "a") as config:
        config.write("\n[limits]\nmax_value_bytes = 100\n")
    cluster.start_all()
    c = ("client", "-c", cluster.coordinator_endpoint)
    assert_exit(zcraq(*c, "write", "k", "v" * 100), 0)
    message = json_error(zcraq(*c, "write", "k", "v" * 101, "--json"), 5, "too_large")
    assert "100 bytes" in message


# ------------------------------------------------------------------------------------------ output


def test_read_prints_text_escapes_what_is_not_utf8_and_raw_is_exact(make_cluster):
    cluster = make_cluster(1).start_all()
    c = ("client", "-c", cluster.coordinator_endpoint)
    text = "héllo wörld ✓"
    assert_exit(zcraq(*c, "write", "text", text), 0)
    assert_exit(zcraq(*c, "write", "binary", "-", stdin=b"\x00\xff\n"), 0)

    result = zcraq(*c, "read", "text")
    assert_exit(result, 0)
    assert result.stdout == text.encode() + b"\n"
    result = zcraq(*c, "read", "binary")
    assert_exit(result, 0)
    assert result.stdout == b"\x00\\xff\n\n"  # \xff escaped as Python's backslashreplace does, then a newline
    result = zcraq(*c, "read", "binary", "--raw")
    assert_exit(result, 0)
    assert result.stdout == b"\x00\xff\n"

    assert json_out(zcraq(*c, "read", "text", "--json"), 0) == {
        "key": "text", "version": 1, "value": text, "value_base64": base64.b64encode(text.encode()).decode()}
    data = json_out(zcraq(*c, "--json", "read", "binary"), 0)
    assert data == {"key": "binary", "version": 1, "value": None, "value_base64": "AP8K"}
    assert base64.b64decode(data["value_base64"]) == b"\x00\xff\n"


def test_json_shapes_of_write_read_delete_and_errors(make_cluster):
    cluster = make_cluster(3).start_all()
    c = ("client", "-c", cluster.coordinator_endpoint, "--json")
    assert json_out(zcraq(*c, "write", "k", "v1"), 0) == {"key": "k", "version": 1}
    assert json_out(zcraq(*c, "write", "k", "v2"), 0) == {"key": "k", "version": 2}
    for node in cluster.node_ids:
        assert json_out(zcraq(*c, "read", "k", "-n", node), 0) == {
            "key": "k", "version": 2, "value": "v2", "value_base64": "djI="}
    assert json_out(zcraq(*c, "delete", "k"), 0) == {"key": "k", "version": 3, "existed": True}
    assert json_out(zcraq(*c, "delete", "k"), 0) == {"key": "k", "version": 4, "existed": False}
    assert "'k' does not exist" in json_error(zcraq(*c, "read", "k"), 1, "not_found")
    assert json_error(zcraq(*c, "read", "k", "--mode", "eventual"), 1, "not_found")


# -------------------------------------------------------------------------------- exit codes: 1, 2


def test_a_missing_key_is_exit_1(make_cluster):
    cluster = make_cluster(1).start_all()
    c = ("client", "-c", cluster.coordinator_endpoint)
    result = zcraq(*c, "read", "never-written")
    assert_exit(result, 1)
    assert result.stdout == b""
    assert result.stderr == b"error: key 'never-written' does not exist\n"
    assert_exit(zcraq(*c, "write", "gone", "v"), 0)
    assert_exit(zcraq(*c, "delete", "gone"), 0)
    assert_exit(zcraq(*c, "read", "gone", "--raw"), 1)


USAGE_ERRORS = [
    ("read",),  # KEY is required
    ("write", "k"),  # VALUE is required
    ("write", "", "v"),  # an empty key
    ("read", "k", "--bogus"),
    ("no-such-command",),
    (),  # no command
    ("-t", "0", "read", "k"),  # timeout below 0.1 s, before the subcommand
    ("read", "k", "-t", "0"),  # and after it
    ("read", "k", "--mode", "fast"),
    ("read", "k", "--raw", "--json"),
    ("write", "k", "@/no/such/file"),
    ("write", "k", "@"),
    ("-c", "not-an-endpoint", "read", "k"),
    ("read", "k", "-n", "tcp://no-port"),
    ("--config", "/no/such/client.toml", "read", "k"),
    ("status", "--config", "/no/such/client.toml"),
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=lambda a: " ".join(a) or "nothing")
def test_usage_and_config_errors_exit_2_as_text_and_as_json(args):
    endpoint = unused_endpoint()  # never reached: usage errors come first
    started = time.monotonic()
    if "--json" not in args:
        result = zcraq("client", "-c", endpoint, "-t", "5", *args)
        assert_exit(result, 2)
        assert result.stdout == b"" and result.stderr
    json_error(zcraq("client", "-c", endpoint, "-t", "5", *args, "--json"), 2, "usage")
    json_error(zcraq("client", "--json", "-c", endpoint, "-t", "5", *args), 2, "usage")
    assert time.monotonic() - started < 20


def test_a_config_file_with_a_bad_key_is_exit_2(tmp_path):
    config = tmp_path / "client.toml"
    config.write_text(f'[client]\ncoordinator = "{unused_endpoint()}"\ntimeout = 3\n')
    result = zcraq("client", "--config", str(config), "read", "k")
    assert_exit(result, 2)
    assert str(config).encode() in result.stderr and b"client.timeout" in result.stderr


# ----------------------------------------------------------------------------------- exit code 3


@pytest.mark.parametrize("command", [("write", "k", "v"), ("write", "k", "-"), ("read", "k"), ("delete", "k"),
                                     ("status",), ("health",)])
def test_no_coordinator_is_exit_3_within_the_timeout(command):
    endpoint = unused_endpoint()
    started = time.monotonic()
    result = zcraq("client", "-c", endpoint, "-t", "1", *command, stdin=b"v")
    assert_exit(result, 3)
    assert result.stdout == b"" and result.stderr.startswith(b"error: "), result.stderr
    data = json_out(zcraq("client", *command, "-c", endpoint, "-t", "1", "--json", stdin=b"v"), 3)
    assert data["error"] in ("unavailable", "timeout"), data
    assert time.monotonic() - started < 2 * (1 + 10), "each took about its --timeout of 1 s"


def test_a_paused_node_health_says_which_and_exits_3_status_still_exits_0(make_cluster):
    # A long lease: the coordinator keeps the frozen node in the chain for the whole test.
    cluster = make_cluster(3, lease_ms=60_000).start_all()
    c = ("client", "-c", cluster.coordinator_endpoint, "-t", "1")
    assert_exit(zcraq(*c, "write", "k", "v"), 0)
    assert_exit(result := zcraq(*c, "health"), 0)
    assert result.stdout == b"healthy: node1, node2, node3 serving at epoch %d\n" % topology_epoch(cluster)
    cluster.pause("node3")
    try:
        started = time.monotonic()
        result = zcraq(*c, "health")
        assert time.monotonic() - started < 10, "the nodes are asked at once, each wait bounded by --timeout"
        assert_exit(result, 3)
        assert result.stdout.decode().splitlines() == [
            f"node3 ({cluster.service('node3')}): unreachable: status: no answer from {cluster.service('node3')}"]
        health = json_out(zcraq(*c, "health", "--json"), 3)
        assert health["healthy"] is False and len(health["problems"]) == 1 and "node3" in health["problems"][0]
        assert [(n["id"], n["serving"], n["problem"] is None) for n in health["nodes"]] == [
            ("node1", True, True), ("node2", True, True), ("node3", False, False)]
        assert_exit(zcraq(*c, "-n", "node1", "health"), 0)  # one node's health
        assert_exit(zcraq(*c, "health", "-n", "node3"), 3)

        result = zcraq(*c, "status")
        assert_exit(result, 0)
        rows = table_rows(result.stdout)
        assert rows["node3"][2:4] == ["-", "unreachable"] and rows["node1"][3] == "yes", rows
        assert f"node3: status: no answer from {cluster.service('node3')}" in result.stdout.decode()
        status = json_out(zcraq(*c, "status", "--json"), 0)
        node3 = status["nodes"][2]
        assert node3["reachable"] is False and node3["counters"] is None and node3["error"]["error"] == "timeout"

        assert json_error(zcraq(*c, "-n", "node3", "--json", "read", "k"), 3, "timeout")
    finally:
        cluster.resume("node3")
    wait_for(lambda: zcraq(*c, "health").returncode == 0, 30, "health to be 0 again")


def test_a_killed_node_fails_health(make_cluster):
    cluster = make_cluster(3, lease_ms=60_000).start_all()
    c = ("client", "-c", cluster.coordinator_endpoint, "-t", "1")
    cluster.kill("node2")
    result = zcraq(*c, "health")
    assert_exit(result, 3)
    assert result.stdout.decode().startswith(f"node2 ({cluster.service('node2')}): unreachable: ")
    assert json_out(zcraq(*c, "--json", "health"), 3)["healthy"] is False


def test_a_chain_without_members_is_not_healthy(make_cluster):
    cluster = make_cluster(1)
    cluster.start(COORDINATOR)
    wait_for(lambda: cluster.members() == [], 30, "the coordinator to answer")
    c = ("client", "-c", cluster.coordinator_endpoint, "-t", "2")
    result = zcraq(*c, "health")
    assert_exit(result, 3)
    assert result.stdout.startswith(b"the chain has no members at epoch ")
    assert json_out(zcraq(*c, "health", "--json"), 3) == {
        "healthy": False, "epoch": 0, "problems": ["the chain has no members at epoch 0"], "nodes": []}
    result = zcraq(*c, "status")
    assert_exit(result, 0)
    assert b"(the chain is empty at epoch 0)" in result.stdout
    assert_exit(zcraq(*c, "write", "k", "v"), 3)  # nothing to write to: nothing applied


@pytest.mark.parametrize("json_flag", [(), ("--json",)], ids=["text", "json"])
def test_ctrl_c_is_exit_130(json_flag):
    """Interrupted while it waits for a coordinator that accepted the connection and never
    answers (a plain TCP listener): the wait is certain to have begun once it accepted."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(20)
        endpoint = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        # SIGINT as a terminal delivers it: a test run started in the background (a shell's "&")
        # leaves its children ignoring it, and Python then never raises KeyboardInterrupt.
        with subprocess.Popen([*ZCRAQ, "client", "-c", endpoint, "-t", "60", "read", "k", *json_flag],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as process:
            try:
                connection, _address = listener.accept()
                # Kept open, never answering: closed at once, it would race the signal as a refused
                # handshake (exit 6).
                with connection:
                    process.send_signal(signal.SIGINT)
                    stdout, stderr = process.communicate(timeout=20)
            finally:
                process.kill()
    assert process.returncode == 130, (stdout, stderr)
    if json_flag:
        assert json.loads(stdout) == {"error": "interrupted", "message": "interrupted"} and stderr == b""
    else:
        assert stdout == b"" and stderr == b"error: interrupted\n"


# ----------------------------------------------------------------------------------- exit code 4


def test_a_write_the_head_cannot_commit_is_exit_4(make_cluster):
    """The tail is frozen: the head takes the write, forwards it and never hears of its commit;
    after 10 s (its write timeout) it answers unknown_outcome. A client that merely loses the
    head's answer also ends in 4, but a fresh CLI process cannot get there: its connection to a
    frozen head never comes up, so nothing was sent (exit 3; see test_client_outcomes.py)."""
    cluster = make_cluster(2, lease_ms=60_000).start_all()
    c = ("client", "-c", cluster.coordinator_endpoint, "-t", "30")
    assert_exit(zcraq(*c, "write", "k", "v1"), 0)
    cluster.pause("node2")
    try:
        result = zcraq(*c, "write", "k", "v2", timeout=60)
        assert_exit(result, 4)
        assert b"may still commit" in result.stderr, result.stderr
        json_error(zcraq(*c, "--json", "delete", "k", timeout=60), 4, "unknown_outcome")
    finally:
        cluster.resume("node2")
    # Both may yet commit: they did here, once the tail woke up.
    wait_for(lambda: zcraq(*c, "read", "k").returncode == 1, 30, "the deletion to commit")


def test_the_exit_code_of_every_error_class():
    """The mapping the CLI applies, for classes no cluster above produced (forbidden, internal)."""
    expected = {KeyNotFound: 1, Timeout: 3, Unavailable: 3, WriteOutcomeUnknown: 4, BadRequest: 5, TooLarge: 5,
                Forbidden: 5, AuthenticationError: 6, ZcraqError: 7, ConditionFailed: 8}
    for code, cls in ERROR_CODES.items():
        error = cls(code)
        assert exit_codes.exit_code_for(error) == expected[cls], code
        assert exit_codes.error_code_for(error) == cls.code
    assert exit_codes.exit_code_for(click.UsageError("x")) == 2
    assert exit_codes.exit_code_for(ConfigError("f.toml", "client.coordinator", "x")) == 2
    assert exit_codes.exit_code_for(RuntimeError("x")) == 7
    assert exit_codes.error_code_for(RuntimeError("x")) == "internal"
    assert exit_codes.exit_code_for(KeyboardInterrupt()) == 130


# ----------------------------------------------------------------------------------- exit code 6


def test_an_unknown_key_or_no_key_on_a_secured_cluster_is_exit_6(make_cluster, tmp_path):
    cluster = make_cluster(3, secure=True).start_all()
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    zmq.auth.create_certificates(str(stranger), "stranger")
    keys = Path(cluster.layout.keys)  # type: ignore[attr-defined]
    config = tmp_path / "stranger.toml"
    config.write_text(f'[client]\ncoordinator = "{cluster.coordinator_endpoint}"\n[security]\n'
                      f'certificate = "{stranger / "stranger.key_secret"}"\n'
                      f'coordinator_key = "{keys / "coordinator.key"}"\n')
    started = time.monotonic()
    for command in (("write", "k", "v"), ("read", "k"), ("delete", "k"), ("status",), ("health",)):
        result = zcraq("client", "--config", str(config), "-t", "10", *command)
        assert_exit(result, 6)
        assert b"refused the connection" in result.stderr, result.stderr
        assert "allow-list" in json_error(zcraq("client", *command, "--config", str(config), "--json"), 6,
                                          "unauthenticated")
    result = zcraq("client", "-c", cluster.coordinator_endpoint, "-t", "10", "read", "k")  # no keys at all
    assert_exit(result, 6)
    assert time.monotonic() - started < 60, "refused at once, not after each timeout of 10 s"
    # The cluster's own client config works, before or after the subcommand.
    own = str(cluster.layout.client)
    assert_exit(zcraq("client", "--config", own, "write", "k", "v"), 0)
    assert json_out(zcraq("client", "read", "k", "--config", own, "--json"), 0)["value"] == "v"
    assert json_out(zcraq("client", "health", "--config", own, "--json"), 0)["healthy"] is True


# ------------------------------------------------------------------------------------------ options


def test_options_before_or_after_the_subcommand_and_the_subcommands_win(make_cluster, tmp_path):
    cluster = make_cluster(3, lease_ms=60_000).start_all()  # a frozen node stays in the chain
    endpoint = cluster.coordinator_endpoint
    assert_exit(zcraq("client", "-c", endpoint, "write", "k", "v"), 0)
    assert_exit(zcraq("client", "write", "k2", "v2", "--coordinator", endpoint), 0)
    node3 = cluster.service("node3")
    for args in (("client", "-c", endpoint, "-n", "node2", "-t", "3", "--json", "read", "k"),
                 ("client", "read", "k", "-c", endpoint, "-n", "node2", "-t", "3", "--json"),
                 ("client", "--json", "-n", node3, "read", "-c", endpoint, "k", "--timeout", "3"),
                 ("client", "-n", "no-such-node", "-c", unused_endpoint(), "read", "k", "-n", "node1",
                  "-c", endpoint),  # the subcommand's values win
                 ):
        result = zcraq(*args)
        assert_exit(result, 0)
        assert result.stdout in (b"v\n", b'{"key": "k", "version": 1, "value": "v", "value_base64": "dg=="}\n'), args

    # -n reaches the node named: reads from a frozen node fail, from the others not.
    config = tmp_path / "client.toml"
    config.write_text(f'[client]\ncoordinator = "{endpoint}"\ntimeout_ms = 1000\n')
    assert_exit(zcraq("client", "--config", str(config), "read", "k"), 0)
    assert_exit(zcraq("client", "read", "k", "--config", str(config)), 0)
    cluster.pause("node2")
    try:
        assert_exit(zcraq("client", "--config", str(config), "-n", "node2", "read", "k"), 3)
        assert_exit(zcraq("client", "read", "k", "--config", str(config), "-n", "node2"), 3)
        assert_exit(zcraq("client", "-n", "node2", "--config", str(config), "read", "k", "-n", "node1"), 0)
        # -t after the subcommand bounds the wait as -t before it does.
        started = time.monotonic()
        assert_exit(zcraq("client", "-c", endpoint, "-n", "node2", "-t", "60", "read", "k", "-t", "1"), 3)
        assert time.monotonic() - started < 15
    finally:
        cluster.resume("node2")
    # -n on status and health: that node only, before or after.
    for args in (("-n", "node2", "status", "--json"), ("status", "--json", "-n", cluster.service("node2"))):
        status = json_out(zcraq("client", "-c", endpoint, *args), 0)
        assert [n["id"] for n in status["nodes"]] == ["node2"]
    assert_exit(zcraq("client", "-c", endpoint, "health", "-n", "no-such-node"), 3)
    # The coordinator from the environment, as before.
    assert_exit(zcraq("client", "read", "k", env={"ZCRAQ_COORDINATOR": endpoint}), 0)


# --------------------------------------------------------------------------------- delete, status


def test_delete_says_whether_the_key_existed(make_cluster):
    cluster = make_cluster(1).start_all()
    c = ("client", "-c", cluster.coordinator_endpoint)
    assert_exit(zcraq(*c, "write", "k", "v"), 0)
    result = zcraq(*c, "delete", "k")
    assert_exit(result, 0)
    assert result.stdout == b"ok version 2 (deleted)\n"
    result = zcraq(*c, "delete", "k")
    assert_exit(result, 0)
    assert result.stdout == b"ok version 3 (did not exist)\n"
    result = zcraq(*c, "delete", "never")
    assert_exit(result, 0)
    assert result.stdout == b"ok version 1 (did not exist)\n"
    assert json_out(zcraq(*c, "write", "k", "again", "--json"), 0) == {"key": "k", "version": 4}
    assert json_out(zcraq(*c, "delete", "k", "--json"), 0) == {"key": "k", "version": 5, "existed": True}


STATUS_HEADER = ["POS", "NODE", "ROLE", "SERVING", "LEASE", "CAUGHT-UP", "EPOCH", "SENT", "READS", "WRITES",
                 "COMMITS", "SERVICE"]


def table_rows(stdout: bytes) -> dict[str, list[str]]:
    """The status table's rows by node id (the header checked)."""
    lines = stdout.decode().splitlines()
    assert lines[0].split() == STATUS_HEADER, lines
    rows = {}
    for line in lines[1:]:
        cells = line.split()
        if len(cells) != len(STATUS_HEADER):
            break  # the notes below the table
        rows[cells[1]] = cells
    return rows


def topology_epoch(cluster: Any) -> int:
    with cluster.client() as zclient:
        return zclient.topology().epoch


def test_status_shows_each_nodes_own_figures(make_cluster):
    cluster = make_cluster(3).start_all()
    c = ("client", "-c", cluster.coordinator_endpoint)
    for index in range(3):
        assert_exit(zcraq(*c, "write", f"k{index}", "v"), 0)
    for _ in range(2):
        assert_exit(zcraq(*c, "-n", "node2", "read", "k0"), 0)
    epoch = topology_epoch(cluster)

    status = json_out(zcraq(*c, "status", "--json"), 0)
    assert set(status) == {"coordinator", "epoch", "nodes"} and status["epoch"] == epoch
    assert status["coordinator"]["endpoint"] == cluster.coordinator_endpoint
    assert status["coordinator"]["lease_ms"] == 2000 and "forwarded_writes" in status["coordinator"]["counters"]
    nodes = status["nodes"]
    assert [(n["position"], n["id"], n["role"], n["listed_as"]) for n in nodes] == [
        (0, "node1", "head", "member"), (1, "node2", "middle", "member"), (2, "node3", "tail", "member")]
    for node_id, node in zip(cluster.node_ids, nodes):
        assert set(node) == {"position", "id", "service", "listed_as", "reachable", "role", "serving", "caught_up",
                             "epoch", "lease_left_ms", "sent", "counters", "error"}
        assert node["service"] == cluster.service(node_id)
        assert node["reachable"] and node["serving"] and node["caught_up"] and node["error"] is None
        assert node["epoch"] == epoch and node["sent"] == 0
        assert 0 < node["lease_left_ms"] <= 2000
        own = cluster.node_status(node_id)["counters"]  # the node asked directly
        assert set(node["counters"]) == set(own) and node["counters"]["commits"] >= 3
        assert node["counters"]["writes"] == (3 if node_id == "node1" else 0)  # only the head takes writes
        assert node["counters"]["reads"] == (2 if node_id == "node2" else 0)

    result = zcraq(*c, "status")
    assert_exit(result, 0)
    rows = table_rows(result.stdout)
    assert list(rows) == ["node1", "node2", "node3"]
    for node in nodes:
        row = rows[node["id"]]
        assert row[0] == str(node["position"]) and row[2] == node["role"]
        assert row[3] == "yes" and row[5] == "yes" and row[6] == str(epoch) and row[7] == "0"
        assert re.fullmatch(r"\d+ms|\d+\.\ds", row[4]), row[4]
        assert row[8:11] == [str(node["counters"][name]) for name in ("reads", "writes", "commits")]
        assert row[11] == node["service"]
    assert result.stdout.decode().splitlines()[-1] == f"coordinator {cluster.coordinator_endpoint}: epoch {epoch}, " \
                                                      "lease 2000ms"


def test_the_report_of_a_learner_and_of_a_node_not_serving():
    """Rows a running chain shows only for moments (a learner catching up, a member without a
    lease), from a report built by hand."""
    def member(node_id: str) -> Member:
        return Member(node_id, f"tcp://127.0.0.1:1{node_id[-1]}", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3")

    def status(role: str, serving: bool) -> dict[str, Any]:
        return {"node": role, "epoch": 7, "role": role, "serving": serving, "caught_up": serving, "sent": 2,
                "lease_left_ms": 0 if not serving else 1500, "counters": {"reads": 1, "writes": 2, "commits": 3,
                                                                          "resends": 4, "resyncs": 0}}

    head, learner = member("node1"), member("node2")
    report = ChainReport("tcp://127.0.0.1:7000", Topology(7, (head,), learner),
                         (NodeReport(head, 0, status("head", False), None),
                          NodeReport(learner, None, status("learner", False), None)), None)
    lines = report.status_lines()
    assert lines[0].split() == STATUS_HEADER
    assert lines[1].split() == ["0", "node1", "head", "no", "0ms", "no", "7", "2", "1", "2", "3", head.service]
    assert lines[2].split() == ["-", "node2", "learner", "no", "0ms", "no", "7", "2", "1", "2", "3", learner.service]
    assert "node1 counters: resends=4" in lines and lines[-1] == "coordinator tcp://127.0.0.1:7000: epoch 7"
    # Health judges the member only, unless the learner is the one node asked about.
    assert report.problems() == [f"node1 ({head.service}): not serving (role head, epoch 7, lease left 0ms)"]
    assert report.health_json()["nodes"] == [{"position": 0, "id": "node1", "service": head.service,
                                              "serving": False, "problem": report.problems()[0].split(": ", 1)[1]}]
    alone = ChainReport("tcp://127.0.0.1:7000", report.topology, report.nodes[1:], None)
    assert alone.problems() == [f"node2 ({learner.service}): not serving: the learner is still catching up"]


# ----------------------------------------------------------------------------------- help, completion


def test_client_help_lists_the_exit_codes_and_every_option_has_help():
    text = zcraq("client", "--help").stdout.decode()
    for code, meaning in exit_codes.TABLE:
        assert re.search(rf"^\s+{code}  {re.escape(meaning[:20])}", text, re.MULTILINE), (code, text)
    commands = client_group.commands
    assert set(commands) == {"write", "read", "delete", "status", "health"}
    for name, command in commands.items():
        assert command.help, name
        result = zcraq("client", name, "--help")
        assert_exit(result, 0)
        for option in ("--config", "--coordinator", "--node", "--timeout", "--json"):
            assert option.encode() in result.stdout, (name, option)
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, (name, param.name)
    for param in client_group.params:
        assert isinstance(param, click.Option) and param.help, param.name


def test_readme_shows_the_exit_code_table():
    readme = README.read_text()
    for code, meaning in exit_codes.TABLE:
        assert f"| {code} | {meaning} |" in readme, (code, meaning)


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="shell completion is for the installed `zcraq` command")
@pytest.mark.parametrize("shell, marker", [("bash", b"complete -o nosort -F _zcraq_completion zcraq"),
                                           ("zsh", b"#compdef zcraq"), ("fish", b"complete --no-files --command zcraq")])
def test_shell_completion_prints_a_script(shell, marker):
    result = zcraq(env={"_ZCRAQ_COMPLETE": f"{shell}_source"})
    assert_exit(result, 0)
    assert marker in result.stdout, result.stdout


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="shell completion is for the installed `zcraq` command")
@pytest.mark.parametrize("words, expected", [("zcraq client st", "plain,status"),
                                             ("zcraq client read k --r", "plain,--raw"),
                                             ("zcraq client write k v --li", "plain,--literal")])
def test_bash_completion_completes_commands_and_options(words, expected):
    result = zcraq(env={"_ZCRAQ_COMPLETE": "bash_complete", "COMP_WORDS": words,
                        "COMP_CWORD": str(len(words.split()) - 1)})
    assert_exit(result, 0)
    assert result.stdout.decode().split() == [expected]
