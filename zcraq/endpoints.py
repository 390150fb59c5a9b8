"""Addresses: the ``tcp://HOST:PORT`` endpoints processes bind and connect to, and the host rules
behind them (what may be bound, what others can connect to, what counts as loopback).

Config validation, the coordinator's check of a joining node's endpoints and the client all use
these, so an address means the same everywhere.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Any

WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::"})

_HOST_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_ENDPOINT_RE = re.compile(r"tcp://(\[[^\]]*\]|[^:\[\]/]*):([0-9]+)")


def show(value: Any) -> str:
    """A value the way it looks in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def format_endpoint(host: str, port: int) -> str:
    """``tcp://host:port``, with IPv6 literals in brackets as ZeroMQ expects."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_hostname(host: str) -> bool:
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_HOST_LABEL_RE.fullmatch(label) for label in name.split("."))


def is_loopback(host: str) -> bool:
    """Only this machine can reach it (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def is_unspecified(host: str) -> bool:
    """A wildcard: binds every interface, and nobody can connect to it."""
    if host == "*":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_unspecified
    except ValueError:
        return False


def _bracket_hint(host: str) -> str:
    return " (write IPv6 addresses without brackets)" if host.startswith("[") else ""


def check_bind_host(host: str) -> None:
    """ValueError unless ``host`` can be bound: an IP address, localhost or a wildcard."""
    if host in WILDCARD_HOSTS or host == "localhost" or _is_ip(host):
        return
    raise ValueError(
        f"unusable address {show(host)}: expected an IPv4 or IPv6 address, \"localhost\", "
        f"or a wildcard (\"*\", \"0.0.0.0\", \"::\"){_bracket_hint(host)}"
    )


def check_connect_host(host: str) -> None:
    """ValueError unless other processes can connect to ``host``."""
    if is_unspecified(host):
        raise ValueError(f"{show(host)} is a wildcard; other processes cannot connect to it")
    if not (_is_ip(host) or _is_hostname(host)):
        raise ValueError(
            f"unusable address {show(host)}: expected an IP address or a host name{_bracket_hint(host)}"
        )


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """Split a connectable ``tcp://HOST:PORT`` into (host, port); ValueError says what is wrong."""
    match = _ENDPOINT_RE.fullmatch(endpoint)
    if match is None:
        raise ValueError(f'unusable endpoint {show(endpoint)}: expected "tcp://HOST:PORT"')
    host, port_text = match.groups()
    if host.startswith("["):
        host = host[1:-1]
        if ":" not in host or not _is_ip(host):
            raise ValueError(f"unusable endpoint {show(endpoint)}: only IPv6 addresses go in brackets")
    elif not host:
        raise ValueError(f'unusable endpoint {show(endpoint)}: expected "tcp://HOST:PORT"')
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"unusable endpoint {show(endpoint)}: port must be from 1 to 65535")
    try:
        check_connect_host(host)
    except ValueError as exc:
        raise ValueError(f"unusable endpoint {show(endpoint)}: {exc}") from None
    return host, port
