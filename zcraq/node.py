"""The node process: binds its sockets, runs the poll loop, and feeds the node core.

One thread owns every socket. Each loop turn reads what is waiting (in bounded batches), decodes it
into typed messages (zcraq/wire.py; size limits are checked before anything is parsed) and hands
them to the core, then asks the core for the turn's effects: ``ready()`` has already made the turn
durable (group commit: one store batch per turn, whatever the load), so nothing is forwarded or
acknowledged before it is durable. The shell encodes and sends.
"""

from __future__ import annotations

import logging
import os
import time
from typing import assert_never

import zmq

from zcraq import sockets, wire
from zcraq.callers import TRUSTED, Caller
from zcraq.config import ConfigError, NodeConfig
from zcraq.effects import Effect, PeerRequest, Publish, Relink, Respond, SendDown, SendUp, Subscribe
from zcraq.messages import ChainFrame, Leave, Malformed
from zcraq.monitoring.http import ProbeServer
from zcraq.monitoring.node import NodeCollector, NodeView, node_request_stats, take_node_view
from zcraq.monitoring.views import Publisher, ViewSlot
from zcraq.nodecore import UNSAFE_FAULTS, NodeCore, NodeTimings
from zcraq.notify import Notifier
from zcraq.security import ProcessSecurity
from zcraq.signals import run_until_signalled
from zcraq.store import LevelDBStore
from zcraq.topology import Member
from zcraq.wire import Limits, WireError

log = logging.getLogger("zcraq.node")

BATCH = 256  # messages taken from one socket per loop turn: fairness between sockets
# The core's timers (heartbeats, time-outs, resends) count in tens of milliseconds or more; under
# load a loop turn takes far less, and a tick in every turn walks the pending writes for nothing.
TICK_INTERVAL = 0.005
TOPIC = b"topology"


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


class NodeProcess:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._stopping = False
        self.limits = limits = Limits(config.limits.max_key_bytes, config.limits.max_value_bytes)
        self.max_message = sockets.request_cap(limits)
        self.store = LevelDBStore(config.data_dir, config.durability, config.index_max_keys)
        timings = NodeTimings(
            heartbeat_interval=config.heartbeat_interval_ms / 1000,
            request_timeout=config.request_timeout_ms / 1000,
            catchup_page_items=config.catchup_page_items,
            peer_lease=config.peer_lease_ms / 1000,
            watch_log_entries=config.watch_log_entries,
            watch_log_bytes=config.watch_log_mib << 20,
        )
        self.ctx = zmq.Context()
        self.security: ProcessSecurity | None = None
        self.views: ViewSlot[NodeView] = ViewSlot()
        self.probes: ProbeServer | None = None
        try:
            if config.security is not None:
                self.security = ProcessSecurity(self.ctx, config.security, config.path)
            curve = self.security.curve if self.security else None
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
            self.store.close()
            raise
        key = curve.own.public_text if curve else None
        self.me = Member(config.id, config.service_endpoint, config.write_endpoint, config.ack_endpoint, key)
        self.core = NodeCore(self.me, self.store, timings, unsafe_faults_from_environment())
        # Per-request figures only when something shows them: without them the hot path is as it was.
        self.requests = node_request_stats() if self.probes is not None else None
        self.publisher = Publisher(lambda now: take_node_view(self.core, now, self.requests),
                                   self.views if self.probes is not None else None, Notifier())
        self.sub: zmq.Socket | None = None
        self._reload = False
        self.poller = zmq.Poller()
        for sock in (self.service, self.write_in, self.ack_in):
            self.poller.register(sock, zmq.POLLIN)
        if self.security is not None:
            self.poller.register(self.security.zap.sock, zmq.POLLIN)
        self.down = sockets.PushLink(self.ctx, curve)
        self.up = sockets.PushLink(self.ctx, curve)
        self.peers = sockets.DealerPool(self.ctx, self.poller, {
            "coordinator": (config.coordinator, curve.coordinator_key if curve else None)}, curve)

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        log.info("node %s: service %s, writes %s, acks %s, data %s", self.me.id, self.me.service,
                 self.me.write_in, self.me.ack_in, self.config.data_dir)
        if self.store.index_max_keys:
            log.info("version index: %s keys (at most %s), filled in %.2f s", f"{self.store.indexed_keys:,}",
                     f"{self.store.index_max_keys:,}", self.store.index_fill_seconds)
        else:
            log.info("version index off (index_max_keys = 0): every read and write searches LevelDB")
        self.core.start(time.monotonic())
        self._execute(self.core.ready())
        next_tick = float("-inf")
        while not self._stopping:
            now = time.monotonic()
            # A catch-up page waiting to be stored is stored at the next turn's tick: no sleep first.
            wait = 0 if self.core.catchup.page_waiting else self.core.next_deadline(now) - now
            timeout_ms = max(0, int(wait * 1000))
            ready = dict(self.poller.poll(timeout_ms))
            now = time.monotonic()
            for sock in ready:
                self._dispatch(sock, now)
            if now >= next_tick or self.core.catchup.page_waiting:  # the tick stores a waiting page
                self.core.tick(now)
                next_tick = now + TICK_INTERVAL
            self._execute(self.core.ready())
            self._flush_logs(now)
            self.publisher.turn(now)
            if self._reload and self.security is not None:
                self._reload = False
                self.security.reload()
        self.publisher.stopping()
        self._leave()

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
            core.on_write_frame(self._chain_frame(frames), now, caller)
        elif sock is self.ack_in:
            core.on_ack_frame(self._chain_frame(frames), now, caller)
        elif sock is self.sub:
            self._on_topology_message(frames, now)
        elif frames and frames[0] == b"":  # a DEALER: a reply from a peer or the coordinator
            reply, values = wire.read_reply(frames[1:])
            core.on_peer_reply(reply, values, now)
        else:
            core.counters["bad_messages"] += 1

    def _chain_frame(self, frames: list[bytes]) -> ChainFrame | Malformed:
        if len(frames) != 1:
            return Malformed("bad_request", f"a chain message has exactly one frame, not {len(frames)}")
        return wire.read_chain(frames[0], self.limits)

    def _on_service(self, frames: list[bytes], now: float, caller: Caller) -> None:
        split = sockets.split_or_reject(self.service, frames)
        if split is None:
            self.core.counters["bad_messages"] += 1
            return
        envelope, body = split
        request = wire.read_node_request(body, self.limits)
        client = envelope if self.requests is None else self.requests.arrived(envelope, request, now)
        self.core.on_request(client, request, now, caller)

    def _on_topology_message(self, frames: list[bytes], now: float) -> None:
        if len(frames) != 2 or frames[0] != TOPIC:
            self.core.counters["bad_messages"] += 1
            return
        try:
            topology = wire.decode_topology(frames[1])
        except WireError as error:
            self.core.counters["bad_messages"] += 1
            self.core.logs.warning("malformed topology", now, "ignored a malformed topology update: %s", error)
            return
        self.core.on_topology(topology, now)

    # ------------------------------------------------------------------ effects

    def _execute(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case SendDown():
                    self.down.send(wire.encode_chain(effect.frame))
                case SendUp():
                    self.up.send(wire.encode_chain(effect.frame))
                case Respond():
                    frames = wire.encode_reply(effect.reply, effect.values)
                    envelope = effect.client if self.requests is None else self.requests.replied(
                        effect.client, effect.reply, time.monotonic())
                    sockets.send_nowait(self.service, [*envelope, *frames])
                case PeerRequest():
                    self.peers.send(effect.endpoint, wire.encode_request(effect.request), effect.key)
                case Relink():
                    self.down.retarget(effect.down, effect.down_key)
                    self.up.retarget(effect.up, effect.up_key)
                    self._prune_peers()
                case Subscribe():
                    self._subscribe(effect.endpoint)
                case Publish():
                    raise AssertionError("nodes do not publish")
                case _:
                    assert_never(effect)

    def _prune_peers(self) -> None:
        topology = self.core.topology
        keep = [m.service for m in topology.members]
        if topology.learner is not None:
            keep.append(topology.learner.service)
        self.peers.keep_only(keep)

    def _subscribe(self, endpoint: str) -> None:
        if self.sub is not None:
            if self.sub.getsockopt_string(zmq.LAST_ENDPOINT) == endpoint:
                return
            self.poller.unregister(self.sub)
            self.sub.close(0)
        curve = self.security.curve if self.security else None
        try:
            sub = sockets.connected(self.ctx, zmq.SUB, endpoint, curve=curve,
                                    server_key=curve.coordinator_key if curve else None)
        except sockets.AddressError as error:
            self.core.logs.error("subscribe", time.monotonic(), "%s; topology updates come with heartbeats only",
                                 error)
            self.sub = None
            return
        self.sub = sub
        sub.setsockopt(zmq.SUBSCRIBE, TOPIC)
        self.poller.register(sub, zmq.POLLIN)

    # ------------------------------------------------------------------ shutdown

    def stop(self, *_args: object) -> None:
        self._stopping = True

    def reload(self) -> None:
        """SIGHUP: reread the allow-lists at the end of this loop turn."""
        self._reload = True

    def _leave(self) -> None:
        """Tell the coordinator we are going, so it repairs the chain at once, then close."""
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
        for link in (self.down, self.up, self.peers):
            link.close()
        if self.security is not None:
            self.security.close()
        if self.probes is not None:
            self.probes.close()
        self.publisher.close()
        self.store.close()
        self.ctx.destroy(linger=0)  # closes any socket an interrupt left behind, where term would wait


def run_node(config: NodeConfig) -> None:
    """Run until SIGINT or SIGTERM."""
    process = NodeProcess(config)
    run_until_signalled(process.run, process.stop, process.reload)
