"""The end-of-run checks of a partitioned simulation that read its state, not its history: the
placement after healing, each partition's replicas, acknowledged writes, the watchers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zcraq.partitioning import partition_of
from zcraq.store import MemoryStore

if TYPE_CHECKING:
    from zcraq.sim.partitioned import PartitionedSimulation


def check_run(sim: PartitionedSimulation) -> list[str]:
    core = sim.coordinator.pcore
    if core is None:
        return ["the coordinator is down after healing"]
    problems = _placement(sim)
    problems.extend(_replicas(sim))
    final = _final_versions(sim)
    problems.extend(_lost_writes(sim, final))
    for watcher in sim.watchers:
        scope = {k: v for k, v in final.items() if partition_of(k, sim.config.partitions) == watcher.partition}
        problems.extend(watcher.problems(sim.acked, scope))
    return problems


def serving_nodes(sim: PartitionedSimulation) -> set[str]:
    return {n for n, h in sim.hosts.items() if h.alive and not h.dead and n != sim.drained}


def placed(sim: PartitionedSimulation) -> bool:
    """Is placement done: every partition with its replicas on serving nodes, none moving?"""
    core = sim.coordinator.pcore
    if core is None:
        return False
    serving = serving_nodes(sim)
    wanted = min(sim.shape.replication, len(serving))
    return not core.assigned and all(
        c.learner is None and len(c.members) == wanted and {m.id for m in c.members} <= serving for c in sim.chains())


def _placement(sim: PartitionedSimulation) -> list[str]:
    """Every partition has R replicas (or as many as there are serving nodes) on serving nodes,
    none learning or assigned; a node hosts exactly the replicas its chains list."""
    core = sim.coordinator.pcore
    assert core is not None
    serving = serving_nodes(sim)
    wanted = min(sim.shape.replication, len(serving))
    problems = []
    if sim.drained is not None and not (sim.drained in core.nodes and core.nodes[sim.drained].draining):
        problems.append(f"{sim.drained} is not marked draining after healing")
    table = core.table()
    hosted: dict[str, set[int]] = {n: set() for n in sim.hosts}
    for entry in table["partitions"]:
        p = entry["partition"]
        chain = sim.chains()[p]
        members = [m.id for m in chain.members]
        for member in members:
            hosted.setdefault(member, set()).add(p)
        if len(members) != wanted or not set(members) <= serving or chain.learner or entry["assigned"]:
            problems.append(f"after healing, partition {p} is {members} (learner "
                            f"{chain.learner.id if chain.learner else None}, assigned {entry['assigned']}); "
                            f"{wanted} replicas wanted on {sorted(serving)}")
    for name, host in sim.hosts.items():
        held = set(host.host.cores) if host.host is not None else set()
        if held != hosted.get(name, set()):
            problems.append(f"{name} hosts partitions {sorted(held)}, the chains list {sorted(hosted[name])}")
    return problems


def _store(sim: PartitionedSimulation, node: str, partition: int) -> MemoryStore | None:
    return sim.hosts[node].stores.held.get(partition)


def _replicas(sim: PartitionedSimulation) -> list[str]:
    """A partition's members agree on every key of it, and hold nothing uncommitted."""
    problems = []
    for p, chain in enumerate(sim.chains()):
        stores = {m.id: _store(sim, m.id, p) for m in chain.members}
        missing = [n for n, s in stores.items() if s is None]
        if missing:
            problems.append(f"partition {p}: members {missing} have no store of it")
        present = {n: s for n, s in stores.items() if s is not None}
        for key in (k for k in sim.keys if partition_of(k, sim.config.partitions) == p):
            states = {n: s.latest_committed(key) for n, s in present.items()}
            seen = {(i.version, i.value, i.tombstone) if i else None for i in states.values()}
            if len(seen) > 1:
                problems.append(f"partition {p}: replicas disagree on {key}: {states}")
        for name, store in present.items():
            dirty = list(store.dirty_items())
            if dirty:
                problems.append(f"{name}: partition {p} still holds {len(dirty)} uncommitted versions")
    return problems


def _final_versions(sim: PartitionedSimulation) -> dict[str, int]:
    """Each key's committed version at the head of its partition after healing."""
    final = {}
    chains = sim.chains()
    for key in sim.keys:
        members = chains[partition_of(key, sim.config.partitions)].members
        store = _store(sim, members[0].id, partition_of(key, sim.config.partitions)) if members else None
        item = store.latest_committed(key) if store is not None else None
        if item is not None:
            final[key] = item.version
    return final


def _lost_writes(sim: PartitionedSimulation, final: dict[str, int]) -> list[str]:
    """An acknowledged version of a key newer than what its partition holds was lost."""
    newest: dict[str, int] = {}
    for key, version in sim.acked:
        newest[key] = max(newest.get(key, 0), version)
    return [f"{key}: version {version} was acknowledged, the partition holds {final.get(key, 0)}"
            for key, version in sorted(newest.items()) if final.get(key, 0) < version]
