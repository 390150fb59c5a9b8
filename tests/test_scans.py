"""Range and prefix scans: NodeCore answering scan requests (pages, cursors, dirty keys resolved
with the tail, keys without a value left out), the codec, and ZClient, AsyncZClient and
``zcraq client scan`` against a real chain, also while writes go on."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from commands import assert_exit
from commands import zcraq_binary as zcraq
from test_cli_client import json_out
from tests.test_nodecore import A, B, C, cframe, join, only_reply, peer_requests, rec, topo, wframe
from zcraq import wire
from zcraq.async_client import AsyncZClient
from zcraq.clientscan import Paging
from zcraq.messages import Delete, Malformed, Ok, Scan, Write
from zcraq.nodecore import NodeCore

pytestmark = pytest.mark.timeout(180)


def scan(node: NodeCore, now: float = 0.2, **fields: Any) -> list[Any]:
    node.on_request("cl", Scan(id="s", **fields), now)
    return node.ready()


def page(effects: list[Any]) -> tuple[list[tuple[str, int | str, bytes]], str | None]:
    reply = only_reply(effects)
    assert reply.ok, reply.header
    values = wire.split_values(reply.values[0], reply.header["sizes"])
    return list(zip(reply.header["keys"], reply.header["results"], values)), reply.header["cursor"]


def sole(*items: tuple[str, bytes | None]) -> NodeCore:
    """A one-member chain holding each (key, value) committed; None: a deletion."""
    node = join(A, topo(1, A))
    for key, value in items:
        node.on_request("cl", Write(key, value, id=key) if value is not None else Delete(key, id=key), 0.1)
    node.ready()
    return node


def test_a_prefix_a_range_and_pages_with_a_cursor():
    node = sole(("b", b"2"), ("a", b"1"), ("ab", b"3"), ("ac", None), ("ad", b"4"), ("c", b"5"))
    assert page(scan(node, prefix="a")) == ([("a", 1, b"1"), ("ab", 1, b"3"), ("ad", 1, b"4")], None)
    assert page(scan(node, start="ab", end="c")) == ([("ab", 1, b"3"), ("ad", 1, b"4"), ("b", 1, b"2")], None)
    # Pages of 2 keys examined: the deleted "ac" counts toward the page but is not in the reply.
    first = page(scan(node, prefix="a", limit=2))
    assert first == ([("a", 1, b"1"), ("ab", 1, b"3")], "ab")
    second = page(scan(node, prefix="a", limit=2, after="ab"))
    assert second == ([("ad", 1, b"4")], "ad")
    assert page(scan(node, prefix="a", limit=2, after="ad")) == ([], None)
    assert page(scan(node, prefix="x")) == ([], None)


def test_a_dirty_key_is_resolved_with_the_tail():
    node = join(B, topo(1, A, B, C))
    node.on_write_frame(wframe("a", 1, 0, rec("k1", 1, b"old"), rec("k2", 1, b"only")), 0.1)
    node.on_ack_frame(cframe("c", 1, 0, ("k1", 1)), 0.1)
    node.on_write_frame(wframe("a", 1, 1, rec("k1", 2, b"new")), 0.1)
    node.ready()
    effects = scan(node)
    asked = {header["key"]: header["id"] for _, header in peer_requests(effects)}
    assert set(asked) == {"k1", "k2"}  # both dirty here
    node.on_peer_reply(Ok(asked["k1"], version=2), [], 0.3)
    node.on_peer_reply(Ok(asked["k2"], version=0), [], 0.3)  # k2 committed nowhere yet: no value
    assert page(node.ready()) == ([("k1", 2, b"new")], None)


def test_a_key_the_tail_did_not_confirm_is_an_error_in_the_page():
    node = join(B, topo(1, A, B, C))
    node.on_write_frame(wframe("a", 1, 0, rec("a", 1, b"x"), rec("b", 1, b"y")), 0.1)
    node.on_ack_frame(cframe("c", 1, 0, ("a", 1)), 0.1)
    node.ready()
    effects = scan(node)
    assert [header["key"] for _, header in peer_requests(effects)] == ["b"]
    node.tick(0.2 + 2.5)  # the tail never answers (request_timeout 2 s)
    items, cursor = page(node.ready())
    assert items == [("a", 1, b"x"), ("b", "unavailable", b"")] and cursor is None


@pytest.mark.parametrize("header, code, problem", [
    (b'{"type":"scan","limit":0}', "bad_request", "limit must be from 1 to 1000"),
    (b'{"type":"scan","limit":1001}', "bad_request", "limit must be from 1 to 1000"),
    (b'{"type":"scan","prefix":5}', "bad_request", "wrong type"),
    (b'{"type":"scan","end":false}', "bad_request", "wrong type"),
    (b'{"type":"scan","mode":"any"}', "bad_request", "mode must be one of"),
    (b'{"type":"scan","start":"' + b"k" * 1025 + b'"}', "too_large", "longer than 1024 bytes"),
])
def test_a_bad_scan_is_refused(header: bytes, code: str, problem: str):
    request = wire.read_node_request([header], wire.Limits())
    assert isinstance(request, Malformed) and request.code == code and problem in request.message


def test_scan_travels_through_the_codec_and_the_coordinator_refuses_it():
    request = Scan(start="a", end="b", prefix="a", after="a1", limit=7, id=1, mode="bounded", max_staleness_ms=5)
    assert wire.read_node_request(wire.encode_request(request), wire.Limits()) == request
    assert wire.read_node_request([b'{"type":"scan"}'], wire.Limits()) == Scan()
    refused = wire.read_coordinator_request(wire.encode_request(request), wire.Limits())
    assert isinstance(refused, Malformed) and refused.code == "bad_request"


def test_paging_asks_no_more_than_the_limit_and_stops_at_the_end():
    paging = Paging(3, limit=5)
    assert paging.next_size() == 3
    paging.advance([("a", b"", 1), ("b", b"", 1)], "c")  # one key of the page had no value
    assert (paging.after, paging.next_size()) == ("c", 3)
    paging.advance([("d", b"", 1), ("e", b"", 1), ("f", b"", 1)], "f")
    assert paging.next_size() is None  # 5 yielded
    unlimited = Paging(2, limit=None)
    unlimited.advance([("a", b"", 1)], None)
    assert unlimited.next_size() is None  # the range ended
    for bad in ((0, None), (1001, None), (5, -1)):
        with pytest.raises(ValueError):
            Paging(*bad)


# ---------------------------------------------------------------------------------- real processes


def test_clients_and_the_cli_page_through_a_range(make_cluster):
    cluster = make_cluster(3).start_all()
    client = cluster.client()
    users = {f"user:{i:03d}": f"u{i}".encode() for i in range(250)}
    client.write_many(users)
    client.write_many({"other:1": b"o", "userx": b"x"})
    client.delete("user:007")
    expected = [(k, v, 1) for k, v in sorted(users.items()) if k != "user:007"]
    assert list(client.scan("user:", page_keys=64)) == expected
    assert list(client.scan("user:", limit=10)) == expected[:10]
    assert [k for k, _, _ in client.scan(start="user:100", end="user:103")] == ["user:100", "user:101", "user:102"]
    assert [k for k, _, _ in client.scan("user:", node="node3", mode="eventual", page_keys=1000)] == \
        [k for k, _, _ in expected]

    async def scan_async() -> list[tuple[str, bytes, int]]:
        async with AsyncZClient(cluster.coordinator_endpoint, config=cluster.layout.client) as aclient:
            return [item async for item in aclient.scan("user:", page_keys=100, limit=120)]

    assert asyncio.run(scan_async()) == expected[:120]
    c = ("client", "-c", cluster.coordinator_endpoint, "-t", "10")
    result = zcraq(*c, "scan", "--prefix", "user:00", "--page-keys", "3")
    assert_exit(result, 0)
    assert result.stdout == b"".join(f"user:00{i}: u{i}\n".encode() for i in range(10) if i != 7)
    assert json_out(zcraq(*c, "scan", "--start", "other", "--end", "user", "--json"), 0) == {
        "keys": [{"key": "other:1", "version": 1, "value": "o", "value_base64": "bw=="}]}
    assert zcraq(*c, "scan", "--prefix", "nothing").stdout == b""
    assert zcraq(*c, "scan", "--prefix", "user:", "--limit", "2", "--keys-only").stdout == b"user:000\nuser:001\n"


def test_a_scan_while_writes_go_on_reads_each_key_no_older_than_before_it(make_cluster):
    """Each key's value in a scan is what a strong read returned during the scan: never older than
    the version committed before the scan began, never newer than the last one written."""
    cluster = make_cluster(3).start_all()
    client = cluster.client()
    keys = [f"k{i:03d}" for i in range(60)]
    client.write_many({k: b"0" for k in keys})
    stop = threading.Event()
    written: dict[str, int] = {}
    errors: list[BaseException] = []

    def writer() -> None:
        zclient = cluster.client()
        try:
            n = 0
            while not stop.is_set():
                n += 1
                key = keys[n % len(keys)]
                written[key] = zclient.write(key, str(n))
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            errors.append(error)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(5):
            before = {k: client.read_versioned(k)[1] for k in keys}
            scanned = list(client.scan("k", page_keys=16))
            after = dict(written)
            assert [k for k, _, _ in scanned] == keys
            for key, _value, version in scanned:
                assert before[key] <= version <= max(after.get(key, 1), before[key]) + 1, key
    finally:
        stop.set()
        thread.join(30)
    assert errors == []
