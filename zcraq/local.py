"""A local cluster in the foreground: the coordinator and every node of a config directory.

This is what ``make run`` starts: the launcher (zcraq/cluster.py) with the directory's own config
files, the processes writing to this terminal. A directory whose configs have ``[security]``
tables (config/secure/) gets its missing CURVE keys created first (zcraq/provision.py). Each child runs in a session of its own, so a
Ctrl-C reaches only ``zcraq run``, which then stops the nodes (each leaves the chain cleanly) and
then the coordinator; SIGTERM does the same; SIGHUP is passed on to every child (they reread their
allow-lists). A child that dies is named, with its exit code, and the rest are stopped.
"""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path
from types import FrameType

from zcraq.cluster import Cluster, ProcessExited
from zcraq.config import ConfigError, load_coordinator_config, load_node_config
from zcraq.errors import ZcraqError
from zcraq.layout import COORDINATOR, Layout
from zcraq.provision import provision
from zcraq.security import KeyFileError

READY_TIMEOUT_SECONDS = 30.0


def run_local(config_dir: str) -> int:
    directory = Path(config_dir)
    layout = Layout.directory(directory)
    try:
        created = provision(load_coordinator_config(layout.coordinator), [load_node_config(p) for p in layout.nodes],
                            layout.clients, layout.admins)
        cluster = Cluster(layout)
    except (ConfigError, KeyFileError, ValueError) as error:
        print(f"zcraq: {error}", file=sys.stderr)
        return 2
    for secret in created:
        print(f"zcraq: created the CURVE key pair {secret}", flush=True)
    if not cluster.node_ids:
        print(f"zcraq: no node*.toml in {directory}", file=sys.stderr)
        return 2
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    hangups: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, _frame: hangups.append(signum))

    def stop_or_pass_on_hangups() -> bool:
        """True once asked to stop; meanwhile a SIGHUP goes on to every child (reload keys)."""
        while hangups:
            hangups.pop()
            for name in [COORDINATOR, *cluster.node_ids]:
                if cluster.alive(name):
                    cluster.signal(name, signal.SIGHUP)
        return bool(stopping)

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
            cluster.wait(stop_or_pass_on_hangups, math.inf, "a signal to stop", interval=0.2)
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
