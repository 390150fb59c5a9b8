"""The chain as each of its nodes reports itself: what ``zcraq client status`` shows and what
``zcraq client health`` judges.

The coordinator names the nodes (its topology); then every node is asked for its own status at
once (``ZClient.statuses``), so a node that does not answer costs one timeout, not one each. A
node that does not answer is part of the report (unreachable), not a failure of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zcraq.client import ZClient
from zcraq.errors import Unavailable, ZcraqError
from zcraq.exit_codes import error_code_for
from zcraq.topology import Member, Topology

TABLE_COUNTERS = ("reads", "writes", "commits")  # the counters with a column; the rest in notes


@dataclass(frozen=True, slots=True)
class NodeReport:
    member: Member
    position: int | None  # in the chain; None for the learner
    status: dict[str, Any] | None  # the node's status reply (PROTOCOL.md §8.6); None: no answer
    error: ZcraqError | None  # why there is no status

    @property
    def listed_as(self) -> str:
        return "learner" if self.position is None else "member"

    def problem(self) -> str | None:
        """Why this node does not serve, or None when it does."""
        if self.status is None:
            return f"unreachable: {self.error}"
        if self.status.get("serving"):
            return None
        role = self.status.get("role", "?")
        if role == "learner":
            return "not serving: the learner is still catching up"
        return f"not serving (role {role}, epoch {self.status.get('epoch', '?')}, " \
               f"lease left {lease_text(self.status.get('lease_left_ms'))})"

    def to_json(self) -> dict[str, Any]:
        status = self.status or {}
        return {
            "position": self.position, "id": self.member.id, "service": self.member.service,
            "listed_as": self.listed_as, "reachable": self.status is not None,
            "role": status.get("role"), "serving": status.get("serving"), "caught_up": status.get("caught_up"),
            "epoch": status.get("epoch"), "lease_left_ms": status.get("lease_left_ms"), "sent": status.get("sent"),
            "counters": status.get("counters"),
            "error": None if self.error is None else {"error": error_code_for(self.error), "message": str(self.error)},
        }


@dataclass(frozen=True, slots=True)
class ChainReport:
    coordinator: str
    topology: Topology
    nodes: tuple[NodeReport, ...]
    coordinator_status: dict[str, Any] | None  # the coordinator's own status reply, when asked

    def judged(self) -> tuple[NodeReport, ...]:
        """The nodes health judges: the members (all of them, or the one named), not a learner
        that was not named: a learner never serves, and the chain serves without it."""
        named_learner = len(self.nodes) == 1 and self.nodes[0].position is None
        return self.nodes if named_learner else tuple(n for n in self.nodes if n.position is not None)

    def problems(self) -> list[str]:
        """What keeps the chain from being healthy, one line per node; empty when it is."""
        judged = self.judged()
        if not judged:
            return [f"the chain has no members at epoch {self.topology.epoch}"]
        return [f"{n.member.id} ({n.member.service}): {problem}" for n in judged if (problem := n.problem())]

    # ------------------------------------------------------------------ status

    def status_json(self) -> dict[str, Any]:
        coordinator: dict[str, Any] = {"endpoint": self.coordinator}
        if self.coordinator_status is not None:
            coordinator["lease_ms"] = self.coordinator_status.get("lease_ms")
            coordinator["counters"] = self.coordinator_status.get("counters")
        return {"coordinator": coordinator, "epoch": self.topology.epoch,
                "nodes": [node.to_json() for node in self.nodes]}

    def status_lines(self) -> list[str]:
        rows = [("POS", "NODE", "ROLE", "SERVING", "LEASE", "CAUGHT-UP", "EPOCH", "SENT",
                 *(name.upper() for name in TABLE_COUNTERS), "SERVICE")]
        notes: list[str] = []
        for node in self.nodes:
            position = "-" if node.position is None else str(node.position)
            status = node.status
            if status is None:
                rows.append((position, node.member.id, "-", "unreachable", "-", "-", "-", "-",
                             *("-" for _ in TABLE_COUNTERS), node.member.service))
                notes.append(f"{node.member.id}: {node.error}")
                continue
            counters: dict[str, int] = status.get("counters") or {}
            rows.append((position, node.member.id, str(status.get("role")), _yes_no(status.get("serving")),
                         lease_text(status.get("lease_left_ms")), _yes_no(status.get("caught_up")),
                         str(status.get("epoch")), str(status.get("sent")),
                         *(str(counters.get(name, 0)) for name in TABLE_COUNTERS), node.member.service))
            others = [f"{name}={value}" for name, value in counters.items() if value and name not in TABLE_COUNTERS]
            if others:
                notes.append(f"{node.member.id} counters: {' '.join(others)}")
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        if not self.topology.members:
            lines.append(f"(the chain is empty at epoch {self.topology.epoch})")
        lines.extend(notes)
        lease = f", lease {self.coordinator_status.get('lease_ms')}ms" if self.coordinator_status else ""
        lines.append(f"coordinator {self.coordinator}: epoch {self.topology.epoch}{lease}")
        return lines

    # ------------------------------------------------------------------ health

    def health_json(self) -> dict[str, Any]:
        problems = self.problems()
        return {"healthy": not problems, "epoch": self.topology.epoch, "problems": problems,
                "nodes": [{"position": n.position, "id": n.member.id, "service": n.member.service,
                           "serving": bool(n.status and n.status.get("serving")), "problem": n.problem()}
                          for n in self.judged()]}

    def health_lines(self) -> list[str]:
        problems = self.problems()
        if problems:
            return problems
        names = ", ".join(n.member.id for n in self.judged())
        return [f"healthy: {names} serving at epoch {self.topology.epoch}"]


def gather(client: ZClient, node: str | None = None, *, with_coordinator: bool = True) -> ChainReport:
    """Ask the coordinator for the chain (and, ``with_coordinator``, for its own status), then
    every node listed, or only ``node`` (an id or service endpoint), for theirs."""
    topology = client.topology()
    coordinator_status = client.status() if with_coordinator else None
    listed: list[tuple[int | None, Member]] = list(enumerate(topology.members))
    if topology.learner is not None:
        listed.append((None, topology.learner))
    if node is not None:
        listed = [(position, member) for position, member in listed if node in (member.id, member.service)]
        if not listed:
            raise Unavailable(f"no node {node!r} in the chain at epoch {topology.epoch}")
    answers = client.statuses([member.service for _position, member in listed])
    nodes = []
    for position, member in listed:
        answer = answers[member.service]
        if isinstance(answer, ZcraqError):
            nodes.append(NodeReport(member, position, None, answer))
        else:
            nodes.append(NodeReport(member, position, answer, None))
    return ChainReport(client.coordinator, topology, tuple(nodes), coordinator_status)


def lease_text(milliseconds: object) -> str:
    if not isinstance(milliseconds, int):
        return "-"
    return f"{milliseconds}ms" if milliseconds < 1000 else f"{milliseconds / 1000:.1f}s"


def _yes_no(flag: object) -> str:
    return "yes" if flag else "no"


__all__ = ["ChainReport", "NodeReport", "gather", "lease_text", "TABLE_COUNTERS"]
