"""The coordinator process: its request endpoint, its topology publisher and its durable state.

State (the current topology with its epoch) is written to ``state_dir/state.json`` atomically
(write, fsync, rename, fsync the directory) by the core's ``ready()``, before any reply or
publication that depends on it is handed to this shell.

``CoordinatorShell`` is what this one-chain coordinator and the partitioned one
(zcraq/coordinator_partitioned.py) share: the sockets, CURVE, the probes and the loop. A cluster's
shape is fixed when it is created: a state directory of one kind is never run as the other.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typing import assert_never

import orjson
import zmq

from zcraq import sockets, wire
from zcraq.callers import TRUSTED, Caller
from zcraq.config import ConfigError, CoordinatorConfig
from zcraq.coordcore import CoordinatorCore, CoordinatorTimings, StateStore
from zcraq.effects import Effect, PeerRequest, Publish, Relink, Respond, SendDown, SendUp, Subscribe
from zcraq.loglimit import LogLimiter
from zcraq.messages import CoordinatorRequest, Malformed, Reply
from zcraq.monitoring.coordinator import (CoordinatorCollector, CoordinatorView, coordinator_request_stats,
                                          take_coordinator_view)
from zcraq.monitoring.http import ProbeServer
from zcraq.monitoring.views import Publisher, ViewSlot
from zcraq.notify import Notifier
from zcraq.security import ProcessSecurity
from zcraq.signals import run_until_signalled
from zcraq.topology import Topology
from zcraq.wire import Limits

log = logging.getLogger("zcraq.coordinator")

BATCH = 256
TOPIC = b"topology"
STATE_FILE = "state.json"


class StateError(Exception):
    """The durable state cannot be read or written."""


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The saved state object of either kind of coordinator, or None for a new one."""
    path = state_dir / STATE_FILE
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as error:
        raise StateError(f"cannot read coordinator state {path}: {error}") from None
    if not isinstance(data, dict):
        raise StateError(f"coordinator state {path} is not a JSON object")
    return data


def load_state(state_dir: Path) -> dict[str, Any] | None:
    data = read_state(state_dir)
    return None if data is None else check_chain_state(data, str(state_dir / STATE_FILE))


def check_chain_state(data: dict[str, Any], where: str) -> dict[str, Any]:
    """``data``, if it is a one-chain cluster's saved state; ``where`` names it in errors."""
    if "partitions" in data or "topologies" in data:
        raise StateError(f"coordinator state {where} is of a partitioned cluster, and this config has no [cluster] "
                         f"partitions: a cluster's shape is fixed when it is created")
    if "topology" not in data:
        raise StateError(f"coordinator state {where} has no topology")
    return data


def topology_of_state(state: dict[str, Any] | None, where: str) -> Topology | None:
    if state is None:
        return None
    try:
        return Topology.from_dict(state["topology"])
    except ValueError as error:
        raise StateError(f"coordinator state in {where}: {error}") from None


def save_state(state_dir: Path, state: dict[str, Any]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    final = state_dir / STATE_FILE
    temporary = state_dir / (STATE_FILE + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(orjson.dumps(state, option=orjson.OPT_INDENT_2))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, final)
    directory = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class FileState:
    """The coordinator's StateStore: ``state_dir/state.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def load(self) -> Topology | None:
        return topology_of_state(load_state(self.state_dir), str(self.state_dir))

    def save(self, topology: Topology) -> None:
        save_state(self.state_dir, {"topology": topology.to_dict()})


def limits_of(config: CoordinatorConfig) -> Limits:
    return Limits(config.limits.max_key_bytes, config.limits.max_value_bytes)


def timings_of(config: CoordinatorConfig) -> CoordinatorTimings:
    return CoordinatorTimings(
        lease=config.lease_ms / 1000,
        republish_interval=config.republish_interval_ms / 1000,
        request_timeout=config.request_timeout_ms / 1000,
    )


class CoordinatorShell:
    """The sockets, CURVE, probes and loop of a coordinator process. A subclass owns the core:
    it builds it before calling ``__init__`` here (so that unusable state fails before anything is
    bound), handles requests and peer replies, and ends each loop turn in ``_turn``."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.limits = limits = limits_of(config)
        self.ctx = zmq.Context()
        self._stopping = False
        self._reload = False
        max_message = sockets.request_cap(limits)
        self.security: ProcessSecurity | None = None
        views: ViewSlot[CoordinatorView] = ViewSlot()
        self.probes: ProbeServer | None = None
        try:
            if config.security is not None:
                self.security = ProcessSecurity(self.ctx, config.security, config.path)
            curve = self.security.curve if self.security else None
            if config.metrics_port:
                self.probes = ProbeServer(config, views, CoordinatorCollector(views))
            self.service, self.pub = sockets.bind_all(self.ctx, config, [
                (zmq.ROUTER, "port", max_message), (zmq.PUB, "publish_port", sockets.MAX_MESSAGE_BYTES)], curve)
        except ConfigError:
            if self.probes is not None:
                self.probes.close()
            if self.security is not None:
                self.security.close()
            self.ctx.destroy(linger=0)  # closes any socket an interrupt left behind, where term would wait
            raise
        # Per-request figures only when something shows them: without them the hot path is as it was.
        self.requests = coordinator_request_stats() if self.probes is not None else None
        self.published = False  # a topology (or table) has gone out since this process started
        self.publisher = Publisher(lambda _now: self._view(), views if self.probes is not None else None, Notifier())
        self.poller = zmq.Poller()
        self.poller.register(self.service, zmq.POLLIN)
        if self.security is not None:
            self.poller.register(self.security.zap.sock, zmq.POLLIN)
        self.peers = sockets.DealerPool(self.ctx, self.poller, curve=curve)
        # With the state in an engine, whether this process still leads (checked before each turn
        # decides anything); alone, it always may.
        self.may_decide: Callable[[], bool] = lambda: True
        self.deposed = False

    # ------------------------------------------------------------------ what a subclass provides

    @property
    def counters(self) -> dict[str, int]:
        """The core's counters, where bad messages and internal errors are counted."""
        raise NotImplementedError

    @property
    def logs(self) -> LogLimiter:
        raise NotImplementedError

    def _view(self) -> CoordinatorView:
        raise NotImplementedError

    def _on_request(self, client: Any, request: CoordinatorRequest | Malformed, now: float, caller: Caller) -> None:
        raise NotImplementedError

    def _on_peer_reply(self, reply: Reply | Malformed, values: list[bytes], now: float) -> None:
        raise NotImplementedError

    def _turn(self, now: float) -> None:
        """End of a loop turn: time passes for the core, then its effects (state saved first)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Until stopped, or until ``may_decide`` says no (then ``deposed``); the sockets close
        however it ends."""
        try:
            while not self._stopping:
                ready = dict(self.poller.poll(50))
                now = time.monotonic()
                for sock in ready:
                    self._dispatch(sock, now)
                if not self.may_decide():
                    self.deposed = True
                    break
                self._turn(now)
                self._flush_logs(now)
                self.publisher.turn(now)
                if self._reload and self.security is not None:
                    self._reload = False
                    self.security.reload()
        finally:
            if self._stopping:  # not when it goes on as a standby (coordinator_engine.py)
                self.publisher.stopping()
            self.close()

    def _flush_logs(self, now: float) -> None:
        """Counts of repeated lines left out come out once their interval is over."""
        self.logs.flush(now)
        self.peers.logs.flush(now)
        if self.security is not None:
            self.security.zap.logs.flush(now)

    def _dispatch(self, sock: zmq.Socket, now: float) -> None:
        security = self.security
        if security is not None and sock is security.zap.sock:
            security.zap.handle()
            return
        if sock is self.service and security is not None:
            batch = [(frames, security.caller(key)) for frames, key in sockets.recv_batch_with_keys(sock, BATCH)]
        else:
            batch = [(frames, TRUSTED) for frames in sockets.recv_batch(sock, BATCH)]
        for frames, caller in batch:
            try:
                if sock is self.service:
                    self._on_service(frames, now, caller)
                elif frames and frames[0] == b"":
                    reply, values = wire.read_reply(frames[1:])
                    self._on_peer_reply(reply, values, now)
            except Exception:  # a message the validation missed must not stop the chain
                self.counters["internal_errors"] += 1
                self.logs.log(logging.ERROR, "internal error", now, "error while handling a message; message "
                              "dropped", exc_info=True)

    def _on_service(self, frames: list[bytes], now: float, caller: Caller) -> None:
        split = sockets.split_or_reject(self.service, frames)
        if split is None:
            self.counters["bad_messages"] += 1
            return
        envelope, body = split
        request = wire.read_coordinator_request(body, self.limits)
        client = envelope if self.requests is None else self.requests.arrived(envelope, request, now)
        self._on_request(client, request, now, caller)

    def _respond(self, effect: Respond) -> None:
        frames = wire.encode_reply(effect.reply, effect.values)
        envelope = effect.client if self.requests is None else self.requests.replied(
            effect.client, effect.reply, time.monotonic())
        sockets.send_nowait(self.service, [*envelope, *frames])

    def _forward(self, effect: PeerRequest) -> None:
        self.peers.send(effect.endpoint, wire.encode_request(effect.request), effect.key)

    def stop(self, *_args: object) -> None:
        self._stopping = True

    def reload(self) -> None:
        """SIGHUP: reread the allow-lists at the end of this loop turn."""
        self._reload = True

    def close(self) -> None:
        self.service.close(0)
        self.pub.close(0)
        self.peers.close()
        if self.security is not None:
            self.security.close()
        if self.probes is not None:
            self.probes.close()
        self.publisher.close()
        self.ctx.destroy(linger=0)  # closes any socket an interrupt left behind, where term would wait


class CoordinatorProcess(CoordinatorShell):
    """The coordinator of a one-chain cluster."""

    def __init__(self, config: CoordinatorConfig, store: StateStore | None = None) -> None:
        """``store``: where the state is kept (default: ``state_dir``, zcraq/coordinator_engine.py: the engine)."""
        timings = timings_of(config)
        self.core = CoordinatorCore(config.publish_endpoint, store or FileState(config.state_dir), time.monotonic(),
                                    timings, limits=limits_of(config))
        if self.core.topology.epoch > 0:
            log.info("restored epoch %d from %s; no removals for %.1fs (leases of the previous run)",
                     self.core.topology.epoch, "the engine" if store else config.state_dir, timings.removal_after)
        super().__init__(config)

    @property
    def counters(self) -> dict[str, int]:
        return self.core.counters

    @property
    def logs(self) -> LogLimiter:
        return self.core.logs

    def _view(self) -> CoordinatorView:
        return take_coordinator_view(self.core, self.published, self.requests)

    def run(self) -> None:
        log.info("coordinator: requests %s, topology %s, state %s", self.config.endpoint,
                 self.config.publish_endpoint, self.config.state_dir)
        super().run()

    def _on_request(self, client: Any, request: CoordinatorRequest | Malformed, now: float, caller: Caller) -> None:
        self.core.on_request(client, request, now, caller)

    def _on_peer_reply(self, reply: Reply | Malformed, values: list[bytes], now: float) -> None:
        self.core.on_peer_reply(reply, values, now)

    def _turn(self, now: float) -> None:
        self.core.tick(now)
        self._execute(self.core.ready())

    def _execute(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case Publish():
                    sockets.send_nowait(self.pub, [TOPIC, wire.encode_topology(effect.topology)])
                    self.peers.keep_only(m.service for m in effect.topology.members)
                    self.published = True
                case Respond():
                    self._respond(effect)
                case PeerRequest():
                    self._forward(effect)
                case SendDown() | SendUp() | Relink() | Subscribe():
                    raise AssertionError(f"the coordinator has no chain links: {effect}")
                case _:
                    assert_never(effect)


def run_coordinator(config: CoordinatorConfig) -> None:
    """Run until SIGINT or SIGTERM: one chain, or with ``[cluster] partitions`` above 1, partitions."""
    if config.engine is not None:
        from zcraq.coordinator_engine import run_engine_coordinator  # it builds on this module

        run_engine_coordinator(config)
        return
    process: CoordinatorShell
    if config.cluster.partitioned:
        from zcraq.coordinator_partitioned import PartitionedProcess  # it builds on this module

        process = PartitionedProcess(config)
    else:
        process = CoordinatorProcess(config)
    run_until_signalled(process.run, process.stop, process.reload)
