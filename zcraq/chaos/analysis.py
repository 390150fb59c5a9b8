"""What a chaos run proves: linearizability of the history, no lost writes, converged replicas.

- **Linearizability**: the whole history, final reads included, goes to
  :func:`zcraq.checker.check_history`.
- **Lost writes**: the final reads ran after every other operation had completed, at every node.
  For each key, the value they return must come from a write, conditional write (``cas``) or
  delete that was acknowledged or of unknown outcome, never from a failed one, and no acknowledged
  one may have started after that write had completed (it would have overwritten it: its own
  value, or a later one, must be what is read). The checker implies all of this; this check counts
  and names the writes.
- **Convergence**: after healing, every node must answer every final read, and every replica must
  hold the same newest committed version of every key.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zcraq.checker import Operation, Result, check_history, load_history
from zcraq.chaos.workload import FINAL_PROCESS


@dataclass
class Analysis:
    checker: Result
    operations: int
    lost_writes: list[str] = field(default_factory=list)
    bad_final_values: list[str] = field(default_factory=list)
    divergence: list[str] = field(default_factory=list)
    final_failures: list[str] = field(default_factory=list)

    @property
    def linearizable(self) -> bool:
        return self.checker.ok

    @property
    def ok(self) -> bool:
        return (self.linearizable and not self.lost_writes and not self.bad_final_values
                and not self.divergence and not self.final_failures)

    def problems(self) -> list[str]:
        problems = []
        if not self.linearizable:
            problems.append(f"history {self.checker.verdict()}\n{self.checker.describe()}")
        if self.lost_writes:
            problems.append(f"{len(self.lost_writes)} acknowledged writes lost:\n  "
                            + "\n  ".join(self.lost_writes[:20]))
        if self.bad_final_values:
            problems.append("final values no acknowledged or pending write explains:\n  "
                            + "\n  ".join(self.bad_final_values[:20]))
        if self.divergence:
            problems.append("replicas disagree after healing:\n  " + "\n  ".join(self.divergence[:20]))
        if self.final_failures:
            problems.append(f"{len(self.final_failures)} final reads failed after healing:\n  "
                            + "\n  ".join(self.final_failures[:20]))
        return problems


def lost_writes(ops: list[Operation]) -> tuple[list[str], list[str]]:
    """(lost acknowledged mutations, unexplained final values), each as readable lines."""
    by_key: dict[Any, list[Operation]] = defaultdict(list)
    finals: dict[Any, list[Operation]] = defaultdict(list)
    for op in ops:
        if op.process == FINAL_PROCESS:
            if op.status == "ok":
                finals[op.key].append(op)
        else:
            by_key[op.key].append(op)
    lost: dict[tuple[Any, int], str] = {}
    unexplained: list[str] = []
    for key, reads in finals.items():
        mutations = [op for op in by_key.get(key, []) if op.is_mutation]
        acked = [op for op in mutations if op.status == "ok"]
        writers = {op.new_value: op for op in mutations if op.f in ("write", "cas")}
        for read in {r.value: r for r in reads}.values():
            if read.value is not None:
                source = writers.get(read.value)
                if source is None:
                    unexplained.append(f"key {key!r}: final read returned {read.value!r}, which no one wrote")
                    continue
                if source.status == "fail":
                    unexplained.append(f"key {key!r}: final read returned {read.value!r}, whose write failed "
                                       f"(line {source.invoke_line})")
                    continue
                sources = [source]
            else:
                sources = [op for op in mutations if op.f == "delete" and op.status != "fail"]
            # Lost: acknowledged, and begun after every possible source of the final value was over.
            over = max((s.complete_time if s.status == "ok" and s.complete_time is not None else float("inf")
                        for s in sources), default=float("-inf"))
            source_lines = {s.invoke_line for s in sources}
            for op in acked:
                if op.invoke_time > over and op.invoke_line not in source_lines:
                    shown = ("delete" if op.f == "delete" else f"write {op.value!r}" if op.f == "write"
                             else f"cas {op.value[0]!r}->{op.value[1]!r}")
                    lost[(key, op.invoke_line)] = (
                        f"key {key!r}: {shown} by process {op.process} acknowledged (line {op.invoke_line}), "
                        f"but the final reads return {read.value!r}")
    return [lost[k] for k in sorted(lost, key=lambda item: item[1])], unexplained


def replica_problems(states: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(divergence, failures) from ``final_reads``' result."""
    divergence, failures = [], []
    for key, nodes in states.items():
        for node, entry in nodes.items():
            for which in ("strong_error", "committed_error"):
                if which in entry:
                    failures.append(f"{which.split('_')[0]} read of {key!r} at {node}: {entry[which]}")
        committed = {node: tuple(e["committed"]) if e.get("committed") else None
                     for node, e in nodes.items() if "committed_error" not in e}
        strong = {node: e["strong"] for node, e in nodes.items() if "strong_error" not in e}
        if len(set(committed.values())) > 1:
            divergence.append(f"newest committed [value, version] of {key!r}: {committed}")
        if len(set(strong.values())) > 1:
            divergence.append(f"linearizable reads of {key!r}: {strong}")
    return divergence, failures


def analyse(history: Path, states: dict[str, dict[str, Any]], shrink_budget: float = 10.0) -> Analysis:
    ops = load_history(history)
    result = check_history(ops, shrink_budget=shrink_budget)
    lost, unexplained = lost_writes(ops)
    divergence, failures = replica_problems(states)
    return Analysis(checker=result, operations=len(ops), lost_writes=lost, bad_final_values=unexplained,
                    divergence=divergence, final_failures=failures)
