"""A local cluster in the foreground: the coordinator and every node of a config directory.

This is what ``make run`` starts: the launcher (zcraq/cluster.py) with the directory's own config
files, the processes writing to this terminal. Each child runs in a session of its own, so a
Ctrl-C reaches only ``zcraq run``, which then stops the nodes (each leaves the chain cleanly) and
then the coordinator; SIGTERM does the same. A child that dies is named, with its exit code, and
the rest are stopped.
"""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path
from types import FrameType

from zcraq.cluster import Cluster, ProcessExited
from zcraq.config import ConfigError
from zcraq.errors import ZcraqError
from zcraq.layout import COORDINATOR, Layout

READY_TIMEOUT_SECONDS = 30.0


def run_local(config_dir: str) -> int:
    directory = Path(config_dir)
    try:
        cluster = Cluster(Layout.directory(directory))
    except ConfigError as error:
        print(f"zcraq: {error}", file=sys.stderr)
        return 2
    if not cluster.node_ids:
        print(f"zcraq: no node*.toml in {directory}", file=sys.stderr)
        return 2
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    coordinator = cluster.coordinator_config
    status = 0
    try:
        print(f"zcraq: coordinator on {coordinator.endpoint} (topology on {coordinator.publish_endpoint})",
              flush=True)
        cluster.start(COORDINATOR)
        # One at a time, so the chain's order is the order of the files: node1 -> node2 -> node3.
        for node_id, config in cluster.node_configs.items():
            print(f"zcraq: {node_id} serves on {config.service_endpoint}, data in {config.data_dir}", flush=True)
            cluster.start(node_id)
            cluster.wait(lambda: stopping or cluster.serving(node_id), READY_TIMEOUT_SECONDS,
                         f"{node_id} to join the chain and serve")
            if stopping:
                break
        else:
            print(f"zcraq: chain ready: {' -> '.join(cluster.members())}", flush=True)
            print("zcraq: try `zcraq client write hello world` and `zcraq client read hello`; "
                  "Ctrl-C stops everything", flush=True)
            cluster.wait(lambda: stopping, math.inf, "a signal to stop", interval=0.2)
    except ProcessExited as error:
        for found in error.exits:
            print(f"zcraq: {found}; stopping the rest", file=sys.stderr)
        status = 1
    except (TimeoutError, ZcraqError) as error:
        print(f"zcraq: the chain did not come up ({error}); stopping", file=sys.stderr)
        status = 1
    finally:
        print("zcraq: stopping", flush=True)
        cluster.close()
    return status
