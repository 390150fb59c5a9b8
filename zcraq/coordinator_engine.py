"""Coordinators that stand in for one another: the state in etcd, one leader at a time.

With an ``[engine]`` table, a coordinator keeps its state (the chain or the partition table, epochs,
registrations) in etcd instead of ``state_dir``, and several coordinator processes run. Each
campaigns for the leader key (zcraq/engine/leadership.py, on a thread of its own so that a slow
engine never holds up the loop). Until it leads, a coordinator is a standby: it binds its request
port and answers every request ``not_leader``, naming the leader's request endpoint when it knows
it. Once it leads, it loads the state from the engine and runs as the one coordinator would, every
save a transaction fenced by its leadership (zcraq/engine/state.py). It stops deciding when its
leadership runs out (before the engine can let another lead), or when a save is refused or its
outcome is lost; it then closes its sockets and stands by again, so the next leader starts from what
the engine holds. On SIGTERM a leader gives its lease back, so a standby takes over at once.

A new leader starts as a restarted coordinator does: it removes no node until every lease the
previous leader may have granted has run out (PROTOCOL.md, "Coordinators on an engine").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from zcraq import sockets, wire
from zcraq.config import ConfigError, CoordinatorConfig
from zcraq.coordinator import CoordinatorProcess, CoordinatorShell, check_chain_state, limits_of, topology_of_state
from zcraq.engine.etcd import EngineError, EtcdClient
from zcraq.engine.leadership import Leadership
from zcraq.engine.state import EngineState, StateConflict
from zcraq.messages import Error
from zcraq.notify import Notifier
from zcraq.security import ProcessSecurity
from zcraq.signals import run_until_signalled
from zcraq.topology import Topology

log = logging.getLogger("zcraq.coordinator")

BATCH = 256
RETRY_LOAD_AFTER = 0.5  # seconds: a leader that could not read the state tries again after this


class Campaign:
    """A Leadership stepped on its own thread, a few times per lease."""

    def __init__(self, config: CoordinatorConfig) -> None:
        engine = config.engine
        assert engine is not None
        self.client = EtcdClient(engine.endpoints, timeout=max(0.5, engine.lease_seconds / 4))
        self.leadership = Leadership(self.client, engine.leader_key, config.endpoint, engine.lease_seconds)
        self.interval = engine.lease_seconds / 4
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="campaign", daemon=True)
        self._thread.start()

    @property
    def leading(self) -> bool:
        return self.leadership.leading

    @property
    def leader(self) -> str | None:
        """The leading coordinator's request endpoint, as last seen (None: unknown, or none)."""
        return self.leadership.leader

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.leadership.step()
            except Exception:  # the campaign must go on: a bug here would leave a leader deciding blind
                log.exception("campaign step failed")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """End the campaign and give the lease back (a standby then takes over at once)."""
        self._stop.set()
        self._thread.join()
        try:
            self.leadership.resign()
        except EngineError as error:
            log.warning("could not give the leadership lease back (%s): it runs out by itself", error)
        self.client.close()


class _ChainInEngine:
    """A one-chain coordinator's StateStore in the engine."""

    def __init__(self, state: EngineState) -> None:
        self.state = state

    def load(self) -> Topology | None:
        data = self.state.read()
        where = f"the engine ({self.state.key.decode()})"
        return topology_of_state(None if data is None else check_chain_state(data, where), where)

    def save(self, topology: Topology) -> None:
        self.state.write({"topology": topology.to_dict()})


class _TableInEngine:
    """A partitioned coordinator's TableStore in the engine."""

    def __init__(self, state: EngineState, partitions: int) -> None:
        self.state = state
        self.partitions = partitions

    def load(self) -> dict[str, Any] | None:
        from zcraq.coordinator_partitioned import check_table_state

        data = self.state.read()
        return None if data is None else check_table_state(data, self.partitions,
                                                           f"the engine ({self.state.key.decode()})")

    def save(self, state: dict[str, Any]) -> None:
        self.state.write(state)


class Standby:
    """A coordinator that does not lead: its request port answers ``not_leader``."""

    def __init__(self, config: CoordinatorConfig, leader: Callable[[], str | None]) -> None:
        self.limits = limits_of(config)
        self.leader = leader
        self.notifier = Notifier()  # under systemd: ready, and alive, while it stands by
        self.ctx = zmq.Context()
        self.security: ProcessSecurity | None = None
        try:
            if config.security is not None:
                self.security = ProcessSecurity(self.ctx, config.security, config.path)
            curve = self.security.curve if self.security else None
            [self.service] = sockets.bind_all(self.ctx, config, [(zmq.ROUTER, "port",
                                                                  sockets.request_cap(self.limits))], curve)
        except ConfigError:
            self.close()
            raise
        self.poller = zmq.Poller()
        self.poller.register(self.service, zmq.POLLIN)
        if self.security is not None:
            self.poller.register(self.security.zap.sock, zmq.POLLIN)

    def serve(self, until: Callable[[], bool]) -> None:
        """Answer requests until ``until()`` is true (checked every 50 ms)."""
        while not until():
            leader = self.leader()
            self.notifier.report(f"standing by; {leader} leads" if leader else "standing by; no leader yet", True)
            self.notifier.watchdog(time.monotonic())
            for sock, _ in self.poller.poll(50):
                if self.security is not None and sock is self.security.zap.sock:
                    self.security.zap.handle()
                    continue
                for frames in sockets.recv_batch(sock, BATCH):
                    self._answer(frames)

    def _answer(self, frames: list[bytes]) -> None:
        split = sockets.split_or_reject(self.service, frames)
        if split is None:
            return
        envelope, body = split
        request = wire.read_coordinator_request(body, self.limits)
        leader = self.leader()
        message = f"this coordinator stands by; {leader} leads" if leader else \
            "this coordinator stands by, and no coordinator leads yet"
        reply = Error(request.id, "not_leader", message, leader=leader)
        sockets.send_nowait(self.service, [*envelope, *wire.encode_reply(reply)])

    def close(self) -> None:
        self.notifier.close()
        if self.security is not None:
            self.security.close()
        self.ctx.destroy(linger=0)


class EngineCoordinator:
    """Stand by, lead while the engine lets us, stand by again; until SIGINT or SIGTERM."""

    def __init__(self, config: CoordinatorConfig) -> None:
        assert config.engine is not None
        self.config = config
        self._stopping = False
        self._reload = False
        self.process: CoordinatorShell | None = None
        self.terms = 0  # how many times this process has led

    def stop(self, *_args: object) -> None:
        self._stopping = True
        if self.process is not None:
            self.process.stop()

    def reload(self) -> None:
        if self.process is not None:
            self.process.reload()

    def run(self) -> None:
        campaign = Campaign(self.config)
        try:
            while not self._stopping:
                if not self._stand_by(campaign):
                    break
                self._lead(campaign)
        finally:
            campaign.stop()

    def _stand_by(self, campaign: Campaign) -> bool:
        """Answer ``not_leader`` until this candidate leads (True) or the process stops (False)."""
        engine = self.config.engine
        assert engine is not None
        log.info("coordinator %s stands by (engine %s)", self.config.endpoint, ", ".join(engine.endpoints))
        me = self.config.endpoint
        # Itself, as last seen, only while its claim had not run out: then it knows of no leader.
        standby = Standby(self.config, lambda: None if campaign.leader == me else campaign.leader)
        try:
            standby.serve(lambda: self._stopping or campaign.leading)
        finally:
            standby.close()
        return not self._stopping

    def _lead(self, campaign: Campaign) -> None:
        engine = self.config.engine
        assert engine is not None
        client = EtcdClient(engine.endpoints)
        state = EngineState(client, engine.state_key, campaign.leadership)
        self.terms += 1
        log.info("coordinator %s leads (term %d of this process)", self.config.endpoint, self.terms)
        try:
            process: CoordinatorShell
            if self.config.cluster.partitioned:
                from zcraq.coordinator_partitioned import PartitionedProcess

                process = PartitionedProcess(self.config, _TableInEngine(state, self.config.cluster.partitions))
            else:
                process = CoordinatorProcess(self.config, _ChainInEngine(state))
        except (EngineError, StateConflict) as error:
            log.warning("could not load the state from the engine (%s); standing by", error)
            client.close()
            time.sleep(RETRY_LOAD_AFTER)
            return
        process.may_decide = lambda: campaign.leading
        self.process = process
        try:
            if self._stopping:
                process.stop()
            process.run()
            if process.deposed:
                log.warning("coordinator %s no longer leads: its leadership ran out; standing by", self.config.endpoint)
        except (EngineError, StateConflict) as error:
            log.warning("coordinator %s stops leading: %s; standing by", self.config.endpoint, error)
        finally:
            self.process = None
            client.close()
        # Should the campaign still hold the claim (the engine was slow, not lost), this process
        # leads again at once, from the state the engine holds: the claim proves nobody else led.


def run_engine_coordinator(config: CoordinatorConfig) -> None:
    """Run until SIGINT or SIGTERM, leading or standing by."""
    coordinator = EngineCoordinator(config)
    run_until_signalled(coordinator.run, coordinator.stop, coordinator.reload)


__all__ = ["Campaign", "EngineCoordinator", "Standby", "run_engine_coordinator"]
