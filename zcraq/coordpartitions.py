"""The coordinator of a partitioned cluster, pure: a chain core per partition, and placement.

A partitioned cluster has P partitions (fixed when it is created), each a chain of R replicas.
Each partition's chain is run by a ``CoordinatorCore`` of its own, exactly as a one-chain
cluster's is: joins, the learner and caught_up, heartbeats and leases, removal of silent members,
writes forwarded to the head. So everything argued about one chain holds per partition. What this
module adds is which nodes host which partitions:

- Nodes register (endpoints, key, failure zone) and keep a node-level lease with heartbeats that
  name no partition. A node silent past the removal time leaves the registry (each partition's
  core removes it from that chain by the same rule, on its own).
- After every turn, placement (zcraq/placement.py) plans the next steps, and they are applied.
  AddLearner *assigns* a partition to a node: the node sees the assignment in the table, starts a
  replica and joins that partition, which its core admits as the learner (or as the only member
  of an empty chain). RemoveReplica removes a member as a leave does; Rotate removes one and
  assigns the partition back to it.
- A join for a partition is admitted only from a registered node assigned to it or listed in its
  chain: nothing else places replicas.
- The registry (with draining marks) and every partition's topology are saved in one state, before
  any effect of the turn leaves, as a one-chain coordinator saves its topology.

The shell (zcraq/coordinator_partitioned.py) carries the partition of each request and publishes the table.
Replies to a node's own join and heartbeat carry the table's version, so that a node that missed a
publication asks for the table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from zcraq.access import coordinator_request_refusal
from zcraq.callers import TRUSTED, Caller, Role
from zcraq.coordcore import CoordinatorCore, CoordinatorTimings, JoinRefused, joining_member, other_protocol
from zcraq.effects import Effect, PeerRequest, Publish, Respond
from zcraq.endpoints import parse_endpoint
from zcraq.logs import for_partition
from zcraq.messages import (PROTOCOL_VERSION, CaughtUp, Delete, Error, Heartbeat, Join, Leave, Limits, Malformed, Ok,
                            Reply, Write)
from zcraq.partitioning import check_partition_count, partition_of
from zcraq.placement import AddLearner, Form, NodeSpec, RemoveReplica, Replicas, Rotate, plan
from zcraq.topology import Member, Topology

log = logging.getLogger("zcraq.coordinator")

MAX_NODES = 1000  # registered nodes at most: the registry, and the table every node is sent, stay bounded


class TableStore(Protocol):
    """Where a partitioned coordinator's state survives a restart (one JSON-able dict)."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Shape:
    """A cluster's partitions and replicas per partition (both fixed at creation), and how many
    learners placement may run at once."""

    partitions: int
    replication: int = 3
    max_moves: int = 2
    # A new cluster waits this long for R nodes before it forms chains on fewer.
    formation_grace: float = 5.0

    def __post_init__(self) -> None:
        check_partition_count(self.partitions)
        if not 1 <= self.replication <= 16 or self.max_moves < 1:
            raise ValueError("replication must be 1 to 16 and max_moves at least 1")


@dataclass(slots=True)
class _Node:
    member: Member
    zone: str = ""
    draining: bool = False
    last_seen: float = 0.0


@dataclass(frozen=True, slots=True)
class PublishTable:
    """Publish the partition table (every partition's topology and assignment) to subscribers."""

    table: dict[str, Any]


class _Slot:
    """One partition core's StateStore: the topology lives in the cluster state, saved as a whole."""

    def __init__(self, topology: Topology | None) -> None:
        self.topology = topology
        self.changed = False

    def load(self) -> Topology | None:
        return self.topology

    def save(self, topology: Topology) -> None:
        self.topology = topology
        self.changed = True


@dataclass(slots=True)
class _Assignment:
    node: str
    deadline: float  # the node must have joined by then


@dataclass(slots=True)
class _Forwarded:
    partition: int
    call_id: Any


class PartitionedCoordinator:
    def __init__(self, publish_endpoint: str, state: TableStore, now: float, shape: Shape,
                 timings: CoordinatorTimings | None = None,
                 check_endpoint: Callable[[str], object] = parse_endpoint, limits: Limits | None = None) -> None:
        self.shape = shape
        self.timings = timings or CoordinatorTimings()
        self.publish_endpoint = publish_endpoint
        self.state = state
        self.check_endpoint = check_endpoint
        saved = state.load()
        topologies: list[Topology | None] = [None] * shape.partitions
        self.nodes: dict[str, _Node] = {}
        # Draining nodes unregistered (silent, or gone with a leave): draining still when they come
        # back, so that a restart in the middle of a drain does not undo it.
        self.drained_away: set[str] = set()
        self.version = 0  # the table's: it grows with every change of the table, so that nodes and
        # clients can tell an older table from a newer one (assignments carry no epoch)
        if saved is not None:
            if saved.get("partitions") != shape.partitions or saved.get("replication") != shape.replication:
                raise ValueError(f"the saved cluster has {saved.get('partitions')} partitions of "
                                 f"{saved.get('replication')} replicas; the config says {shape.partitions} of "
                                 f"{shape.replication}: a cluster's shape is fixed when it is created")
            topologies = [Topology.from_dict(t) for t in saved["topologies"]]
            self.drained_away = {str(n) for n in saved.get("drained_away", [])}
            self.version = int(saved.get("version", 0))
            for entry in saved["nodes"]:
                member = Member.from_dict(entry["member"])
                # As after a one-chain coordinator's restart: every node gets a full lease from now.
                self.nodes[member.id] = _Node(member, entry.get("zone", ""), bool(entry.get("draining")),
                                              now + self.timings.restart_grace)
        self.slots = [_Slot(t) for t in topologies]
        self.chains = [CoordinatorCore(publish_endpoint, slot, now, self.timings, check_endpoint, limits, partition)
                       for partition, slot in enumerate(self.slots)]
        self.assigned: dict[int, _Assignment] = {}
        self.forwards: dict[int, _Forwarded] = {}
        self._next_call = 1
        self.created_at = now
        self._registry_changed = False
        self._table_changed = True  # publish once at start
        self._last_content: dict[str, Any] | None = None
        self._out: list[Effect | PublishTable] = []
        self.counters = {"moves": 0, "rotations": 0, "placement_removals": 0, "refused_joins": 0,
                         "registrations": 0, "bad_messages": 0, "forbidden": 0}

    # ------------------------------------------------------------------ the table

    def table(self) -> dict[str, Any]:
        """Every partition's topology and the node assigned to join it, if any; the registry; the
        table's version."""
        return {"version": self.version, **self._content()}

    def _content(self) -> dict[str, Any]:
        return {
            "replication": self.shape.replication,
            "partitions": [{"partition": p, "topology": core.topology.to_dict(),
                            "assigned": self.assigned[p].node if p in self.assigned else None,
                            "retiring": sorted(core.retiring)}
                           for p, core in enumerate(self.chains)],
            "nodes": [{"id": n.member.id, "zone": n.zone, "draining": n.draining} for n in self.nodes.values()],
        }

    def _saved_state(self) -> dict[str, Any]:
        return {"partitions": self.shape.partitions, "replication": self.shape.replication, "version": self.version,
                "topologies": [core.topology.to_dict() for core in self.chains],
                "nodes": [{"member": n.member.to_dict(), "zone": n.zone, "draining": n.draining}
                          for n in self.nodes.values()],
                "drained_away": sorted(self.drained_away)}

    def ready(self, now: float) -> list[Effect | PublishTable]:
        """End of a loop turn: placement's next steps, then the state is durable, then the effects."""
        self._place(now)
        effects: list[Effect | PublishTable] = []
        for partition, core in enumerate(self.chains):
            with for_partition(partition):
                core_effects = core.ready()
            for effect in core_effects:
                if isinstance(effect, Publish):
                    self._table_changed = True
                elif isinstance(effect, PeerRequest):
                    effects.append(self._tag_forward(partition, effect))
                elif not (isinstance(effect, Respond) and effect.client is None):
                    effects.append(effect)
        if self._table_changed or self._registry_changed or any(slot.changed for slot in self.slots):
            content = self._content()  # a republication alone changes nothing: same version
            if content != self._last_content:
                self._last_content = content
                self.version += 1
                self._registry_changed = True  # saved with the version, before anyone sees it
        if any(slot.changed for slot in self.slots) or self._registry_changed:
            self.state.save(self._saved_state())
            for slot in self.slots:
                slot.changed = False
            self._registry_changed = False
            self._table_changed = True
        out = self._out + effects
        self._out = []
        if self._table_changed:
            self._table_changed = False
            out.append(PublishTable(self.table()))
        return out

    def _tag_forward(self, partition: int, effect: PeerRequest) -> PeerRequest:
        """A core's forwarded write, under an id unique over every partition's core."""
        call_id = self._next_call
        self._next_call += 1
        self.forwards[call_id] = _Forwarded(partition, effect.request.id)
        return PeerRequest(effect.endpoint, msgspec.structs.replace(effect.request, id=call_id), effect.key)

    # ------------------------------------------------------------------ requests

    def register(self, client: Any, join: Join, zone: str, now: float, caller: Caller = TRUSTED) -> None:
        """A node announces itself (a join naming no partition): it may now be given replicas."""
        if self._refused(client, join, caller):
            return
        if join.protocol != PROTOCOL_VERSION:
            self._error(client, join.id, "incompatible", other_protocol(join.protocol))
            return
        try:
            member, _ = joining_member(join, caller, (n.member for n in self.nodes.values()), self.check_endpoint)
        except JoinRefused as refused:
            self._error(client, join.id, refused.code, str(refused))
            return
        known = self.nodes.get(member.id)
        if known is None and len(self.nodes) >= MAX_NODES:
            self._error(client, join.id, "busy", f"the cluster has {MAX_NODES} nodes registered, its most")
            return
        if known is not None and known.member.key != member.key:
            self.counters["refused_joins"] += 1
            self._error(client, join.id, "node_id_taken", f"{member.id} is registered with another key")
            return
        if known is None or known.member != member or known.zone != zone:
            draining = known.draining if known else member.id in self.drained_away
            self.drained_away.discard(member.id)
            self.nodes[member.id] = _Node(member, zone, draining, now)
            self._registry_changed = True
            self.counters["registrations"] += 1
            log.info("node %s registered (zone %r)", member.id, zone)
        self.nodes[member.id].last_seen = now
        self._out.append(Respond(client, Ok(join.id, publish=self.publish_endpoint, lease_ms=self._lease_ms,
                                            table_version=self.version)))

    def node_heartbeat(self, client: Any, request: Heartbeat, now: float, caller: Caller = TRUSTED) -> None:
        """A heartbeat naming no partition: the node is alive (its partitions' leases are their own)."""
        if self._refused(client, request, caller):
            return
        node = self.nodes.get(request.node_id)
        if node is None:
            self._error(client, request.id, "unknown_node", f"{request.node_id} is not registered; join again")
            return
        node.last_seen = now
        self._out.append(Respond(client, Ok(request.id, lease_ms=self._lease_ms, table_version=self.version,
                                            publish=self.publish_endpoint)))

    def on_partition_request(self, client: Any, partition: int, request: Join | Heartbeat | CaughtUp | Leave,
                             now: float, caller: Caller = TRUSTED) -> None:
        """A replica's own request to its partition's core; a join only from a node placed there."""
        if not 0 <= partition < self.shape.partitions:
            self._error(client, request.id, "bad_request", f"no partition {partition}: the cluster has "
                                                           f"{self.shape.partitions}")
            return
        core = self.chains[partition]
        if isinstance(request, Join):
            node_id = request.node.get("id")  # any JSON value
            if not self._placed_on(partition, node_id):
                self.counters["refused_joins"] += 1
                self._error(client, request.id, "not_assigned",
                            f"partition {partition} is not placed on {node_id}: wait for the table")
                return
        with for_partition(partition):
            core.on_request(client, request, now, caller)
        if isinstance(request, Join) and partition in self.assigned:
            if core.topology.member(self.assigned[partition].node) is not None:
                del self.assigned[partition]  # admitted

    def _placed_on(self, partition: int, node_id: object) -> bool:
        """Is ``node_id`` a registered node listed in the partition's chain or assigned to it?"""
        if not isinstance(node_id, str) or node_id not in self.nodes:
            return False
        assignment = self.assigned.get(partition)
        return self.chains[partition].topology.member(node_id) is not None or (
            assignment is not None and assignment.node == node_id)

    def forward_write(self, client: Any, request: Write | Delete, now: float, caller: Caller = TRUSTED) -> None:
        """A client's write sent to the coordinator: to the head of the key's partition."""
        partition = partition_of(request.key, self.shape.partitions)
        with for_partition(partition):
            self.chains[partition].on_request(client, request, now, caller)

    def on_peer_reply(self, reply: Reply | Malformed, values: list[bytes], now: float) -> None:
        if isinstance(reply, Malformed):
            self.counters["bad_messages"] += 1
            return
        forwarded = self.forwards.pop(reply.id, None) if type(reply.id) is int else None
        if forwarded is not None:
            with for_partition(forwarded.partition):
                self.chains[forwarded.partition].on_peer_reply(
                    msgspec.structs.replace(reply, id=forwarded.call_id), values, now)

    def drain(self, client: Any, request_id: Any, node_id: str, draining: bool = True,
              caller: Caller = TRUSTED) -> None:
        """Mark a node draining (placement moves every replica off it) or serving again."""
        if caller is not TRUSTED and not caller.is_(Role.ADMIN):
            self.counters["forbidden"] += 1
            self._error(client, request_id, "forbidden", "draining a node needs an administrator's key")
            return
        node = self.nodes.get(node_id)
        if node is None and node_id in self.drained_away:  # away now: the mark waits for it
            if not draining:
                self.drained_away.discard(node_id)
                self._registry_changed = True
            self._out.append(Respond(client, Ok(request_id)))
            return
        if node is None:
            self._error(client, request_id, "unknown_node", f"{node_id} is not registered")
            return
        if node.draining != draining:
            node.draining = draining
            self._registry_changed = True
            log.info("node %s %s", node_id, "draining" if draining else "serving again")
        self._out.append(Respond(client, Ok(request_id)))

    def leave(self, client: Any, request: Leave, now: float, caller: Caller = TRUSTED) -> None:
        """A node going away (a leave naming no partition): out of every chain and the registry."""
        if self._refused(client, request, caller):
            return
        for partition, core in enumerate(self.chains):
            if core.topology.member(request.node_id) is not None:
                with for_partition(partition):
                    core.on_request(None, request, now, caller)
        for partition in [p for p, a in self.assigned.items() if a.node == request.node_id]:
            del self.assigned[partition]
        gone = self.nodes.pop(request.node_id, None)
        if gone is not None:
            if gone.draining:
                self._remember_drained(request.node_id)
            self._registry_changed = True
        self._out.append(Respond(client, Ok(request.id)))

    # ------------------------------------------------------------------ time and placement

    def tick(self, now: float) -> None:
        for partition, core in enumerate(self.chains):
            with for_partition(partition):
                core.tick(now)
        # A forwarded write its core gave up on (it answered unknown_outcome) is forgotten here too.
        for call_id, forwarded in list(self.forwards.items()):
            if not self.chains[forwarded.partition].awaits(forwarded.call_id):
                del self.forwards[call_id]
        for node_id, node in list(self.nodes.items()):
            if now - node.last_seen > self.timings.removal_after:
                log.info("node %s unregistered: silent for %.1f s", node_id, now - node.last_seen)
                if node.draining:
                    self._remember_drained(node_id)
                del self.nodes[node_id]
                self._registry_changed = True
        for partition, assignment in list(self.assigned.items()):
            chain = self.chains[partition]
            kept = chain.topology.member(assignment.node) is not None and assignment.node not in chain.retiring
            if assignment.node not in self.nodes or now > assignment.deadline or kept:  # kept: a rotation undone
                del self.assigned[partition]
                self._table_changed = True

    def _place(self, now: float) -> None:
        specs = [NodeSpec(n.member.id, n.zone, n.draining) for n in self.nodes.values()]
        serving = [s for s in specs if not s.draining]
        forming = any(not core.topology.listed() for core in self.chains)
        if forming and len(serving) < self.shape.replication and now - self.created_at < self.shape.formation_grace:
            return  # a new cluster: wait a little for R nodes, so that chains form over them
        want = min(self.shape.replication, len(serving))
        rotation_keeps = max(want - 1, 2)  # members left while a rotated one is away: never one alone
        table = []
        for partition, core in enumerate(self.chains):
            topology = core.topology
            learner = topology.learner.id if topology.learner else None
            if learner is None and partition in self.assigned:
                learner = self.assigned[partition].node
            # A retiring member is as good as gone: placement plans without it.
            table.append(Replicas(tuple(m.id for m in topology.members if m.id not in core.retiring), learner))
        for step in plan(specs, table, self.shape.replication, self.shape.max_moves):
            match step:
                case Form():
                    # The head joins the empty chain; the others come later as learners, by repair.
                    # A chain formed whole would keep whatever data each member already held.
                    self._assign(step.partition, step.chain[0], now)
                case AddLearner():
                    self._assign(step.partition, step.node, now)
                    self.counters["moves"] += 1
                case RemoveReplica() | Rotate() if self.chains[step.partition].retiring:
                    pass  # one member of a chain retiring at a time: the chain never drops two at once
                case Rotate() if len(self.chains[step.partition].topology.members) <= rotation_keeps:
                    pass  # a rotation would leave a single copy until the rotated replica caught up
                case RemoveReplica():  # surplus: the others are enough
                    with for_partition(step.partition):
                        self.chains[step.partition].retire(step.node, "moved by placement", keep=want)
                    self.counters["placement_removals"] += 1
                case Rotate():  # out once its lease has run out, then back in as the learner
                    with for_partition(step.partition):
                        self.chains[step.partition].retire(step.node, "rotated by placement", keep=rotation_keeps)
                    self._assign(step.partition, step.node, now)
                    self.counters["rotations"] += 1

    def _remember_drained(self, node_id: str) -> None:
        if len(self.drained_away) >= MAX_NODES:  # bounded: some mark goes
            self.drained_away.pop()
        self.drained_away.add(node_id)

    def _assign(self, partition: int, node_id: str, now: float) -> None:
        self.assigned[partition] = _Assignment(node_id, now + 2 * self.timings.removal_after)
        self._table_changed = True

    # ------------------------------------------------------------------ replies

    @property
    def _lease_ms(self) -> int:
        return int(self.timings.lease * 1000)

    def _refused(self, client: Any, request: Join | Heartbeat | Leave, caller: Caller) -> bool:
        """Refuse (True) a node-level request its caller may not make: registering needs a node's
        key, a heartbeat or a leave the key the node registered with (or, to leave, an admin's)."""
        if caller is TRUSTED:
            return False
        registered = Topology(0, tuple(n.member for n in self.nodes.values()))
        refusal = coordinator_request_refusal(request, caller, registered)
        if refusal is None:
            return False
        self.counters["forbidden"] += 1
        self._error(client, request.id, "forbidden", refusal)
        return True

    def _error(self, client: Any, request_id: Any, code: str, message: str) -> None:
        self._out.append(Respond(client, Error(request_id, code, message)))


__all__ = ["PartitionedCoordinator", "PublishTable", "Shape", "TableStore"]
