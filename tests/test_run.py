"""``zcraq run`` as a local cluster one can lean on: started and stopped again and again with its data
intact, a killed child named and started again while the rest keeps serving, and the whole thing
surviving a ``kill -9`` of ``zcraq run`` itself.

Exit codes (zcraq/local.py): 0 stopped by Ctrl-C or SIGTERM, 1 a child could not be kept running,
2 the config directory is unusable."""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import pytest

from cluster import wait_for
from commands import ForegroundRun, assert_exit, pid_running, zcraq
from zcraq.client import ZClient
from zcraq.cluster import Cluster
from zcraq.errors import ZcraqError
from zcraq.layout import Generated, Layout, free_ports
from zcraq.supervise import GiveUp, LeaveStopped, Restart, RestartPolicy, Restarts

pytestmark = pytest.mark.timeout(300)

NODES = ("node1", "node2", "node3")
READY = "zcraq: chain ready: "


def local_configs(root: Path) -> Path:
    layout = Generated(root, 3, coordinator={"lease_ms": 2000},
                       node={"heartbeat_interval_ms": 200, "durability": "async"})
    return layout.coordinator.parent


def chain_of(line: str) -> list[str]:
    return line.split(READY, 1)[1].strip().split(" -> ")


def check_data(endpoint: str, expected: dict[str, bytes]) -> None:
    """Every key reads back, from every node, as last written."""
    with ZClient(endpoint, timeout=10) as client:
        for node in NODES:
            for key, value in expected.items():
                assert client.read(key, node) == value, (node, key)


def test_run_with_a_bad_config_dir(tmp_path):
    missing = tmp_path / "nothing-here"
    result = zcraq("run", "--config-dir", str(missing))
    assert_exit(result, 2)
    assert str(missing / "coordinator.toml") in result.stderr and "file not found" in result.stderr
    configs = local_configs(tmp_path / "c")
    for node in NODES:
        (configs / f"{node}.toml").unlink()
    result = zcraq("run", "--config-dir", str(configs))
    assert_exit(result, 2)
    assert "no node*.toml" in result.stderr


def test_ten_stops_and_starts_in_a_row_keep_every_write(tmp_path):
    configs = local_configs(tmp_path)
    endpoint = Cluster(Layout.directory(configs)).coordinator_endpoint
    written: dict[str, bytes] = {}
    for round_ in range(10):
        with ForegroundRun(configs) as run:
            # Every node is started at once; the chain is ready when all of them serve, in
            # whatever order they joined.
            assert sorted(chain_of(run.wait_for_line(READY, 90))) == list(NODES), run.output()
            check_data(endpoint, written)
            with ZClient(endpoint, timeout=10) as client:
                written[f"round{round_}"] = value = f"value {round_}".encode()
                client.write(f"round{round_}", value)
                written["counter"] = str(round_).encode()
                client.write("counter", written["counter"])
            assert run.ctrl_c() == 0, run.output()
        output = run.output()
        # Only `zcraq run` got the Ctrl-C; it stopped every child with SIGTERM, the nodes first,
        # each leaving while the coordinator was still there.
        assert "received SIGINT" not in output and output.count("received SIGTERM") == 4, output
        assert output.count("removed (left)") == 2 and "is the last member: kept" in output, output
        assert "exited with" not in output, output
    with ForegroundRun(configs) as run:
        run.wait_for_line(READY, 90)
        check_data(endpoint, written)
        assert run.ctrl_c() == 0, run.output()


def test_a_killed_child_is_named_and_started_again_while_the_chain_serves(tmp_path):
    configs = local_configs(tmp_path)
    endpoint = Cluster(Layout.directory(configs)).coordinator_endpoint
    written = {"before": b"kill"}
    with ForegroundRun(configs) as run:
        run.wait_for_line(READY, 90)
        with ZClient(endpoint, timeout=10) as client:
            client.write("before", b"kill")
        for index, name in enumerate(("node2", "node1", "node3", "coordinator")):
            pid = pid_running(configs / f"{name}.toml")
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            line = run.wait_for_line(f"zcraq: {name} (pid {pid}) exited with signal SIGKILL; starting it again in",
                                     30)
            assert re.search(r"again in \d+(\.\d+)? s$", line.strip()), line
            # The rest kept running, the chain heals, and the killed process is back in it.
            run.wait_for_line(f"zcraq: starting {name} again", 60, times=1)
            if name != "coordinator":
                run.wait_for_line("zcraq: chain whole again: ", 90, times=index + 1)
            new_pid = wait_for(lambda: pid_running(configs / f"{name}.toml"), 30, f"{name} to run again")
            assert new_pid != pid
            with ZClient(endpoint, timeout=15) as client:
                key = f"after-{name}"
                written[key] = name.encode()
                client.write(key, name.encode())
            wait_for(lambda: _serving_everywhere(endpoint), 60, "every node to serve")
            check_data(endpoint, written)
        assert run.process.poll() is None, run.output()
        assert run.ctrl_c() == 0, run.output()


def _serving_everywhere(endpoint: str) -> bool:
    try:
        with ZClient(endpoint, timeout=2) as client:
            topology = client.topology()
            return (sorted(m.id for m in topology.members) == list(NODES) and topology.learner is None
                    and all(client.status(m.service).get("serving") for m in topology.members))
    except ZcraqError:
        return False


def test_a_partitioned_local_cluster_reports_its_table_and_heals_a_killed_node(tmp_path):
    layout = Generated(tmp_path, 3, coordinator={"lease_ms": 2000}, cluster={"partitions": 4},
                       node={"heartbeat_interval_ms": 200, "durability": "async"})
    configs = layout.coordinator.parent
    endpoint = layout.coordinator_endpoint
    with ForegroundRun(configs) as run:
        run.wait_for_line("zcraq: cluster ready: 4 partitions of 3 replicas over node1, node2, node3", 90)
        assert re.search(r"zcraq: table \d+: node\d \dh/\dt/4r", run.output()), run.output()
        with ZClient(endpoint, timeout=10) as client:
            for i in range(20):
                client.write(f"k{i}", f"v{i}".encode())
        pid = pid_running(configs / "node2.toml")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        run.wait_for_line("zcraq: starting node2 again", 60)
        run.wait_for_line("zcraq: cluster whole again: 4 partitions", 90)
        with ZClient(endpoint, timeout=10) as client:
            assert [client.read(f"k{i}") for i in range(20)] == [f"v{i}".encode() for i in range(20)]
        assert run.ctrl_c() == 0, run.output()
    assert "Traceback" not in run.output(), run.output()


def test_kill_9_of_zcraq_run_takes_its_children_and_a_new_run_has_the_data(tmp_path):
    configs = local_configs(tmp_path)
    endpoint = Cluster(Layout.directory(configs)).coordinator_endpoint
    with ForegroundRun(configs) as run:
        run.wait_for_line(READY, 90)
        with ZClient(endpoint, timeout=10) as client:
            for i in range(20):
                client.write(f"k{i}", f"v{i}".encode())
        pids = [pid_running(configs / f"{name}.toml") for name in ("coordinator", *NODES)]
        run.process.kill()
        run.wait()
    # The children die with it (nothing is left holding the ports or the data directories).
    wait_for(lambda: all(pid_running(configs / f"{name}.toml") is None for name in ("coordinator", *NODES)),
             30, "the children to die with zcraq run")
    assert all(pids)
    with ForegroundRun(configs) as run:
        run.wait_for_line(READY, 90)
        check_data(endpoint, {f"k{i}": f"v{i}".encode() for i in range(20)})
        assert run.ctrl_c() == 0, run.output()


def test_a_child_whose_config_cannot_work_stops_the_run_with_exit_1(tmp_path):
    configs = local_configs(tmp_path)
    node2 = Cluster(Layout.directory(configs)).node_configs["node2"]
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((node2.bind_host, node2.service_port))
        taken.listen()
        with ForegroundRun(configs) as run:
            assert run.wait(90) == 1, run.output()
    output = run.output()
    assert re.search(r"zcraq: node2 \(pid \d+\) exited with code 2; its config cannot be used", output), output
    assert "cannot keep node2 running; stopping the rest" in output and "in use" in output, output
    assert "Traceback" not in output, output


def test_sigterm_stops_the_run_like_ctrl_c(tmp_path):
    configs = local_configs(tmp_path)
    with ForegroundRun(configs) as run:
        run.wait_for_line(READY, 90)
        run.process.send_signal(signal.SIGTERM)
        assert run.wait() == 0, run.output()
    assert run.output().count("received SIGTERM") == 4, run.output()


def _free_pairs(count: int) -> list[int]:
    """``count`` ports P, each with P + 1 free too, on 127.0.0.1 (an etcd member's client and peer)."""
    found: list[int] = []
    while len(found) < count:
        port = free_ports(1)[0]
        if port + 1 < 65536 and port not in found and port + 1 not in found and _free(port + 1):
            found.append(port)
    return found


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_coordinators_on_a_local_etcd_are_started_and_a_killed_leader_is_replaced_and_started_again(tmp_path):
    """As ``zcraq run --config-dir config/ha``: a local etcd from etcd.toml, three coordinators on it,
    the nodes; the leading coordinator is killed, another leads, writes go on, the killed one is
    started again."""
    engine = [f"http://127.0.0.1:{port}" for port in _free_pairs(3)]
    layout = Generated(tmp_path, 3, coordinator={"lease_ms": 2000}, cluster={"partitions": 4}, engine=engine,
                       node={"heartbeat_interval_ms": 200, "durability": "async"})
    configs = layout.coordinator.parent
    (configs / "etcd.toml").write_text(f'[etcd]\ndata_dir = "{tmp_path / "etcd"}"\n')
    client_config = configs / "client.toml"
    with ForegroundRun(configs) as run:
        run.wait_for_line("zcraq: cluster ready: 4 partitions of 3 replicas over node1, node2, node3", 120)
        assert f"--config {client_config}" in run.output()
        with ZClient(config=client_config, timeout=10) as client:
            client.write("before", b"kill")
            leader = client.coordinator
        name = next(n for n, e in zip(("coordinator1", "coordinator2", "coordinator3"), layout.coordinator_endpoints)
                    if e == leader)
        pid = pid_running(configs / f"{name}.toml")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        run.wait_for_line(f"zcraq: {name} (pid {pid}) exited with signal SIGKILL; starting it again in", 30)
        with ZClient(config=client_config, timeout=15) as client:
            client.write("after", b"kill")
            wait_for(lambda: client.partitions() and client.coordinator, 30, "a coordinator that leads")
            assert client.read("before") == b"kill" and client.read("after") == b"kill"
        run.wait_for_line(f"zcraq: starting {name} again", 30)
        wait_for(lambda: pid_running(configs / f"{name}.toml"), 30, f"{name} to run again")
        assert run.ctrl_c() == 0, run.output()
    assert "Traceback" not in run.output(), run.output()
    assert _etcd_processes(tmp_path) == [], "an etcd member was left running"


def _etcd_processes(root: Path) -> list[str]:
    """The command lines of running processes whose data is under ``root`` (none once stopped)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root / "etcd") in command and "--data-dir" in command:
            found.append(command)
    return found


# ------------------------------------------------------------------------------ restart policy


def test_restart_policy_backs_off_and_gives_up_like_systemd():
    restarts = Restarts(RestartPolicy(first_delay=1, max_delay=8, failed_start_within=10, failed_starts_limit=5))
    restarts.started("n", 0)
    # Killed long after its start: back in a second.
    assert restarts.exited("n", -9, 100) == Restart(101, 1)
    assert restarts.due(100.5) == [] and restarts.due(101) == ["n"] and restarts.due(102) == []
    restarts.started("n", 101)
    # Failed starts double the delay, up to the maximum, and the fifth in a row gives up.
    now = 101.0
    delays = []
    for _ in range(4):
        decision = restarts.exited("n", 1, now + 1)
        assert isinstance(decision, Restart)
        delays.append(decision.delay)
        now = decision.at
        restarts.started("n", now)
    assert delays == [2, 4, 8, 8]
    assert isinstance(restarts.exited("n", 1, now + 1), GiveUp)
    # A quick exit after the child was seen doing its job is no failed start.
    restarts.started("u", 0)
    restarts.up("u")
    assert restarts.exited("u", -9, 1) == Restart(2, 1)
    # A clean exit is someone's intent; exit code 2 is a config no restart can fix.
    assert isinstance(restarts.exited("m", 0, 5), LeaveStopped)
    assert isinstance(restarts.exited("m", 2, 5), GiveUp)
    assert restarts.due(10_000) == ["u"]  # m is not due: it is not restarted
