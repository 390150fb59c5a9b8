"""Network namespaces for the chaos runner: one namespace per process, joined by a bridge.

Layout for a run whose prefix is ``zcq<pid>`` (the runner's pid, so stale leftovers of a runner
that died can be recognised and removed)::

    root namespace (the runner and its client threads)
      zcq<pid>h  10.A.B.254/24 ---+
                                  |            namespace zcq<pid>-sw: bridge br0
                                  +-- p-host --+-- p-coordinator --- eth0 10.A.B.1   (zcq<pid>-coordinator)
                                               +-- p-node1 --------- eth0 10.A.B.11  (zcq<pid>-node1)
                                               +-- p-node2 --------- eth0 10.A.B.12  (zcq<pid>-node2)

Every process binds the address of its own namespace, and every packet between two of them
crosses the bridge. A partition sets the bridge port of one process down: it then reaches no one
(coordinator, other nodes, clients) and no one reaches it, with no error (a silent black hole, like
a pulled cable). Healing sets the port up again. Only ``ip`` (iproute2) is needed: no firewall
tool, no kernel module beyond veth and bridge. All traffic stays inside namespaces this module
created; the subnet is picked so that it overlaps no route of the root namespace.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterable

PREFIX = "zcq"
SWITCH = "sw"
HOST_PORT = "p-host"


class NetnsError(Exception):
    """A namespace, link or address could not be set up or changed."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip() or f'exit {result.returncode}'}")
    return result


def unavailable_reason() -> str | None:
    """None when namespaces can be used here, else why not (in words a user can act on)."""
    if os.name != "posix" or not os.path.isdir("/proc/self/ns"):
        return "network namespaces need Linux"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
    except (NetnsError, OSError, subprocess.SubprocessError) as error:
        return f"cannot create a network namespace: {error}"
    try:
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
        _ip("-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
    except NetnsError as error:
        return f"cannot create bridge or veth links: {error}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def namespaces() -> list[str]:
    """Names of every network namespace ``ip netns`` knows."""
    result = _ip("netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(name: str) -> int | None:
    """The runner pid encoded in a namespace or link name of ours, else None."""
    if not name.startswith(PREFIX):
        return None
    digits = ""
    for char in name[len(PREFIX):]:
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else None


def cleanup_stale(prefix: str | None = None) -> list[str]:
    """Remove namespaces and root links of runs whose runner is gone (or, given ``prefix``, of
    that run whatever its state). Returns what was removed."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        return []
    removed = []

    def doomed(name: str) -> bool:
        if prefix is not None:
            return name == prefix or name.startswith(prefix + "-") or name == prefix + "h"
        owner = _owner(name)
        return owner is not None and owner != os.getpid() and not _pid_alive(owner)

    links = _ip("-o", "link", "show", check=False).stdout.splitlines()
    for line in links:
        parts = line.split(":")
        if len(parts) > 1:
            link = parts[1].strip().split("@")[0]
            if doomed(link):
                _ip("link", "del", link, check=False)
                removed.append(link)
    for name in namespaces():
        if doomed(name):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


def _pick_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13..10.255 overlapping no route or address of the root namespace."""
    taken = []
    for line in _ip("-4", "route", "show", "table", "all", check=False).stdout.splitlines() + \
            _ip("-4", "-o", "addr", "show", check=False).stdout.splitlines():
        for word in line.split():
            try:
                taken.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    taken = [net for net in taken if net.version == 4 and net.prefixlen > 0]
    for attempt in range(4096):
        index = (seed + attempt * 7919) % (56 * 256)
        candidate = ipaddress.ip_network(f"10.{200 + index // 256}.{index % 256}.0/24")
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise NetnsError("no free 10.200-255.x.0/24 subnet for the chaos network")


class Network:
    """The namespaces, bridge and addresses of one run. ``create`` builds it, ``destroy`` removes
    everything, and is safe to call more than once or after a partial ``create``."""

    def __init__(self, names: Iterable[str], *, prefix: str | None = None) -> None:
        self.prefix = prefix or f"{PREFIX}{os.getpid()}"
        self.names = list(names)
        for name in self.names:
            if len(f"p-{name}") > 15:
                raise NetnsError(f"process name {name!r} is too long for a link name")
        self.subnet: ipaddress.IPv4Network | None = None
        self.addresses: dict[str, str] = {}
        self.host_address = ""
        self.isolated: set[str] = set()
        self._created: list[str] = []

    def namespace(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    @property
    def switch(self) -> str:
        return self.namespace(SWITCH)

    @property
    def host_link(self) -> str:
        return f"{self.prefix}h"

    def create(self) -> None:
        cleanup_stale()
        self.subnet = _pick_subnet(os.getpid())
        hosts = list(self.subnet.hosts())
        self.host_address = str(hosts[253])  # .254
        for index, name in enumerate(self.names):
            self.addresses[name] = str(hosts[index if index == 0 else 9 + index])  # .1, .11, .12, ...
        try:
            self._add_namespace(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            # The runner's own leg: its client threads reach every process through it.
            _ip("link", "add", self.host_link, "type", "veth", "peer", "name", HOST_PORT, "netns", self.switch)
            self._created.append("link:" + self.host_link)
            _ip("-n", self.switch, "link", "set", HOST_PORT, "master", "br0", "up")
            _ip("addr", "add", f"{self.host_address}/{self.subnet.prefixlen}", "dev", self.host_link)
            _ip("link", "set", self.host_link, "up")
            for name in self.names:
                namespace = self.namespace(name)
                self._add_namespace(namespace)
                port = f"p-{name}"
                _ip("-n", namespace, "link", "set", "lo", "up")
                _ip("-n", namespace, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                    "netns", self.switch)
                _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
                _ip("-n", namespace, "addr", "add", f"{self.addresses[name]}/{self.subnet.prefixlen}",
                    "dev", "eth0")
                _ip("-n", namespace, "link", "set", "eth0", "up")
        except BaseException:
            self.destroy()
            raise

    def _add_namespace(self, namespace: str) -> None:
        _ip("netns", "add", namespace)
        self._created.append(namespace)

    def exec_prefix(self, name: str) -> list[str]:
        """Prepended to a command to run it inside ``name``'s namespace (``ip netns exec`` execs,
        so the child keeps the pid a signal is sent to)."""
        return ["ip", "netns", "exec", self.namespace(name)]

    def isolate(self, name: str) -> None:
        """Cut ``name`` off from everyone: its bridge port goes down."""
        _ip("-n", self.switch, "link", "set", f"p-{name}", "down")
        self.isolated.add(name)

    def rejoin(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", f"p-{name}", "up")
        self.isolated.discard(name)

    def heal(self) -> None:
        for name in sorted(self.isolated):
            self.rejoin(name)

    def destroy(self) -> None:
        for item in reversed(self._created):
            if item.startswith("link:"):
                _ip("link", "del", item[5:], check=False)
            else:
                _ip("netns", "del", item, check=False)
        self._created.clear()
        cleanup_stale(self.prefix)

    def leftovers(self) -> list[str]:
        """Namespaces of this run that still exist (empty after ``destroy``)."""
        return [n for n in namespaces() if n.startswith(self.prefix + "-")]
