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

COORDINATOR = "coordinator"  # the one coordinator; coordinator1, coordinator2, ... when they stand in for one another
COORDINATOR_PORTS = (7000, 7001)  # requests, topology
NODE_PORTS = (7100, 7101, 7102)  # service, writes in, acks in
METRICS_PORT = 9100  # HTTP /metrics and probes, of every process, when asked for


def is_coordinator(name: str) -> bool:
    """Is the process ``name`` a coordinator ("coordinator", or "coordinator1", ...)?"""
    return name == COORDINATOR or (name.startswith(COORDINATOR) and name[len(COORDINATOR):].isdigit())


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
        if name not in self.hosts and is_coordinator(name):  # coordinatorK: .K (at most 9 of them)
            self.hosts[name] = f"{self.prefix}.{name[len(COORDINATOR):]}"
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
    """Where a cluster's files are: the coordinator's config (of several coordinators, each one's:
    ``coordinators``, ``coordinator`` the first), the nodes' configs in chain order, the directory
    for one log per process (None: the processes write to the terminal), and the client config
    that tools use to watch the cluster (needed with CURVE keys, and with several coordinators)."""

    def __init__(self, coordinator: Path, nodes: Sequence[Path], logs: Path | None = None,
                 client: Path | None = None, clients: Sequence[Path] = (), admins: Sequence[Path] = (),
                 coordinators: Sequence[Path] = ()) -> None:
        self.coordinator = coordinator
        self.coordinators = list(coordinators) or [coordinator]
        self.nodes = list(nodes)
        self.logs = logs
        self.client = client
        self.clients = list(clients)  # every client*.toml and admin*.toml, for key provisioning
        self.admins = list(admins)

    @classmethod
    def directory(cls, directory: Path) -> Layout:
        """coordinator.toml (or coordinator1.toml, coordinator2.toml, ...: coordinators on an
        engine), node*.toml (sorted by name), client*.toml and admin*.toml of a config directory,
        as ``zcraq run`` uses them; client.toml, if there is one, watches the cluster."""
        client = directory / "client.toml"
        single = directory / "coordinator.toml"
        several = sorted(p for p in directory.glob("coordinator*.toml") if is_coordinator(p.stem) and p != single)
        coordinators = [single] if single.exists() or not several else several
        return cls(coordinators[0], sorted(directory.glob("node*.toml")),
                   client=client if client.exists() else None, clients=sorted(directory.glob("client*.toml")),
                   admins=sorted(directory.glob("admin*.toml")), coordinators=coordinators)

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

    ``cluster``: the coordinator's ``[cluster]`` table (partitions, replication, ...), if any.

    ``engine``: etcd client URLs; then ``coordinators`` coordinators (coordinator1, ...) keep the
    state there under a prefix of this layout's own, and ``configs/client.toml`` lists them all."""

    def __init__(self, root: Path, nodes: int = 3, *, coordinator: Mapping[str, Any] | None = None,
                 node: Mapping[str, Any] | None = None, per_node: Mapping[str, Mapping[str, Any]] | None = None,
                 hosts: Callable[[str], str] | None = None, secure: bool = False, metrics: bool = False,
                 cluster: Mapping[str, Any] | None = None, engine: Sequence[str] | None = None,
                 coordinators: int = 3) -> None:
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
        names = [COORDINATOR] if engine is None else [f"{COORDINATOR}{i}" for i in range(1, coordinators + 1)]
        port, publish = COORDINATOR_PORTS
        self.coordinator_endpoints = [f"tcp://{self.hosts(name)}:{port}" for name in names]
        self.coordinator_endpoint = self.coordinator_endpoints[0]
        extra: dict[str, Any] = {"cluster": dict(cluster)} if cluster else {}
        if engine is not None:
            token = random.SystemRandom().randrange(1 << 32)
            extra["engine"] = {"endpoints": list(engine), "prefix": f"/zcraq-{token:08x}/"}
        security = self._security(COORDINATOR, None)  # one key pair, which every coordinator holds
        paths = [self._write(name, "coordinator", {
            "bind_host": self.hosts(name), "port": port, "publish_port": publish,
            "state_dir": str(self.root / "data" / name), **self.metrics, **(coordinator or {})},
            security, extra or None) for name in names]
        client = admin = None
        if self.keys is not None:
            client, admin = self._client("client", "clients"), self._client("admin", "admins")
        elif engine is not None:
            client = self.root / "configs" / "client.toml"
            client.write_text(tomli_w.dumps({"client": {"coordinator": self._coordinator_setting}}))
        super().__init__(paths[0], [], self.root / "logs", client=client, admins=[admin] if admin else [],
                         coordinators=paths)
        for index in range(1, nodes + 1):
            self.nodes.append(self.add_node(f"node{index}"))

    def add_node(self, node_id: str) -> Path:
        host = self.hosts(node_id)
        service, write, ack = NODE_PORTS
        return self._write(node_id, "node", {
            "id": node_id, "coordinator": self._coordinator_setting, "bind_host": host,
            "service_port": service, "write_port": write, "ack_port": ack,
            "data_dir": str(self.root / "data" / node_id), **self.metrics,
            **self.node_settings, **self.per_node.get(node_id, {})},
            self._security(node_id, "nodes"))

    @property
    def _coordinator_setting(self) -> str | list[str]:
        """What nodes and clients are told: the coordinator's endpoint, or every coordinator's."""
        endpoints = self.coordinator_endpoints
        return endpoints[0] if len(endpoints) == 1 else list(endpoints)

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
            "client": {"coordinator": self._coordinator_setting},
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
