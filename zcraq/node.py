"""The node process: binds its sockets, runs the poll loop, and feeds the protocol core.

One thread owns every socket. Each loop turn reads what is waiting (in bounded batches), decodes it
into typed messages (zcraq/wire.py; size limits are checked before anything is parsed) and hands
them to the core, then asks the core for the turn's effects: ``ready()`` has already made the turn
durable (group commit: one store batch per turn, whatever the load), so nothing is forwarded or
acknowledged before it is durable. The shell encodes and sends.

Whether the cluster has partitions is the coordinator's to say (its config fixes it when the cluster
is created). A node binds its sockets, opens its database and runs its loop at once; its first act
is to ask the coordinator for the topology, again every second until it answers. A ``table`` in the
answer means partitions: the node runs a replica per partition placed on it
(zcraq/node_partitioned.py); a ``topology``, one chain: one node core (zcraq/node_chain.py), as
always. Until then the node serves nothing: requests wait in their sockets' queues.
"""
from __future__ import annotations

import logging
import os
import time
from types import MappingProxyType
from typing import Any, Protocol

import zmq
from msgspec import UNSET

from zcraq import sockets, wire
from zcraq.callers import TRUSTED, Caller
from zcraq.config import ConfigError, NodeConfig
from zcraq.coordinator_finder import CoordinatorFinder
from zcraq.effects import Respond
from zcraq.hosting import parse_table
from zcraq.messages import ChainFrame, Error, Leave, Malformed, Ok, Reply, TopologyRequest
from zcraq.monitoring.http import ProbeServer
from zcraq.monitoring.node import NodeCollector, NodeView, node_request_stats
from zcraq.monitoring.views import Publisher, ViewSlot
from zcraq.nodecore import UNSAFE_FAULTS, NodeTimings
from zcraq.notify import Notifier
from zcraq.security import ProcessSecurity
from zcraq.signals import run_until_signalled
from zcraq.store.leveldb import open_database
from zcraq.topology import Member
from zcraq.wire import Limits

log = logging.getLogger("zcraq.node")

BATCH = 256  # messages taken from one socket per loop turn: fairness between sockets
# The core's timers (heartbeats, time-outs, resends) count in tens of milliseconds or more; under
# load a loop turn takes far less, and a tick in every turn walks the pending writes for nothing.
TICK_INTERVAL = 0.005
COORDINATOR_SILENCE = 1.0  # seconds
ASK_EVERY = 1.0  # seconds between questions to a coordinator that has not said the cluster's shape


UNSAFE_ENV = "ZCRAQ_UNSAFE_TEST_FAULTS"


def unsafe_faults_from_environment() -> frozenset[str]:
    """Deliberate protocol bugs for tests that prove the checkers catch them (never in production).
    Unknown names stop the node rather than being silently ignored."""
    names = frozenset(n for n in os.environ.get(UNSAFE_ENV, "").split(",") if n)
    unknown = names - UNSAFE_FAULTS
    if unknown:
        raise ConfigError(UNSAFE_ENV, None, f"unknown test fault {sorted(unknown)[0]!r}")
    if names:
        log.warning("UNSAFE test faults enabled: %s", ", ".join(sorted(names)))
    return names


class Replicas(Protocol):
    """What the node runs once it knows the cluster's shape: one chain (zcraq/node_chain.py) or
    partitions (zcraq/node_partitioned.py)."""

    core: Any  # NodeCore or PartitionHost: the same on_* / tick / start / ready interface
    topic: bytes  # what the node follows on the coordinator's publisher

    def log_store(self) -> None: ...

    @property
    def page_waiting(self) -> bool: ...

    def view(self, now: float) -> NodeView: ...

    def on_published(self, payload: bytes, now: float) -> None: ...

    def turn(self, now: float) -> None: ...

    def close(self) -> None: ...


class NodeProcess:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._stopping = False
        self.limits = limits = Limits(config.limits.max_key_bytes, config.limits.max_value_bytes)
        self.max_message = sockets.request_cap(limits)
        self.timings = NodeTimings(
            heartbeat_interval=config.heartbeat_interval_ms / 1000,
            request_timeout=config.request_timeout_ms / 1000,
            catchup_page_items=config.catchup_page_items,
            peer_lease=config.peer_lease_ms / 1000,
            watch_log_entries=config.watch_log_entries,
            watch_log_bytes=config.watch_log_mib << 20,
        )
        self.unsafe = unsafe_faults_from_environment()
        self.db = open_database(config.data_dir, "store")  # its lock now: one process per data directory
        self.ctx = zmq.Context()
        self.security: ProcessSecurity | None = None
        self.views: ViewSlot[NodeView] = ViewSlot()
        self.probes: ProbeServer | None = None
        try:
            if config.security is not None:
                self.security = ProcessSecurity(self.ctx, config.security, config.path)
            self.curve = curve = self.security.curve if self.security else None
            if config.metrics_port:
                self.probes = ProbeServer(config, self.views, NodeCollector(self.views, config.data_dir))
            self.service, self.write_in, self.ack_in = sockets.bind_all(self.ctx, config, [
                (zmq.ROUTER, "service_port", self.max_message),
                (zmq.PULL, "write_port", sockets.MAX_MESSAGE_BYTES),
                (zmq.PULL, "ack_port", sockets.MAX_MESSAGE_BYTES)], curve)
        except ConfigError:
            if self.probes is not None:
                self.probes.close()
            if self.security is not None:
                self.security.close()
            self.ctx.destroy(linger=0)  # closes any socket an interrupt left behind, where term would wait
            self.db.close()
            raise
        key = curve.own.public_text if curve else None
        self.me = Member(config.id, config.service_endpoint, config.write_endpoint, config.ack_endpoint, key)
        self.replicas: Replicas | None = None  # once the coordinator has said the cluster's shape
        self.core: Any = None  # the replicas' core
        # Per-request figures only when something shows them: without them the hot path is as it was.
        self.requests = node_request_stats() if self.probes is not None else None
        self.publisher = Publisher(self._view, self.views if self.probes is not None else None, Notifier())
        self.sub: zmq.Socket | None = None
        self._reload = False
        self.poller = zmq.Poller()
        for sock in (self.service, self.write_in, self.ack_in):
            self.poller.register(sock, zmq.POLLIN)
        if self.security is not None:
            self.poller.register(self.security.zap.sock, zmq.POLLIN)
        # Several coordinators (one leads): one that leaves a request unanswered this long is
        # taken for gone (a heartbeat is answered in milliseconds).
        self.finder = CoordinatorFinder(config.coordinators or (config.coordinator,), COORDINATOR_SILENCE)
        self.peers = sockets.DealerPool(self.ctx, self.poller, {
            "coordinator": (config.coordinator, curve.coordinator_key if curve else None)}, curve,
            on_alias_send=lambda _alias: self.finder.sent(time.monotonic()))

    def _view(self, now: float) -> NodeView:
        if self.replicas is not None:
            return self.replicas.view(now)
        return NodeView(node=self.me.id, role="joining", epoch=0, serving=False, caught_up=False, sent=0,
                        dirty_keys=0, lease_left=0.0, catchup_phase="done", catchup_copied=0,
                        catchup_fraction=None, counters=MappingProxyType({}), requests=None)

    # ------------------------------------------------------------------ the cluster's shape

    def _learn_shape(self) -> Replicas | None:
        """Ask the coordinator (every ASK_EVERY seconds) until it says whether the cluster has
        partitions; the loop keeps turning meanwhile (the watchdog, the probes). None: stopped."""
        said_waiting, asked_at, asked = False, float("-inf"), 0
        security = self.security
        while not self._stopping:
            now = time.monotonic()
            if now - asked_at >= ASK_EVERY:
                asked_at, asked = now, asked + 1
                # A text id: a late answer, once the replicas run, matches none of their calls.
                self.peers.send("coordinator", wire.encode_request(TopologyRequest(id=f"shape {asked}")))
                if asked == 3 and not said_waiting:
                    said_waiting = True
                    log.info("waiting for the coordinator at %s to answer", self.config.coordinator)
            poller = zmq.Poller()  # only these: requests and chain frames wait for the replicas
            coordinator = self.peers.socket_of("coordinator")
            if coordinator is not None:
                poller.register(coordinator, zmq.POLLIN)
            if security is not None:
                poller.register(security.zap.sock, zmq.POLLIN)
            for sock, _ in poller.poll(50):
                if security is not None and sock is security.zap.sock:
                    security.zap.handle()
                    continue
                for frames in sockets.recv_batch(sock, BATCH):
                    shape = self._shape_of(frames, asked)
                    if shape is not None:
                        return shape
            self._find_coordinator(time.monotonic())
            self.publisher.turn(time.monotonic())
            self._reload_if_asked()
        return None

    def _shape_of(self, frames: list[bytes], asked: int) -> Replicas | None:
        if not frames or frames[0] != b"":
            return None
        reply, _values = wire.read_reply(frames[1:])
        self._coordinator_answered(reply, time.monotonic())
        if isinstance(reply, Ok) and isinstance(reply.table, dict):
            try:
                parse_table(reply.table)
            except ValueError as error:
                log.error("the coordinator's partition table is malformed: %s", error)
                return None
            log.info("the cluster has %d partitions", len(reply.table["partitions"]))
            from zcraq.node_partitioned import Partitioned
            return Partitioned(self, self.db, reply.table)
        if isinstance(reply, Ok) and reply.topology is not UNSET:
            from zcraq.node_chain import OneChain
            return OneChain(self, self.db)
        if isinstance(reply, (Error, Malformed)) and reply.id == f"shape {asked}" and reply.code != "not_leader":
            log.error("the coordinator did not say the cluster's shape: %s", reply.message)
        return None

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        log.info("node %s: service %s, writes %s, acks %s, data %s", self.me.id, self.me.service,
                 self.me.write_in, self.me.ack_in, self.config.data_dir)
        replicas = self._learn_shape()
        if replicas is None:
            self.publisher.stopping()
            self.close()
            return
        self.replicas, self.core = replicas, replicas.core
        replicas.log_store()
        self.core.start(time.monotonic())
        replicas.turn(time.monotonic())
        next_tick = float("-inf")
        while not self._stopping:
            now = time.monotonic()
            wait = 0 if replicas.page_waiting else self.core.next_deadline(now) - now
            timeout_ms = max(0, int(wait * 1000))
            ready = dict(self.poller.poll(timeout_ms))
            now = time.monotonic()
            for sock in ready:
                self._dispatch(sock, now)
            if now >= next_tick or replicas.page_waiting:  # the tick stores a waiting page
                self.core.tick(now)
                next_tick = now + TICK_INTERVAL
            replicas.turn(now)
            self._find_coordinator(now)
            self._flush_logs(now)
            self.publisher.turn(now)
            self._reload_if_asked()
        self.publisher.stopping()
        self._leave()

    def _coordinator_answered(self, reply: Reply | Malformed, now: float) -> None:
        moved = self.finder.answered(reply, now)
        if moved is not None:
            self.peers.retarget("coordinator", moved)

    def _find_coordinator(self, now: float) -> None:
        moved = self.finder.check(now)
        if moved is not None:
            self.peers.retarget("coordinator", moved)

    def _reload_if_asked(self) -> None:
        if self._reload and self.security is not None:
            self._reload = False
            self.security.reload()

    def _flush_logs(self, now: float) -> None:
        """Counts of repeated lines left out come out once their interval is over."""
        self.core.logs.flush(now)
        self.peers.logs.flush(now)
        if self.security is not None:
            self.security.zap.logs.flush(now)

    def _dispatch(self, sock: zmq.Socket, now: float) -> None:
        security = self.security
        if security is not None and sock is security.zap.sock:
            security.zap.handle()
            return
        if security is not None and sock in (self.service, self.write_in, self.ack_in):
            batch = [(frames, security.caller(key)) for frames, key in sockets.recv_batch_with_keys(sock, BATCH)]
        else:
            batch = [(frames, TRUSTED) for frames in sockets.recv_batch(sock, BATCH)]
        for frames, caller in batch:
            try:
                self._handle(sock, frames, now, caller)
            except Exception:  # a message the validation missed must not take the node down
                self.core.counters["internal_errors"] += 1
                self.core.logs.log(logging.ERROR, "internal error", now, "error while handling a message; message "
                                   "dropped", exc_info=True)

    def _handle(self, sock: zmq.Socket, frames: list[bytes], now: float, caller: Caller) -> None:
        core = self.core
        if sock is self.service:
            self._on_service(frames, now, caller)
        elif sock is self.write_in:
            for frame in self._chain_frames(frames):
                core.on_write_frame(frame, now, caller)
        elif sock is self.ack_in:
            for frame in self._chain_frames(frames):
                core.on_ack_frame(frame, now, caller)
        elif sock is self.sub:
            self._on_published(frames, now)
        elif frames and frames[0] == b"":  # a DEALER: a reply from a peer or the coordinator
            reply, values = wire.read_reply(frames[1:])
            if sock is self.peers.socket_of("coordinator"):
                self._coordinator_answered(reply, now)
            core.on_peer_reply(reply, values, now)
        else:
            core.counters["bad_messages"] += 1

    def _chain_frames(self, frames: list[bytes]) -> list[ChainFrame | Malformed]:
        """A chain message's frames, each decoded alone: one bad frame spoils only itself."""
        if len(frames) > wire.MAX_CHAIN_MESSAGE_FRAMES:
            return [Malformed("bad_request", f"a chain message has at most {wire.MAX_CHAIN_MESSAGE_FRAMES} frames, "
                                             f"not {len(frames)}")]
        return [wire.read_chain(frame, self.limits) for frame in frames]

    def _on_service(self, frames: list[bytes], now: float, caller: Caller) -> None:
        split = sockets.split_or_reject(self.service, frames)
        if split is None:
            self.core.counters["bad_messages"] += 1
            return
        envelope, body = split
        request = wire.read_node_request(body, self.limits)
        client = envelope if self.requests is None else self.requests.arrived(envelope, request, now)
        self.core.on_request(client, request, now, caller)

    def _on_published(self, frames: list[bytes], now: float) -> None:
        assert self.replicas is not None
        if len(frames) != 2 or frames[0] != self.replicas.topic:
            self.core.counters["bad_messages"] += 1
            return
        self.replicas.on_published(frames[1], now)

    # ------------------------------------------------------------------ what the replicas send

    def respond(self, effect: Respond) -> None:
        frames = wire.encode_reply(effect.reply, effect.values)
        envelope = effect.client if self.requests is None else self.requests.replied(
            effect.client, effect.reply, time.monotonic())
        sockets.send_nowait(self.service, [*envelope, *frames])

    def subscribe(self, endpoint: str, topic: bytes) -> None:
        """Follow ``topic`` on the coordinator's publisher at ``endpoint``."""
        if self.sub is not None:
            if self.sub.getsockopt_string(zmq.LAST_ENDPOINT) == endpoint:
                return
            self.poller.unregister(self.sub)
            self.sub.close(0)
        curve = self.curve
        try:
            sub = sockets.connected(self.ctx, zmq.SUB, endpoint, curve=curve,
                                    server_key=curve.coordinator_key if curve else None)
        except sockets.AddressError as error:
            self.core.logs.error("subscribe", time.monotonic(), "%s; topology updates come with heartbeats only",
                                 error)
            self.sub = None
            return
        self.sub = sub
        sub.setsockopt(zmq.SUBSCRIBE, topic)
        self.poller.register(sub, zmq.POLLIN)

    # ------------------------------------------------------------------ shutdown

    def stop(self, *_args: object) -> None:
        self._stopping = True

    def reload(self) -> None:
        """SIGHUP: reread the allow-lists at the end of this loop turn."""
        self._reload = True

    def _leave(self) -> None:
        """Tell the coordinator we are going, so it repairs the chain at once, then close. (A node
        of a partitioned cluster leaves every partition's chain with this one request.)"""
        if self.core.joined:
            log.info("leaving the chain")
            self.peers.send("coordinator", wire.encode_request(Leave(self.me.id, id=0)))
            deadline = time.monotonic() + 1.0
            coordinator = self.peers.socket_of("coordinator")
            while coordinator is not None and time.monotonic() < deadline:
                if coordinator.poll(100) and self._is_leave_reply(coordinator.recv_multipart()):
                    break
        self.close()

    @staticmethod
    def _is_leave_reply(frames: list[bytes]) -> bool:
        reply, _values = wire.read_reply(frames[1:])
        return reply.id == 0

    def close(self) -> None:
        for sock in (self.service, self.write_in, self.ack_in, self.sub):
            if sock is not None:
                sock.close(0)
        self.peers.close()
        if self.security is not None:
            self.security.close()
        if self.probes is not None:
            self.probes.close()
        self.publisher.close()
        try:
            if self.replicas is not None:
                self.replicas.close()  # flushes what the stores hold
        finally:
            if not self.db.closed:
                self.db.close()
            self.ctx.destroy(linger=0)  # closes any socket an interrupt left behind, where term would wait


def run_node(config: NodeConfig) -> None:
    """Run until SIGINT or SIGTERM."""
    process = NodeProcess(config)
    run_until_signalled(process.run, process.stop, process.reload)
