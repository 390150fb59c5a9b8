"""Where each partition's replicas live: the coordinator's placement decisions, pure.

The coordinator calls ``plan()`` with the registered nodes and each partition's replicas (its
chain, head first, and the learner catching up behind the tail) and carries out the steps it
returns, each through a path one chain already has: a replica comes in as a learner (catch-up,
then it is the tail) and goes out as a departing node does. Called again after every change, the
steps lead to a placement where

- every partition has R replicas (fewer only while fewer nodes can host it), never two on one
  node, on as many zones as there are;
- draining nodes host nothing;
- the numbers of replicas the nodes host differ by at most one; heads by at most one and tails by
  at most two, where the chains' members allow it: once nothing else moves, rotations (a member
  leaves and comes back as the tail, through catch-up: as costly as a move) even them out, one at
  a time, and only while they are further apart than that.

Safety: placement removes a replica only from a partition that keeps R members without it (a
failed node is removed by the failure detector, not here), so every partition keeps serving.
Throttle: at most ``max_moves`` learners at once in the whole cluster; repairs (partitions short
of R) go first.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A registered node; ``zone``: its failure zone ("" for none)."""

    id: str
    zone: str = ""
    draining: bool = False


@dataclass(frozen=True, slots=True)
class Replicas:
    """One partition's replicas: the chain (head first) and the learner catching up, if any."""

    chain: tuple[str, ...] = ()
    learner: str | None = None

    @property
    def hosts(self) -> tuple[str, ...]:
        return self.chain + ((self.learner,) if self.learner is not None else ())


@dataclass(frozen=True, slots=True)
class Form:
    """The chain an empty partition should get. The coordinator may form it one replica at a
    time (zcraq/coordpartitions.py does: its head first, the others by repair)."""

    partition: int
    chain: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AddLearner:
    partition: int
    node: str
    reason: str  # "repair", "drain" or "balance"


@dataclass(frozen=True, slots=True)
class RemoveReplica:
    partition: int
    node: str


@dataclass(frozen=True, slots=True)
class Rotate:
    """``node`` leaves the partition's chain and comes back as its learner (then its tail)."""

    partition: int
    node: str


Step = Form | AddLearner | RemoveReplica | Rotate


class _Counts:
    """Replicas, heads and tails per node, kept up to date as steps are planned."""

    def __init__(self, nodes: Sequence[NodeSpec], table: Sequence[Replicas]) -> None:
        self.load: Counter[str] = Counter({n.id: 0 for n in nodes})
        self.heads: Counter[str] = Counter()
        self.tails: Counter[str] = Counter()
        for replicas in table:
            self.load.update(replicas.hosts)
            if replicas.chain:
                self.heads[replicas.chain[0]] += 1
                self.tails[replicas.chain[-1]] += 1


def plan(nodes: Sequence[NodeSpec], table: Sequence[Replicas], replication: int, max_moves: int = 1) -> list[Step]:
    """The next steps toward an even placement: at most one per partition."""
    if replication < 1 or max_moves < 1:
        raise ValueError("replication and max_moves must be at least 1")
    by_id = {n.id: n for n in nodes}
    serving = [n for n in nodes if not n.draining]
    counts = _Counts(nodes, table)
    steps: list[Step] = []
    touched: set[int] = set()
    budget = max_moves - sum(1 for r in table if r.learner is not None)

    def zones_of(replicas: Replicas, leaving: str | None = None) -> Counter[str]:
        return Counter(by_id[h].zone for h in replicas.hosts if h in by_id and h != leaving)

    def target_for(replicas: Replicas) -> str | None:
        """The best node for a new replica (a learner: it becomes the tail)."""
        zones = zones_of(replicas)
        candidates = [n for n in serving if n.id not in replicas.hosts]
        if not candidates:
            return None
        return min(candidates, key=lambda n: (zones[n.zone], counts.load[n.id], counts.tails[n.id], n.id)).id

    def add(partition: int, node: str, reason: str) -> None:
        steps.append(AddLearner(partition, node, reason))
        touched.add(partition)
        counts.load[node] += 1

    # 1. Empty partitions: a whole chain, its members where load is least, in the order the heads
    #    and tails targets of rule 6 want (formed in that order, no rotation follows).
    empty = [p for p, r in enumerate(table) if not r.hosts]
    if empty and serving:
        chains = [r.chain for r in table]
        for partition in empty:
            chains[partition] = _form_members(serving, min(replication, len(serving)), counts)
        heads, tails = _role_targets(chains, sorted(n.id for n in serving))
        for partition in empty:
            middle = [n for n in chains[partition] if n not in (heads[partition], tails[partition])]
            chain = (heads[partition], *middle, tails[partition]) if len(chains[partition]) > 1 else chains[partition]
            steps.append(Form(partition, tuple(chain)))
            touched.add(partition)

    # 2. Partitions with more than R members (a learner caught up): one goes.
    for partition, replicas in enumerate(table):
        if partition in touched or replicas.learner is not None or len(replicas.chain) <= replication:
            continue
        zones = zones_of(replicas)

        def removal_order(node: str) -> tuple[int, int, int, int, str]:
            spec = by_id.get(node)
            gone_or_draining = spec is None or spec.draining
            role_excess = (counts.heads[node] if node == replicas.chain[0] else 0) + \
                          (counts.tails[node] if node == replicas.chain[-1] else 0)
            zone_shared = 0 if spec is None else zones[spec.zone]
            return (-gone_or_draining, -counts.load[node], -zone_shared, -role_excess, node)

        victim = min(replicas.chain, key=removal_order)
        steps.append(RemoveReplica(partition, victim))
        touched.add(partition)
        counts.load[victim] -= 1

    # 3. Repairs: partitions short of R replicas, the shortest first.
    short = sorted((len(r.hosts), p) for p, r in enumerate(table)
                   if p not in touched and r.chain and r.learner is None and len(r.hosts) < replication)
    for _, partition in short:
        if budget <= 0:
            break
        node = target_for(table[partition])
        if node is not None:
            add(partition, node, "repair")
            budget -= 1

    # 4. Drains: a replica on a draining node is replaced before it goes.
    for partition, replicas in enumerate(table):
        if budget <= 0:
            break
        if partition in touched or replicas.learner is not None:
            continue
        if any(h in by_id and by_id[h].draining for h in replicas.chain):
            node = target_for(replicas)
            if node is not None:
                add(partition, node, "drain")
                budget -= 1

    # 5. Balance: a replica moves from the fullest serving node to the emptiest.
    while budget > 0 and len(serving) > 1:
        fullest = max(serving, key=lambda n: (counts.load[n.id], n.id))
        emptiest = min(serving, key=lambda n: (counts.load[n.id], n.id))
        if counts.load[fullest.id] - counts.load[emptiest.id] <= 1:
            break
        movable = [p for p, r in enumerate(table) if p not in touched and r.learner is None
                   and fullest.id in r.chain and emptiest.id not in r.hosts and len(r.chain) >= replication]
        if not movable:
            break
        partition = min(movable, key=lambda p: (zones_of(table[p], fullest.id)[emptiest.zone], p))
        add(partition, emptiest.id, "balance")
        counts.load[fullest.id] -= 1  # it gives one up once the learner has caught up
        budget -= 1

    # 6. Heads and tails: once nothing else moves, one rotation toward an even spread.
    if budget > 0 and not steps and all(r.learner is None for r in table):
        rotation = _next_rotation(table, serving)
        if rotation is not None:
            steps.append(rotation)
    return steps


def _form_members(serving: Sequence[NodeSpec], length: int, counts: _Counts) -> tuple[str, ...]:
    members: list[str] = []
    zones: Counter[str] = Counter()
    for _ in range(length):
        node = min((n for n in serving if n.id not in members), key=lambda n: (zones[n.zone], counts.load[n.id], n.id))
        members.append(node.id)
        zones[node.zone] += 1
        counts.load[node.id] += 1
    return tuple(members)


def _next_rotation(table: Sequence[Replicas], serving: Sequence[NodeSpec]) -> Rotate | None:
    """A step toward the heads and tails ``_role_targets`` picks: a member leaves and comes back
    as the tail, so [a, b, c] -> [b, c, a] gives the head to b, and [a, b, c] -> [a, c, b] the
    tail to b. The targets depend on the chains' members only, never on their order, so the
    rotations that reach them do not change them: a partition needs at most as many rotations as
    it has members."""
    serving_ids = sorted(n.id for n in serving)
    chains = [r.chain for r in table]
    if not serving_ids or any(not chain or not set(chain) <= set(serving_ids) for chain in chains):
        return None
    if _spread(Counter(c[0] for c in chains), serving_ids) <= 1 and \
            _spread(Counter(c[-1] for c in chains), serving_ids) <= 2:
        return None  # even enough: a rotation costs a catch-up
    heads, tails = _role_targets(chains, serving_ids)
    for partition, (chain, head, tail) in enumerate(zip(chains, heads, tails)):
        if chain[0] != head:
            return Rotate(partition, chain[0])
        if chain[-1] != tail:
            return Rotate(partition, tail)
    return None


def _spread(counts: Counter[str], nodes: list[str]) -> int:
    return max(counts[n] for n in nodes) - min(counts[n] for n in nodes)


def _role_targets(chains: Sequence[Sequence[str]], nodes: list[str]) -> tuple[list[str], list[str]]:
    """Each partition's head and tail (the same node for a chain of one): as many heads per node,
    give or take one, then as many tails where the members allow it. Each partition tries its
    members in an order of its own (a hash of partition and node), so that ties spread."""
    members = [sorted(set(chain), key=lambda node: zlib.crc32(f"{p}/{node}".encode()))  # noqa: B023 (used at once)
               for p, chain in enumerate(chains)]
    heads = _roles(members, nodes)
    tails = _roles([[n for n in m if n != head] or [head] for m, head in zip(members, heads)], nodes)
    return heads, tails


def _roles(options: list[list[str]], nodes: list[str]) -> list[str]:
    """One node per partition from its ``options`` such that every node gets the same number,
    give or take one, where the options allow: a b-matching grown by augmenting paths, first up
    to the floor of the mean per node, then one more. A node's count never falls as paths are
    taken, so the floor reached in the first pass stays."""
    owner: list[str | None] = [None] * len(options)
    owned: dict[str, set[int]] = {n: set() for n in nodes}

    def augment(partition: int, cap: int, seen: set[str]) -> bool:
        for node in options[partition]:
            if node in seen:
                continue
            seen.add(node)
            mine = owned.setdefault(node, set())
            if len(mine) < cap or any(other != partition and augment(other, cap, seen) for other in sorted(mine)):
                before = owner[partition]
                if before is not None:
                    owned[before].discard(partition)
                owner[partition] = node
                mine.add(partition)
                return True
        return False

    floor = len(options) // max(1, len(nodes))
    for cap in (floor, floor + 1, len(options)):
        for partition in range(len(options)):
            if owner[partition] is None:
                augment(partition, cap, set())
    return [node if node is not None else options[p][0] for p, node in enumerate(owner)]


__all__ = ["AddLearner", "Form", "NodeSpec", "RemoveReplica", "Replicas", "Rotate", "Step", "plan"]
