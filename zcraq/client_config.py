"""The client's config file (``zcraq client --config FILE``, ``ZClient(config=FILE)``): which
coordinator to talk to, how long a call may take, and the CURVE keys of a secured cluster.

    [client]
    coordinator = "tcp://127.0.0.1:7500"   # required; or a list of every coordinator's endpoint
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

from zcraq.config import MAX_MS, coordinator_endpoints, default_coordinator_endpoint
from zcraq.security import Curve, KeyFileError, load_certificate, load_public_key
from zcraq.toml_tables import ConfigError, Table, base_dir, check_top_level, read_toml

DEFAULT_TIMEOUT = 5.0  # seconds a client call may take, retries included


@dataclass(frozen=True, slots=True)
class ClientConfig:
    path: Path
    coordinators: tuple[str, ...]  # every coordinator's request endpoint
    timeout: float | None  # seconds; None: the caller's default
    certificate: Path | None
    coordinator_key: Path | None


def load_client_config(path: str | os.PathLike[str]) -> ClientConfig:
    """Read and validate a client config file; ConfigError names the file and the key."""
    data: dict[str, Any] = read_toml(path)
    where = str(path)
    check_top_level(where, data, "client", "node", ("security",))
    t = Table(where, "client", data["client"], ("coordinator", "timeout_ms"))
    coordinators = coordinator_endpoints(t)
    timeout_ms = t.get_int("timeout_ms", 1, MAX_MS, None)
    certificate = coordinator_key = None
    if "security" in data:
        s = Table(where, "security", data["security"], ("certificate", "coordinator_key"))
        certificate = s.get_path("certificate", base_dir(path))
        coordinator_key = s.get_path("coordinator_key", base_dir(path))
    return ClientConfig(Path(path), coordinators, timeout_ms / 1000 if timeout_ms else None, certificate,
                        coordinator_key)


@dataclass(frozen=True, slots=True)
class ClientSetup:
    """What a client runs with, from its arguments and its config file."""

    coordinator: str  # the one asked first
    timeout: float
    curve: Curve | None
    coordinators: tuple[str, ...]  # every one the client may ask, ``coordinator`` among them


def client_setup(coordinator: str | None, timeout: float | None,
                 config: str | os.PathLike[str] | None) -> ClientSetup:
    """The client's arguments completed from the config file (if any), then from the defaults:
    the coordinator of config/coordinator.toml (or $ZCRAQ_COORDINATOR) and DEFAULT_TIMEOUT.
    Raises ConfigError for a config file or key that cannot be used."""
    settings = load_client_config(config) if config is not None else None
    if coordinator is not None:
        coordinators: tuple[str, ...] = (coordinator,)
    else:
        coordinators = settings.coordinators if settings else (default_coordinator_endpoint(),)
    return ClientSetup(coordinators[0],
                       timeout or (settings.timeout if settings and settings.timeout else DEFAULT_TIMEOUT),
                       client_curve(settings) if settings is not None else None, coordinators)


def client_curve(settings: ClientConfig) -> Curve | None:
    """The CURVE keys a client config names (None without a [security] table)."""
    if settings.certificate is None or settings.coordinator_key is None:
        return None
    try:
        own = load_certificate(settings.certificate)
    except KeyFileError as error:
        raise ConfigError(settings.path, "security.certificate", str(error)) from None
    try:
        coordinator_key = load_public_key(settings.coordinator_key)
    except KeyFileError as error:
        raise ConfigError(settings.path, "security.coordinator_key", str(error)) from None
    return Curve(own, coordinator_key)


__all__ = ["ClientConfig", "ClientSetup", "ConfigError", "DEFAULT_TIMEOUT", "client_curve", "client_setup",
           "load_client_config"]
