"""Bounded-staleness reads driven through NodeCore directly: a dirty key is answered from the
node's own committed version while that version was the committed one within the limit, and
the tail is asked otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_nodecore import (A, B, C, cframe, join, only_reply, peer_requests, rec, replies, topo, wframe)
from zcraq import wire
from zcraq.messages import Malformed, Ok, Read, ReadMany
from zcraq.nodecore import NodeCore
from zcraq.store import MemoryStore

pytestmark = pytest.mark.timeout(60)


def middle(at: float) -> NodeCore:
    """node B between A and C: "k" committed at version 1, version 2 arrived dirty at ``at``."""
    node = join(B, topo(1, A, B, C))
    node.on_write_frame(wframe("a", 1, 0, rec("k", 1, b"old")), at - 1.0)
    node.on_ack_frame(cframe("c", 1, 0, ("k", 1)), at - 1.0)
    node.on_write_frame(wframe("a", 1, 1, rec("k", 2, b"new")), at)
    node.ready()
    return node


def bounded(node: NodeCore, key: str, now: float, limit_ms: int | None = None) -> list[Any]:
    request = Read(key, id="b", mode="bounded") if limit_ms is None else \
        Read(key, id="b", mode="bounded", max_staleness_ms=limit_ms)
    node.on_request("reader", request, now)
    return node.ready()


def test_a_dirty_key_is_answered_locally_within_the_limit_and_by_the_tail_beyond_it():
    node = middle(at=1.0)
    effects = bounded(node, "k", 1.0 + 0.999)  # default limit: 1 s
    assert peer_requests(effects) == []
    reply = only_reply(effects)
    assert reply.values == [b"old"] and reply.header["version"] == 1
    assert node.counters["bounded_local_reads"] == 1 and node.counters["dirty_reads"] == 0
    effects = bounded(node, "k", 1.3, limit_ms=200)  # 300 ms since version 2 arrived: too old
    assert replies(effects) == []
    [(endpoint, header)] = peer_requests(effects)
    assert endpoint == "c/service" and header["type"] == "version"
    node.on_peer_reply(Ok(header["id"], version=2), [], 1.31)
    assert only_reply(node.ready()).values == [b"new"]
    assert node.counters["dirty_reads"] == 1


def test_the_limit_runs_from_the_oldest_version_dirty_here_not_the_newest():
    node = middle(at=1.0)
    node.on_write_frame(wframe("a", 1, 2, rec("k", 3, b"newer")), 1.8)
    node.ready()
    # Version 3 arrived 0.2 s ago, but version 2 (dirty since 1.0) may have committed long since.
    assert peer_requests(bounded(node, "k", 2.0, limit_ms=500)) != []
    # Once version 2 commits here, version 2 was the committed one at least until version 3
    # arrived (1.8): fresh enough for 500 ms at 2.2, not at 2.4.
    node.on_ack_frame(cframe("c", 1, 1, ("k", 2)), 2.1)
    node.ready()
    effects = bounded(node, "k", 2.2, limit_ms=500)
    assert peer_requests(effects) == [] and only_reply(effects).values == [b"new"]
    assert peer_requests(bounded(node, "k", 2.4, limit_ms=500)) != []
    # Clean again: answered locally, whatever the limit, and nothing is left behind.
    node.on_ack_frame(cframe("c", 1, 2, ("k", 3)), 2.3)
    node.ready()
    effects = bounded(node, "k", 2.9, limit_ms=0)
    assert peer_requests(effects) == [] and only_reply(effects).values == [b"newer"]
    assert len(node.replication._arrivals) == 0  # noqa: SLF001 - what bounds its memory


def test_a_key_dirty_from_before_this_run_always_asks_the_tail():
    store = MemoryStore()
    store.put("k", 1, b"old", committed=True)
    store.put("k", 2, b"left over")  # dirty, arrival time unknown
    node = join(B, topo(1, A, B, C), store=store)
    assert peer_requests(bounded(node, "k", 0.1, limit_ms=3_600_000)) != []


def test_clean_keys_the_tail_and_other_modes_are_unchanged():
    node = middle(at=1.0)
    node.on_request("reader", Read("k", id="s"), 1.1)  # strong: the tail, however fresh
    assert peer_requests(node.ready()) != []
    node.on_request("reader", Read("k", id="e", mode="eventual"), 2.9)  # eventual: never the tail
    effects = node.ready()
    assert peer_requests(effects) == [] and only_reply(effects).values == [b"old"]
    tail = join(C, topo(1, A, B, C))
    tail.on_write_frame(wframe("b", 1, 0, rec("k", 1, b"v")), 0.1)
    tail.ready()
    effects = bounded(tail, "k", 2.9, limit_ms=0)
    assert peer_requests(effects) == [] and only_reply(effects).values == [b"v"]


def test_read_many_bounded_mixes_local_answers_and_tail_queries():
    node = middle(at=1.0)
    node.on_write_frame(wframe("a", 1, 2, rec("j", 1, b"j1")), 1.9)
    node.ready()
    node.on_request("reader", ReadMany(["k", "j"], id="m", mode="bounded", max_staleness_ms=500), 2.0)
    effects = node.ready()
    [(_, header)] = peer_requests(effects)
    assert header["key"] == "k"  # j went dirty 0.1 s ago: its committed state (none) is fresh
    node.on_peer_reply(Ok(header["id"], version=1), [], 2.01)
    reply = only_reply(node.ready())
    assert reply.header["results"] == [1, "not_found"]


@pytest.mark.parametrize("header, problem", [
    (b'{"type":"read","key":"k","mode":"bounded","max_staleness_ms":-1}', "max_staleness_ms must be from 0"),
    (b'{"type":"read","key":"k","mode":"bounded","max_staleness_ms":3600001}', "max_staleness_ms must be from 0"),
    (b'{"type":"read","key":"k","mode":"bounded","max_staleness_ms":1.5}', "wrong type"),
    (b'{"type":"read_many","keys":["k"],"mode":"bounded","max_staleness_ms":true}', "wrong type"),
    (b'{"type":"read","key":"k","mode":"stale"}', "mode must be one of strong, eventual, bounded"),
])
def test_a_bad_limit_or_mode_is_a_bad_request(header: bytes, problem: str):
    request = wire.read_node_request([header], wire.Limits())
    assert isinstance(request, Malformed) and request.code == "bad_request" and problem in request.message


def test_bounded_reads_travel_through_the_codec():
    for request in (Read("k", id=1, mode="bounded", max_staleness_ms=250), Read("k", id=2, mode="bounded"),
                    ReadMany(["a", "b"], id=3, mode="bounded", max_staleness_ms=0)):
        assert wire.read_node_request(wire.encode_request(request), wire.Limits()) == request
    assert wire.encode_request(Read("k", id=2, mode="bounded")) == [b'{"type":"read","key":"k","id":2,"mode":"bounded"}']
