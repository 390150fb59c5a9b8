"""The replica of a one-chain cluster's node: one node core, its store, its two chain links.

The node process (zcraq/node.py) owns the sockets and the loop; this carries out the core's
effects: chain frames to the successor's write-in and the predecessor's ack-in (one PUSH each,
retargeted when the chain changes), replies, requests to peers, the topology subscription.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, assert_never

import plyvel

from zcraq import sockets, wire
from zcraq.effects import Effect, PeerRequest, Publish, Relink, Respond, SendDown, SendUp, Subscribe
from zcraq.monitoring.node import NodeView, take_node_view
from zcraq.nodecore import NodeCore
from zcraq.store import LevelDBStore, StoreError
from zcraq.store.shared import holds_partitions
from zcraq.wire import WireError

if TYPE_CHECKING:
    from zcraq.node import NodeProcess

log = logging.getLogger("zcraq.node")

TOPIC = b"topology"


class OneChain:
    topic = TOPIC

    def __init__(self, process: NodeProcess, db: plyvel.DB) -> None:
        config = process.config
        if holds_partitions(db):
            raise StoreError(f"{config.data_dir} holds the replicas of a partitioned cluster's node, and this "
                             f"cluster has one chain: a node's data belongs to the cluster it was created in")
        self.process = process
        self.store = LevelDBStore(config.data_dir, config.durability, config.index_max_keys, within=(db, b""))
        self.core = NodeCore(process.me, self.store, process.timings, process.unsafe)
        curve = process.curve
        self.down = sockets.PushLink(process.ctx, curve)
        self.up = sockets.PushLink(process.ctx, curve)

    def log_store(self) -> None:
        store = self.store
        if store.index_max_keys:
            log.info("version index: %s keys (at most %s), filled in %.2f s", f"{store.indexed_keys:,}",
                     f"{store.index_max_keys:,}", store.index_fill_seconds)
        else:
            log.info("version index off (index_max_keys = 0): every read and write searches LevelDB")

    @property
    def page_waiting(self) -> bool:
        """A catch-up page waiting to be stored is stored at the next turn's tick: no sleep first."""
        return bool(self.core.catchup.page_waiting)

    def view(self, now: float) -> NodeView:
        return take_node_view(self.core, now, self.process.requests)

    def on_published(self, payload: bytes, now: float) -> None:
        try:
            topology = wire.decode_topology(payload)
        except WireError as error:
            self.core.counters["bad_messages"] += 1
            self.core.logs.warning("malformed topology", now, "ignored a malformed topology update: %s", error)
            return
        self.core.on_topology(topology, now)

    def turn(self, now: float) -> None:
        """The turn's effects, durable already (``ready()``), carried out."""
        self.execute(self.core.ready())

    def execute(self, effects: list[Effect]) -> None:
        process = self.process
        for effect in effects:
            match effect:
                case SendDown():
                    self.down.send(wire.encode_chain(effect.frame))
                case SendUp():
                    self.up.send(wire.encode_chain(effect.frame))
                case Respond():
                    process.respond(effect)
                case PeerRequest():
                    process.peers.send(effect.endpoint, wire.encode_request(effect.request), effect.key)
                case Relink():
                    self.down.retarget(effect.down, effect.down_key)
                    self.up.retarget(effect.up, effect.up_key)
                    self._prune_peers()
                case Subscribe():
                    process.subscribe(effect.endpoint, TOPIC)
                case Publish():
                    raise AssertionError("nodes do not publish")
                case _:
                    assert_never(effect)

    def _prune_peers(self) -> None:
        topology = self.core.topology
        keep = [m.service for m in topology.members]
        if topology.learner is not None:
            keep.append(topology.learner.service)
        self.process.peers.keep_only(keep)

    def close(self) -> None:
        self.down.close()
        self.up.close()
        self.store.close()
