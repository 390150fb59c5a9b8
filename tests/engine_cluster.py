"""Helpers of the tests of coordinators on an engine: which coordinator leads, as its peers say,
and a workload's history checked against every serving member's final reads."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import orjson
import zmq

from cluster import wait_for
from zcraq.chaos.analysis import analyse
from zcraq.chaos.history import HistoryWriter
from zcraq.chaos.workload import final_reads
from zcraq.cluster import Cluster

KEYS = ["k0", "k1", "k2", "k3"]
_ids = itertools.count(1)


def ask(cluster: Cluster, name: str, header: dict[str, Any]) -> dict[str, Any] | None:
    """One request to coordinator ``name``; its reply, or None without one within a second."""
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(cluster.coordinator_configs[name].endpoint)
        request_id = next(_ids)
        sock.send_multipart([b"", orjson.dumps({**header, "id": request_id})])
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(int(left * 1000) + 1):
                return None
            reply = orjson.loads(sock.recv_multipart()[1])
            if reply.get("id") == request_id:
                return reply
    return None


def leader(cluster: Cluster, among: list[str] | None = None) -> str | None:
    """The one coordinator (of ``among``) that answers a topology request, if exactly one does and
    every other says ``not_leader`` naming it."""
    names = among or [n for n in cluster.coordinator_names if cluster.alive(n)]
    replies = {name: ask(cluster, name, {"type": "topology"}) for name in names}
    leading = [name for name, reply in replies.items() if reply is not None and reply["type"] == "ok"]
    if len(leading) != 1:
        return None
    endpoint = cluster.coordinator_configs[leading[0]].endpoint
    for name, reply in replies.items():
        if name == leading[0]:
            continue
        if reply is None or reply.get("code") != "not_leader" or reply.get("leader") != endpoint:
            return None
    return leading[0]


def completed(history: HistoryWriter) -> int:
    return history.counts["ok"]


def checked(cluster: Cluster, history: HistoryWriter, path: Path, members: int) -> None:
    """The workload's history, with every serving member's final reads, passes the analysis."""
    config = cluster.client_config

    def serving() -> list[str] | None:
        names = [m for m in cluster.members() if cluster.node_status(m)["serving"]]
        return names if len(names) == members else None

    names = wait_for(serving, 60, f"{members} serving members")
    states = final_reads(None, history, KEYS, {m: cluster.service(m) for m in names}, config=config)
    history.close()
    analysis = analyse(path, states)
    assert analysis.ok, "\n".join(analysis.problems())
    assert history.counts["write ok"] > 50 and history.counts["read ok"] > 50
