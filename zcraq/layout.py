"""A cluster's config files and addresses: where each process's config, data and log are, and
which address and ports it binds.

Either the config files exist (a directory of coordinator.toml and node*.toml, as ``zcraq run``
uses) or they are written here with tomli-w, each process on an address of its own with fixed
ports. zcraq/cluster.py starts processes from a Layout.
"""

from __future__ import annotations

import ipaddress
import random
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from zcraq.security import create_certificate

COORDINATOR = "coordinator"
COORDINATOR_PORTS = (7000, 7001)  # requests, topology
NODE_PORTS = (7100, 7101, 7102)  # service, writes in, acks in
METRICS_PORT = 9100  # HTTP /metrics and probes, of every process, when asked for


def _bind_all(addresses: Sequence[tuple[str, int]]) -> list[int] | None:
    """Bind every (host, port) at once (port 0: any free one) and let go: the ports bound, or None
    if one of them is taken."""
    holders = []
    try:
        for address in addresses:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            holders.append(sock)
            sock.bind(address)
        return [sock.getsockname()[1] for sock in holders]
    except OSError:
        return None
    finally:
        for sock in holders:
            sock.close()


def _bindable(host: str, ports: Sequence[int]) -> bool:
    return _bind_all([(host, port) for port in ports]) is not None


class LoopbackHosts:
    """An address of its own for every process, in a 127.A.B.0/24 that no one else uses: .1 for
    the coordinator, .11, .12, ... for the nodes in the order they are asked for.

    Every process then binds the same fixed ports, and neither another program (they bind
    127.0.0.1) nor an outgoing connection (its source is 127.0.0.1) can take a port that a process
    needs back when it restarts, as happens with ports the OS hands out."""

    def __init__(self, nodes: int = 3) -> None:
        rng = random.SystemRandom()
        for _ in range(200):
            self.prefix = f"127.{rng.randrange(2, 255)}.{rng.randrange(256)}"
            if _bindable(f"{self.prefix}.1", (*COORDINATOR_PORTS, METRICS_PORT)) and all(
                    _bindable(f"{self.prefix}.{10 + i}", (*NODE_PORTS, METRICS_PORT)) for i in range(1, nodes + 1)):
                break
        else:
            raise RuntimeError("no free 127.A.B.0/24 for the cluster's loopback addresses")
        self.hosts: dict[str, str] = {COORDINATOR: f"{self.prefix}.1"}

    def __call__(self, name: str) -> str:
        if name not in self.hosts:
            self.hosts[name] = f"{self.prefix}.{10 + len(self.hosts)}"
        return self.hosts[name]


def free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 that no one listens on right now (distinct), for a program outside a
    cluster; a cluster's own processes use LoopbackHosts instead."""
    ports = _bind_all([("127.0.0.1", 0)] * count)
    if ports is None:
        raise OSError("no free port on 127.0.0.1")
    return ports


class Layout:
    """Where a cluster's files are: the coordinator's config, the nodes' configs in chain order,
    the directory for one log per process (None: the processes write to the terminal), and the
    client config that tools use to watch the cluster (needed when it runs with CURVE keys)."""

    def __init__(self, coordinator: Path, nodes: Sequence[Path], logs: Path | None = None,
                 client: Path | None = None, clients: Sequence[Path] = (), admins: Sequence[Path] = ()) -> None:
        self.coordinator = coordinator
        self.nodes = list(nodes)
        self.logs = logs
        self.client = client
        self.clients = list(clients)  # every client*.toml and admin*.toml, for key provisioning
        self.admins = list(admins)

    @classmethod
    def directory(cls, directory: Path) -> Layout:
        """coordinator.toml, node*.toml (sorted by name), client*.toml and admin*.toml of a config
        directory, as ``zcraq run`` uses them; client.toml, if there is one, watches the cluster."""
        client = directory / "client.toml"
        return cls(directory / "coordinator.toml", sorted(directory.glob("node*.toml")),
                   client=client if client.exists() else None, clients=sorted(directory.glob("client*.toml")),
                   admins=sorted(directory.glob("admin*.toml")))

    def add_node(self, node_id: str) -> Path:
        raise ValueError(f"cannot add {node_id}: this cluster runs existing config files")


class Generated(Layout):
    """Config files written here, under ``root``: ``configs/``, ``data/`` (LevelDB directories and
    the coordinator's state) and ``logs/``. Each process binds an address of its own (``hosts``:
    name -> address; loopback addresses unless given) with the fixed ports above.

    ``coordinator`` and ``node`` set keys of the ``[coordinator]`` and every ``[node]`` table
    (lease_ms, durability, log_level, ...: any key zcraq/config.py knows); ``per_node`` sets keys
    for one node by id. Unset keys take the defaults of zcraq/config.py.

    ``secure``: every process gets a CURVE key pair under ``keys/`` and a ``[security]`` table;
    ``configs/client.toml`` and ``configs/admin.toml`` hold a client's and an administrator's.

    ``metrics``: every process serves /metrics and its probes on METRICS_PORT of its address.

    ``cluster``: the coordinator's ``[cluster]`` table (partitions, replication, ...), if any."""

    def __init__(self, root: Path, nodes: int = 3, *, coordinator: Mapping[str, Any] | None = None,
                 node: Mapping[str, Any] | None = None, per_node: Mapping[str, Mapping[str, Any]] | None = None,
                 hosts: Callable[[str], str] | None = None, secure: bool = False, metrics: bool = False,
                 cluster: Mapping[str, Any] | None = None) -> None:
        self.root = root.absolute()
        for sub in ("configs", "data", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.keys = self.root / "keys" if secure else None
        if self.keys is not None:
            for role in ("nodes", "clients", "admins"):
                (self.keys / role).mkdir(parents=True, exist_ok=True)
        self.hosts = hosts or LoopbackHosts(nodes)
        self.node_settings, self.per_node = dict(node or {}), per_node or {}
        self.metrics: dict[str, int] = {"metrics_port": METRICS_PORT} if metrics else {}
        host = self.hosts(COORDINATOR)
        port, publish = COORDINATOR_PORTS
        self.coordinator_endpoint = f"tcp://{host}:{port}"
        path = self._write(COORDINATOR, "coordinator", {
            "bind_host": host, "port": port, "publish_port": publish,
            "state_dir": str(self.root / "data" / COORDINATOR), **self.metrics, **(coordinator or {})},
            self._security(COORDINATOR, None), {"cluster": dict(cluster)} if cluster else None)
        client = admin = None
        if self.keys is not None:
            client, admin = self._client("client", "clients"), self._client("admin", "admins")
        super().__init__(path, [], self.root / "logs", client=client, admins=[admin] if admin else [])
        for index in range(1, nodes + 1):
            self.nodes.append(self.add_node(f"node{index}"))

    def add_node(self, node_id: str) -> Path:
        host = self.hosts(node_id)
        service, write, ack = NODE_PORTS
        return self._write(node_id, "node", {
            "id": node_id, "coordinator": self.coordinator_endpoint, "bind_host": host,
            "service_port": service, "write_port": write, "ack_port": ack,
            "data_dir": str(self.root / "data" / node_id), **self.metrics,
            **self.node_settings, **self.per_node.get(node_id, {})},
            self._security(node_id, "nodes"))

    @property
    def secure(self) -> bool:
        return self.keys is not None

    def _security(self, name: str, role: str | None) -> dict[str, Any] | None:
        """The ``[security]`` table of process ``name``, creating its key pair (and putting its
        public key into the allow-list of ``role``)."""
        if self.keys is None:
            return None
        secret = create_certificate(self.keys, name)
        if role is not None:
            shutil.copyfile(secret.with_suffix(".key"), self.keys / role / f"{name}.key")
        table: dict[str, Any] = {"certificate": str(secret)}
        if name != COORDINATOR:
            table["coordinator_key"] = str(self.keys / "coordinator.key")
        return {**table, **{role: str(self.keys / role) for role in ("nodes", "clients", "admins")}}

    def _client(self, name: str, role: str) -> Path:
        assert self.keys is not None
        secret = create_certificate(self.keys, name)
        shutil.copyfile(secret.with_suffix(".key"), self.keys / role / f"{name}.key")
        path = self.root / "configs" / f"{name}.toml"
        path.write_text(tomli_w.dumps({
            "client": {"coordinator": self.coordinator_endpoint},
            "security": {"certificate": str(secret), "coordinator_key": str(self.keys / "coordinator.key")}}))
        return path

    def _write(self, name: str, table: str, values: dict[str, Any], security: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None) -> Path:
        if not ipaddress.ip_address(values["bind_host"]).is_loopback and security is None:
            values.setdefault("insecure", True)  # zcraq refuses other addresses without it
        path = self.root / "configs" / f"{name}.toml"
        document: dict[str, Any] = {table: values, **(extra or {})}
        if security is not None:
            document["security"] = security
        path.write_text(tomli_w.dumps(document))
        return path
