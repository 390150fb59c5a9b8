"""Who may send what: the authorization rules of both cores, per message type, by the caller's
role and key (PROTOCOL.md §4a). Pure functions: no sockets, no state of their own.

A caller is who a message's connection authenticated as (zcraq/callers.py); ``TRUSTED`` (no
security configured) may do everything. The rules:

- reads, writes and deletes (one key or many): clients and administrators; at a node, also the coordinator, which
  forwards writes to the head;
- topology and status: anyone with a role;
- node-to-node requests (version queries, catch-up pages, confirmations) and chain frames: only
  nodes; a chain frame and a confirmation only with the key the coordinator registered for the
  node they name (the epoch checks of the cores do the rest);
- join: nodes, with their own key; heartbeat and caught_up: the registered key of the node named;
- leave: the node itself, or an administrator for any node;
- drain (partitioned clusters: move every replica off a node): administrators only.

A refusal is a sentence saying why, for the ``forbidden`` error; None lets the message through.
"""

from __future__ import annotations

from zcraq.callers import TRUSTED, Caller, Role
from zcraq.messages import (CatchupRequest, CaughtUp, ChainFrame, Confirm, ConfirmMany, CoordinatorRequest, Delete,
                            DeleteMany, Drain, Heartbeat, Join, Leave, NodeRequest, Read, ReadMany, Scan, StatusRequest,
                            TopologyRequest, VersionQuery, Watch, WatchState, Write, WriteMany)
from zcraq.topology import Topology

_DATA = (Role.CLIENT, Role.ADMIN)


def node_request_refusal(request: NodeRequest, caller: Caller, topology: Topology) -> str | None:
    if caller is TRUSTED:
        return None
    match request:
        case Read() | Write() | Delete() | ReadMany() | WriteMany() | DeleteMany() | Scan() | Watch() | WatchState():
            return None if caller.is_(*_DATA, Role.COORDINATOR) else _needs("a client key", caller)
        case StatusRequest():
            return None if caller.roles else _needs("a key with a role", caller)
        case VersionQuery() | CatchupRequest():
            return None if caller.is_(Role.NODE) else _needs("a node key", caller)
        case ConfirmMany():  # each pair is judged as a confirm by its partition's replica
            return None if caller.is_(Role.NODE) else _needs("a node key", caller)
        case Confirm():
            if not caller.is_(Role.NODE):
                return _needs("a node key", caller)
            asker = topology.member(request.node_id)
            return None if asker is None or caller.owns(asker.key) else f"this key is not {request.node_id}'s"
    return None


def chain_frame_refusal(frame: ChainFrame, caller: Caller, topology: Topology) -> str | None:
    """A chain frame counts only from the node it names, over a connection with that node's key."""
    if caller is TRUSTED:
        return None
    sender = topology.member(frame.sender)
    if not caller.is_(Role.NODE) or sender is None or not caller.owns(sender.key):
        return f"a chain frame claiming to come from {frame.sender} over a connection of another key"
    return None


def coordinator_request_refusal(request: CoordinatorRequest, caller: Caller, topology: Topology) -> str | None:
    if caller is TRUSTED:
        return None
    match request:
        case Write() | Delete():
            return None if caller.is_(*_DATA) else _needs("a client key", caller)
        case TopologyRequest() | StatusRequest():
            return None if caller.roles else _needs("a key with a role", caller)
        case Join():
            return None if caller.is_(Role.NODE) else _needs("a node key", caller)
        case Heartbeat() | CaughtUp():
            return _own_node(request.node_id, caller, topology)
        case Leave():
            if caller.is_(Role.ADMIN):
                return None
            return _own_node(request.node_id, caller, topology)
        case Drain():
            return None if caller.is_(Role.ADMIN) else _needs("an administrator's key", caller)
    return None


def _own_node(node_id: str, caller: Caller, topology: Topology) -> str | None:
    if not caller.is_(Role.NODE):
        return _needs("a node key", caller)
    listed = topology.member(node_id)
    if listed is not None and not caller.owns(listed.key):
        return f"{node_id} is registered with another key"
    return None


def _needs(what: str, caller: Caller) -> str:
    has = ", ".join(sorted(role.value for role in caller.roles)) or "no role"
    return f"this request needs {what}; the connection's key has {has}"
