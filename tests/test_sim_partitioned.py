"""The partitioned cluster's pure cores (PartitionedCoordinator, PartitionHost) under the
deterministic simulator: seeds with faults and membership changes, and a deliberate bug caught."""

from __future__ import annotations

import pytest

from zcraq.sim import PARTITIONED_NEMESIS_KINDS, SimConfig, simulate
from zcraq.sim.__main__ import main as sim_main


def _config(seed: int, partitions: int = 4, unsafe: frozenset[str] = frozenset()) -> SimConfig:
    return SimConfig(seed=seed, partitions=partitions, nodes=4, nemesis=PARTITIONED_NEMESIS_KINDS, unsafe=unsafe)


def _failures(configs: list[SimConfig]) -> list[str]:
    failures = []
    for config in configs:
        result = simulate(config)
        if not result.ok:
            failures.append(f"seed {config.seed} (replay: python -m zcraq.sim --partitions {config.partitions} "
                            f"--seed {config.seed}):\n" + "\n".join(result.problems))
    return failures


@pytest.mark.timeout(300)
def test_seeds_of_four_partitions_are_linearizable_and_fully_replicated() -> None:
    failures = _failures([_config(seed) for seed in range(20)])
    assert not failures, "\n\n".join(failures[:3])


@pytest.mark.timeout(300)
def test_seeds_of_eight_partitions_are_linearizable_and_fully_replicated() -> None:
    failures = _failures([_config(seed, partitions=8) for seed in range(100, 112)])
    assert not failures, "\n\n".join(failures[:3])


@pytest.mark.timeout(120)
def test_a_partitioned_run_does_real_work_and_replays() -> None:
    first = simulate(_config(7))
    assert first.ok, first.problems
    completions = [e for e in first.history if e["type"] == "ok"]
    assert sum(e["f"] == "write" for e in completions) > 30
    assert sum(e["f"] == "read" and e["value"] is not None for e in completions) > 30
    assert len({e["key"] for e in completions if e["f"] == "write"}) == 8  # every partition written
    assert first.stats["watched"] > 0
    assert simulate(_config(7)).history_jsonl() == first.history_jsonl()


@pytest.mark.timeout(120)
def test_membership_changes_move_replicas() -> None:
    """The joiner ends up hosting replicas; the drained node and the dead one host none."""
    from zcraq.sim.partitioned import PartitionedSimulation

    simulation = PartitionedSimulation(_config(3))
    result = simulation.run()
    assert result.ok, result.problems
    hosts = simulation.hosts
    assert simulation.joiner is not None and hosts[simulation.joiner].host is not None
    assert hosts[simulation.joiner].host.cores
    drained = hosts[simulation.drained or ""].host
    assert drained is not None and not drained.cores
    assert [h.name for h in hosts.values() if h.dead]


@pytest.mark.timeout(300)
def test_dirty_reads_answered_locally_are_caught_through_the_host() -> None:
    """A deliberate bug passed to every replica through PartitionHost must be found in a few seeds."""
    unsafe = frozenset({"dirty_read_local"})
    caught = next((seed for seed in range(40) if not simulate(_config(seed, unsafe=unsafe)).ok), None)
    assert caught is not None, "the partitioned simulation missed dirty reads answered without the tail"


@pytest.mark.timeout(120)
def test_command_line_runs_partitions(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main(["--partitions", "4", "--seed", "1", "--seeds", "2"]) == 0
    assert "2 passed, 0 failed" in capsys.readouterr().out
