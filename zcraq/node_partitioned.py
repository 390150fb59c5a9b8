"""The replicas of a partitioned cluster's node: a ``PartitionHost`` (zcraq/nodehost.py) with one
node core per hosted partition, their stores in the node's one database, and the chain links.

The node process (zcraq/node.py) owns the sockets and the loop. What differs from one chain: the
replicas' data live in one LevelDB database, each partition under its own prefix
(zcraq/store/shared.py), and a turn's writes of every partition are made durable in one batch
(group commit); chain frames go out over one PUSH socket per peer endpoint, shared by the
partitions (frames name theirs); the node follows the partition table published on topic
``table``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, assert_never

import orjson
import plyvel

from zcraq import sockets, wire
from zcraq.effects import PeerRequest, Respond, Subscribe
from zcraq.monitoring.node import NodeView
from zcraq.nodehost import HostEffect, PartitionHost, Push, PushTargets
from zcraq.store.base import ReplicaStore
from zcraq.store.shared import SharedLevelDB

if TYPE_CHECKING:
    from zcraq.node import NodeProcess

log = logging.getLogger("zcraq.node")

TOPIC = b"table"


class _Stores:
    """Each partition's store in the node's one database, with the node's share of the index each."""

    def __init__(self, shared: SharedLevelDB, index_max_keys: int) -> None:
        self.shared = shared
        self.index_max_keys = index_max_keys

    def store(self, partition: int) -> ReplicaStore:
        return self.shared.store(partition, self.index_max_keys)

    def partitions(self) -> list[int]:
        return self.shared.partitions()

    def release(self, partition: int) -> None:
        self.shared.release(partition)

    def drop(self, partition: int) -> None:
        self.shared.release(partition)
        self.shared.drop(partition)

    def commit(self) -> None:
        self.shared.commit()

    def close(self) -> None:
        self.shared.close()


class Partitioned:
    topic = TOPIC

    def __init__(self, process: NodeProcess, db: plyvel.DB, table: dict[str, Any]) -> None:
        config = process.config
        self.process = process
        self.partitions = len(table["partitions"])
        # The configured index size is the node's, shared by its replicas.
        per_replica = max(1, config.index_max_keys // self.partitions) if config.index_max_keys else 0
        shared = SharedLevelDB(config.data_dir, config.durability, group_commit=True, db=db)
        self.stores = _Stores(shared, per_replica)
        timings = process.timings  # the change log kept for watchers is the node's too, shared likewise
        entries, size = timings.watch_log_entries, timings.watch_log_bytes
        timings = dataclasses.replace(timings, watch_log_entries=max(1, entries // self.partitions) if entries else 0,
                                      watch_log_bytes=max(1 << 20, size // self.partitions))
        self.core = PartitionHost(process.me, config.zone, self.partitions, self.stores, timings, process.unsafe)
        self.first_table: dict[str, Any] | None = table
        self.pushes: dict[tuple[str, str | None], sockets.PushLink] = {}

    def log_store(self) -> None:
        log.info("a cluster of %d partitions; this node holds data of %d of them", self.partitions,
                 len(self.stores.partitions()))

    @property
    def page_waiting(self) -> bool:
        return self.core.page_waiting

    def view(self, now: float) -> NodeView:
        host = self.core
        replicas = list(host.cores.values())
        heads = sum(core.place.is_head for core in replicas)
        tails = sum(core.place.is_tail for core in replicas)
        totals = dict(host.counters)
        for core in replicas:
            for name, value in core.counters.items():
                totals[name] = totals.get(name, 0) + value
        requests = self.process.requests
        return NodeView(node=host.me.id, role=f"{len(replicas)} replicas ({heads} heads, {tails} tails)",
                        epoch=max(host.hosting.version, 0),
                        serving=host.registered and all(core.serving(now) for core in replicas),
                        caught_up=all(core.caught_up for core in replicas),
                        sent=sum(len(core.links.sent) for core in replicas),
                        dirty_keys=sum(core.links.sent.key_count for core in replicas),
                        lease_left=0.0, catchup_phase="done", catchup_copied=0, catchup_fraction=None,
                        counters=totals, requests=None if requests is None else requests.figures(),
                        replicas=MappingProxyType(Counter(core.role for core in replicas)))

    def on_published(self, payload: bytes, now: float) -> None:
        try:
            table = orjson.loads(payload)
        except orjson.JSONDecodeError as error:
            self.core.counters["bad_messages"] += 1
            self.core.logs.warning("malformed table", now, "ignored a malformed partition table: %s", error)
            return
        self.core.on_table(table, now)

    def turn(self, now: float) -> None:
        """The turn's effects, durable already (every replica's writes in one batch), carried out."""
        if self.first_table is not None:  # the table that told the node the cluster has partitions
            table, self.first_table = self.first_table, None
            self.core.on_table(table, now)
        self.execute(self.core.ready(now))

    def execute(self, effects: list[HostEffect]) -> None:
        """Carry out a turn's effects. Chain frames for one peer endpoint leave in one message at the
        end (per-message costs, on both sides, are most of a small frame's): every partition the two
        nodes share rides in it, each frame in the order its replica made them."""
        process = self.process
        bundles: dict[tuple[str, str | None], list[bytes]] = {}
        for effect in effects:
            match effect:
                case Push():
                    target = (effect.endpoint, effect.key)
                    bundle = bundles.get(target)
                    if bundle is None:
                        bundle = bundles[target] = []
                    bundle.append(wire.encode_chain(effect.frame))
                case Respond():
                    process.respond(effect)
                case PeerRequest():
                    process.peers.send(effect.endpoint, wire.encode_request(effect.request), effect.key)
                case PushTargets():
                    self._push(bundles)  # what was made for a link goes before the link may close
                    bundles = {}
                    for target in set(self.pushes) - effect.targets:
                        self.pushes.pop(target).close()
                    process.peers.keep_only(self.core.peers())
                case Subscribe():
                    process.subscribe(effect.endpoint, TOPIC)
                case _:
                    assert_never(effect)
        self._push(bundles)

    def _push(self, bundles: dict[tuple[str, str | None], list[bytes]]) -> None:
        limit = wire.MAX_CHAIN_MESSAGE_FRAMES
        for target, frames in bundles.items():
            link = self.pushes.get(target)
            if link is None:
                link = self.pushes[target] = sockets.PushLink(self.process.ctx, self.process.curve)
                link.retarget(*target)
            for start in range(0, len(frames), limit):
                link.send_frames(frames[start:start + limit])

    def close(self) -> None:
        for link in self.pushes.values():
            link.close()
        self.pushes.clear()
        self.stores.close()
