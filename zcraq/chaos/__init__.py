"""Jepsen-style testing against real processes: a cluster of coordinator and node processes, a
workload of concurrent clients recording a history, a nemesis (crashes, pauses, coordinator
outages, network partitions in namespaces), then the linearizability checker, a lost-write check
and a replica agreement check. ``zcraq chaos --help`` runs it; TESTING.md describes it."""

from zcraq.chaos.runner import ChaosOptions, ChaosReport, UsageError, parse_nemesis, run_chaos

__all__ = ["ChaosOptions", "ChaosReport", "UsageError", "parse_nemesis", "run_chaos"]
