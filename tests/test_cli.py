"""The ``zcraq`` command as a user runs it: a separate process, its exit code and its output.

Exit codes (zcraq/cli.py): 0 success, 1 failed, 2 usage or config error; ``zcraq client`` has a
table of its own (zcraq/exit_codes.py), tested in depth by tests/test_cli_client.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from commands import CONSOLE_SCRIPT, ZCRAQ, assert_exit, zcraq
from zcraq.layout import free_ports

pytestmark = pytest.mark.timeout(120)

# ------------------------------------------------------------------------------------------ help

COMMANDS = [
    (),
    ("node",),
    ("coordinator",),
    ("run",),
    ("client",),
    ("client", "write"),
    ("client", "read"),
    ("client", "delete"),
    ("client", "status"),
    ("client", "health"),
    ("verify",),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "zcraq")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_on_every_command(command, flag):
    result = zcraq(*command, flag)
    assert_exit(result, 0)
    usage = result.stdout.splitlines()[0]
    assert usage.startswith("Usage: ") and " ".join(("zcraq", *command)) in usage, result.stdout
    assert result.stderr == ""


def listed_commands(*group: str) -> list[str]:
    """The command names a group's --help lists under "Commands:"."""
    text = zcraq(*group, "--help").stdout
    assert "Commands:\n" in text, text
    section = text.split("Commands:\n", 1)[1]
    return [line.split()[0] for line in section.splitlines() if line.startswith("  ") and line[2:3].strip()]


def test_help_on_every_listed_command():
    """Whatever commands exist (not only the ones named above), --help works on each."""
    top = listed_commands()
    assert {"node", "coordinator", "run", "client", "verify"} <= set(top)
    sub = listed_commands("client")
    assert {"write", "read", "delete", "status", "health"} <= set(sub)
    for command in [(name,) for name in top] + [("client", name) for name in sub]:
        result = zcraq(*command, "--help")
        assert_exit(result, 0)
        assert result.stdout.startswith("Usage: ") and " ".join(command) in result.stdout.splitlines()[0]


def test_help_mentions_options_and_the_console_script_runs():
    assert "--config" in zcraq("node", "--help").stdout
    assert "--config-dir" in zcraq("run", "--help").stdout
    client_help = zcraq("client", "--help").stdout
    for option in ("--coordinator", "--node", "--timeout", "--json", "--config"):
        assert option in client_help
    for command in ("write", "read", "delete", "status", "health"):
        assert command in client_help
    assert "Exit codes:" in client_help
    assert "--mode" in zcraq("client", "read", "--help").stdout
    # The same program through the other entry point.
    other = [sys.executable, "-m", "zcraq"] if ZCRAQ[0] == str(CONSOLE_SCRIPT) else ZCRAQ
    result = subprocess.run([*other, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and ", version " in result.stdout
    version = result.stdout.rsplit(", version ", 1)[1]
    assert zcraq("--version").stdout.endswith(", version " + version)


@pytest.mark.parametrize("args", [
    ("no-such-command",),
    ("node",),  # --config is required
    ("client", "read"),  # KEY is required
    ("client", "write", "k"),  # VALUE is required
    ("client", "-t", "0", "read", "k"),  # timeout below 0.1 s
    ("client", "read", "--mode", "fast", "k"),
    ("verify", "/no/such/history.jsonl"),
])
def test_usage_errors_exit_2(args):
    result = zcraq(*args)
    assert_exit(result, 2)
    assert result.stderr


# -------------------------------------------------------------------------------- config errors


def node_toml(ports: tuple[int, int, int], coordinator_port: int, extra: str = "") -> str:
    service, write, ack = ports
    return (
        "[node]\n"
        'id = "node1"\n'
        f'coordinator = "tcp://127.0.0.1:{coordinator_port}"\n'
        f"service_port = {service}\nwrite_port = {write}\nack_port = {ack}\n"
        'data_dir = "data"\n'
        f"{extra}"
    )


def coordinator_toml(port: int, publish_port: int) -> str:
    return f'[coordinator]\nport = {port}\npublish_port = {publish_port}\nstate_dir = "state"\n'



def assert_config_error(result: subprocess.CompletedProcess[str], path: Path, *fragments: str) -> None:
    assert_exit(result, 2)
    assert str(path) in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_missing_config_file(tmp_path):
    for command in ("node", "coordinator"):
        path = tmp_path / f"{command}-missing.toml"
        assert_config_error(zcraq(command, "--config", str(path)), path, "file not found")


def test_unknown_key_in_node_config(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text(node_toml(tuple(free_ports(3)), free_ports(1)[0], "servce_port = 7\n"))
    assert_config_error(zcraq("node", "--config", str(path)), path, "node.servce_port", "unknown key",
                        "service_port")


def test_unknown_table_and_key_in_coordinator_config(tmp_path):
    path = tmp_path / "coordinator.toml"
    path.write_text(coordinator_toml(*free_ports(2)) + "lease = 5\n")
    assert_config_error(zcraq("coordinator", "--config", str(path)), path, "coordinator.lease", "unknown key")
    path.write_text(coordinator_toml(*free_ports(2)) + "[limit]\nmax_key_bytes = 5\n")
    assert_config_error(zcraq("coordinator", "--config", str(path)), path, "limit", "[limits]")


@pytest.mark.parametrize("value", ["70000", "0", '"abc"', "true"])
def test_bad_port_in_node_config(tmp_path, value):
    path = tmp_path / "node.toml"
    text = node_toml((1, *free_ports(2)), free_ports(1)[0]).replace("service_port = 1\n", f"service_port = {value}\n")
    path.write_text(text)
    assert_config_error(zcraq("node", "--config", str(path)), path, "node.service_port", "from 1 to 65535")


def test_bad_limit_in_node_config(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text(node_toml(tuple(free_ports(3)), free_ports(1)[0]) + "[limits]\nmax_value_bytes = 0\n")
    assert_config_error(zcraq("node", "--config", str(path)), path, "limits.max_value_bytes")


def test_node_port_already_in_use(tmp_path, listener):
    path = tmp_path / "node.toml"
    write, ack, coordinator = free_ports(3)
    path.write_text(node_toml((listener, write, ack), coordinator))
    result = zcraq("node", "--config", str(path), timeout=20)
    assert_config_error(result, path, "node.service_port", f"tcp://127.0.0.1:{listener}", "in use")


def test_node_write_port_already_in_use(tmp_path, listener):
    path = tmp_path / "node.toml"
    service, ack, coordinator = free_ports(3)
    path.write_text(node_toml((service, listener, ack), coordinator))
    result = zcraq("node", "--config", str(path), timeout=20)
    assert_config_error(result, path, "node.write_port", "in use")


def test_coordinator_port_already_in_use(tmp_path, listener):
    path = tmp_path / "coordinator.toml"
    path.write_text(coordinator_toml(listener, free_ports(1)[0]))
    result = zcraq("coordinator", "--config", str(path), timeout=20)
    assert_config_error(result, path, "coordinator.port", "in use")
    path.write_text(coordinator_toml(free_ports(1)[0], listener))
    result = zcraq("coordinator", "--config", str(path), timeout=20)
    assert_config_error(result, path, "coordinator.publish_port", "in use")


# ---------------------------------------------------------------------------------------- verify


def test_verify_exit_codes(tmp_path):
    write = ['{"type":"invoke","process":0,"time":1,"f":"write","key":"k","value":"a"}',
             '{"type":"ok","process":0,"time":2,"f":"write","key":"k","value":"a"}',
             '{"type":"invoke","process":1,"time":3,"f":"read","key":"k"}']
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join([*write, '{"type":"ok","process":1,"time":4,"f":"read","key":"k","value":"a"}']) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*write, '{"type":"ok","process":1,"time":4,"f":"read","key":"k","value":"b"}']) + "\n")
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text('{"type":"nope"}\n')
    result = zcraq("verify", str(good))
    assert_exit(result, 0)
    assert result.stdout.startswith("linearizable")
    result = zcraq("verify", str(bad))
    assert_exit(result, 1)
    assert result.stdout.startswith("NOT linearizable")
    result = zcraq("verify", str(malformed))
    assert_exit(result, 2)
    assert "line 1" in result.stderr


# ----------------------------------------------------------------------------- against a cluster


def test_client_commands_against_a_cluster(make_cluster):
    cluster = make_cluster(3).start_all()
    endpoint = cluster.coordinator_endpoint
    c = ("client", "-c", endpoint)

    result = zcraq(*c, "write", "hello", "world")
    assert_exit(result, 0)
    assert result.stdout == "ok version 1\n"

    result = zcraq(*c, "read", "hello")
    assert_exit(result, 0)
    assert result.stdout == "world\n"

    for node in ("node1", "node2", "node3", cluster.service("node3")):
        result = zcraq(*c, "-n", node, "read", "hello")
        assert_exit(result, 0)
        assert result.stdout == "world\n", node
        result = zcraq(*c, "--node", node, "read", "--mode", "eventual", "hello")
        assert_exit(result, 0)
        assert result.stdout == "world\n", node

    # The coordinator endpoint from the environment.
    result = zcraq("client", "read", "hello", env={"ZCRAQ_COORDINATOR": endpoint})
    assert_exit(result, 0)
    assert result.stdout == "world\n"

    result = zcraq(*c, "read", "missing")
    assert_exit(result, 1)
    assert result.stdout == ""
    assert result.stderr == "error: key 'missing' does not exist\n"

    result = zcraq(*c, "write", "hello", "again")
    assert_exit(result, 0)
    assert result.stdout == "ok version 2\n"
    result = zcraq(*c, "delete", "hello")
    assert_exit(result, 0)
    assert result.stdout == "ok version 3 (deleted)\n"
    for node in ("node1", "node3"):
        result = zcraq(*c, "-n", node, "read", "hello")
        assert_exit(result, 1)
        assert "does not exist" in result.stderr

    with cluster.client() as zclient:
        topology = zclient.topology()
    result = zcraq(*c, "status")
    assert_exit(result, 0)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["POS", "NODE", "ROLE", "SERVING", "LEASE", "CAUGHT-UP", "EPOCH", "SENT", "READS",
                                "WRITES", "COMMITS", "SERVICE"]
    rows = [line.split() for line in lines[1:4]]
    assert [[row[0], row[1], row[2], row[3], row[6], row[11]] for row in rows] == [
        [str(index), member.id, role, "yes", str(topology.epoch), member.service]
        for index, (member, role) in enumerate(zip(topology.members, ("head", "middle", "tail")))
    ]
    assert [row[1] for row in rows] == ["node1", "node2", "node3"]


@pytest.mark.parametrize("command", [("write", "k", "v"), ("read", "k"), ("delete", "k"), ("status",)])
def test_client_fails_within_its_timeout_without_a_coordinator(command):
    (port,) = free_ports(1)
    started = time.monotonic()
    result = zcraq("client", "-c", f"tcp://127.0.0.1:{port}", "-t", "1", *command, timeout=30)
    elapsed = time.monotonic() - started
    assert_exit(result, 3)  # unavailable: nothing was applied
    assert result.stdout == ""
    assert result.stderr.startswith("error: "), result.stderr
    assert elapsed < 1 + 10, f"took {elapsed:.1f}s with --timeout 1"


def test_client_with_an_unusable_coordinator_endpoint_is_a_usage_error():
    started = time.monotonic()
    result = zcraq("client", "-c", "not-an-endpoint", "-t", "1", "read", "k", timeout=10)
    assert_exit(result, 2)
    assert "not-an-endpoint" in result.stderr
    assert time.monotonic() - started < 10
