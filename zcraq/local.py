"""A local cluster in the foreground: the coordinator and every node of a config directory.

This is what ``make run`` starts. Each process is a child running ``python -m zcraq``; SIGINT or
SIGTERM stops the nodes first (each leaves the chain cleanly), then the coordinator.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from zcraq.config import ConfigError, load_coordinator_config, load_node_config

STOP_GRACE_SECONDS = 10.0
READY_TIMEOUT_SECONDS = 30.0


def _spawn(kind: str, config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "zcraq", kind, "--config", str(config)])


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_members(endpoint: str, node_ids: list[str], children: list[subprocess.Popen[bytes]],
                  stopping: list[bool]) -> bool:
    """Until the chain lists exactly ``node_ids`` (in that order); False if a child died."""
    from zcraq.client import ZClient
    from zcraq.errors import ZcraqError

    with ZClient(endpoint, timeout=1.0) as zclient:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not stopping[0]:
            if any(child.poll() is not None for child in children):
                return False
            try:
                if [m.id for m in zclient.topology().members] == node_ids:
                    return True
            except ZcraqError:
                pass
            time.sleep(0.1)
    return stopping[0]


def run_local(config_dir: str) -> int:
    directory = Path(config_dir)
    node_files = sorted(directory.glob("node*.toml"))
    try:
        coordinator = load_coordinator_config(directory / "coordinator.toml")
        nodes = [load_node_config(path) for path in node_files]
    except ConfigError as error:
        print(f"zcraq: {error}", file=sys.stderr)
        return 2
    if not nodes:
        print(f"zcraq: no node*.toml in {directory}", file=sys.stderr)
        return 2
    stopping = [False]

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stopping[0] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"zcraq: coordinator on {coordinator.endpoint} (topology on {coordinator.publish_endpoint})", flush=True)
    coordinator_process = _spawn("coordinator", coordinator.path)
    children = [coordinator_process]
    node_processes: list[subprocess.Popen[bytes]] = []
    ready = True
    # One at a time, so the chain's order is the order of the files: node1 -> node2 -> node3.
    for index, config in enumerate(nodes):
        print(f"zcraq: {config.id} serves on {config.service_endpoint}, data in {config.data_dir}", flush=True)
        node_processes.append(_spawn("node", config.path))
        children.append(node_processes[-1])
        if not _wait_members(coordinator.endpoint, [n.id for n in nodes[: index + 1]], children, stopping):
            ready = False
            break
    status = 0
    if ready and not stopping[0]:
        print(f"zcraq: chain ready: {' -> '.join(n.id for n in nodes)}", flush=True)
        print("zcraq: try `zcraq client write hello world` and `zcraq client read hello`; "
              "Ctrl-C stops everything", flush=True)
        while not stopping[0]:
            if any(child.poll() is not None for child in children):
                print("zcraq: a process exited unexpectedly; stopping the rest", file=sys.stderr)
                status = 1
                break
            time.sleep(0.2)
    elif not ready:
        print("zcraq: the chain did not come up; stopping", file=sys.stderr)
        status = 1
    print("zcraq: stopping", flush=True)
    _stop(node_processes)
    _stop([coordinator_process])
    return status
