"""A node of a partitioned cluster, pure: one node core per hosted partition, behind one front door.

A partitioned cluster's node process hosts replicas of many partitions over its one set of
sockets. Each replica is an unchanged ``NodeCore(partition=p)``: everything argued about one chain
holds per partition. This module adds what the node does as a whole:

- It registers with the coordinator (a join naming no partition, with its failure zone) and keeps
  a node-level lease with heartbeats naming no partition. Their replies carry the partition
  table's version; a newer one than the node has seen makes it ask for the table (the table is
  also published, but a subscriber misses what is published before it connects).
- The newest table decides which partitions it hosts (zcraq/hosting.py): a replica starts (its
  core joins that partition, as a restarted one-chain node joins its chain) when the table places
  the partition here, and stops when it no longer does; its data are deleted only once the
  partition is whole on other nodes (they may be the last copy until then).
- Requests are routed by their ``partition`` field, or by their key's partition; chain frames by
  theirs (each core names its partition in the frames it makes). Requests a core sends to peers
  are stamped with its partition and go out under ids unique over the whole node; their replies
  are routed back under the core's own.
- The replicas' confirm rounds with one peer node in one turn (their rounds are aligned to one
  clock, zcraq/nodecore/leases.py) go as one ``confirm_many``, answered pair by pair by the
  peer's replicas: a node's background traffic does not grow with the partitions it hosts.
- Chain frames travel over one PUSH socket per peer endpoint, shared by every partition: frames
  name their partition and epoch, so a frame a peer no longer expects is dropped there. (The
  shell sends a turn's frames for one endpoint as one message.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from msgspec import UNSET

from zcraq.access import node_request_refusal
from zcraq.callers import TRUSTED, Caller
from zcraq.effects import PeerRequest, Relink, Respond, SendDown, SendUp, Subscribe
from zcraq.hosting import Hosting
from zcraq.loglimit import LogLimiter
from zcraq.logs import for_partition
from zcraq.messages import (PROTOCOL_VERSION, CatchupRequest, ChainFrame, CommitFrame, Confirm, ConfirmMany, Delete,
                            DeleteMany,
                            Error, Heartbeat, Join, Malformed, NodeRequest, Ok, Read, ReadMany, Reply,
                            ResyncFrame, Scan, StatusRequest, TopologyRequest, VersionQuery, Watch, WatchState,
                            Write, WriteFrame, WriteMany)
from zcraq.nodecore import NodeCore, NodeTimings
from zcraq.partitioning import partition_of
from zcraq.store.base import ReplicaStore
from zcraq.topology import Member, Topology

log = logging.getLogger("zcraq.node")

# How often each replica's timers run. A one-chain node ticks its core every 5 ms; a node hosting
# dozens of replicas would spend a fifth of its CPU on that under load (profiled), and the timers
# (heartbeats, time-outs, resends, held conditional writes) count in tens of milliseconds or more.
REPLICA_TICK = 0.02


class PartitionStores(Protocol):
    """Each partition's replica store, in one database (zcraq/store/shared.py)."""

    def store(self, partition: int) -> ReplicaStore: ...

    def partitions(self) -> list[int]: ...

    def release(self, partition: int) -> None:
        """Close the partition's store (flushed), keeping what it holds."""

    def drop(self, partition: int) -> None:
        """Close the partition's store if open, and delete what it holds."""

    def commit(self) -> None:
        """Write what the stores flushed this turn (group commit: one sync for all of them)."""


@dataclass(frozen=True, slots=True)
class Push:
    """Send a chain frame to the PULL socket at ``endpoint`` (whose CURVE key is ``key``)."""

    endpoint: str
    key: str | None
    frame: WriteFrame | CommitFrame | ResyncFrame


@dataclass(frozen=True, slots=True)
class PushTargets:
    """The chain endpoints some hosted replica sends to: the shell may close the others' sockets."""

    targets: frozenset[tuple[str, str | None]]


HostEffect = Respond | PeerRequest | Subscribe | Push | PushTargets


@dataclass(slots=True)
class _Outgoing:
    partition: int | None  # None: the host's own call
    call_id: Any
    sent_at: float
    kind: str = ""  # the host's own calls: "register", "heartbeat", "table" or "confirm_many"
    confirms: tuple[tuple[int, Any], ...] = ()  # confirm_many: each pair's partition and its core's call id


@dataclass(slots=True)
class _Links:
    down: tuple[str, str | None] | None = None
    up: tuple[str, str | None] | None = None


def _new_counters() -> dict[str, int]:
    return {"bad_messages": 0, "wrong_partition": 0, "stale_chain_frames": 0, "replicas_started": 0,
            "replicas_stopped": 0, "tables": 0, "internal_errors": 0}


class PartitionHost:
    def __init__(self, me: Member, zone: str, partitions: int, stores: PartitionStores,
                 timings: NodeTimings | None = None, unsafe: frozenset[str] = frozenset()) -> None:
        self.me = me
        self.zone = zone
        self.partitions = partitions
        self.stores = stores
        self.timings = timings or NodeTimings()
        self.unsafe = unsafe
        self.cores: dict[int, NodeCore] = {}
        self.links: dict[int, _Links] = {}
        self.hosting = Hosting(me.id)
        self.registered = False
        self.counters = _new_counters()
        self.logs = LogLimiter(log)
        self._out: list[HostEffect] = []
        self._outgoing: dict[int, _Outgoing] = {}
        self._next_id = 1
        self._last_register = float("-inf")
        self._last_heartbeat = float("-inf")
        self._table_asked = False
        self.kept: set[int] = set()  # partitions not hosted whose data are kept (see zcraq/hosting.py)
        self._touched: set[int] = set()  # replicas called this turn: their ready() is due
        self._confirms: dict[tuple[str, str | None], list[tuple[int, Confirm]]] = {}  # this turn's, per peer
        self._pages: set[int] = set()  # replicas with a catch-up page waiting to be stored
        self._next_replica_tick = float("-inf")
        self._looked_at_stored = False

    # ------------------------------------------------------------------ lifecycle

    def start(self, now: float) -> None:
        self._register(now)

    @property
    def joined(self) -> bool:
        return self.registered

    @property
    def page_waiting(self) -> bool:
        """A learner's catch-up page waits to be stored at the next tick: the shell must not sleep."""
        return bool(self._pages)

    def next_deadline(self, now: float) -> float:
        return now + min(0.05, self.timings.heartbeat_interval)

    def tick(self, now: float) -> None:
        """Every replica's timers every REPLICA_TICK; a replica with a catch-up page waiting at every
        call (storing the page is its tick's work)."""
        timeout = self.timings.request_timeout
        for call_id in [i for i, o in self._outgoing.items() if now - o.sent_at > 2 * timeout]:
            self._lost(self._outgoing.pop(call_id))
        if not self.registered:
            if now - self._last_register >= timeout:
                self._register(now)
        elif now - self._last_heartbeat >= self.timings.heartbeat_interval:
            self._last_heartbeat = now
            self._ask(now, "heartbeat", Heartbeat(self.me.id, 0, PROTOCOL_VERSION))
        if now >= self._next_replica_tick:
            self._next_replica_tick = now + REPLICA_TICK
            due = list(self.cores)
        else:
            due = [p for p in self._pages if p in self.cores]
        cores = self.cores
        for partition in due:
            core = cores[partition]
            with for_partition(partition):
                core.tick(now)
            if not core.catchup.page_waiting:
                self._pages.discard(partition)
        self._touched.update(due)

    def _lost(self, outgoing: _Outgoing) -> None:
        if outgoing.kind == "table":
            self._table_asked = False

    def _register(self, now: float) -> None:
        self._last_register = now
        join = Join(self.me.to_dict(), PROTOCOL_VERSION, zone=self.zone) if self.zone else \
            Join(self.me.to_dict(), PROTOCOL_VERSION)
        self._ask(now, "register", join)

    def _ask(self, now: float, kind: str, request: NodeRequest | Join | Heartbeat | TopologyRequest) -> None:
        call_id = self._take_id()
        self._outgoing[call_id] = _Outgoing(None, None, now, kind)
        self._out.append(PeerRequest("coordinator", msgspec.structs.replace(request, id=call_id)))

    def _take_id(self) -> int:
        call_id = self._next_id
        self._next_id += 1
        return call_id

    # ------------------------------------------------------------------ the table

    def on_table(self, table: Any, now: float) -> None:
        """A partition table (published, or the answer to our request): start, stop and update
        replicas; delete the data of partitions settled elsewhere."""
        partitions = table.get("partitions") if isinstance(table, dict) else None
        if isinstance(partitions, list) and len(partitions) != self.partitions:
            self.counters["bad_messages"] += 1
            self.logs.error("table shape", now, "a table of %d partitions, this cluster has %d: ignored",
                            len(partitions), self.partitions)
            return
        try:
            changes = self.hosting.on_table(table)
        except ValueError as error:
            self.counters["bad_messages"] += 1
            self.logs.warning("malformed table", now, "ignored a malformed partition table: %s", error)
            return
        if changes is None:
            return
        self.counters["tables"] += 1
        if not self._looked_at_stored:  # what an earlier run left: kept like a stopped replica's
            self._looked_at_stored = True
            self.kept.update(p for p in self.stores.partitions() if p not in self.cores)
        for partition in changes.stop:
            self._stop(partition, now)
        for partition in changes.start:
            self.kept.discard(partition)  # the replica starts from what was kept
            self._start(partition, now)
        for partition in sorted(self.kept & changes.settled):
            log.info("partition %d: whole on other nodes; the data kept here deleted", partition)
            self.kept.discard(partition)
            self.stores.drop(partition)
        for partition, topology in changes.topologies.items():
            with for_partition(partition):
                self.cores[partition].on_topology(topology, now)
            self._touched.add(partition)

    def _start(self, partition: int, now: float) -> None:
        log.info("partition %d: replica started", partition)
        core = NodeCore(self.me, self.stores.store(partition), self.timings, self.unsafe, partition=partition)
        self.cores[partition] = core
        self.links[partition] = _Links()
        with for_partition(partition):
            core.start(now)
        self._touched.add(partition)
        self.counters["replicas_started"] += 1

    def _stop(self, partition: int, now: float) -> None:
        log.info("partition %d: no longer placed here; replica stopped, its data kept until the partition is "
                 "whole elsewhere", partition)
        core = self.cores.pop(partition)
        # Its answers to clients still go out; nothing it would send its peers does.
        self._out.extend(e for e in core.ready() if type(e) is Respond)
        self._out = [e for e in self._out if not (type(e) is Push and e.frame.partition == partition)]
        del self.links[partition]
        self._pages.discard(partition)
        self.stores.release(partition)
        self.kept.add(partition)
        self.counters["replicas_stopped"] += 1
        self._push_targets()

    # ------------------------------------------------------------------ requests

    def on_request(self, client: Any, request: NodeRequest | Malformed, now: float, caller: Caller = TRUSTED) -> None:
        if isinstance(request, Malformed):
            self.counters["bad_messages"] += 1
            self._reply(client, Error(request.id, request.code, request.message))
            return
        if type(request) is ConfirmMany:
            self._confirm_many(client, request, caller)
            return
        partition = request.partition
        if partition is UNSET:
            if isinstance(request, StatusRequest):
                self._status(client, request, now, caller)
                return
            routed = self._route(request)
            if isinstance(routed, str):
                self._reply(client, Error(request.id, "bad_request", routed))
                return
            partition = routed
        core = self.cores.get(partition)
        if core is None:
            self.counters["wrong_partition"] += 1
            self._reply(client, Error(request.id, "wrong_partition",
                                      f"this node has no replica of partition {partition}"))
            return
        with for_partition(partition):
            core.on_request(client, request, now, caller)
        self._touched.add(partition)

    def _confirm_many(self, client: Any, request: ConfirmMany, caller: Caller) -> None:
        """Each pair answered by that partition's replica as it answers a ``confirm``."""
        refusal = node_request_refusal(request, caller, Topology(0, ()))
        if refusal is not None:
            self._reply(client, Error(request.id, "forbidden", refusal))
            return
        results: list[int | str] = []
        epochs: list[int] = []
        for partition, epoch in request.epochs:
            core = self.cores.get(partition)
            if core is None:
                results.append("wrong_partition")
                epochs.append(0)
                continue
            answer = core.answer_confirm(Confirm(request.node_id, epoch, partition=partition), caller)
            results.append("ok" if isinstance(answer, Ok) else answer.code)
            epochs.append(core.topology.epoch)
        self._reply(client, Ok(request.id, results=results, epochs=epochs,
                               lease_ms=int(self.timings.peer_lease * 1000)))

    def _route(self, request: NodeRequest) -> int | str:
        """The partition of a request that names none: its key's; else why it must name one."""
        count = self.partitions
        match request:
            case Read() | Write() | Delete() | VersionQuery():
                return partition_of(request.key, count)
            case Watch() | WatchState() if request.key is not None:
                return partition_of(request.key, count)
            case ReadMany() | WriteMany() | DeleteMany():
                found = {partition_of(key, count) for key in request.keys}
                if len(found) > 1:
                    return (f"the keys are in {len(found)} partitions: a batch of a partitioned cluster holds "
                            f"keys of one partition (clients split batches by partition)")
                return found.pop()
            case Scan() | Watch() | WatchState() | CatchupRequest() | Confirm():
                return f"this cluster has {count} partitions: a {_type(request)} request names its partition"
        return f"this cluster has {count} partitions: name the partition"

    def _status(self, client: Any, request: StatusRequest, now: float, caller: Caller) -> None:
        refusal = node_request_refusal(request, caller, Topology(0, ()))
        if refusal is not None:
            self._reply(client, Error(request.id, "forbidden", refusal))
            return
        totals = dict(self.counters)
        replicas = []
        for partition, core in sorted(self.cores.items()):
            for name, value in core.counters.items():
                totals[name] = totals.get(name, 0) + value
            replicas.append({"partition": partition, "role": core.role, "epoch": core.topology.epoch,
                             "serving": core.serving(now), "caught_up": core.caught_up, "sent": len(core.links.sent)})
        self._reply(client, Ok(request.id, node=self.me.id, replicas=replicas, counters=totals,
                               table_version=max(self.hosting.version, 0)))

    def _reply(self, client: Any, reply: Reply) -> None:
        self._out.append(Respond(client, reply))

    # ------------------------------------------------------------------ chain frames

    def on_write_frame(self, frame: ChainFrame | Malformed, now: float, caller: Caller = TRUSTED) -> None:
        core = self._core_of_frame(frame, now)
        if core is not None:
            with for_partition(core.partition):
                core.on_write_frame(frame, now, caller)
            self._touched.add(core.partition)

    def on_ack_frame(self, frame: ChainFrame | Malformed, now: float, caller: Caller = TRUSTED) -> None:
        core = self._core_of_frame(frame, now)
        if core is not None:
            with for_partition(core.partition):
                core.on_ack_frame(frame, now, caller)
            self._touched.add(core.partition)

    def _core_of_frame(self, frame: ChainFrame | Malformed, now: float) -> NodeCore | None:
        if isinstance(frame, Malformed):
            self.counters["bad_messages"] += 1
            self.logs.warning("malformed frame", now, "dropped a malformed chain frame: %s",
                              frame.message)
            return None
        core = self.cores.get(frame.partition)
        if core is None:  # a replica stopped here, or not started yet: its peers resend or move on
            self.counters["stale_chain_frames"] += 1
        return core

    # ------------------------------------------------------------------ replies to our calls

    def on_peer_reply(self, reply: Reply | Malformed, values: list[bytes], now: float) -> None:
        outgoing = self._outgoing.pop(reply.id, None) if type(reply.id) is int else None
        if outgoing is None:
            return  # late, or foreign
        if outgoing.partition is None:
            self._own_reply(outgoing, reply, now)
            return
        core = self.cores.get(outgoing.partition)
        if core is not None:
            own = Malformed(reply.code, reply.message, outgoing.call_id) if isinstance(reply, Malformed) else \
                msgspec.structs.replace(reply, id=outgoing.call_id)
            with for_partition(outgoing.partition):
                core.on_peer_reply(own, values, now)
            self._touched.add(outgoing.partition)
            if core.catchup.page_waiting:
                self._pages.add(outgoing.partition)

    def _own_reply(self, outgoing: _Outgoing, reply: Reply | Malformed, now: float) -> None:
        if isinstance(reply, Malformed):
            self.counters["bad_messages"] += 1
            if outgoing.kind == "table":
                self._table_asked = False
            return
        match outgoing.kind:
            case "register":
                self._registered(reply, now)
            case "heartbeat":
                if isinstance(reply, Error):
                    if reply.code == "unknown_node":
                        self.logs.warning("unknown node", now, "the coordinator does not know this node; "
                                                               "registering again")
                        self.registered = False
                    return
                if reply.publish is not UNSET:  # another coordinator may lead now: follow its publisher
                    self._out.append(Subscribe(reply.publish))
                self._table_version_seen(reply, now)
            case "table":
                self._table_asked = False
                if isinstance(reply, Ok) and reply.table is not UNSET:
                    self.on_table(reply.table, now)
            case "confirm_many":
                self._confirms_answered(outgoing.confirms, reply, now)

    def _confirms_answered(self, asked: tuple[tuple[int, Any], ...], reply: Reply, now: float) -> None:
        """Each replica gets the answer to its own confirm, as if it had asked alone."""
        answers: list[Reply]
        if isinstance(reply, Ok) and reply.results is not UNSET and reply.epochs is not UNSET \
                and len(reply.results) == len(reply.epochs) == len(asked):
            lease = reply.lease_ms
            answers = [Ok(call_id, epoch=epoch, lease_ms=lease) if result == "ok" else
                       Error(call_id, str(result), "not confirmed", epoch=epoch)
                       for (_p, call_id), result, epoch in zip(asked, reply.results, reply.epochs)]
        else:
            code = reply.code if isinstance(reply, Error) else "bad_reply"
            answers = [Error(call_id, code, "the peer did not answer confirm_many pair by pair")
                       for _p, call_id in asked]
        for (partition, _call_id), answer in zip(asked, answers):
            core = self.cores.get(partition)
            if core is not None:
                with for_partition(partition):
                    core.on_peer_reply(answer, [], now)
                self._touched.add(partition)

    def _registered(self, reply: Reply, now: float) -> None:
        if isinstance(reply, Error):
            level = logging.INFO if reply.code in ("busy", "not_leader") else logging.ERROR
            self.logs.log(level, f"register {reply.code}", now, "the coordinator did not register this node yet: %s",
                          reply.message)
            return
        if not self.registered:
            log.info("registered with the coordinator")
        self.registered = True
        self._last_heartbeat = now
        if reply.publish is not UNSET:
            self._out.append(Subscribe(reply.publish))
        self._table_version_seen(reply, now)

    def _table_version_seen(self, reply: Ok, now: float) -> None:
        version = reply.table_version
        if version is not UNSET and version > self.hosting.version and not self._table_asked:
            self._table_asked = True
            self._ask(now, "table", TopologyRequest())

    # ------------------------------------------------------------------ effects

    def ready(self, now: float) -> list[HostEffect]:
        """End of a loop turn: each replica's turn made durable and its effects, stamped with its
        partition, then the host's own. Only the replicas something happened to this turn are asked:
        a core changes nothing and sends nothing but in answer to a call."""
        touched, cores = self._touched, self.cores
        for partition in sorted(touched):
            core = cores.get(partition)
            if core is not None:
                self._collect(partition, core, now)
        touched.clear()
        if self._confirms:
            self._send_confirms(now)
        self.stores.commit()  # before any effect leaves: nothing is sent that is not durable
        out = self._out
        self._out = []
        return out

    def _collect(self, partition: int, core: NodeCore, now: float) -> None:
        links = self.links[partition]
        out = self._out
        with for_partition(partition):
            effects = core.ready()
        for effect in effects:
            if type(effect) is Respond:
                out.append(effect)
            elif type(effect) is SendDown or type(effect) is SendUp:
                target = links.down if type(effect) is SendDown else links.up
                if target is not None:
                    out.append(Push(target[0], target[1], effect.frame))  # the core named the partition
            elif type(effect) is PeerRequest:
                request = effect.request
                if type(request) is Confirm:
                    target = (effect.endpoint, effect.key)
                    self._confirms.setdefault(target, []).append((partition, request))
                else:
                    self._peer_request(partition, effect.endpoint, effect.key, request, now)
            elif type(effect) is Relink:
                links.down = (effect.down, effect.down_key) if effect.down else None
                links.up = (effect.up, effect.up_key) if effect.up else None
                self._push_targets()
            # Subscribe: the node as a whole follows the table, not each replica its topology

    def _peer_request(self, partition: int, endpoint: str, key: str | None, request: NodeRequest | Any,
                      now: float) -> None:
        call_id = self._take_id()
        self._outgoing[call_id] = _Outgoing(partition, request.id, now)
        stamped = msgspec.structs.replace(request, id=call_id, partition=partition)
        self._out.append(PeerRequest(endpoint, stamped, key))

    def _send_confirms(self, now: float) -> None:
        """The turn's confirms, one request per peer endpoint."""
        for (endpoint, key), asks in self._confirms.items():
            if len(asks) == 1:
                partition, request = asks[0]
                self._peer_request(partition, endpoint, key, request, now)
                continue
            call_id = self._take_id()
            self._outgoing[call_id] = _Outgoing(None, None, now, "confirm_many",
                                                tuple((partition, request.id) for partition, request in asks))
            pairs = [(partition, request.epoch) for partition, request in asks]
            self._out.append(PeerRequest(endpoint, ConfirmMany(self.me.id, pairs, id=call_id), key))
        self._confirms.clear()

    def _push_targets(self) -> None:
        targets = {t for links in self.links.values() for t in (links.down, links.up) if t is not None}
        self._out.append(PushTargets(frozenset(targets)))

    def peers(self) -> Iterable[str]:
        """Every service endpoint some hosted replica may call."""
        for core in self.cores.values():
            topology = core.topology
            yield from (m.service for m in topology.members)
            if topology.learner is not None:
                yield topology.learner.service


def _type(request: NodeRequest) -> str:
    return type(request).__struct_config__.tag  # type: ignore[return-value]


__all__ = ["HostEffect", "PartitionHost", "PartitionStores", "Push", "PushTargets"]
