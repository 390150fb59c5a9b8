"""AsyncZClient against real processes: every method, many tasks over one client, the same
exceptions as ZClient in the same cases, failover, CURVE keys, closing with calls in flight, and a
concurrent history that the linearizability checker accepts."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from zcraq.async_client import AsyncZClient
from zcraq.chaos.history import HistoryWriter
from zcraq.chaos.workload import outcome_of
from zcraq.checker import check_history, load_history
from zcraq.cluster import Cluster
from zcraq.errors import (AuthenticationError, ClientClosed, ConditionFailed, KeyNotFound, Timeout, TooLarge, Unavailable,
                          WriteOutcomeUnknown, ZcraqError)
from zcraq.layout import free_ports

pytestmark = pytest.mark.timeout(120)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """asyncio.run(main()), failing if the event loop reported an error while it ran (such as an
    exception no one retrieved)."""
    reported: list[dict[str, Any]] = []

    async def watched() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: reported.append(context))
        await main()

    asyncio.run(watched())
    assert not reported, reported


def client_of(cluster: Cluster, **options: Any) -> AsyncZClient:
    return AsyncZClient(cluster.coordinator_endpoint, config=cluster.layout.client, **options)


def in_flight(client: AsyncZClient) -> int:
    """Requests sent and not yet answered, over every connection of ``client``."""
    connections = [*client._connections.values(), *client._retired]  # noqa: SLF001 - what the cap bounds
    return sum(len(c.pending) for c in connections)


async def eventually(attempt: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Await ``attempt()`` until it succeeds (a ZcraqError is "not yet"); fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except ZcraqError as error:
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}: {error!r}") from None
        await asyncio.sleep(0.1)


def test_every_method(make_cluster):
    cluster = make_cluster(3).start_all()

    async def scenario() -> None:
        async with client_of(cluster) as client:
            assert client.limits is None
            topology = await client.topology()
            assert [m.id for m in topology.members] == ["node1", "node2", "node3"]
            assert client.limits is not None and client.limits.max_value_bytes == 1 << 20
            assert await client.write("k", "v1") == 1
            assert await client.write("k", b"v2") == 2
            assert await client.read("k") == b"v2"
            assert await client.read_versioned("k") == (b"v2", 2)
            for node in cluster.node_ids:
                assert await client.read("k", node) == b"v2"
                assert await client.read_versioned("k", cluster.service(node), mode="eventual") == (b"v2", 2)
            assert await client.delete_and_report("k") == (3, True)
            assert await client.delete_and_report("k") == (4, False)
            assert await client.delete("never-written") == 1
            with pytest.raises(KeyNotFound):
                await client.read("k")
            with pytest.raises(KeyNotFound):
                await client.read("never-written", "node2", mode="eventual")
            assert await client.write("c", "first", if_version=0) == 1
            with pytest.raises(ConditionFailed) as failed:
                await client.write("c", "second", if_version=0)
            assert failed.value.version == 1
            with pytest.raises(ConditionFailed):
                await client.delete("c", if_version=2)
            assert await client.delete_and_report("c", if_version=1) == (2, True)
            with pytest.raises(ValueError, match="if_version"):
                await client.write("c", "x", if_version=-1)
            coordinator = await client.status()
            assert [m["id"] for m in coordinator["topology"]["members"]] == cluster.node_ids
            node = await client.status("node2")
            assert node["node"] == "node2" and node["serving"] is True
            reports = await client.statuses(["node1", cluster.service("node3"), "nosuch"])
            assert list(reports) == ["node1", cluster.service("node3"), "nosuch"]
            assert reports["node1"]["role"] == "head"  # type: ignore[index]
            assert reports[cluster.service("node3")]["role"] == "tail"  # type: ignore[index]
            assert isinstance(reports["nosuch"], Unavailable)
            with pytest.raises(Unavailable, match="no node 'nosuch'"):
                await client.read("k", "nosuch")

    run(scenario)


def test_two_hundred_tasks_share_one_client(make_cluster):
    cluster = make_cluster(3).start_all()

    async def scenario() -> None:
        async with client_of(cluster) as client:
            most = 0

            async def watch() -> None:
                nonlocal most
                while True:
                    most = max(most, in_flight(client))
                    await asyncio.sleep(0)

            async def task(n: int) -> tuple[int, bytes, bytes, bytes]:
                key = f"key{n % 50}"
                version = await client.write(key, f"value{n}")
                return (version, await client.read(f"own{n}", cluster.node_ids[(n + 1) % 3]),
                        await client.read(key, mode="eventual"), await client.read("shared"))

            await client.write("shared", "s")
            watcher = asyncio.create_task(watch())
            writes = await asyncio.gather(*(client.write(f"own{n}", f"mine{n}") for n in range(200)))
            reads = await asyncio.gather(*(client.read(f"own{n}", cluster.node_ids[n % 3]) for n in range(200)))
            mixed = await asyncio.gather(*(task(n) for n in range(200)))
            watcher.cancel()
            assert writes == [1] * 200
            assert reads == [f"mine{n}".encode() for n in range(200)]
            for n, (_version, own, value, shared) in enumerate(mixed):
                assert own == f"mine{n}".encode() and shared == b"s"
                # Read after this task's write was acknowledged: that write or a later one of the key.
                assert value in {f"value{m}".encode() for m in range(n % 50, 200, 50)}
            # Four writes to each of key0..key49: each got a version of its own, 1 to 4.
            for k in range(50):
                assert sorted(mixed[n][0] for n in range(k, 200, 50)) == [1, 2, 3, 4]
            assert [v for _value, v in await asyncio.gather(*(client.read_versioned(f"key{k}")
                                                                for k in range(50)))] == [4] * 50
            # One connection per process, many requests on each at once.
            assert len(client._connections) == 4  # noqa: SLF001 - the coordinator and three nodes
            assert most > 1

    run(scenario)


def test_callers_beyond_the_cap_wait_their_turn(make_cluster):
    cluster = make_cluster(3).start_all()
    cap = 8

    async def scenario() -> None:
        async with client_of(cluster, max_in_flight=cap) as client:
            most = 0

            async def watch() -> None:
                nonlocal most
                while True:
                    most = max(most, in_flight(client))
                    await asyncio.sleep(0)

            watcher = asyncio.create_task(watch())
            versions = await asyncio.gather(*(client.write(f"k{n}", f"v{n}") for n in range(100)))
            values = await asyncio.gather(*(client.read(f"k{n}") for n in range(100)))
            watcher.cancel()
            assert versions == [1] * 100
            assert values == [f"v{n}".encode() for n in range(100)]
            assert 1 < most <= cap
        with pytest.raises(ValueError, match="max_in_flight"):
            AsyncZClient(cluster.coordinator_endpoint, max_in_flight=0)

    run(scenario)


def test_not_found_and_too_large_before_sending(make_cluster):
    cluster = make_cluster(1).start_all()

    async def scenario() -> None:
        async with client_of(cluster, timeout=5) as client:
            with pytest.raises(KeyNotFound):
                await client.read("missing")
            await client.topology()
            limits = client.limits
            assert limits is not None
            # With the node frozen, anything sent would wait for the whole timeout.
            cluster.pause("node1")
            try:
                started = time.monotonic()
                with pytest.raises(TooLarge, match="value is larger than 1048576 bytes"):
                    await client.write("k", bytes(limits.max_value_bytes + 1))
                with pytest.raises(TooLarge, match="key is longer than 1024 bytes"):
                    await client.read("k" * 1025)
                with pytest.raises(TooLarge):
                    await client.delete("k" * 1025)
                assert time.monotonic() - started < 4, "refused before sending, not after a timeout"
            finally:
                cluster.resume("node1")
            assert await client.write("k" * 1024, bytes(limits.max_value_bytes)) == 1

    run(scenario)


def test_a_write_to_a_dead_coordinator_is_unavailable_not_unknown():
    (port,) = free_ports(1)

    async def scenario() -> None:
        async with AsyncZClient(f"tcp://127.0.0.1:{port}", timeout=1.5) as client:
            results = await asyncio.gather(client.write("k", "v"), client.delete("k"), client.read("k"),
                                           return_exceptions=True)
        for result in results:
            assert isinstance(result, Unavailable) and not isinstance(result, WriteOutcomeUnknown), result

    started = time.monotonic()
    run(scenario)
    assert time.monotonic() - started < 10


def test_a_write_to_a_frozen_head_is_unknown_only_once_it_was_delivered(make_cluster):
    cluster = make_cluster(3, lease_ms=60_000).start_all()

    async def scenario() -> None:
        async with client_of(cluster, timeout=1.5) as client:
            assert await client.write("k", "v1") == 1  # the connection to the head is up
            cluster.pause("node1")
            try:
                # Sent over a live connection to a head that stopped answering: each may have
                # been applied. Reads meanwhile are answered by the other nodes.
                outcomes = await asyncio.gather(*(client.write("k", f"v{n}") for n in range(2, 7)),
                                                return_exceptions=True)
                assert all(isinstance(o, WriteOutcomeUnknown) for o in outcomes), outcomes
                assert await client.read("k", "node3") == b"v1"
                # A fresh connection to the frozen head never gets through its handshake, so nothing
                # was delivered (the kernel accepts the TCP connection, the process never answers).
                with pytest.raises(Unavailable) as raised:
                    await client.write("k", "v7")
                assert not isinstance(raised.value, WriteOutcomeUnknown)
            finally:
                cluster.resume("node1")
            # The head, thawed, applies what it had received: some of v2..v6, never v7.
            assert (await eventually(lambda: client.write("k", "v8"), 20, "a write after the thaw")) >= 2
            assert await client.read("k") == b"v8"

    run(scenario)


def test_a_call_that_times_out_leaves_the_others_on_its_connection_alone(make_cluster):
    cluster = make_cluster(3, lease_ms=60_000).start_all()

    async def scenario() -> None:
        # A read attempt may take a third of the timeout (2 s), a write all of it (6 s).
        async with client_of(cluster, timeout=6) as client:
            assert await client.write("k", "v1") == 1
            assert await client.read("k", "node1") == b"v1"
            cluster.pause("node1")
            try:
                write = asyncio.create_task(client.write("k", "v2"))
                read = asyncio.create_task(client.read("k", "node1"))
                with pytest.raises(Timeout) as raised:
                    await read
                assert not write.done()
            finally:
                cluster.resume("node1")
            # The head answers both: the read's late reply is dropped, the write's is taken.
            assert await write == 2
            assert type(raised.value) is Timeout
            assert await client.read("k", "node1") == b"v2"
            retired = client._retired  # noqa: SLF001 - the replaced connection
            assert all(c.closed for c in retired), "the old connection closes once its last call is done"

    run(scenario)


def test_writes_follow_the_chain_after_the_head_is_killed(make_cluster):
    cluster = make_cluster(3).start_all()

    async def scenario() -> None:
        async with client_of(cluster, timeout=2) as client:
            assert await client.write("k", "before") == 1
            cluster.kill("node1")
            # Whatever the calls in flight meet (unknown, unavailable), writes resume at the new head.
            version = await eventually(lambda: client.write("k", "after"), 30, "a write after the failover")
            assert version >= 2
            topology = await client.topology()
            assert [m.id for m in topology.members] == ["node2", "node3"]
            for node in ("node2", "node3"):
                assert await client.read("k", node) == b"after"
            assert await client.delete("k") == version + 1

    run(scenario)


def test_a_secured_cluster_with_the_client_config_keys(make_cluster):
    cluster = make_cluster(3, secure=True).start_all()
    assert cluster.layout.client is not None

    async def scenario() -> None:
        async with client_of(cluster) as client:
            topology = await client.topology()
            assert all(m.key for m in topology.members)
            versions = await asyncio.gather(*(client.write(f"k{n}", f"v{n}") for n in range(50)))
            assert versions == [1] * 50
            assert await asyncio.gather(*(client.read(f"k{n}") for n in range(50))) == [
                f"v{n}".encode() for n in range(50)]
            assert (await client.status("node3"))["role"] == "tail"
        started = time.monotonic()
        async with AsyncZClient(cluster.coordinator_endpoint, timeout=10) as plain:
            with pytest.raises(AuthenticationError):
                await plain.write("k", "v")
        assert time.monotonic() - started < 5, "a refused handshake must not look like a timeout"

    run(scenario)


def test_closing_ends_the_calls_in_flight(make_cluster):
    cluster = make_cluster(3, lease_ms=60_000).start_all()

    async def scenario() -> None:
        client = client_of(cluster, timeout=30)
        assert await client.write("k", "v1") == 1
        assert await client.read("k", "node2") == b"v1"
        cluster.pause("node1")
        cluster.pause("node2")
        try:
            writes = [asyncio.create_task(client.write("k", f"v{n}")) for n in range(5)]
            reads = [asyncio.create_task(client.read("k", "node2")) for _ in range(5)]
            wait_until_sent = time.monotonic() + 10
            while in_flight(client) < 10 and time.monotonic() < wait_until_sent:
                await asyncio.sleep(0.01)
            assert in_flight(client) == 10
            started = time.monotonic()
            await client.close()
            write_outcomes = await asyncio.gather(*writes, return_exceptions=True)
            read_outcomes = await asyncio.gather(*reads, return_exceptions=True)
            assert time.monotonic() - started < 5
        finally:
            cluster.resume("node1")
            cluster.resume("node2")
        # A write handed to the head may have been applied; a read was just abandoned.
        assert all(isinstance(o, WriteOutcomeUnknown) for o in write_outcomes), write_outcomes
        assert all(type(o) is ClientClosed for o in read_outcomes), read_outcomes
        with pytest.raises(ClientClosed):
            await client.read("k")
        await client.close()  # twice is fine

    run(scenario)


def test_concurrent_history_is_linearizable(make_cluster, tmp_path: Path):
    """Tasks write unique values, delete and read a few hot keys over one client while the middle
    node is frozen for a while (writes stay dirty at the head, reads there ask the tail); the
    checker judges. Half the tasks only read, so that many reads meet a dirty version: a head that
    answered them from its own dirty version (ZCRAQ_UNSAFE_TEST_FAULTS=dirty_read_local) fails."""
    cluster = make_cluster(3, lease_ms=10_000).start_all()
    keys = ["k0", "k1", "k2"]
    history = HistoryWriter(tmp_path / "history.jsonl")
    stop = asyncio.Event()

    async def process(client: AsyncZClient, number: int) -> None:
        operations = 0
        while not stop.is_set():
            operations += 1
            key = keys[(number + operations) % len(keys)]
            f = "read" if number < 6 else ("read", "write", "write", "delete")[(number + operations) % 4]
            value = f"v{number}-{operations}" if f == "write" else None
            history.record(number, "invoke", f, key, value)
            try:
                if f == "read":
                    result: Any = (await client.read(key)).decode()
                elif f == "write":
                    await client.write(key, value or "")
                    result = value
                else:
                    await client.delete(key)
                    result = None
                kind = "ok"
            except ZcraqError as error:  # KeyNotFound is a read of the missing value: ok, None
                kind, result = outcome_of(f, error), value
            history.record(number, kind, f, key, result)

    async def scenario() -> None:
        async with client_of(cluster, timeout=3) as client:
            processes = [asyncio.create_task(process(client, n)) for n in range(12)]
            try:
                await asyncio.sleep(0)
                await eventually_count(history, 300)
                before = (await client.status("node1"))["counters"]["dirty_reads"]
                cluster.signal("node2", signal.SIGSTOP)
                try:
                    await eventually(lambda: more_dirty_reads(client, before + 20), 8, "dirty reads at the head")
                finally:
                    cluster.signal("node2", signal.SIGCONT)
                await eventually_count(history, history.counts["ok"] + 300)
            finally:
                stop.set()
                await asyncio.gather(*processes)

    run(scenario)
    history.close()
    assert history.counts["write ok"] > 50 and history.counts["read ok"] > 50
    result = check_history(load_history(tmp_path / "history.jsonl"))
    assert result.ok, f"{result.verdict()}\n{result.describe()}"


async def more_dirty_reads(client: AsyncZClient, before: int) -> bool:
    if (await client.status("node1"))["counters"]["dirty_reads"] <= before:
        raise Unavailable("no dirty read yet")
    return True


async def eventually_count(history: HistoryWriter, ok: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while history.counts["ok"] < ok:
        assert time.monotonic() < deadline, f"{ok} completed operations within {timeout:g}s"
        await asyncio.sleep(0.05)
