"""NodeCore: the CRAQ protocol of one node. Pure state transitions: no sockets, threads or clocks.

The shell (zcraq/node.py) and the simulator call one ``on_*`` method per decoded message, or
``tick`` for time, always passing the current monotonic time, then ``ready()`` once per loop turn:
it makes the turn's store changes durable (one batch) and returns the effects to carry out, so
nothing is forwarded or acknowledged before it is durable.

This module is the node's front door: it routes every message to the unit that owns its idea and
answers the requests that need several of them. The units:

    membership   joins, heartbeats, peer confirmations, topology changes: the node's place
    place        role and neighbours, computed once per topology
    replication  the commit rules: every store mutation the chain makes
    reads        clean reads locally, dirty reads through the tail's version query
    batches      many keys in one request, each run as a single read, write or delete
    links        sequence numbers, the sent list, sync, resync and resend (no store access)
    leases       the coordinator's lease, peer confirmations, the fence
    catchup      the learner's phases, and serving pages to one
    calls        requests sent to peers, waiting for replies
    changes      the changes committed here, in order, for watchers
    watches      watch requests: state pages, and polls of the changes held until there is one

Theory of operation
-------------------
Versions. The head gives each write of a key the next version (newest held + 1) and stores it
dirty. WRITE records flow down the chain; each node stores them dirty and remembers them in its
sent list until they commit. The tail stores them committed and sends COMMIT(key, version) up;
each node commits, prunes older versions, forgets the sent entry and passes the COMMIT on. The
head answers the client when the COMMIT reaches it.

Epochs. Every topology has an epoch; chain frames carry it. A node accepts chain traffic only from
its predecessor/successor of its current epoch and only in that epoch, so a node removed from the
chain cannot inject writes or commits.

Reads. A node serves reads only while it is in the chain and holds a lease. Newest version clean:
answer it. Dirty: ask the tail which version is committed and answer that, or the newest version
committed here if that is newer (it committed at the tail during the read: a correct answer,
never "not found"). The tail answers version queries only in the querier's epoch.

Joining. A node (re)starts fenced, registers with the coordinator, and is made the *learner*
behind the tail: the tail forwards it every write (flagged committed) while it copies the
committed state in pages. When the copy is complete and its live stream in sync it tells the
coordinator, which makes it the tail in a new epoch. A new tail serves only after the sync frame
from its predecessor in that epoch, so it holds everything the old tail had committed.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, assert_never

from msgspec import UNSET, UnsetType

from zcraq.access import chain_frame_refusal, node_request_refusal
from zcraq.callers import TRUSTED, Caller
from zcraq.effects import Effect, Respond
from zcraq.loglimit import LogLimiter
from zcraq.messages import (CatchupRequest, ChainFrame, CommitFrame, Confirm, ConfirmMany, Delete, DeleteMany, Error,
                            Malformed, NodeRequest, Ok, Read, ReadMany, Reply, ResyncFrame, Scan, StatusRequest,
                            VersionQuery, Watch, WatchState, Write, WriteFrame, WriteMany, request_type)
from zcraq.nodecore.arrivals import Arrivals
from zcraq.nodecore.batches import Batches
from zcraq.nodecore.calls import CallKind, Calls
from zcraq.nodecore.catchup import CatchUp, serve_page
from zcraq.nodecore.changes import ChangeLog
from zcraq.nodecore.leases import Leases
from zcraq.nodecore.links import InLink, Links
from zcraq.nodecore.membership import Membership
from zcraq.nodecore.place import Place
from zcraq.nodecore.reads import NeedsTail, Reads, fresh_since
from zcraq.nodecore.replication import Replication
from zcraq.nodecore.timings import NodeTimings
from zcraq.nodecore.watches import Watches
from zcraq.store.base import ReplicaStore
from zcraq.topology import Member, Topology

log = logging.getLogger("zcraq.node")

# Test-only protocol bugs that can be switched on to check that the checkers catch them.
# Deliberate bugs the simulator must find: dirty reads answered without asking the tail;
# conditional writes decided on the committed version alone while newer versions are dirty;
# bounded reads of dirty keys answered locally however long they have been dirty.
UNSAFE_FAULTS = frozenset({"dirty_read_local", "condition_on_committed", "bounded_any_age"})


def _new_counters() -> dict[str, int]:
    return {"reads": 0, "dirty_reads": 0, "writes": 0, "commits": 0, "bad_messages": 0, "stale_chain_frames": 0,
            "resyncs": 0, "resends": 0, "internal_errors": 0, "fenced_frames": 0, "unleased_frames": 0,
            "forbidden": 0, "conflicting_records": 0, "foreign_commits": 0, "conditions_failed": 0,
            "bounded_local_reads": 0, "watches": 0, "watches_pruned": 0}


class NodeCore:
    def __init__(self, me: Member, store: ReplicaStore, timings: NodeTimings | None = None,
                 unsafe: frozenset[str] = frozenset(), boot: str | None = None, partition: int = 0) -> None:
        """``boot`` names this run of the node in its change log's token: it must differ from every
        earlier run's (default: random). ``partition``: the one this core is a replica of; requests
        and chain frames naming another are refused (a one-partition cluster has partition 0)."""
        self.me = me
        self.partition = partition
        self.store = store
        self.timings = timings = timings or NodeTimings()
        # Deliberate protocol bugs, for tests proving that the simulator and the chaos runner
        # catch them. Never set in production: see UNSAFE_FAULTS.
        self.unsafe = unsafe
        self.counters = _new_counters()
        self.logs = LogLimiter(log)
        self._out: list[Effect] = []
        self.leases = Leases(timings.peer_lease)
        self.links = Links(me.id, timings.resend_interval, self._out, self.counters, partition)
        self.calls = Calls(timings.request_timeout, self._out)
        self.catchup = CatchUp(me.id, store, self.calls, self.counters, timings.catchup_page_items,
                               timings.heartbeat_interval)
        arrivals = Arrivals()  # when the versions not yet committed here arrived: bounded reads
        self.reads = Reads(store, self.calls, self._out, self.counters, arrivals, unsafe)
        self.batches = Batches()
        changes = ChangeLog(boot or secrets.token_hex(6), timings.watch_log_entries, timings.watch_log_bytes)
        self.watches = Watches(store, changes, self._out, self.counters)
        self.replication = Replication(store, self.links, self._out, self.counters, timings.write_timeout,
                                       self.logs, arrivals, changes, unsafe)
        self.membership = Membership(me, timings, store, self._out, self.leases, self.links, self.calls,
                                     self.catchup, self.replication, self.logs)

    # ------------------------------------------------------------------ what others ask of us

    @property
    def topology(self) -> Topology:
        return self.membership.topology

    @property
    def joined(self) -> bool:
        """The coordinator accepted this incarnation."""
        return self.membership.joined

    @property
    def place(self) -> Place:
        return self.membership.place

    @property
    def role(self) -> str:
        return self.place.role.value

    @property
    def caught_up(self) -> bool:
        return self.catchup.caught_up

    def serving(self, now: float) -> bool:
        """May this node answer reads, version queries and writes right now?"""
        place = self.place
        if not place.in_chain or not self.leases.held(now, place.peers):
            return False
        if self.replication.owed:
            return False  # a new tail holds versions an old tail may have committed: commit first
        if place.is_tail and place.predecessor is not None:
            return self.links.in_sync()  # it must first hold everything its predecessor forwarded
        return True

    def ready(self) -> list[Effect]:
        """End of a loop turn: the turn's dirty reads ask the tail (one query per key), buffered
        chain records become frames, every store change of the turn becomes durable in one batch,
        and only then are the effects handed over to be sent."""
        self.reads.send_queries()
        self.watches.answer_new()
        self.links.flush()
        self.store.flush()
        effects = self._out[:]
        self._out.clear()
        if self.batches.open:
            effects = self.batches.gather(effects)
        return effects

    def next_deadline(self, now: float) -> float:
        """When ``tick`` next has work; the shell may sleep until then."""
        return now + min(0.05, self.timings.heartbeat_interval)

    # ------------------------------------------------------------------ lifecycle and topology

    def start(self, now: float) -> None:
        """A fresh incarnation: fenced, it registers with the coordinator (see membership.py)."""
        self.membership.start(now)

    def on_topology(self, topology: Topology, now: float) -> None:
        """A topology published by the coordinator (ignored unless newer than ours)."""
        self.membership.on_topology(topology, now)

    # ------------------------------------------------------------------ chain frames

    def on_write_frame(self, frame: ChainFrame | Malformed, now: float, caller: Caller = TRUSTED) -> None:
        """A frame from the write-in endpoint (only ``w`` frames belong there)."""
        if type(frame) is not WriteFrame or frame.partition != self.partition:
            self._bad_chain_frame(frame, now)
            return
        if not self._accept(frame, self.links.write_in, now, caller):
            return
        if self.place.is_tail and not self.leases.held(now, self.place.peers):
            # Only a tail that is surely still the tail may commit: one removed while paused or
            # cut off would otherwise commit writes the chain never will. Resent later.
            self.counters["unleased_frames"] += 1
            return
        self.links.received_writes(frame, now)
        apply, copying = self.replication.apply_write, self.catchup.copying
        for record in frame.records:
            apply(record, now, copying)

    def on_ack_frame(self, frame: ChainFrame | Malformed, now: float, caller: Caller = TRUSTED) -> None:
        """A frame from the ack-in endpoint (``c`` and ``r`` frames belong there)."""
        if (type(frame) is not CommitFrame and type(frame) is not ResyncFrame) or frame.partition != self.partition:
            self._bad_chain_frame(frame, now)
            return
        if not self._accept(frame, self.links.ack_in, now, caller):
            return
        self.links.received_ack(frame, now)
        if type(frame) is CommitFrame:
            self.replication.apply_commits(frame.commits, now)

    def _accept(self, frame: ChainFrame, link: InLink | None, now: float, caller: Caller) -> bool:
        if self.leases.fenced(now) or not self.links.open:
            self.counters["fenced_frames"] += 1
            return False  # resent after the fence: the link starts afresh then
        if frame.epoch > self.topology.epoch:
            self.calls.ask_topology(now, self.topology.epoch)
        if link is None or frame.sender != link.sender or frame.epoch != link.epoch:
            self.counters["stale_chain_frames"] += 1
            return False
        refusal = chain_frame_refusal(frame, caller, self.topology)
        if refusal is not None:
            self.counters["forbidden"] += 1
            self.logs.warning("forbidden frame", now, "dropped %s (key %s)", refusal, caller.key)
            return False
        return True

    def _bad_chain_frame(self, frame: ChainFrame | Malformed, now: float) -> None:
        self.counters["bad_messages"] += 1
        if type(frame) is Malformed:
            self.logs.warning("malformed frame", now, "dropped a malformed chain frame: %s", frame.message)

    # ------------------------------------------------------------------ requests

    def on_request(self, client: Any, request: NodeRequest | Malformed, now: float,
                   caller: Caller = TRUSTED) -> None:
        if not isinstance(request, Malformed) and caller is not TRUSTED:
            refusal = node_request_refusal(request, caller, self.topology)
            if refusal is not None:
                self.counters["forbidden"] += 1
                self.logs.warning("forbidden request", now, "refused a %s request: %s (key %s)",
                                  request_type(request), refusal, caller.key)
                self._error(client, request.id, "forbidden", refusal)
                return
        if not isinstance(request, Malformed) and request.partition is not UNSET \
                and request.partition != self.partition:
            self._error(client, request.id, "wrong_partition", f"this node has no replica of partition "
                                                                f"{request.partition} (it hosts {self.partition})")
            return
        match request:
            case Read():
                self._read(client, request, now)
            case Write():
                self._write(client, request.id, request.key, request.value, False, request.if_version, now)
            case Delete():
                self._write(client, request.id, request.key, b"", True, request.if_version, now)
            case ReadMany():
                self._read_many(client, request, now)
            case WriteMany():
                self._write_many(client, request.id, request.keys, request.values, now)
            case DeleteMany():
                self._write_many(client, request.id, request.keys, None, now)
            case Scan():
                self._scan(client, request, now)
            case Watch() | WatchState():
                self._watch(client, request, now)
            case VersionQuery():
                self.reads.version_query(client, request, self.place, self.serving(now))
            case CatchupRequest():
                self._serve_page(client, request)
            case StatusRequest():
                self._status(client, request, now)
            case Confirm():
                self.membership.confirm(client, request)
            case ConfirmMany():
                self._error(client, request.id, "bad_request", "confirm_many is for nodes of a partitioned cluster")
            case Malformed():
                self.counters["bad_messages"] += 1
                self._error(client, request.id, request.code, request.message)
            case _:
                assert_never(request)

    def answer_confirm(self, request: Confirm, caller: Caller = TRUSTED) -> Reply:
        """The answer ``on_request`` would send to a confirm (PROTOCOL.md §8.7), given back instead:
        a partitioned node answers a ``confirm_many`` with one per partition."""
        if caller is not TRUSTED:
            refusal = node_request_refusal(request, caller, self.topology)
            if refusal is not None:
                self.counters["forbidden"] += 1
                return Error(request.id, "forbidden", refusal)
        return self.membership.answer_confirm(request)

    def _read(self, client: Any, request: Read, now: float) -> None:
        if self.serving(now):
            self.reads.read(client, request, self.place, now)
        else:
            self._error(client, request.id, "unavailable", self._not_serving_reason(now))

    def _read_many(self, client: Any, request: ReadMany | Scan, now: float, keys: list[str] | None = None,
                   cursor: str | None = None) -> None:
        """read_many; or a scan's page of ``keys`` (then ``cursor``: where the next page starts)."""
        if not self.serving(now):
            self._error(client, request.id, "unavailable", self._not_serving_reason(now))
            return
        scan = keys is not None
        if keys is None:
            keys = request.keys  # type: ignore[union-attr]
        reads, place, mode = self.reads, self.place, request.mode
        batch = self.batches.start(client, request.id, len(keys), reads=True, scan=scan, cursor=cursor)
        if scan:
            batch.keys = keys
        self.counters["reads"] += len(keys)
        local, found = reads.local, batch.found
        oldest = fresh_since(request, now) if mode == "bounded" else now
        for index, key in enumerate(keys):
            item = local(key, mode, place, oldest)
            if isinstance(item, NeedsTail):
                reads.ask_tail(self.batches.slot(batch, index), None, key, place, now)
            else:
                found(index, item)
        if batch.left == 0:
            self._out.append(batch.reply())

    def _scan(self, client: Any, request: Scan, now: float) -> None:
        """A page of keys in the range, each read as read_many reads it; keys without a value are
        left out of the reply."""
        if not self.serving(now):
            self._error(client, request.id, "unavailable", self._not_serving_reason(now))
            return
        after, limit = request.after, request.limit
        if after is not None and after >= request.start:
            keys = self.store.keys(after, request.end, request.prefix, limit + 1)
            if keys and keys[0] == after:
                del keys[0]
            del keys[limit:]
        else:
            keys = self.store.keys(request.start, request.end, request.prefix, limit)
        self._read_many(client, request, now, keys, keys[-1] if len(keys) == limit else None)

    def _watch(self, client: Any, request: Watch | WatchState, now: float) -> None:
        """Only a serving node: its committed state and change log are the chain's, at most behind."""
        self.counters["watches"] += 1
        if not self.serving(now):
            self._error(client, request.id, "unavailable", self._not_serving_reason(now))
        elif isinstance(request, Watch):
            self.watches.poll(client, request, now)
        else:
            self.watches.state(client, request)

    def _write_many(self, client: Any, request_id: Any, keys: list[str], values: tuple[bytes, ...] | None,
                    now: float) -> None:
        """write_many (``values``) or delete_many (None): refused as a whole like a single write,
        or each key written as one."""
        if self._write_refused(client, request_id, now):
            return
        deletes = values is None
        batches = self.batches
        batch = batches.start(client, request_id, len(keys), deletes=deletes)
        write = self.replication.client_write
        for index, key in enumerate(keys):
            write(batches.slot(batch, index), None, key, b"" if values is None else values[index], deletes, now)

    def _not_serving_reason(self, now: float) -> str:
        if not self.joined:
            return "node is registering with the coordinator"
        if self.place.is_learner:
            return "node is catching up and serves no reads yet"
        if not self.place.in_chain:
            return "node is not in the chain"
        if not self.leases.held(now, self.place.peers):
            return "node has no valid lease (neither from the coordinator nor from every peer)"
        return "node is waiting for its predecessor to sync"

    def _write(self, client: Any, request_id: Any, key: str, value: bytes, tombstone: bool,
               if_version: int | UnsetType, now: float) -> None:
        if self._write_refused(client, request_id, now):
            return
        if if_version is UNSET:
            self.replication.client_write(client, request_id, key, value, tombstone, now)
        else:
            self.replication.conditional_write(client, request_id, key, value, tombstone, if_version, now)

    def _write_refused(self, client: Any, request_id: Any, now: float) -> bool:
        """Refuse a write that this node cannot take now (answered), before anything is stored."""
        if not self.place.is_head:
            head = self.place.head
            self._out.append(Respond(client, Error(request_id, "not_head", "writes go to the head of the chain",
                                                   head=head.service if head else None)))
            return True
        if not self.serving(now) or not self.links.open:
            reason = self._not_serving_reason(now) if not self.serving(now) else "the chain is reconfiguring"
            self._error(client, request_id, "unavailable", reason)
            return True
        return False

    def _serve_page(self, client: Any, request: CatchupRequest) -> None:
        if not self.place.in_chain or request.epoch != self.topology.epoch:
            self._error(client, request.id, "wrong_epoch", "catch-up source is not in that epoch",
                        epoch=self.topology.epoch)
        elif not self.links.open:
            # Commits this node still owes (a new tail, a restarted last member) must be in the pages.
            self._error(client, request.id, "unavailable", "catch-up source is reconfiguring; retry")
        else:
            page, values = serve_page(self.store, request)
            self._out.append(Respond(client, page, values))

    def _status(self, client: Any, request: StatusRequest, now: float) -> None:
        lease_left = self.leases.coordinator_until - now
        self._reply(client, Ok(request.id, node=self.me.id, epoch=self.topology.epoch, role=self.role,
                               serving=self.serving(now), caught_up=self.caught_up, counters=dict(self.counters),
                               sent=len(self.links.sent), lease_left_ms=int(lease_left * 1000) if lease_left > 0 else 0))

    def _reply(self, client: Any, reply: Reply) -> None:
        self._out.append(Respond(client, reply))

    def _error(self, client: Any, request_id: Any, code: str, message: str, **extra: Any) -> None:
        self._out.append(Respond(client, Error(request_id, code, message, **extra)))

    # ------------------------------------------------------------------ calls to peers

    def on_peer_reply(self, reply: Reply | Malformed, values: list[bytes], now: float) -> None:
        """A reply to one of our calls (a late one, to a call already given up, is dropped)."""
        if isinstance(reply, Malformed):
            self.counters["bad_messages"] += 1
            self.logs.warning("malformed reply", now, "dropped a malformed reply: %s", reply.message)
            reply = Error(reply.id, "bad_reply", reply.message)  # its call fails now, not at its deadline
        call = self.calls.take(reply.id)
        if call is None:
            return
        match call.kind:
            case CallKind.VERSION:
                self.reads.tail_answered(call, reply, self.topology.epoch, now)
            case CallKind.JOIN:
                self.membership.join_answered(reply, now)
            case CallKind.TOPOLOGY:
                self.membership.topology_answered(reply, now)
            case CallKind.HEARTBEAT:
                self.membership.heartbeat_answered(call, reply, now)
            case CallKind.CONFIRM:
                self.membership.confirm_answered(call, reply, now)
            case CallKind.CAUGHT_UP:
                if isinstance(reply, Error):  # the report is repeated until taken
                    self.logs.info("caught_up refused", now, "coordinator did not take the catch-up report: %s",
                                   reply.message)
            case CallKind.CATCHUP:
                self.catchup.page_answered(call, reply, values, self.place, self.links.in_sync(), now)
            case _:
                assert_never(call.kind)

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Heartbeats, time-outs and retransmission. Call often (every few tens of ms)."""
        self.membership.tick(now)
        if self.links.write_in is not None and not self.links.write_in.synced:
            self.links.request_resync(now)  # the sync frame or our request for it may have been lost
        for call in self.calls.expire(now):
            if call.kind is CallKind.VERSION:
                self.reads.tail_timed_out(call)
        self.replication.expire_writes(now)
        self.watches.expire(now)
        self.replication.decide_held(now, self.place.is_head and self.serving(now) and self.links.open)
        self.links.resend_stale(now)
        if self.place.is_learner:
            self.catchup.drive(self.place, self.links.in_sync(), now)
