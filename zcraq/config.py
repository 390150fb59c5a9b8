"""TOML configuration for nodes and the coordinator, validated strictly before anything starts.

A node file has a ``[node]`` table and an optional ``[limits]`` table; a coordinator file has a
``[coordinator]`` table and optional ``[limits]`` and ``[cluster]`` tables (``[cluster]``: the
partitions of a partitioned cluster, fixed when it is created). Unknown tables and keys are errors
(with a "did you mean" hint when one is close), so a typo never silently falls back to a default.

Relative paths (``data_dir``, ``state_dir``) are resolved against the directory that contains the
config file, not the current directory, so a daemon finds the same data however it is started.

Every problem raises ``ConfigError``, whose message names the file and the dotted key, e.g.
``config/node1.toml: node.service_port: expected an integer from 1 to 65535, got "abc"``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zcraq.engine.etcd import EtcdClient
from zcraq.endpoints import (check_bind_host, check_connect_host, format_endpoint, is_loopback, is_unspecified,
                             parse_endpoint, show)
from zcraq.toml_tables import ConfigError, Table, base_dir, check_top_level, read_toml
# One definition of the size limits: the config hands these straight to the wire codec.
from zcraq.wire import Limits

__all__ = [
    "ConfigError",
    "Limits",
    "NodeConfig",
    "SecurityConfig",
    "ClusterConfig",
    "EngineConfig",
    "CoordinatorConfig",
    "load_node_config",
    "load_coordinator_config",
    "node_config_from_dict",
    "coordinator_config_from_dict",
    "default_coordinator_endpoint",
    "parse_endpoint",
    "format_endpoint",
    "DEFAULT_COORDINATOR_ENDPOINT",
]

DEFAULT_COORDINATOR_ENDPOINT = "tcp://127.0.0.1:7000"
COORDINATOR_ENV = "ZCRAQ_COORDINATOR"

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
DURABILITIES = ("sync", "async")

MAX_KEY_BYTES = 65535
MAX_VALUE_BYTES = 64 * 1024 * 1024
MAX_MS = 3_600_000  # an hour: anything longer is a typo, and ZeroMQ timeouts are 32-bit ms
MIN_LEASE_MS = 100
MAX_CATCHUP_PAGE_ITEMS = 100_000
# The store's version index (zcraq/store/version_index.py): about 200 bytes a key, so the largest
# allowed cap is some 20 GB of memory; anything more is a typo.
DEFAULT_INDEX_MAX_KEYS = 1_000_000
MAX_INDEX_MAX_KEYS = 100_000_000
DEFAULT_WATCH_LOG_ENTRIES = 100_000
MAX_WATCH_LOG_ENTRIES = 100_000_000
DEFAULT_WATCH_LOG_MIB = 64
MAX_WATCH_LOG_MIB = 1 << 20
MAX_ZONE_CHARS = 64
MAX_PARTITIONS = 4096
MAX_REPLICATION = 16
MAX_COORDINATORS = 9
MAX_ENGINE_MEMBERS = 9

_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def default_coordinator_endpoint() -> str:
    """The coordinator clients and tools talk to: ``$ZCRAQ_COORDINATOR`` if set, else loopback."""
    return os.environ.get(COORDINATOR_ENV) or DEFAULT_COORDINATOR_ENDPOINT


# ---------------------------------------------------------------------------------------------
# Config objects


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """A ``[security]`` table: CURVE on every socket (zcraq/security.py). Paths are absolute."""

    certificate: Path  # this process's NAME.key_secret
    coordinator_key: Path | None  # the coordinator's public certificate (nodes and clients)
    nodes: Path | None  # allow-lists: directories of public certificates, per role
    clients: Path | None
    admins: Path | None


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A validated node config. Endpoint properties are what other processes connect to;
    ``*_bind_endpoint`` are what this node binds."""

    path: Path
    id: str
    coordinator: str  # the first of ``coordinators``
    bind_host: str
    advertise_host: str
    service_port: int
    write_port: int
    ack_port: int
    data_dir: Path
    durability: str
    heartbeat_interval_ms: int
    request_timeout_ms: int
    catchup_page_items: int
    peer_lease_ms: int
    log_level: str
    log_format: str
    insecure: bool
    limits: Limits
    security: SecurityConfig | None = None
    metrics_port: int = 0  # HTTP /metrics, /healthz and /readyz; 0: none
    index_max_keys: int = DEFAULT_INDEX_MAX_KEYS  # keys the store's version index holds; 0: none
    watch_log_entries: int = DEFAULT_WATCH_LOG_ENTRIES  # committed changes kept for watchers; 0: none
    watch_log_mib: int = DEFAULT_WATCH_LOG_MIB  # and their bytes, at most
    zone: str = ""  # the failure zone: placement in a partitioned cluster spreads replicas over zones
    coordinators: tuple[str, ...] = ()  # every coordinator's request endpoint, ``coordinator`` first

    @property
    def service_endpoint(self) -> str:
        return format_endpoint(self.advertise_host, self.service_port)

    @property
    def write_endpoint(self) -> str:
        return format_endpoint(self.advertise_host, self.write_port)

    @property
    def ack_endpoint(self) -> str:
        return format_endpoint(self.advertise_host, self.ack_port)

    def bind_endpoint(self, port: int) -> str:
        return format_endpoint(self.bind_host, port)

    @property
    def service_bind_endpoint(self) -> str:
        return self.bind_endpoint(self.service_port)

    @property
    def write_bind_endpoint(self) -> str:
        return self.bind_endpoint(self.write_port)

    @property
    def ack_bind_endpoint(self) -> str:
        return self.bind_endpoint(self.ack_port)

    @property
    def uses_ipv6(self) -> bool:
        """True when a configured address is IPv6: ZeroMQ sockets then need ``zmq.IPV6 = 1``."""
        coordinator_host = parse_endpoint(self.coordinator)[0]
        return any(":" in h for h in (self.bind_host, self.advertise_host, coordinator_host))


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """A coordinator's ``[cluster]`` table: partitions of ``replication`` replicas each."""

    partitions: int = 1
    replication: int = 3
    max_moves: int = 2  # learners placement may run at once
    formation_grace_ms: int = 5000  # a new cluster waits this long for ``replication`` nodes

    @property
    def partitioned(self) -> bool:
        return self.partitions > 1


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """A coordinator's ``[engine]`` table: its state and leadership in etcd, shared with the other
    coordinators of the cluster (zcraq/coordinator_engine.py)."""

    endpoints: tuple[str, ...]  # etcd members' client URLs, http://HOST:PORT
    prefix: str = "/zcraq/"  # every key of this cluster starts with it
    lease_seconds: int = 2  # the leadership lease: a dead leader is replaced within about this

    @property
    def leader_key(self) -> bytes:
        return (self.prefix + "leader").encode()

    @property
    def state_key(self) -> bytes:
        return (self.prefix + "state").encode()


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """A validated coordinator config. ``endpoint``/``publish_endpoint`` are advertised;
    ``*_bind_endpoint`` are what the coordinator binds."""

    path: Path
    bind_host: str
    advertise_host: str
    port: int
    publish_port: int
    state_dir: Path
    lease_ms: int
    republish_interval_ms: int
    request_timeout_ms: int
    log_level: str
    log_format: str
    insecure: bool
    limits: Limits
    security: SecurityConfig | None = None
    metrics_port: int = 0  # HTTP /metrics, /healthz and /readyz; 0: none
    cluster: ClusterConfig = ClusterConfig()
    engine: EngineConfig | None = None  # None: the state on disk, one coordinator

    @property
    def endpoint(self) -> str:
        return format_endpoint(self.advertise_host, self.port)

    @property
    def publish_endpoint(self) -> str:
        return format_endpoint(self.advertise_host, self.publish_port)

    def bind_endpoint(self, port: int) -> str:
        return format_endpoint(self.bind_host, port)

    @property
    def request_bind_endpoint(self) -> str:
        return self.bind_endpoint(self.port)

    @property
    def publish_bind_endpoint(self) -> str:
        return self.bind_endpoint(self.publish_port)

    @property
    def uses_ipv6(self) -> bool:
        """True when a configured address is IPv6: ZeroMQ sockets then need ``zmq.IPV6 = 1``."""
        return ":" in self.bind_host or ":" in self.advertise_host


# ---------------------------------------------------------------------------------------------
# Validation helpers


_DEFAULTS = Limits()


def _limits(path: str, data: Mapping[str, Any]) -> Limits:
    table = Table(path, "limits", data.get("limits", {}), ("max_key_bytes", "max_value_bytes"))
    return Limits(
        max_key_bytes=table.get_int("max_key_bytes", 1, MAX_KEY_BYTES, _DEFAULTS.max_key_bytes),
        max_value_bytes=table.get_int("max_value_bytes", 1, MAX_VALUE_BYTES, _DEFAULTS.max_value_bytes),
    )


def _hosts(table: Table, insecure: bool, secured: bool) -> tuple[str, str]:
    """bind_host and advertise_host, with the wildcard and plaintext-exposure rules applied."""
    bind_host = table.get_str("bind_host", "127.0.0.1")
    try:
        check_bind_host(bind_host)
    except ValueError as exc:
        raise table.error("bind_host", str(exc)) from None
    if not is_loopback(bind_host) and not insecure and not secured:
        raise table.error(
            "bind_host",
            f"binding {show(bind_host)} exposes this process beyond the local machine, and without "
            "a [security] table traffic is neither encrypted nor authenticated; bind a loopback "
            f"address, configure [security] (CURVE keys), or set insecure = true in [{table.name}] "
            "to accept that",
        )
    if "advertise_host" in table.data:
        advertise_host = table.get_str("advertise_host")
        try:
            check_connect_host(advertise_host)
        except ValueError as exc:
            raise table.error("advertise_host", str(exc)) from None
    elif is_unspecified(bind_host):
        raise table.error(
            "advertise_host",
            f"missing required key: bind_host {show(bind_host)} is a wildcard, so set the "
            "address other processes should connect to",
        )
    else:
        advertise_host = bind_host
    return bind_host, advertise_host


def _distinct_ports(table: Table, ports: dict[str, int]) -> None:
    seen: dict[int, str] = {}
    for key, port in ports.items():
        if port in seen:
            raise table.error(key, f"port {port} is already used by {table.name}.{seen[port]}")
        seen[port] = key


def _metrics_port(table: Table, ports: dict[str, int]) -> int:
    """The optional HTTP port (0: off), checked with the other ports, which must all differ."""
    metrics_port = table.get_int("metrics_port", 0, 65535, 0)
    _distinct_ports(table, {**ports, "metrics_port": metrics_port} if metrics_port else ports)
    return metrics_port


_SECURITY_KEYS = ("certificate", "coordinator_key", "nodes", "clients", "admins")


def security_from_dict(path: str | os.PathLike[str], data: Mapping[str, Any],
                       needs_coordinator_key: bool) -> SecurityConfig | None:
    """The optional ``[security]`` table. Files and directories are checked when the process
    starts (a local cluster creates missing keys first), not here."""
    if "security" not in data:
        return None
    allowed = _SECURITY_KEYS if needs_coordinator_key else tuple(k for k in _SECURITY_KEYS if k != "coordinator_key")
    t = Table(str(path), "security", data["security"], allowed)
    base = base_dir(path)

    def optional(key: str) -> Path | None:
        return t.get_path(key, base) if key in t.data else None

    return SecurityConfig(
        certificate=t.get_path("certificate", base),
        coordinator_key=t.get_path("coordinator_key", base) if needs_coordinator_key else None,
        nodes=t.get_path("nodes", base),
        clients=optional("clients"),
        admins=optional("admins"),
    )


# ---------------------------------------------------------------------------------------------
# Node and coordinator


_NODE_KEYS = (
    "id",
    "coordinator",
    "bind_host",
    "advertise_host",
    "service_port",
    "write_port",
    "ack_port",
    "data_dir",
    "durability",
    "heartbeat_interval_ms",
    "request_timeout_ms",
    "catchup_page_items",
    "peer_lease_ms",
    "log_level",
    "log_format",
    "insecure",
    "metrics_port",
    "index_max_keys",
    "watch_log_entries",
    "watch_log_mib",
    "zone",
)

_COORDINATOR_KEYS = (
    "bind_host",
    "advertise_host",
    "port",
    "publish_port",
    "state_dir",
    "lease_ms",
    "republish_interval_ms",
    "request_timeout_ms",
    "log_level",
    "log_format",
    "insecure",
    "metrics_port",
)


def node_config_from_dict(data: Mapping[str, Any], path: str | os.PathLike[str]) -> NodeConfig:
    """Validate a parsed node file. ``path`` names it in errors and anchors relative paths."""
    where = str(path)
    check_top_level(where, data, "node", "coordinator", ("limits", "security"))
    t = Table(where, "node", data["node"], _NODE_KEYS)
    security = security_from_dict(path, data, needs_coordinator_key=True)

    node_id = t.get_str("id")
    if not _ID_RE.fullmatch(node_id):
        raise t.error("id", f"expected 1 to 64 characters of A-Z a-z 0-9 _ . -, got {show(node_id)}")
    coordinators = coordinator_endpoints(t)
    insecure = t.get_bool("insecure", False)
    bind_host, advertise_host = _hosts(t, insecure, security is not None)
    ports = {k: t.get_int(k, 1, 65535) for k in ("service_port", "write_port", "ack_port")}
    metrics_port = _metrics_port(t, ports)

    return NodeConfig(
        path=Path(path),
        id=node_id,
        coordinator=coordinators[0],
        coordinators=coordinators,
        bind_host=bind_host,
        advertise_host=advertise_host,
        data_dir=t.get_path("data_dir", base_dir(path)),
        durability=t.get_choice("durability", DURABILITIES, "sync"),
        heartbeat_interval_ms=t.get_int("heartbeat_interval_ms", 1, MAX_MS, 500),
        request_timeout_ms=t.get_int("request_timeout_ms", 1, MAX_MS, 2000),
        catchup_page_items=t.get_int("catchup_page_items", 1, MAX_CATCHUP_PAGE_ITEMS, 1000),
        peer_lease_ms=t.get_int("peer_lease_ms", MIN_LEASE_MS, MAX_MS, 1000),
        log_level=t.get_choice("log_level", LOG_LEVELS, "info"),
        log_format=t.get_choice("log_format", LOG_FORMATS, "text"),
        insecure=insecure,
        limits=_limits(where, data),
        security=security,
        metrics_port=metrics_port,
        index_max_keys=t.get_int("index_max_keys", 0, MAX_INDEX_MAX_KEYS, DEFAULT_INDEX_MAX_KEYS),
        watch_log_entries=t.get_int("watch_log_entries", 0, MAX_WATCH_LOG_ENTRIES, DEFAULT_WATCH_LOG_ENTRIES),
        watch_log_mib=t.get_int("watch_log_mib", 1, MAX_WATCH_LOG_MIB, DEFAULT_WATCH_LOG_MIB),
        zone=_zone(t),
        **ports,
    )


def coordinator_config_from_dict(
    data: Mapping[str, Any], path: str | os.PathLike[str]
) -> CoordinatorConfig:
    """Validate a parsed coordinator file. ``path`` names it in errors and anchors relative paths."""
    where = str(path)
    check_top_level(where, data, "coordinator", "node", ("limits", "security", "cluster", "engine"))
    t = Table(where, "coordinator", data["coordinator"], _COORDINATOR_KEYS)
    security = security_from_dict(path, data, needs_coordinator_key=False)

    insecure = t.get_bool("insecure", False)
    bind_host, advertise_host = _hosts(t, insecure, security is not None)
    ports = {
        "port": t.get_int("port", 1, 65535, 7000),
        "publish_port": t.get_int("publish_port", 1, 65535, 7001),
    }
    metrics_port = _metrics_port(t, ports)

    return CoordinatorConfig(
        path=Path(path),
        bind_host=bind_host,
        advertise_host=advertise_host,
        state_dir=t.get_path("state_dir", base_dir(path)),
        lease_ms=t.get_int("lease_ms", MIN_LEASE_MS, MAX_MS, 3000),
        republish_interval_ms=t.get_int("republish_interval_ms", 1, MAX_MS, 1000),
        request_timeout_ms=t.get_int("request_timeout_ms", 1, MAX_MS, 5000),
        log_level=t.get_choice("log_level", LOG_LEVELS, "info"),
        log_format=t.get_choice("log_format", LOG_FORMATS, "text"),
        insecure=insecure,
        limits=_limits(where, data),
        security=security,
        metrics_port=metrics_port,
        cluster=_cluster(where, data),
        engine=_engine(where, data),
        **ports,
    )


def coordinator_endpoints(table: Table) -> tuple[str, ...]:
    """``coordinator``: one request endpoint, or a list of every coordinator's (a cluster whose
    coordinators stand in for one another, through ``[engine]``)."""
    value = table.data.get("coordinator")
    if isinstance(value, list):
        if not 1 <= len(value) <= MAX_COORDINATORS or not all(isinstance(v, str) for v in value):
            raise table.error("coordinator", f"expected an endpoint or a list of 1 to {MAX_COORDINATORS} endpoints, "
                                             f"got {show(value)}")
        endpoints = tuple(value)
    else:
        endpoints = (table.get_str("coordinator"),)
    for endpoint in endpoints:
        try:
            parse_endpoint(endpoint)
        except ValueError as exc:
            raise table.error("coordinator", str(exc)) from None
    if len(set(endpoints)) != len(endpoints):
        raise table.error("coordinator", "lists an endpoint twice")
    return endpoints


def _zone(table: Table) -> str:
    """The optional failure zone ("" when unset: every node in one zone)."""
    if table.data.get("zone", "") == "":  # spelled out empty in the shipped files: no zone
        return ""
    zone = table.get_str("zone")
    if len(zone) > MAX_ZONE_CHARS:
        raise table.error("zone", f"expected at most {MAX_ZONE_CHARS} characters, got {len(zone)}")
    return zone


_CLUSTER_KEYS = ("partitions", "replication", "max_moves", "formation_grace_ms")


def _cluster(path: str, data: Mapping[str, Any]) -> ClusterConfig:
    """The optional ``[cluster]`` table; without it, one chain."""
    t = Table(path, "cluster", data.get("cluster", {}), _CLUSTER_KEYS)
    return ClusterConfig(
        partitions=t.get_int("partitions", 1, MAX_PARTITIONS, 1),
        replication=t.get_int("replication", 1, MAX_REPLICATION, 3),
        max_moves=t.get_int("max_moves", 1, MAX_PARTITIONS, 2),
        formation_grace_ms=t.get_int("formation_grace_ms", 0, MAX_MS, 5000),
    )


_ENGINE_KEYS = ("endpoints", "prefix", "lease_seconds")
_PREFIX_RE = re.compile(r"/[A-Za-z0-9_./-]{0,200}/")


def _engine(path: str, data: Mapping[str, Any]) -> EngineConfig | None:
    """The optional ``[engine]`` table; without it, the state on disk (``state_dir``)."""
    if "engine" not in data:
        return None
    t = Table(path, "engine", data["engine"], _ENGINE_KEYS)
    endpoints = t.data.get("endpoints")
    if not isinstance(endpoints, list) or not 1 <= len(endpoints) <= MAX_ENGINE_MEMBERS \
            or not all(isinstance(e, str) for e in endpoints):
        raise t.error("endpoints", f"expected a list of 1 to {MAX_ENGINE_MEMBERS} etcd client URLs "
                                   f"(\"http://HOST:PORT\"), got {show(endpoints)}")
    for endpoint in endpoints:
        try:
            EtcdClient([endpoint])
        except ValueError as error:
            raise t.error("endpoints", str(error)) from None
    prefix = t.get_str("prefix", "/zcraq/")
    if not _PREFIX_RE.fullmatch(prefix):
        raise t.error("prefix", f"expected a key path starting and ending with \"/\" (A-Z a-z 0-9 _ . - /), "
                                f"got {show(prefix)}")
    return EngineConfig(tuple(endpoints), prefix, t.get_int("lease_seconds", 2, 60, 2))


def load_node_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read and validate a node config file."""
    return node_config_from_dict(read_toml(path), path)


def load_coordinator_config(path: str | os.PathLike[str]) -> CoordinatorConfig:
    """Read and validate a coordinator config file."""
    return coordinator_config_from_dict(read_toml(path), path)
