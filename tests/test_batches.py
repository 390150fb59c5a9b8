"""Batched requests (read_many, write_many, delete_many; PROTOCOL.md §8.8) against real processes:
both clients, the wire format as PROTOCOL.md gives it, long batches split and spread, strong reads
of keys being written, per-key unknown outcomes, and the CLI commands."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import orjson
import pytest
import zmq

from commands import assert_exit, zcraq
from zcraq.async_client import AsyncZClient
from zcraq.clientbatches import chunks, settle
from zcraq.errors import BatchFailed, BadRequest, KeyNotFound, TooLarge, Unavailable, WriteOutcomeUnknown
from zcraq.messages import MAX_BATCH_KEYS, Ok

pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------------------------------------ without processes


def test_chunks_respect_every_limit():
    keys = [f"k{i}" for i in range(2500)]
    parts = list(chunks(keys, [0] * len(keys), 16 << 20))
    assert [len(p) for p in parts] == [MAX_BATCH_KEYS, MAX_BATCH_KEYS, 500]
    assert [i for p in parts for i in p] == list(range(2500))
    # Values: a part never holds more than the batch limit, but always at least one key.
    parts = list(chunks(["a", "b", "c", "d"], [6, 5, 12, 1], 10))
    assert [list(p) for p in parts] == [[0], [1], [2], [3]]
    # Keys: the header stays under 64 KiB.
    long_keys = ["x" * 1000] * 200
    parts = list(chunks(long_keys, [0] * 200, 16 << 20))
    assert len(parts) > 1 and all(len(orjson.dumps([long_keys[i] for i in p])) < 64 * 1024 for p in parts)
    assert list(chunks([], [], 10)) == []


def test_settle_reports_each_key():
    unknown = WriteOutcomeUnknown("x")
    assert [o.version for o in settle([Ok(version=3), Ok(version=1)], "write_many")] == [3, 1]
    with pytest.raises(BatchFailed) as failure:
        settle([Ok(version=3), WriteOutcomeUnknown("k2"), Unavailable("not sent")], "write_many")
    assert failure.value.code == "unknown_outcome"
    assert failure.value.results[0] == 3 and set(failure.value.failed) == {1, 2}
    with pytest.raises(BatchFailed) as failure:
        settle([Ok(version=2, existed=True), Unavailable("not sent")], "delete_many")
    assert failure.value.code == "unavailable" and failure.value.existed == [True, None]
    # One error for the whole batch is the error a single call raises.
    with pytest.raises(WriteOutcomeUnknown):
        settle([unknown, unknown], "write_many")


# ------------------------------------------------------------------------------ a real chain


def test_both_clients_write_read_and_delete_many(make_cluster):
    cluster = make_cluster(3).start_all()
    with cluster.client() as client:
        binary = bytes(range(256))
        assert client.write_many({"a": b"1", "b": "zwei", "empty": b"", "bin": binary}) == [1, 1, 1, 1]
        # The same key twice: two versions, in order; the second is the value.
        assert client.write_many([("dup", b"first"), ("dup", b"second")]) == [1, 2]
        for node in ("node1", "node2", "node3"):
            for mode in ("strong", "eventual"):
                assert client.read_many(["a", "b", "missing", "empty", "bin", "dup"], node, mode=mode) == \
                    [b"1", b"zwei", None, b"", binary, b"second"]
        assert client.read_many_versioned(["dup", "a"]) == [(b"second", 2), (b"1", 1)]
        assert client.delete_many(["a", "never"]) == [(2, True), (1, False)]
        assert client.read_many(["a", "never", "b"]) == [None, None, b"zwei"]
        with pytest.raises(KeyNotFound):
            client.read("a")  # the single call agrees
        assert client.read_many([]) == [] and client.write_many({}) == [] and client.delete_many([]) == []
        with pytest.raises(BadRequest):
            client.read_many(["ok", ""])
        with pytest.raises(TooLarge):
            client.write_many({"ok": b"v", "big": b"x" * ((1 << 20) + 1)})
        assert client.read_many(["ok", "big"]) == [None, None]  # refused before sending: nothing written

    async def with_async() -> None:
        async with AsyncZClient(cluster.coordinator_endpoint, config=cluster.layout.client) as aclient:
            assert await aclient.write_many([("x", b"1"), ("y", b"2")]) == [1, 1]
            results = await asyncio.gather(aclient.read_many(["x", "y", "z"]), aclient.read_many(["b", "x"]))
            assert results == [[b"1", b"2", None], [b"zwei", b"1"]]
            assert await aclient.read_many_versioned(["y"]) == [(b"2", 1)]
            assert await aclient.delete_many(["x"]) == [(2, True)]

    asyncio.run(with_async())


def test_a_long_batch_is_split_and_spread_over_the_chain(make_cluster):
    cluster = make_cluster(3).start_all()
    keys = [f"key-{i}" for i in range(2 * MAX_BATCH_KEYS + 500)]
    with cluster.client() as client:
        assert client.write_many({k: k.encode() for k in keys}) == [1] * len(keys)
        before = {n: cluster.node_status(n)["counters"]["reads"] for n in cluster.node_ids}
        assert client.read_many(keys) == [k.encode() for k in keys]
        read = {n: cluster.node_status(n)["counters"]["reads"] - before[n] for n in cluster.node_ids}
        assert sum(read.values()) == len(keys)
        assert sum(1 for count in read.values() if count) >= 2, read  # three requests, not all to one node
        assert client.delete_many(keys) == [(2, True)] * len(keys)


def test_a_read_many_is_asked_again_of_other_nodes_when_one_is_frozen(make_cluster):
    cluster = make_cluster(3).start_all()
    keys = [f"key-{i}" for i in range(3 * MAX_BATCH_KEYS)]  # three requests: one meets the frozen node
    with cluster.client(timeout=8) as client:
        client.write_many({k: k.encode() for k in keys})
        cluster.signal("node2", signal.SIGSTOP)
        try:
            started = time.monotonic()
            assert client.read_many(keys) == [k.encode() for k in keys]
            assert time.monotonic() - started < 8
        finally:
            cluster.signal("node2", signal.SIGCONT)


def test_the_wire_format_of_protocol_md(make_cluster):
    """A DEALER speaking PROTOCOL.md §8.8 directly: results per key, the values in one frame."""
    cluster = make_cluster(3).start_all()
    head, middle = cluster.service("node1"), cluster.service("node2")
    ctx = zmq.Context()
    try:
        def ask(endpoint: str, *body: bytes) -> tuple[dict, list[bytes]]:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, 10_000)
            sock.connect(endpoint)
            try:
                sock.send_multipart([b"", *body])
                frames = sock.recv_multipart()
            finally:
                sock.close()
            assert frames[0] == b""
            return orjson.loads(frames[1]), frames[2:]

        reply, values = ask(head, orjson.dumps({"type": "write_many", "id": "w", "keys": ["p", "q", "p"],
                                                "sizes": [3, 0, 2]}), b"onexy")
        assert reply == {"type": "ok", "id": "w", "results": [1, 1, 2]} and values == []
        reply, values = ask(middle, orjson.dumps({"type": "read_many", "id": 7, "keys": ["p", "nope", "q", "p"]}))
        assert reply == {"type": "ok", "id": 7, "results": [2, "not_found", 1, 2], "sizes": [2, 0, 0, 2]}
        assert values == [b"xyxy"]
        reply, values = ask(head, orjson.dumps({"type": "delete_many", "id": 8, "keys": ["q", "nope"]}))
        assert reply == {"type": "ok", "id": 8, "results": [2, 1], "existed": [True, False]} and values == []
        reply, _ = ask(middle, orjson.dumps({"type": "write_many", "id": 9, "keys": ["p"], "sizes": [1]}), b"v")
        assert reply["type"] == "error" and reply["code"] == "not_head" and reply["head"] == head
    finally:
        ctx.destroy(linger=0)


def test_strong_read_many_sees_every_acknowledged_write(make_cluster):
    """Keys written all the time, read in batches at the middle node (dirty keys there ask the tail):
    no read may return a version older than one acknowledged before the read began."""
    cluster = make_cluster(3).start_all()
    keys = [f"hot{i}" for i in range(16)]
    acknowledged = [0] * len(keys)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with cluster.client() as client:
                while not stop.is_set():
                    versions = client.write_many({k: str(time.monotonic()) for k in keys})
                    for i, version in enumerate(versions):
                        acknowledged[i] = max(acknowledged[i], version)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    try:
        with cluster.client() as client:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                floor = list(acknowledged)
                for i, result in enumerate(client.read_many_versioned(keys, "node2")):
                    version = result[1] if result else 0
                    assert version >= floor[i], (keys[i], version, floor[i])
                reads += 1
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert reads > 10 and min(acknowledged) > 10


def test_a_write_many_that_cannot_commit_is_unknown_per_key(make_cluster):
    """The tail and the coordinator stop: the head keeps each key's write pending until its write
    time-out (10 s) and then answers unknown_outcome for each key."""
    cluster = make_cluster(2, lease_ms=5000).start_all()
    with cluster.client(timeout=20) as client:
        client.write("warm", b"up")  # connections up, topology known
        cluster.signal("node2", signal.SIGSTOP)
        cluster.signal("coordinator", signal.SIGSTOP)
        try:
            with pytest.raises(BatchFailed) as failure:
                client.write_many({"u1": b"1", "u2": b"2"})
            assert failure.value.code == "unknown_outcome"
            assert all(isinstance(r, WriteOutcomeUnknown) for r in failure.value.results)
        finally:
            cluster.signal("node2", signal.SIGCONT)
            cluster.signal("coordinator", signal.SIGCONT)


# ------------------------------------------------------------------------------ the command line


def test_cli_batch_commands(make_cluster):
    cluster = make_cluster(3).start_all()
    c = ("client", "-c", cluster.coordinator_endpoint)

    result = zcraq(*c, "write-many", "a", "1", "b", "two", "c", "")
    assert_exit(result, 0)
    assert result.stdout == "a ok version 1\nb ok version 1\nc ok version 1\n"

    result = zcraq(*c, "read-many", "a", "b", "c")
    assert_exit(result, 0)
    assert result.stdout == "a: 1\nb: two\nc: \n"

    result = zcraq(*c, "read-many", "a", "nope", "--json")
    assert_exit(result, 1)  # some key does not exist
    assert json.loads(result.stdout) == {"keys": [
        {"key": "a", "version": 1, "value": "1", "value_base64": "MQ=="}, {"key": "nope", "error": "not_found"}]}

    result = zcraq(*c, "delete-many", "a", "nope")
    assert_exit(result, 0)
    assert result.stdout == "a ok version 2 (deleted)\nnope ok version 1 (did not exist)\n"

    result = zcraq(*c, "--json", "write-many", "k", "v")
    assert_exit(result, 0)
    assert json.loads(result.stdout) == {"keys": [{"key": "k", "version": 1}]}

    result = zcraq(*c, "write-many", "k", "v", "lonely")
    assert_exit(result, 2)
    result = zcraq(*c, "write-many", "k", "-", "j", "-")
    assert_exit(result, 2)
    result = zcraq(*c, "read-many")
    assert_exit(result, 2)
