"""The coordinator's protocol: membership, epochs and leases, with no sockets or clocks.

Everything that changes the coordinator's state lives in this module. The shell
(zcraq/coordinator.py) and the simulator pass each decoded request and the current monotonic time,
then call ``ready()`` once per loop turn: it saves the topology through the ``StateStore`` the core
was given if the turn changed it, and only then returns the effects (publications, replies), so no
node or client ever sees an epoch that a restart could forget.

Theory of operation
-------------------
The coordinator alone decides the chain: an ordered list of members (head first) and at most one
learner catching up behind the tail. Every change bumps the epoch and is published.

- join: a node registers; into an empty chain it becomes the only member, otherwise the learner
  (one at a time: a second joiner is told to retry). A join from a node already listed means it
  restarted and lost its in-flight state, so it is taken out and let in again as a new incarnation.
- caught_up: the learner has copied the committed state; it becomes the tail in a new epoch.
- heartbeat: renews a member's lease. The lease is what entitles a node to serve; the node times it
  from when it sent the heartbeat, the coordinator from when it received it, so the coordinator's
  view always ends later.
- a member silent for a lease plus a grace period has surely stopped serving: it is removed. The
  last member is never removed (its data would be lost); the chain waits for it.
- after a restart the coordinator cannot know which leases its previous run granted, so it removes
  nobody until a full lease has passed.
- leave: a node going away cleanly is removed at once.
- retire (a partitioned cluster's placement taking a replica off a live node): the member's
  heartbeats stop renewing its lease and stop counting as signs of life, so it is removed like a
  silent member, once the lease it holds has surely run out. Removing it at once would let it go
  on serving reads on that lease, should it not learn of its removal, while the others commit.
- write/delete from clients are forwarded to the head and answered when the head answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import count
from typing import Any, Literal, Protocol, assert_never

import msgspec
from msgspec import UNSET

from zcraq.access import coordinator_request_refusal
from zcraq.callers import TRUSTED, Caller
from zcraq.effects import Effect, PeerRequest, Publish, Respond
from zcraq.endpoints import parse_endpoint
from zcraq.loglimit import LogLimiter
from zcraq.messages import (MAX_NODE_ID_CHARS, Limits, PROTOCOL_VERSION, CaughtUp, CoordinatorRequest, Delete, Drain,
                            Error, Heartbeat, Join, Leave, Malformed, Ok, Reply, StatusRequest, TopologyRequest, Write,
                            request_type)
from zcraq.topology import EMPTY, Member, Topology

log = logging.getLogger("zcraq.coordinator")


class StateStore(Protocol):
    """Where the coordinator's topology survives a restart."""

    def load(self) -> Topology | None:
        """The last topology saved, or None for a brand-new coordinator."""

    def save(self, topology: Topology) -> None:
        """Store ``topology`` durably before returning."""


@dataclass(slots=True)
class CoordinatorTimings:
    lease: float = 3.0
    republish_interval: float = 1.0
    request_timeout: float = 5.0
    # After a restart, nodes need a moment to notice and reconnect (ZeroMQ's reconnect backs off
    # up to 2 s): removing them for silence before then would only cost needless catch-ups.
    restart_grace: float = 2.0

    @property
    def removal_after(self) -> float:
        """Silence after which a member's lease has surely expired on its own clock."""
        return self.lease + max(0.1, self.lease / 10)


@dataclass(slots=True)
class _Forward:
    client: Any
    request_id: Any
    deadline: float


def other_protocol(protocol: int) -> str:
    """Why a node of another protocol version is refused."""
    return (f"the node speaks protocol version {protocol}, this coordinator speaks {PROTOCOL_VERSION}: run the "
            f"same zcraq release on every process")


class JoinRefused(Exception):
    """A join describing a node that may not be let in; ``code`` is the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def joining_member(request: Join, caller: Caller, known: Iterable[Member],
                   check_endpoint: Callable[[str], object]) -> tuple[Member, list[Member]]:
    """The node a join describes, checked against the ``known`` nodes, with the connection's key
    (a node is its key), and those other nodes; JoinRefused says why not."""
    try:
        node = Member.from_dict(request.node)
        for endpoint in (node.service, node.write_in, node.ack_in):
            check_endpoint(endpoint)  # a node nobody can connect to must never be listed
    except ValueError as error:
        raise JoinRefused("bad_request", str(error)) from None
    if len(node.id) > MAX_NODE_ID_CHARS:
        raise JoinRefused("bad_request", "node id too long")
    others = [m for m in known if m.id != node.id]
    clash = {node.service, node.write_in, node.ack_in} & {e for m in others for e in (m.service, m.write_in, m.ack_in)}
    if clash:
        raise JoinRefused("bad_request", f"endpoint {sorted(clash)[0]} is already used by another node")
    if caller.key is not None:
        if node.key is not None and node.key != caller.key:
            raise JoinRefused("forbidden", "the join names a key other than its connection's")
        node = msgspec.structs.replace(node, key=caller.key)
    return node, others


class CoordinatorCore:
    def __init__(self, publish_endpoint: str, state: StateStore, now: float,
                 timings: CoordinatorTimings | None = None,
                 check_endpoint: Callable[[str], object] = parse_endpoint, limits: Limits | None = None,
                 partition: int = 0) -> None:
        """``check_endpoint`` raises ValueError for an endpoint nodes could not connect to (the
        simulator passes its own: its endpoints are not TCP addresses). ``limits``: the sizes this
        deployment accepts, told to clients with the topology. ``partition``: the chain this core
        runs; requests naming another are refused (a one-partition cluster has partition 0)."""
        self.partition = partition
        self.limits = limits or Limits()
        self.publish_endpoint = publish_endpoint
        self.state = state
        self.check_endpoint = check_endpoint
        self.timings = timings or CoordinatorTimings()
        self.topology = self._saved = state.load() or EMPTY
        # Any member may hold a lease from a previous run: give each a full period from now, and
        # time to reconnect.
        self.last_seen: dict[str, float] = {m.id: now + self.timings.restart_grace for m in self.topology.listed()}
        self.removals_allowed_at = now + self.timings.removal_after
        self._forwards: dict[int, _Forward] = {}
        self._ids = count(1)
        self._out: list[Effect] = []
        self._last_publish = float("-inf")
        self._kept_last: set[str] = set()  # warned about once
        # Members whose lease is no longer renewed (retire()), each with how many others must stay.
        self.retiring: dict[str, int] = {}
        self.counters = {"bad_messages": 0, "forwarded_writes": 0, "removals": 0, "internal_errors": 0,
                         "forbidden": 0, "refused_joins": 0}
        self.logs = LogLimiter(log)

    def ready(self) -> list[Effect]:
        """End of a loop turn: the topology is durable (saved if it changed), then the effects."""
        if self.topology is not self._saved:
            self.state.save(self.topology)
            self._saved = self.topology
        effects = self._out[:]
        self._out.clear()
        return effects

    # ------------------------------------------------------------------ topology changes

    def _change(self, members: list[Member], learner: Member | None, why: str) -> None:
        self.topology = Topology(self.topology.epoch + 1, tuple(members), learner)
        listed = {m.id for m in members}
        self.retiring = {node: keep for node, keep in self.retiring.items() if node in listed}
        log.info("epoch %d: %s; chain %s%s", self.topology.epoch, why,
                 " -> ".join(m.id for m in members) or "(empty)",
                 f", learner {learner.id}" if learner else "")
        self._publish()

    def _publish(self) -> None:
        self._out.append(Publish(self.topology))

    def awaits(self, call_id: int) -> bool:
        """Is the forwarded write ``call_id`` still waiting for the head's answer?"""
        return call_id in self._forwards

    def remove(self, node_id: str, why: str) -> None:
        """Take a member or the learner out, as a leave does (never the last member)."""
        if self.topology.member(node_id) is not None:
            self._remove(node_id, why)

    def retire(self, node_id: str, why: str, keep: int = 1) -> None:
        """Take a live member out once its lease has surely run out; a learner (it serves
        nothing) at once. Should fewer than ``keep`` other members be left by then (one died
        meanwhile), the member stays: its lease is renewed again."""
        learner = self.topology.learner
        if learner is not None and learner.id == node_id:
            self._remove(node_id, why)
        elif self.topology.position(node_id) is not None and node_id not in self.retiring:
            log.info("%s retiring (%s): removed once its lease has run out", node_id, why)
            self.retiring[node_id] = keep
            self._publish()  # a partition table shows who is retiring

    def _retirement_due(self, node_id: str, now: float) -> bool:
        """Remove a retiring member now? Not if the chain would be left too short: kept instead."""
        if len(self.topology.members) - 1 >= self.retiring[node_id]:
            return True
        log.warning("%s kept: the chain lost another member while it was retiring", node_id)
        del self.retiring[node_id]
        self.last_seen[node_id] = now  # its heartbeats renew its lease again from the next one
        self._publish()
        return False

    def _remove(self, node_id: str, why: str) -> None:
        members = [m for m in self.topology.members if m.id != node_id]
        learner = self.topology.learner
        if learner is not None and learner.id == node_id:
            learner = None
        elif not members:
            if node_id not in self._kept_last:
                self._kept_last.add(node_id)
                log.warning("%s is the last member: kept, the chain waits for it (%s)", node_id, why)
            return
        self.last_seen.pop(node_id, None)
        self.counters["removals"] += 1
        self._change(members, learner, f"{node_id} removed ({why})")

    # ------------------------------------------------------------------ requests

    def on_request(self, client: Any, request: CoordinatorRequest | Malformed, now: float,
                   caller: Caller = TRUSTED) -> None:
        if not isinstance(request, Malformed) and caller is not TRUSTED:
            refusal = coordinator_request_refusal(request, caller, self.topology)
            if refusal is not None:
                self.counters["forbidden"] += 1
                self.logs.warning("forbidden request", now, "refused a %s request: %s (key %s)",
                                  request_type(request), refusal, caller.key)
                self._error(client, request.id, "forbidden", refusal)
                return
        if not isinstance(request, Malformed) and request.partition is not UNSET \
                and request.partition != self.partition:
            self._error(client, request.id, "wrong_partition", f"this coordinator has no partition "
                                                                f"{request.partition} (the cluster has one)")
            return
        match request:
            case TopologyRequest():
                self._ok(client, Ok(request.id, topology=self.topology, limits=self.limits))
            case StatusRequest():
                self._ok(client, Ok(request.id, topology=self.topology, counters=dict(self.counters),
                                    lease_ms=self._lease_ms))
            case Write() | Delete():
                self._forward_to_head(client, request, now)
            case Join():
                self._join(client, request, now, caller)
            case Heartbeat():
                self._heartbeat(client, request, now)
            case CaughtUp():
                self._caught_up(client, request)
            case Leave():
                if self.topology.member(request.node_id) is not None:
                    self._remove(request.node_id, "left")
                self._ok(client, Ok(request.id, epoch=self.topology.epoch))
            case Drain():
                self._error(client, request.id, "bad_request", "this cluster has one chain and no partitions to move")
            case Malformed():
                self.counters["bad_messages"] += 1
                self._error(client, request.id, request.code, request.message)
            case _:
                assert_never(request)

    @property
    def _lease_ms(self) -> int:
        return int(self.timings.lease * 1000)

    def _refuse_other_protocol(self, client: Any, request: Join | Heartbeat) -> bool:
        """Refuse (True) a join or heartbeat of another protocol version: no lease, no membership."""
        if request.protocol == PROTOCOL_VERSION:
            return False
        self._error(client, request.id, "incompatible", other_protocol(request.protocol))
        return True

    def _join(self, client: Any, request: Join, now: float, caller: Caller) -> None:
        if self._refuse_other_protocol(client, request):
            return
        try:
            node, others = joining_member(request, caller, self.topology.listed(), self.check_endpoint)
        except JoinRefused as refused:
            self._error(client, request.id, refused.code, str(refused))
            return
        taken = self._id_taken(node, others, now)
        if taken is not None:
            self.counters["refused_joins"] += 1
            self.logs.error(f"taken {node.id}", now, "refused a join: %s", taken)
            self._error(client, request.id, "node_id_taken", taken)
            return
        if [m.id for m in self.topology.members] == [node.id]:
            # The last member restarted: let it back in, in one epoch (an empty chain must never
            # be persisted: the next node to join would become the only member, without the data).
            self._change([node], None, f"{node.id} restarted as the last member")
        else:
            if self.topology.member(node.id) is not None:
                # A restarted node: its old incarnation's in-flight state is gone.
                self._remove(node.id, "restarted")
            if not self.topology.members:
                self._change([node], self.topology.learner, f"{node.id} joined an empty chain")
            elif self.topology.learner is None:
                self._change(list(self.topology.members), node, f"{node.id} joined and is catching up")
            else:
                self._error(client, request.id, "busy",
                            f"{self.topology.learner.id} is catching up; one node joins at a time, retry")
                return
        self.last_seen[node.id] = now
        self._ok(client, Ok(request.id, topology=self.topology, publish=self.publish_endpoint,
                            lease_ms=self._lease_ms))

    def _id_taken(self, node: Member, others: list[Member], now: float) -> str | None:
        """Why ``node`` may not have its id now: it belongs to another key, or to another process
        that still holds a lease (a copied config). Same id, key and endpoints: a restart."""
        holder = next((m for m in others if node.key is not None and m.key == node.key), None)
        if holder is not None:
            return f"this key is registered as {holder.id}; one key, one node"
        listed = self.topology.member(node.id)
        if listed is None:
            return None
        if listed.key != node.key:
            return (f"{node.id} is registered with another key; if its key was replaced, stop the old "
                    f"process first (it leaves the chain) or remove it (zcraq admin)")
        silent = now - self.last_seen.get(node.id, now)
        moved = (listed.service, listed.write_in, listed.ack_in) != (node.service, node.write_in, node.ack_in)
        if moved and silent <= self.timings.removal_after:
            return (f"{node.id} is in the chain at {listed.service} and was heard from {silent:.1f} s ago: "
                    f"a second process with the same id? Give each node an id of its own (node.id)")
        return None

    def _heartbeat(self, client: Any, request: Heartbeat, now: float) -> None:
        if self._refuse_other_protocol(client, request):
            return  # not counted as a sign of life: the node is removed once its lease is over
        node_id = request.node_id
        self._kept_last.discard(node_id)
        status: Literal["member", "learner"]
        if self.topology.position(node_id) is not None:
            status = "member"
        elif self.topology.learner is not None and self.topology.learner.id == node_id:
            status = "learner"
        else:
            self._error(client, request.id, "unknown_node", f"{node_id} is not in the chain; join again")
            return
        if node_id in self.retiring:  # no lease, and silent as far as removal goes
            self._ok(client, Ok(request.id, epoch=self.topology.epoch, status=status, publish=self.publish_endpoint))
            return
        self.last_seen[node_id] = now
        self._ok(client, Ok(request.id, epoch=self.topology.epoch, status=status, lease_ms=self._lease_ms,
                            publish=self.publish_endpoint))

    def _caught_up(self, client: Any, request: CaughtUp) -> None:
        node_id = request.node_id
        learner = self.topology.learner
        if self.topology.position(node_id) is not None:
            self._ok(client, Ok(request.id, epoch=self.topology.epoch))
            return
        if learner is None or learner.id != node_id or request.epoch != self.topology.epoch:
            self._error(client, request.id, "wrong_epoch", "not the learner of the current epoch",
                        epoch=self.topology.epoch)
            return
        self._change([*self.topology.members, learner], None, f"{node_id} caught up and is the tail")
        self._ok(client, Ok(request.id, epoch=self.topology.epoch))

    def _forward_to_head(self, client: Any, request: Write | Delete, now: float) -> None:
        head = self.topology.head
        if head is None:
            self._error(client, request.id, "unavailable", "the chain has no members")
            return
        call_id = next(self._ids)
        self._forwards[call_id] = _Forward(client, request.id, now + self.timings.request_timeout)
        self.counters["forwarded_writes"] += 1
        self._out.append(PeerRequest(head.service, msgspec.structs.replace(request, id=call_id), head.key))

    def on_peer_reply(self, reply: Reply | Malformed, values: list[bytes], now: float) -> None:
        """The head's answer to a forwarded write: relayed under the client's own request id."""
        if isinstance(reply, Malformed):
            self.counters["bad_messages"] += 1
            self.logs.warning("malformed reply", now, "dropped a malformed reply from a node: %s", reply.message)
            return
        forward = self._forwards.pop(reply.id, None) if type(reply.id) is int else None
        if forward is not None:
            self._out.append(Respond(forward.client, msgspec.structs.replace(reply, id=forward.request_id), values))

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        for call_id in [c for c, f in self._forwards.items() if f.deadline <= now]:
            forward = self._forwards.pop(call_id)
            self._error(forward.client, forward.request_id, "unknown_outcome",
                        "the head did not answer in time; the write may still commit")
        if now >= self.removals_allowed_at:
            for node in self.topology.listed():  # the silent first: a retiring member may be needed
                silent_for = now - self.last_seen.get(node.id, now)
                if silent_for > self.timings.removal_after and node.id not in self.retiring:
                    self._remove(node.id, f"silent for {silent_for:.1f}s")
            for node_id in list(self.retiring):
                if now - self.last_seen.get(node_id, now) > self.timings.removal_after \
                        and self._retirement_due(node_id, now):
                    self._remove(node_id, "retired")
        if now - self._last_publish >= self.timings.republish_interval:
            self._last_publish = now
            self._publish()

    # ------------------------------------------------------------------ replies

    def _ok(self, client: Any, reply: Ok) -> None:
        self._out.append(Respond(client, reply))

    def _error(self, client: Any, request_id: Any, code: str, message: str, **extra: Any) -> None:
        self._out.append(Respond(client, Error(request_id, code, message, **extra)))
