"""The client's config file (``zcraq client --config FILE``, ``ZClient(config=FILE)``): which
coordinator to talk to, how long a call may take, and the CURVE keys of a secured cluster.

    [client]
    coordinator = "tcp://127.0.0.1:7500"   # required
    timeout_ms = 5000                      # optional

    [security]                             # optional: the cluster's [security] is on
    certificate = "keys/client.key_secret" # this client's key pair (zcraq keygen)
    coordinator_key = "keys/coordinator.key"

Node keys are not configured: the topology, fetched from the coordinator over an authenticated
connection, names each member's key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zcraq.config import MAX_MS
from zcraq.endpoints import parse_endpoint
from zcraq.toml_tables import ConfigError, Table, base_dir, check_top_level, read_toml


@dataclass(frozen=True, slots=True)
class ClientConfig:
    path: Path
    coordinator: str
    timeout: float | None  # seconds; None: the caller's default
    certificate: Path | None
    coordinator_key: Path | None


def load_client_config(path: str | os.PathLike[str]) -> ClientConfig:
    """Read and validate a client config file; ConfigError names the file and the key."""
    data: dict[str, Any] = read_toml(path)
    where = str(path)
    check_top_level(where, data, "client", "node", ("security",))
    t = Table(where, "client", data["client"], ("coordinator", "timeout_ms"))
    coordinator = t.get_str("coordinator")
    try:
        parse_endpoint(coordinator)
    except ValueError as exc:
        raise t.error("coordinator", str(exc)) from None
    timeout_ms = t.get_int("timeout_ms", 1, MAX_MS, None)
    certificate = coordinator_key = None
    if "security" in data:
        s = Table(where, "security", data["security"], ("certificate", "coordinator_key"))
        certificate = s.get_path("certificate", base_dir(path))
        coordinator_key = s.get_path("coordinator_key", base_dir(path))
    return ClientConfig(Path(path), coordinator, timeout_ms / 1000 if timeout_ms else None, certificate,
                        coordinator_key)


__all__ = ["ClientConfig", "ConfigError", "load_client_config"]
