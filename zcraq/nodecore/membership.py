"""This node's membership: its registration with the coordinator, its heartbeats, its peers'
confirmations, and every change of topology - the only place the node's place in the chain changes.

Owns the topology the node holds, whether the coordinator accepted this incarnation (``joined``)
and the derived ``Place``. Adopting a topology retargets the links, fences the node when someone
was removed, notes what a new role owes before it serves, and starts catch-up as learner.

An incarnation ends when the node learns it is out of the chain (a topology without it, or the
coordinator no longer knowing it): everything in flight is forgotten and it joins again, fenced.
"""

from __future__ import annotations

import logging
from typing import Any

from msgspec import UNSET

from zcraq.effects import Effect, Relink, Respond, Subscribe
from zcraq.loglimit import LogLimiter
from zcraq.messages import PROTOCOL_VERSION, Confirm, Error, Heartbeat, Join, Ok, Reply
from zcraq.nodecore.calls import Call, CallKind, Calls
from zcraq.nodecore.catchup import CatchUp
from zcraq.nodecore.leases import Leases
from zcraq.nodecore.links import Links, LinkState
from zcraq.nodecore.place import Place
from zcraq.nodecore.replication import Owed, Replication
from zcraq.nodecore.timings import NodeTimings
from zcraq.store.base import ReplicaStore
from zcraq.topology import EMPTY, Member, Topology

log = logging.getLogger("zcraq.node")

NEVER = float("-inf")


class Membership:
    def __init__(self, me: Member, timings: NodeTimings, store: ReplicaStore, out: list[Effect], leases: Leases,
                 links: Links, calls: Calls, catchup: CatchUp, replication: Replication, logs: LogLimiter) -> None:
        self.me = me
        self.logs = logs
        self.timings = timings
        self.store = store
        self._out = out
        self.leases = leases
        self.links = links
        self.calls = calls
        self.catchup = catchup
        self.replication = replication
        self.topology: Topology = EMPTY
        self.joined = False  # the coordinator accepted this incarnation
        self._set_place(Place.of(EMPTY, me.id, joined=False))
        self._last_heartbeat = NEVER
        self._join_sent_at = NEVER

    def _set_place(self, place: Place) -> None:
        self.place = self.replication.place = place

    # ------------------------------------------------------------------ an incarnation

    def start(self, now: float) -> None:
        """A fresh incarnation: register with the coordinator. What becomes of versions left
        uncommitted by the previous run depends on where the coordinator puts us (see
        ``_settle_uncommitted``). A previous incarnation may have confirmed peers: keep the
        promise by staying fenced for a peer lease."""
        self.leases.fence(now)
        self._send_join(now)

    def _send_join(self, now: float) -> None:
        self._join_sent_at = now
        node = self.me.to_dict()
        self.calls.ask(None, CallKind.JOIN, now, self.topology.epoch,
                       lambda i: Join(node, PROTOCOL_VERSION, id=i))

    def join_answered(self, reply: Reply, now: float) -> None:
        if isinstance(reply, Error):
            # "busy" is routine (another node is catching up); anything else needs an operator,
            # and is repeated with every join until one acts: loudly, but not at every attempt.
            level = logging.INFO if reply.code in ("busy", "not_leader") else logging.ERROR
            self.logs.log(level, f"join {reply.code}", now, "the coordinator did not register this node yet: %s",
                          reply.message)
            return
        if reply.topology is UNSET:
            self.logs.warning("bad join reply", now, "the coordinator's join reply holds no topology")
            return
        if reply.publish is not UNSET:
            self._out.append(Subscribe(reply.publish))
        self.joined = True
        self.topology = EMPTY  # adopt the join reply's topology whatever its epoch
        self._set_place(Place.of(EMPTY, self.me.id, joined=True))
        self.on_topology(reply.topology, now)
        self._settle_uncommitted(now)
        self._last_heartbeat = NEVER

    def _settle_uncommitted(self, now: float) -> None:
        """Uncommitted versions from a previous incarnation, once the join is answered.

        As a learner they go: the chain holds everything that was committed, and a stale dirty
        version could clash with a version number the head assigns again. As the only member they
        are committed: a tail removed since may have committed them (and served them to readers),
        and this node is the only copy left; a write that never committed anywhere was never
        acknowledged, so letting it take effect now is a correct outcome of an unknown write.
        """
        if self.place.is_learner:
            dropped = self.store.drop_uncommitted()
            if dropped:
                log.info("dropped %d uncommitted versions from before this node (re)joined the chain", dropped)
        elif self.place.is_tail:
            self.replication.owed |= Owed.LEFTOVERS
            self._open_links_when_unfenced(now)

    def _reset_incarnation(self, now: float) -> None:
        """Out of the chain while running: forget everything in flight and join again."""
        self.leases.fence(now)
        self.leases.lose_coordinator_lease()
        self.joined = False
        self._set_place(Place.of(self.topology, self.me.id, joined=False))
        self.catchup.reset()
        self.links.close()
        self._out.append(Relink(down=None, up=None))
        self.replication.fail_pending("this node left the chain before the write committed")
        self._send_join(now)

    # ------------------------------------------------------------------ topology

    def on_topology(self, topology: Topology, now: float) -> None:
        if topology.epoch <= self.topology.epoch or not self.joined:
            return
        self.links.flush()  # frames of the old epoch go to the old peers
        old, old_place = self.topology, self.place
        self.topology = topology
        if topology.member(self.me.id) is None:
            log.warning("removed from the chain at epoch %d; rejoining", topology.epoch)
            self._reset_incarnation(now)
            return
        place = Place.of(topology, self.me.id, joined=True)
        self._set_place(place)
        log.info("epoch %d: %s (%d members%s)", topology.epoch, place.role.value, len(topology.members),
                 ", learner " + topology.learner.id if topology.learner else "")
        pred, succ = place.predecessor, place.successor
        self._out.append(Relink(down=succ.write_in if succ else None, up=pred.ack_in if pred else None,
                                down_key=succ.key if succ else None, up_key=pred.key if pred else None))
        self.links.retarget(topology.epoch, pred, succ)
        self.leases.new_epoch()  # confirmations were for the old epoch
        if {m.id for m in old.listed()} - {m.id for m in topology.listed()}:
            self.leases.fence(now)  # someone was removed: it may still serve on our confirmations
        if place.is_tail and not old_place.is_tail and not old_place.is_learner:
            self.replication.owed |= Owed.SENT_LIST
        self._open_links_when_unfenced(now)
        if place.is_learner:
            old_source = old_place.predecessor if old_place.is_learner else None
            same_source = old_source is not None and pred is not None and old_source.id == pred.id
            self.catchup.learner(place, same_source, now)
        elif place.in_chain:
            self.catchup.member()

    def topology_answered(self, reply: Reply, now: float) -> None:
        if isinstance(reply, Ok) and reply.topology is not UNSET:
            self.on_topology(reply.topology, now)

    def newer_epoch_seen(self, reply: Reply, now: float) -> None:
        if reply.epoch is not UNSET and reply.epoch > self.topology.epoch:
            self.calls.ask_topology(now, self.topology.epoch)

    def _open_links_when_unfenced(self, now: float) -> None:
        self.links.state = LinkState.WAITING
        if not self.leases.fenced(now):
            self._open_links(now)

    def _open_links(self, now: float) -> None:
        """Begin this epoch's chain traffic: commit what the new role owes, then sync both links."""
        self.links.state = LinkState.OPEN
        self.replication.settle_new_role(now)
        self.links.sync(now)

    # ------------------------------------------------------------------ the coordinator's lease

    def heartbeat_answered(self, call: Call, reply: Reply, now: float) -> None:
        if isinstance(reply, Error):
            if reply.code == "unknown_node" and self.joined:
                self.logs.warning("unknown node", now, "the coordinator does not know this node; rejoining")
                self._reset_incarnation(now)
            elif reply.code == "incompatible":
                # Every heartbeat is refused until someone acts: say so loudly, but not every time.
                self.logs.error("incompatible", now, "the coordinator refuses this node's heartbeats: %s",
                                reply.message)
            return
        if reply.publish is not UNSET:  # another coordinator may lead now: follow its publisher
            self._out.append(Subscribe(reply.publish))
        self.newer_epoch_seen(reply, now)
        if reply.status == "member" and reply.lease_ms is not UNSET and reply.epoch == call.epoch:
            # Measured from when the heartbeat was sent: the coordinator's clock started later.
            self.leases.renew(call.sent_at, reply.lease_ms)

    # ------------------------------------------------------------------ peers' confirmations

    def confirm(self, client: Any, request: Confirm) -> None:
        self._out.append(Respond(client, self.answer_confirm(request)))

    def answer_confirm(self, request: Confirm) -> Reply:
        """A peer asks whether we are still in its epoch. Saying yes binds us: should we later
        adopt an epoch that removes it, we take part in no commit for a peer lease (the fence)."""
        topology = self.topology
        if (not self.joined or request.epoch != topology.epoch or topology.member(request.node_id) is None
                or topology.member(self.me.id) is None):
            return Error(request.id, "wrong_epoch", "not in that epoch with you", epoch=topology.epoch)
        return Ok(request.id, epoch=topology.epoch, lease_ms=int(self.timings.peer_lease * 1000))

    def confirm_answered(self, call: Call, reply: Reply, now: float) -> None:
        if isinstance(reply, Error):
            self.newer_epoch_seen(reply, now)
            return
        lease = reply.lease_ms
        if call.epoch == self.topology.epoch and lease is not UNSET and lease > 0 and call.peer is not None:
            # Measured from when we asked: the peer's promise started later.
            self.leases.confirmed(call.peer, call.sent_at, lease)

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Join again, heartbeat, open links once the fence is over, ask peers to confirm."""
        if not self.joined:
            if now - self._join_sent_at >= self.timings.request_timeout:
                self._send_join(now)
            return
        node_id, epoch = self.me.id, self.topology.epoch
        if now - self._last_heartbeat >= self.timings.heartbeat_interval:
            self._last_heartbeat = now
            self.calls.ask(None, CallKind.HEARTBEAT, now, epoch,
                           lambda i: Heartbeat(node_id, epoch, PROTOCOL_VERSION, id=i))
        if not self.links.open and not self.leases.fenced(now):
            self._open_links(now)
        if self.leases.confirm_round_due(now):
            for peer in self.place.peers:
                self.calls.ask(peer, CallKind.CONFIRM, now, epoch, lambda i: Confirm(node_id, epoch, id=i),
                               peer=peer.id)
