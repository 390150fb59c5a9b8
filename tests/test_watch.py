"""Watch: the node's change log, its watch and watch_state requests, the client's watcher (gaps,
duplicates from another node, pruned history), and real processes: a watcher across kill -9 of the
node it follows and of the tail, and the CLI."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from typing import Any

import pytest

from commands import assert_exit
from commands import zcraq_binary as zcraq
from tests.test_nodecore import A, B, C, cframe, join, only_reply, rec, topo, wframe
from zcraq import wire
from zcraq.async_client import AsyncZClient
from zcraq.clientwatch import Change, Watcher
from zcraq.errors import ZcraqError
from zcraq.messages import TOMBSTONE, Delete, Ok, Watch, WatchState, Write
from zcraq.nodecore import watches
from zcraq.nodecore.changes import ChangeLog

# ---------------------------------------------------------------------------------- the change log


def test_the_change_log_keeps_its_newest_entries_within_its_bounds():
    log = ChangeLog("boot", max_entries=3, max_bytes=1 << 20)
    for version in range(1, 6):
        log.add("k", version, False, b"v%d" % version)
    assert (log.first, log.last, len(log)) == (3, 5, 3)
    found, reached = log.of_key("k", 2, 10, 1 << 20)
    assert [(seq, change[1]) for seq, change in found] == [(3, 3), (4, 4), (5, 5)] and reached == 5
    by_bytes = ChangeLog("boot", max_entries=100, max_bytes=350)
    for version in range(1, 6):
        by_bytes.add("k", version, False, b"x" * 50)
    assert by_bytes.last == 5 and by_bytes.first == 4 and by_bytes.size <= 350
    token = log.token
    log.reset()
    assert log.token != token and len(log) == 0 and log.first == 6


def test_a_prefix_poll_looks_at_a_bounded_number_of_entries_and_says_how_far_it_got():
    log = ChangeLog("boot")
    for i in range(10):
        log.add(f"other{i}", 1, False, b"")
    log.add("p/1", 1, False, b"a")
    assert log.with_prefix("p/", 0, 10, 1 << 20, max_examined=4) == ([], 4)
    found, reached = log.with_prefix("p/", 4, 10, 1 << 20, max_examined=100)
    assert [change[0] for _, change in found] == ["p/1"] and reached == 11


# ---------------------------------------------------------------------------------- the node


def watch_state(node: Any, **fields: Any) -> tuple[dict[str, Any], list[bytes]]:
    node.on_request("cl", WatchState(id="s", **fields), 0.2)
    answer = only_reply(node.ready())
    return answer.header, answer.values


def test_a_middle_node_logs_each_version_when_it_commits_in_version_order():
    node = join(B, topo(1, A, B, C))
    node.on_write_frame(wframe("a", 1, 0, rec("k", 1, b"one"), rec("k", 2, b"two", tombstone=True)), 0.1)
    node.ready()
    header, _ = watch_state(node, key="k")
    assert header["items"] == [] and header["seq"] == 0  # dirty only: nothing committed, nothing logged
    node.on_ack_frame(cframe("c", 1, 0, ("k", 2)), 0.1)  # a commit of 2 commits 1 too
    node.ready()
    node.on_request("cl", Watch(log=header["log"], after=0, key="k", id="w"), 0.2)
    answer = only_reply(node.ready())
    assert answer.header["items"] == [("k", 1, 0), ("k", 2, TOMBSTONE)] and answer.values == [b"one", b""]
    assert answer.header["seq"] == 2


def test_a_poll_is_held_until_a_change_commits_or_its_wait_ends():
    node = join(A, topo(1, A))
    node.on_request("cl", Write("k", b"1", id="w1"), 0.1)
    node.ready()
    header, values = watch_state(node, prefix="")
    assert header["items"] == [("k", 1, 0)] and values == [b"1"] and header["first"] == 1
    log = header["log"]
    node.on_request("watcher", Watch(log=log, after=1, prefix="", wait_ms=500, id="p"), 0.3)
    assert node.ready() == []  # held: nothing after position 1 yet
    node.on_request("cl", Delete("k", id="d"), 0.4)
    effects = node.ready()
    held = [e for e in effects if e.client == "watcher"]
    assert len(held) == 1 and held[0].reply.items == [("k", 2, TOMBSTONE)] and held[0].reply.seq == 2
    node.on_request("watcher", Watch(log=log, after=2, key="k", wait_ms=100, id="q"), 0.5)
    assert node.ready() == []
    node.tick(0.7)
    expired = only_reply(node.ready())
    assert expired.header["items"] == [] and expired.header["seq"] == 2
    # A position of another log, or one pruned: the watcher must resynchronize.
    node.on_request("watcher", Watch(log="other.0", after=2, key="k", id="x"), 0.8)
    assert only_reply(node.ready()).code == "watch_pruned"


def test_only_a_serving_node_answers_watches():
    node = join(B, topo(1, A, B, C), lease=False)
    node.on_request("cl", WatchState(key="k", id="s"), 0.1)
    assert only_reply(node.ready()).code == "unavailable"


@pytest.mark.parametrize("header", [
    b'{"type":"watch","log":"a.0","after":0}',
    b'{"type":"watch","log":"a.0","after":0,"key":"k","prefix":"p"}',
    b'{"type":"watch_state","key":""}',
    b'{"type":"watch","log":"a.0","after":-1,"key":"k"}',
    b'{"type":"watch","log":"a.0","after":0,"key":"k","wait_ms":60001}',
])
def test_a_bad_watch_is_refused(header: bytes):
    request = wire.read_node_request([header], wire.Limits())
    assert type(request).__name__ == "Malformed" and request.code == "bad_request"


# ---------------------------------------------------------------------------------- the watcher


def state_page(items: list[tuple[str, int, int]], values: list[bytes], log: str = "n1.0", seq: int = 10,
               first: int = 1, cursor: str | None = None) -> Ok:
    return Ok("s", items=items, log=log, seq=seq, first=first, cursor=cursor)


def changes(watcher: Watcher, items: list[tuple[str, int, int]], seq: int) -> list[Change]:
    values = [b"" if flags else f"{key}{version}".encode() for key, version, flags in items]
    return watcher.take_changes(Ok("w", items=items, seq=seq), values, "n")


def synchronized(watcher: Watcher, items: list[tuple[str, int, int]], values: list[bytes], **page: Any) -> None:
    watcher.begin_state()
    assert watcher.take_state(state_page(items, values, **page), values, "n")
    watcher.synchronized_with("n")


def test_a_watch_from_now_starts_at_the_state_and_delivers_each_next_version():
    watcher = Watcher(prefix="")
    synchronized(watcher, [("a", 3, 0)], [], seq=10)
    assert watcher.after == 10  # the baseline: no replay
    got = changes(watcher, [("a", 4, 0), ("b", 1, 0), ("a", 5, TOMBSTONE)], 13)
    assert [(c.key, c.version, c.value, c.pruned) for c in got] == [
        ("a", 4, b"a4", False), ("b", 1, b"b1", False), ("a", 5, None, False)]


def test_after_moving_to_another_node_nothing_is_delivered_twice_or_skipped():
    watcher = Watcher(key="a")
    synchronized(watcher, [("a", 3, 0)], [], seq=10)
    assert [c.version for c in changes(watcher, [("a", 4, 0), ("a", 5, 0)], 12)] == [4, 5]
    watcher.lose_node()
    # The other node is behind (its state: version 4), then its log shows 5 and 6 and 7.
    synchronized(watcher, [("a", 4, 0)], [b"a4"], log="n2.0", seq=50, first=40)
    assert watcher.after == 39  # replays every entry it keeps
    assert [c.version for c in changes(watcher, [("a", 4, 0)], 50)] == []
    assert [c.version for c in changes(watcher, [("a", 5, 0), ("a", 6, 0), ("a", 7, 0)], 53)] == [6, 7]


def test_versions_the_new_node_no_longer_keeps_come_as_its_state_marked_pruned():
    watcher = Watcher(key="a")
    synchronized(watcher, [("a", 3, 0)], [], seq=10)
    watcher.lose_node()
    synchronized(watcher, [("a", 9, 0)], [b"nine"], log="n2.0", seq=50, first=45)
    # Its log kept no entry of "a": first another member is tried (nothing delivered yet)...
    assert changes(watcher, [], 50) == [] and not watcher.synchronized and watcher.gap_tries == 1
    # ...and when every member was tried, the gap is taken: the state's version, marked pruned.
    watcher.accept_gaps = True
    synchronized(watcher, [("a", 9, 0)], [b"nine"], log="n2.0", seq=50, first=45)
    assert changes(watcher, [], 50) == [Change("a", 9, b"nine", pruned=True)]
    # A gap in a log followed: the entry after it comes marked pruned.
    assert changes(watcher, [("a", 11, 0)], 51) == [Change("a", 11, b"a11", pruned=True)]


def test_the_changes_before_a_gap_stand_and_the_rest_is_asked_of_another_node():
    watcher = Watcher(prefix="")
    synchronized(watcher, [("a", 1, 0), ("b", 1, 0)], [], seq=10)
    got = changes(watcher, [("a", 2, 0), ("b", 5, 0), ("a", 3, 0)], 13)
    assert got == [Change("a", 2, b"a2")] and not watcher.synchronized
    synchronized(watcher, [("a", 3, 0), ("b", 5, 0)], [b"a3", b"b5"], log="n2.0", seq=70, first=1)
    got = changes(watcher, [("a", 3, 0), ("b", 2, 0), ("b", 3, 0), ("b", 4, 0), ("b", 5, 0)], 70)
    assert [(c.key, c.version, c.pruned) for c in got] == [("a", 3, False), ("b", 2, False), ("b", 3, False),
                                                           ("b", 4, False), ("b", 5, False)]
    assert watcher.gap_tries == 0


def test_since_version_replays_what_the_log_keeps_after_it():
    watcher = Watcher(key="a", since_version=2)
    synchronized(watcher, [("a", 4, 0)], [b"a4"], seq=10, first=1)
    got = changes(watcher, [("a", 1, 0), ("a", 2, 0), ("a", 3, 0), ("a", 4, 0)], 10)
    assert [(c.version, c.pruned) for c in got] == [(3, False), (4, False)]


def test_a_watcher_refuses_a_malformed_reply():
    watcher = Watcher(key="a")
    synchronized(watcher, [], [], seq=10)
    with pytest.raises(ZcraqError):
        watcher.take_changes(Ok("w", items=[("a", 1, 0)], seq=11), [], "n")
    with pytest.raises(ValueError):
        Watcher()
    with pytest.raises(ValueError):
        Watcher(key="a", since_version=-1)


# ---------------------------------------------------------------------------------- real processes


def test_a_watcher_follows_across_kill_9_of_its_node_and_of_the_tail(make_cluster):
    """Every version written is delivered once, in order, with its value, while the node the
    watcher follows, then the tail, then the coordinator are killed and restarted."""
    cluster = make_cluster(3).start_all()
    client = cluster.client()
    keys = [f"w/{i}" for i in range(4)]
    written: dict[tuple[str, int], bytes] = {}
    stop = threading.Event()
    errors: list[BaseException] = []
    got: list[Change] = []

    def writer() -> None:
        zclient = cluster.client()
        n = 0
        while not stop.is_set():
            n += 1
            key, value = keys[n % len(keys)], b"%d" % n
            try:
                written[key, zclient.write(key, value)] = value
            except ZcraqError:
                pass  # an unknown outcome is fine: the watch tells what committed

    stream = cluster.client().watch(prefix="w/", poll_wait=0.3)

    def watcher() -> None:
        try:
            for change in stream:
                got.append(change)
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            errors.append(error)

    threads = [threading.Thread(target=watcher, daemon=True), threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    try:
        cluster.wait(lambda: len(got) > 20, 30, "changes before the first kill")
        followed = next(node_id for node_id in cluster.node_ids if cluster.service(node_id) == stream.following)
        cluster.kill(followed)
        seen = len(got)
        cluster.wait(lambda: len(got) > seen + 20, 30, "changes after the followed node died")
        cluster.start(followed)
        cluster.wait_member(followed, 60)
        tail = client.topology().members[-1].id
        cluster.kill(tail)
        seen = len(got)
        cluster.wait(lambda: len(got) > seen + 20, 30, "changes after the tail died")
        cluster.start(tail)
        cluster.wait_member(tail, 60)
        cluster.kill("coordinator")  # the chain goes on without it; so does the watch
        seen = len(got)
        cluster.wait(lambda: len(got) > seen + 20, 30, "changes while the coordinator is down")
        cluster.start("coordinator")
        seen = len(got)
        cluster.wait(lambda: len(got) > seen + 20, 30, "changes after the coordinator restarted")
    finally:
        stop.set()
        threads[1].join(30)
    final = {key: client.read_versioned(key)[1] for key in keys}
    cluster.wait(lambda: all(any(c.key == k and c.version == v for c in got) for k, v in final.items()), 30,
                 "the watcher to reach the final versions")
    assert errors == []
    last: dict[str, int] = {}
    for change in got:
        assert not change.pruned, change
        assert change.version == last.get(change.key, 0) + 1, (change, last.get(change.key))
        last[change.key] = change.version
        if (change.key, change.version) in written:
            assert change.value == written[change.key, change.version]


def test_the_cli_watches_a_key_and_a_prefix(make_cluster):
    cluster = make_cluster(1).start_all()
    client = cluster.client()
    c = ("client", "-c", cluster.coordinator_endpoint, "-t", "10")
    client.write("user:1", b"ann")
    client.write("user:1", b"bob")
    client.delete("user:1")
    # since version 0: everything this node's log keeps of the key, in order.
    result = zcraq(*c, "watch", "user:1", "--since-version", "0", "--count", "3")
    assert_exit(result, 0)
    assert result.stdout == b"user:1@1: ann\nuser:1@2: bob\nuser:1@3 deleted\n"
    result = zcraq(*c, "--json", "watch", "--prefix", "user:", "--since-version", "1", "--count", "2")
    assert_exit(result, 0)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x["key"], x["version"], x["value"], x["deleted"]) for x in lines] == [
        ("user:1", 2, "bob", False), ("user:1", 3, None, True)]
    assert_exit(zcraq(*c, "watch"), 2)  # neither a key nor a prefix


def test_the_async_client_watches_like_the_blocking_one(make_cluster):
    cluster = make_cluster(1).start_all()
    client = cluster.client()
    for value in (b"a", b"b", b"c"):
        client.write("k", value)

    async def first_changes() -> list[Change]:
        async with AsyncZClient(cluster.coordinator_endpoint, config=cluster.layout.client) as aclient:
            got = []
            async for change in aclient.watch("k", since_version=1, poll_wait=0.2):
                got.append(change)
                if len(got) == 2:
                    return got
        return got

    assert asyncio.run(first_changes()) == [Change("k", 2, b"b"), Change("k", 3, b"c")]
    assert list(itertools.islice(client.watch("k", since_version=1), 2)) == [Change("k", 2, b"b"), Change("k", 3, b"c")]


def test_a_state_page_ends_early_at_4_mib_of_values():
    node = join(A, topo(1, A))
    for i in range(6):
        node.on_request("cl", Write(f"p{i}", b"x" * (1 << 20), id=i), 0.1)
    node.ready()
    header, values = watch_state(node, prefix="p", limit=10)
    assert [item[0] for item in header["items"]] == ["p0", "p1", "p2", "p3"] and header["cursor"] == "p3"
    assert len(values) == 4
    header, values = watch_state(node, prefix="p", after="p3", limit=10)
    assert [item[0] for item in header["items"]] == ["p4", "p5"] and header["cursor"] is None
    header, values = watch_state(node, prefix="p", limit=10, values=False)
    assert len(header["items"]) == 6 and values == []


def test_a_node_holds_at_most_max_held_polls(monkeypatch):
    monkeypatch.setattr(watches, "MAX_HELD", 1)
    node = join(A, topo(1, A))
    header, _ = watch_state(node, key="k")
    node.on_request("w1", Watch(log=header["log"], after=header["seq"], key="k", wait_ms=1000, id=1), 0.3)
    node.on_request("w2", Watch(log=header["log"], after=header["seq"], key="k", wait_ms=1000, id=2), 0.3)
    assert only_reply(node.ready()).code == "unavailable"  # the second: ask another node


def test_a_watcher_that_fell_behind_the_log_is_told_and_gets_the_values_after_the_gap(make_cluster):
    cluster = make_cluster(1, node={"watch_log_entries": 5})
    cluster.start_all()
    client = cluster.client()
    client.write("k", b"0")
    stream = client.watch("k", poll_wait=0.1)
    assert stream.poll() == []  # synchronized: from version 1 on
    for n in range(1, 21):
        client.write("k", b"%d" % n)  # versions 2..21; the node keeps the last 5 changes
    got: list[Change] = []
    cluster.wait(lambda: got.extend(stream.poll()) or (got and got[-1].version == 21), 20, "version 21")
    assert got[0] == Change("k", 17, b"16", pruned=True)  # 2..16 were pruned: told
    assert [(c.version, c.pruned) for c in got[1:]] == [(18, False), (19, False), (20, False), (21, False)]


def test_a_watch_resumes_in_another_client_where_the_first_left_off(make_cluster):
    cluster = make_cluster(1).start_all()
    client = cluster.client()
    client.write("p/a", b"1")
    first = client.watch(prefix="p/", poll_wait=0.1)
    assert first.poll() == []
    client.write("p/a", b"2")
    client.write("p/b", b"1")
    got: list[Change] = []
    cluster.wait(lambda: got.extend(first.poll()) or len(got) == 2, 20, "two changes")
    versions = first.versions
    assert versions == {"p/a": 2, "p/b": 1}
    client.write("p/b", b"2")  # while no one watches
    client.write("p/c", b"1")
    with cluster.client() as other:
        resumed = other.watch(prefix="p/", since_versions=versions, poll_wait=0.1)
        again: list[Change] = []
        cluster.wait(lambda: again.extend(resumed.poll()) or len(again) == 2, 20, "the changes missed")
        assert again == [Change("p/b", 2, b"2"), Change("p/c", 1, b"1")]


class _FailingSecondCall:
    """Stands for ZClient in WatchStream.poll: the first partition's poll takes changes, the next
    call fails (that partition's nodes are out of reach)."""

    _state: Any = None

    def __init__(self, taken: list[Change]) -> None:
        self.taken, self.calls = taken, 0

    def _run(self, plan: Any) -> list[Change]:
        plan.close()
        self.calls += 1
        if self.calls == 1:
            return self.taken
        from zcraq.errors import Unavailable

        raise Unavailable("no node of partition 1 answered")


def test_a_poll_over_partitions_delivers_what_it_took_when_a_later_partition_fails():
    """The first partition's watcher counts its changes delivered as it takes them: dropping them
    because another partition failed would skip them for good, unmarked."""
    from zcraq.client import WatchStream
    from zcraq.clientwatch import Watches
    from zcraq.errors import Unavailable

    watches = Watches(prefix="")
    watches.watchers = {p: Watcher(prefix="", partition=p) for p in (0, 1)}
    for watcher in watches.watchers.values():
        watcher.endpoint = "tcp://127.0.0.1:1"  # synchronized: each poll is one call
    taken = [Change("a", 4, b"v")]
    stream = WatchStream(_FailingSecondCall(taken), watches, None, 1.0)  # type: ignore[arg-type]
    assert stream.poll() == taken
    with pytest.raises(Unavailable):  # nothing in hand: the failure is the caller's to see
        stream.poll()
