"""The clients in a partitioned cluster, without sockets: the routing table (zcraq/clientroutes.py),
and the plans driven against a fake cluster that answers as the nodes and the coordinator of
PROTOCOL.md would: each key's requests go to its partition and name it, batches split and merge
back in order, scans merge partitions in key order, ``wrong_partition`` refreshes the table, and
a one-chain cluster's requests name no partition."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from zcraq import clientbatches, clientcore, clientscan, clientwatch
from zcraq.cli_client import Settings, partitions
from zcraq.cli_client import client as client_group
from zcraq.client import ZClient
from zcraq.clientcore import Answer, Call, ClientState, Pause, Step
from zcraq.clientroutes import PartitionTable
from zcraq.errors import BatchFailed, Unavailable
from zcraq.local import describe_table
from zcraq.messages import (Delete, DeleteMany, Error, Limits, Ok, Read, ReadMany, Scan, StatusRequest,
                            TopologyRequest, Watch, WatchState, Write, WriteMany)
from zcraq.partitioning import partition_of
from zcraq.topology import Member, Topology

pytestmark = pytest.mark.timeout(30)

COORDINATOR = "tcp://127.0.0.1:7000"
P = 4


def member(n: int) -> Member:
    return Member(f"node{n}", f"tcp://127.0.0.1:710{n}", f"tcp://127.0.0.1:720{n}", f"tcp://127.0.0.1:730{n}")


def chains() -> list[Topology]:
    """Partition p: three of four nodes, each partition headed by another node; p3 gains node3."""
    return [Topology(epoch=p + 1, members=tuple(member((p + i) % 4 + 1) for i in range(3)),
                     learner=member(3) if p == 3 else None) for p in range(P)]


def table_json(topologies: list[Topology], version: int = 5) -> dict[str, Any]:
    """Partition 1 has node1 assigned, node4 retires from partition 2; partition 0's entry has no
    "retiring" (as from a coordinator that does not send it)."""
    partitions = [{"partition": p, "topology": t.to_dict(), "assigned": "node1" if p == 1 else None,
                   "retiring": ["node4"] if p == 2 else []} for p, t in enumerate(topologies)]
    del partitions[0]["retiring"]
    return {"version": version, "partitions": partitions,
            "nodes": [{"id": f"node{n}", "zone": "abcd"[n - 1], "draining": n == 4} for n in range(1, 5)]}


def keys_of(partition: int, count: int, prefix: str = "k") -> list[str]:
    found = (f"{prefix}{n}" for n in range(10_000) if partition_of(f"{prefix}{n}", P) == partition)
    return [next(found) for _ in range(count)]


class FakeCluster:
    """Answers every Call as a partitioned (or, with ``one_chain``, a one-chain) cluster would;
    records each call. ``misplaced``: (endpoint, partition) pairs a node answers wrong_partition for."""

    def __init__(self, one_chain: bool = False) -> None:
        self.topologies = chains()
        self.one_chain = one_chain
        self.data: dict[str, tuple[bytes, int]] = {}
        self.misplaced: set[tuple[str, int]] = set()
        self.steps: list[Step] = []
        self.tables_sent = 0

    def __call__(self, step: Step) -> Answer | None:
        self.steps.append(step)
        if isinstance(step, Pause):
            return None
        return self.answer(step)

    def calls(self, kind: type | None = None) -> list[Call]:
        return [s for s in self.steps if isinstance(s, Call) and (kind is None or isinstance(s.request, kind))]

    # ------------------------------------------------------------------ answers

    def answer(self, call: Call) -> Answer:
        request = call.request
        if isinstance(request, TopologyRequest):
            self.tables_sent += 1
            if self.one_chain:
                return Ok(request.id, topology=self.topologies[0], limits=Limits()), []
            return Ok(request.id, table=table_json(self.topologies), limits=Limits()), []
        if isinstance(request, StatusRequest):
            return self.status(call), []
        partition = self.partition_of_request(request)
        if partition is not None and (call.endpoint, partition) in self.misplaced:
            return Error(request.id, "wrong_partition", f"no replica of partition {partition}"), []
        chain = self.topologies[0 if self.one_chain else partition or 0]
        if isinstance(request, (Write, Delete, WriteMany, DeleteMany)) and call.endpoint != chain.members[0].service:
            return Error(request.id, "not_head", "not the head"), []
        handler = getattr(self, f"on_{type(request).__name__.lower()}")
        return handler(request)

    def partition_of_request(self, request: Any) -> int | None:
        """The partition a request names; checks it is the one of each of its keys."""
        if self.one_chain:
            assert request.partition is msgspec.UNSET, "a one-chain cluster's requests name no partition"
            return None
        assert request.partition is not msgspec.UNSET, f"{type(request).__name__} names no partition"
        for key in getattr(request, "keys", None) or [getattr(request, "key", None)]:
            if key is not None:
                assert partition_of(key, P) == request.partition, (key, request.partition)
        return request.partition

    def on_read(self, request: Read) -> Answer:
        if request.key not in self.data:
            return Error(request.id, "not_found", "no such key"), []
        value, version = self.data[request.key]
        return Ok(request.id, version=version), [value]

    def on_write(self, request: Write) -> Answer:
        version = self.data.get(request.key, (b"", 0))[1] + 1
        self.data[request.key] = (request.value, version)
        return Ok(request.id, version=version), []

    def on_readmany(self, request: ReadMany) -> Answer:
        found = [self.data.get(key) for key in request.keys]
        return Ok(request.id, results=[f[1] if f else "not_found" for f in found],
                  sizes=[len(f[0]) if f else 0 for f in found]), [b"".join(f[0] for f in found if f)]

    def on_writemany(self, request: WriteMany) -> Answer:
        versions: list[int | str] = []
        for key, value in zip(request.keys, request.values):
            versions.append(self.data.get(key, (b"", 0))[1] + 1)
            self.data[key] = (value, versions[-1])  # type: ignore[assignment]
        return Ok(request.id, results=versions), []

    def on_deletemany(self, request: DeleteMany) -> Answer:
        existed = [key in self.data for key in request.keys]
        versions: list[int | str] = []
        for key in request.keys:
            versions.append(self.data.pop(key, (b"", 0))[1] + 1)
        return Ok(request.id, results=versions, existed=existed), []  # type: ignore[arg-type]

    def on_scan(self, request: Scan) -> Answer:
        keys = sorted(k for k in self.data if k.startswith(request.prefix) and k >= request.start
                      and (request.end is None or k < request.end)
                      and (self.one_chain or partition_of(k, P) == request.partition)
                      and (request.after is None or k > request.after))
        page = keys[:request.limit]
        cursor = page[-1] if len(keys) > len(page) else None
        return Ok(request.id, keys=page, results=[self.data[k][1] for k in page],
                  sizes=[len(self.data[k][0]) for k in page], cursor=cursor), [b"".join(self.data[k][0] for k in page)]

    def on_watchstate(self, request: WatchState) -> Answer:
        return Ok(request.id, items=[], log=f"log{request.partition}", seq=0, first=1, cursor=None), []

    def on_watch(self, request: Watch) -> Answer:
        keys = sorted(k for k in self.data if (request.key == k or (request.prefix is not None
                                                                    and k.startswith(request.prefix)))
                      and (self.one_chain or partition_of(k, P) == request.partition))
        if request.after > 0:
            return Ok(request.id, items=[], seq=request.after), []
        return Ok(request.id, items=[(k, self.data[k][1], 0) for k in keys], seq=1), [self.data[k][0] for k in keys]

    def status(self, call: Call) -> Ok:
        request = call.request
        if call.endpoint == COORDINATOR:
            return Ok(request.id, counters={"forwarded_writes": 0})
        node_id = next(m.id for t in self.topologies for m in t.listed() if m.service == call.endpoint)
        replicas = [{"partition": p, "role": "replica", "epoch": t.epoch, "serving": node_id != "node2" or p != 0,
                     "caught_up": True, "sent": 0}
                    for p, t in enumerate(self.topologies) if t.member(node_id) is not None]
        return Ok(request.id, node=node_id, replicas=replicas, counters={"reads": 1})


def run(cluster: FakeCluster, plan: Any) -> Any:
    return clientcore.run_blocking(plan, cluster)


def fresh_state(timeout: float = 2.0) -> ClientState:
    return ClientState(COORDINATOR, timeout)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ZClient, FakeCluster]]:
    cluster = FakeCluster()
    monkeypatch.setattr(ZClient, "_perform", lambda _self, step: cluster(step))
    with ZClient(COORDINATOR, timeout=2.0) as zclient:
        yield zclient, cluster


# ---------------------------------------------------------------------------------- the table


def test_the_table_parses_and_routes_each_key_to_its_partition():
    table = PartitionTable.parse(table_json(chains()))
    assert table.version == 5 and table.count == P
    for key in ("a", "user:1", "ключ", "k" * 100):
        assert table.partition_of(key) == partition_of(key, P)
    assert table.topology(2).head == member(3)
    assert [m.id for m in table.listed()] == ["node1", "node2", "node3", "node4"]
    assert table.partitions[1].assigned == "node1"
    assert table.partitions[3].to_json() == {"partition": 3, "chain": ["node4", "node1", "node2"], "epoch": 4,
                                             "learner": "node3", "assigned": None, "retiring": []}
    assert table.partitions[2].retiring == ("node4",) and table.partitions[0].retiring == ()


def test_zcraq_run_describes_the_moves_under_way():
    described = describe_table(PartitionTable.parse(table_json(chains())))
    assert described.startswith("table 5: node1 1h/1t/3r, node2 1h/1t/3r, node3 1h/1t/3r, node4 1h/1t/3r draining ")
    assert described.endswith("; moving p1->node1 p3->node3; retiring p2:node4")


@pytest.mark.parametrize("retiring", ["node4", [4], None])
def test_a_table_with_a_malformed_retiring_list_is_refused(retiring):
    data = table_json(chains())
    data["partitions"][2]["retiring"] = retiring
    with pytest.raises(ValueError, match="partition 2: retiring must be a list of node ids"):
        PartitionTable.parse(data)


def test_each_nodes_share_of_the_table():
    shares = {s.id: s for s in PartitionTable.parse(table_json(chains())).shares()}
    assert [(s.heads, s.tails, s.replicas, s.learners, s.assigned, s.retiring) for s in shares.values()] == [
        (1, 1, 3, 0, 1, 0), (1, 1, 3, 0, 0, 0), (1, 1, 3, 1, 0, 0), (1, 1, 3, 0, 0, 1)]
    assert shares["node4"].draining and shares["node2"].zone == "b" and shares["node1"].service == member(1).service


@pytest.mark.parametrize("bad", [[], {"version": -1, "partitions": []}, {"version": 1, "partitions": []},
                                 {"version": 1, "partitions": [{"partition": 1, "topology": chains()[0].to_dict()}]},
                                 {"version": 1, "partitions": [{"partition": 0, "topology": {"epoch": "x"}}]}])
def test_a_malformed_table_is_refused(bad):
    with pytest.raises(ValueError):
        PartitionTable.parse(bad)


def test_a_malformed_table_keeps_what_the_client_had():
    state = fresh_state()
    state.adopt(Ok(1, table=table_json(chains())))
    with pytest.raises(ValueError):
        state.adopt(Ok(2, table={"version": 6}))
    assert state.table is not None and state.table.version == 5


# ---------------------------------------------------------------------------------- single keys


def test_a_write_goes_to_its_partitions_head_naming_the_partition():
    cluster, state = FakeCluster(), fresh_state()
    for partition in range(P):
        key = keys_of(partition, 1)[0]
        build, size = clientcore.write_request(key, "v")
        assert run(cluster, clientcore.write(state, key, build, size, state.deadline())).version == 1
        sent = cluster.calls(Write)[-1]
        assert sent.endpoint == cluster.topologies[partition].members[0].service
        assert sent.request.partition == partition and sent.connect_first
    assert len(cluster.calls(TopologyRequest)) == 1, "one table serves every partition"


def test_a_read_goes_to_a_member_of_its_partition_naming_it():
    cluster, state = FakeCluster(), fresh_state()
    key = keys_of(2, 1)[0]
    cluster.data[key] = (b"v", 3)
    members = {m.service for m in cluster.topologies[2].members}
    for _ in range(6):
        assert run(cluster, clientcore.read(state, key, None, "strong", state.deadline())) == (b"v", 3)
    reads = cluster.calls(Read)
    assert {c.endpoint for c in reads} == members, "spread over the partition's members, never the learner"
    assert all(c.request.partition == 2 for c in reads)


def test_wrong_partition_refreshes_the_table_and_the_write_goes_to_the_new_head():
    cluster, state = FakeCluster(), fresh_state()
    key = keys_of(1, 1)[0]
    old_head = cluster.topologies[1].members[0].service
    run(cluster, clientcore.fetch_table(state, state.deadline()))
    cluster.misplaced.add((old_head, 1))  # the replica moved away: the table still held says otherwise
    moved = cluster.topologies[1]
    cluster.topologies[1] = Topology(moved.epoch + 1, moved.members[1:] + (member(1),))
    build, size = clientcore.write_request(key, "v")
    assert run(cluster, clientcore.write(state, key, build, size, state.deadline())).version == 1
    assert [c.endpoint for c in cluster.calls(Write)] == [old_head, cluster.topologies[1].members[0].service]
    assert len(cluster.calls(TopologyRequest)) == 2


def test_wrong_partition_on_a_read_is_retried_elsewhere_and_does_not_shun_the_node():
    cluster, state = FakeCluster(), fresh_state()
    key = keys_of(0, 1)[0]
    cluster.data[key] = (b"v", 1)
    for m in cluster.topologies[0].members[:2]:
        cluster.misplaced.add((m.service, 0))
    assert run(cluster, clientcore.read(state, key, None, "strong", state.deadline())) == (b"v", 1)
    assert not state.avoided, "a node without the partition still serves the others"


def test_a_partition_no_node_holds_is_unavailable_at_the_deadline():
    cluster, state = FakeCluster(), fresh_state(timeout=0.3)
    key = keys_of(0, 1)[0]
    cluster.misplaced.update((m.service, 0) for m in cluster.topologies[0].members)
    with pytest.raises(Unavailable):
        run(cluster, clientcore.read(state, key, None, "strong", state.deadline()))
    with pytest.raises(Unavailable):
        run(cluster, clientcore.read(state, key, "node1", "strong", state.deadline()))


# ---------------------------------------------------------------------------------- batches


def test_a_batch_splits_by_partition_and_merges_back_in_order(client):
    zclient, cluster = client
    keys = [key for pair in zip(*(keys_of(p, 3) for p in range(P))) for key in pair]  # partitions interleaved
    versions = zclient.write_many([(key, key.upper()) for key in keys])
    assert versions == [1] * len(keys)
    writes = cluster.calls(WriteMany)
    assert len(writes) == P
    for sent in writes:
        partition = sent.request.partition
        assert sent.endpoint == cluster.topologies[partition].members[0].service
        assert list(sent.request.keys) == [k for k in keys if partition_of(k, P) == partition], "in the caller's order"
    missing = keys_of(1, 1, prefix="missing")
    asked = [*missing, *reversed(keys)]
    found = zclient.read_many(asked)
    assert found == [None, *(key.upper().encode() for key in reversed(keys))]
    assert {c.request.partition for c in cluster.calls(ReadMany)} == set(range(P))
    assert zclient.delete_many(keys[:2]) == [(2, True), (2, True)]


def test_a_batch_part_that_fails_leaves_the_rest_unsent(client):
    zclient, cluster = client
    keys = keys_of(0, 2) + keys_of(1, 2)
    cluster.topologies[0] = Topology(9, ())  # partition 0 has no chain: its part cannot be written
    zclient._state.timeout = 0.3  # noqa: SLF001 - a short deadline for the failing part
    with pytest.raises(BatchFailed):
        zclient.write_many([(key, "v") for key in keys])
    assert not cluster.calls(WriteMany), "partition 1's part is not sent after partition 0's failed"


# ---------------------------------------------------------------------------------- scans


@pytest.mark.parametrize("limit, page_keys", [(None, 2), (None, 100), (5, 2), (1, 3), (0, 2), (11, 1000)])
def test_a_scan_merges_the_partitions_in_key_order(client, limit, page_keys):
    zclient, cluster = client
    keys = [key for p in range(P) for key in keys_of(p, 4, prefix="s")] + ["other"]
    for key in keys:
        cluster.data[key] = (key.encode(), 1)
    expected = sorted(k for k in keys if k.startswith("s"))[:limit]
    items = list(zclient.scan("s", limit=limit, page_keys=page_keys))
    assert [key for key, _, _ in items] == expected
    assert all(value == key.encode() for key, value, _ in items)
    for sent in cluster.calls(Scan):
        assert sent.request.partition in range(P) and sent.request.limit <= page_keys
        if limit is not None:
            assert sent.request.limit <= limit
    if limit == 0:
        assert not cluster.calls(), "nothing to yield: nothing asked"


def test_the_merge_yields_a_key_only_once_no_partition_can_hold_a_smaller_one():
    merge = clientscan.Merge(2, None)
    merge.place([0, 1])
    assert merge.next_page() == clientscan.Page(0, None, 2)
    assert merge.take(0, [("b", b"", 1), ("d", b"", 1)], "d") == [], "partition 1 may hold a smaller key"
    assert merge.next_page() == clientscan.Page(1, None, 2)
    assert [k for k, _, _ in merge.take(1, [("a", b"", 1), ("c", b"", 1)], "c")] == ["a", "b", "c", "d"][:3]
    assert merge.next_page() == clientscan.Page(1, "c", 2)
    assert [k for k, _, _ in merge.take(1, [], "e")] == ["d"], "a cursor past a key frees it"
    assert merge.next_page() == clientscan.Page(0, "d", 2)
    assert merge.take(0, [], None) == [] and merge.next_page() == clientscan.Page(1, "e", 2)
    assert merge.take(1, [("f", b"", 1)], None) == [("f", b"", 1)] and merge.next_page() is None


# ---------------------------------------------------------------------------------- watches


def test_a_key_watch_follows_its_partition_and_a_prefix_watch_every_partition(client):
    zclient, cluster = client
    keys = [keys_of(p, 1, prefix="w")[0] for p in range(P)]
    for key in keys:
        cluster.data[key] = (b"x", 1)
    stream = zclient.watch(keys[2], since_version=0)
    assert [(c.key, c.version) for c in stream.poll()] == [(keys[2], 1)]
    assert {c.request.partition for c in cluster.calls(WatchState) + cluster.calls(Watch)} == {2}
    assert stream.following in {m.service for m in cluster.topologies[2].members}

    stream = zclient.watch(prefix="w", since_version=0, poll_wait=0.2)
    changes = stream.poll()
    assert sorted(c.key for c in changes) == sorted(keys)
    polls = [c for c in cluster.calls(Watch) if c.request.prefix == "w"]
    assert sorted(c.request.partition for c in polls) == list(range(P))
    assert [c.request.wait_ms for c in polls][1:] == [0] * (P - 1), "changes in hand: the rest only looked at"
    assert stream.versions == {key: 1 for key in keys}


def test_a_resumed_prefix_watch_gives_each_partition_its_own_keys():
    state = fresh_state()
    state.adopt(Ok(1, table=table_json(chains())))
    keys = [keys_of(p, 1)[0] for p in range(P)]
    watches = clientwatch.Watches(prefix="k", since_versions={key: 3 for key in keys})
    watches.place(state)
    assert list(watches.watchers) == list(range(P))
    for partition, watcher in watches.watchers.items():
        assert watcher.seen == {keys[partition]: 3} and watcher.partition == partition
    assert watches.seen == {key: 3 for key in keys}
    assert watches.wait_each(1.0) == 0.25


# ---------------------------------------------------------------------------------- one chain


def test_a_one_chain_cluster_names_no_partition(monkeypatch):
    cluster = FakeCluster(one_chain=True)  # partition_of_request asserts that no request names one
    monkeypatch.setattr(ZClient, "_perform", lambda _self, step: cluster(step))
    with ZClient(COORDINATOR, timeout=2.0) as zclient:
        assert zclient.write("a", "1") == 1 and zclient.write_many([("b", "2"), ("c", "3")]) == [1, 1]
        assert zclient.read("a") == b"1" and zclient.read_many(["c", "b"]) == [b"3", b"2"]
        assert [k for k, _, _ in zclient.scan(page_keys=1)] == ["a", "b", "c"]
        assert [c.key for c in zclient.watch(prefix="", since_version=0).poll()] == ["a", "b", "c"]
        assert zclient.partition_table() is None
        assert [p.to_json() for p in zclient.partitions()] == [
            {"partition": 0, "chain": ["node1", "node2", "node3"], "epoch": 1, "learner": None, "assigned": None,
             "retiring": []}]
    assert [c.request.limit for c in cluster.calls(Scan)] == [1, 1, 1]
    assert {c.endpoint for c in cluster.calls(Write) + cluster.calls(WriteMany)} == {member(1).service}


def test_a_batch_in_one_chain_asks_the_coordinator_once(monkeypatch):
    cluster, state = FakeCluster(one_chain=True), fresh_state()
    run(cluster, clientbatches.read_many(state, ["a", "b"], None, "strong", state.deadline()))
    assert [type(c.request).__name__ for c in cluster.calls()] == ["TopologyRequest", "ReadMany"]


# ---------------------------------------------------------------------------------- command line


def invoke(monkeypatch: pytest.MonkeyPatch, cluster: FakeCluster, command: Any, *args: str) -> Any:
    monkeypatch.setattr(ZClient, "_perform", lambda _self, step: cluster(step))

    def statuses(_self: ZClient, nodes: list[str]) -> dict[str, Any]:  # asks all at once, over its own sockets
        return {node: clientcore.report(cluster.status(Call(node, StatusRequest(id=1), 0.0))) for node in nodes}

    monkeypatch.setattr(ZClient, "statuses", statuses)
    return CliRunner().invoke(command, ["-c", COORDINATOR, *args], obj=Settings())


def test_partitions_lists_every_chain(monkeypatch):
    cluster = FakeCluster()
    result = invoke(monkeypatch, cluster, partitions, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["partition"], r["chain"][0], r["epoch"]) for r in rows] == [
        (p, cluster.topologies[p].members[0].id, p + 1) for p in range(P)]
    assert rows[3]["learner"] == "node3" and rows[1]["assigned"] == "node1" and rows[2]["retiring"] == ["node4"]
    text = invoke(monkeypatch, cluster, partitions).output.splitlines()
    assert text[0].split() == ["PARTITION", "EPOCH", "CHAIN", "LEARNER", "ASSIGNED", "RETIRING"]
    assert text[3].split() == ["2", "3", "node3,node4,node1", "-", "-", "node4"]
    assert text[4].split() == ["3", "4", "node4,node1,node2", "node3", "-", "-"]
    assert text[-1] == "4 partitions, table version 5"


def test_partitions_of_a_one_chain_cluster_is_partition_0(monkeypatch):
    result = invoke(monkeypatch, FakeCluster(one_chain=True), partitions, "--json")
    assert json.loads(result.output) == [{"partition": 0, "chain": ["node1", "node2", "node3"], "epoch": 1,
                                          "learner": None, "assigned": None, "retiring": []}]


def test_status_and_health_of_a_partitioned_cluster_per_node(monkeypatch):
    cluster = FakeCluster()
    result = invoke(monkeypatch, cluster, client_group, "status", "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["table_version"] == 5 and status["partitions"] == P
    node3 = next(n for n in status["nodes"] if n["id"] == "node3")
    assert (node3["heads"], node3["replicas"], node3["learners"], node3["serving"]) == (1, 3, 1, 4)
    assert [n["retiring"] for n in status["nodes"]] == [0, 0, 0, 1]
    text = invoke(monkeypatch, cluster, client_group, "status").output.splitlines()
    assert text[0].split()[:8] == ["NODE", "ZONE", "HEADS", "TAILS", "REPLICAS", "LEARNERS", "ASSIGNED", "RETIRING"]
    assert text[4].split()[:8] == ["node4", "d", "1", "1", "3", "0", "0", "1"]
    assert text[-1] == f"coordinator {COORDINATOR}: 4 partitions, table version 5"

    result = invoke(monkeypatch, cluster, client_group, "health", "--json")
    assert result.exit_code == 3, result.output
    health = json.loads(result.output)
    assert health["problems"] == [f"node2 ({member(2).service}): not serving partitions 0"]
    assert invoke(monkeypatch, cluster, client_group, "health", "-n", "node1").exit_code == 0
