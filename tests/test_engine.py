"""The consensus engine client against a real local etcd cluster of three members (zcraq/engine/).

What the coordinator will rely on: conditional transactions fail on a stale revision, a lease
keeps its keys alive and they go when it expires, the client goes on with the other members when
one dies, exactly one candidate leads, and a leader that can no longer renew its lease stops
deciding before another candidate can start.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from zcraq.engine.etcd import (EngineError, EngineUnavailable, EtcdClient, _answer, delete_op, get_op,
                               mod_revision_is, put_op)
from zcraq.engine.leadership import DRIFT, Leadership
from zcraq.engine.local import LocalEtcd
from zcraq.layout import free_ports
from zcraq.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    cluster = LocalEtcd(tmp_path_factory.mktemp("etcd"))
    try:
        cluster.start(timeout=60)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def client(engine: LocalEtcd) -> Iterator[EtcdClient]:
    with EtcdClient(engine.endpoints) as etcd:
        yield etcd


def test_a_transaction_on_a_stale_revision_changes_nothing(client: EtcdClient, request: pytest.FixtureRequest):
    key = request.node.name.encode()
    revision = client.put(key, b"first")
    found, _ = client.get(key)
    assert found is not None and found.value == b"first" and found.mod_revision == revision
    done = client.txn([mod_revision_is(key, revision)], [put_op(key, b"second")], [get_op(key)])
    assert done.succeeded and done.revision > revision
    stale = client.txn([mod_revision_is(key, revision)], [put_op(key, b"third")], [get_op(key)])
    assert not stale.succeeded and [kv.value for kv in stale.kvs(0)] == [b"second"]
    assert client.get(key)[0].value == b"second"  # type: ignore[union-attr]
    client.txn([], [delete_op(key)])
    assert client.get(key)[0] is None
    assert client.txn([mod_revision_is(key, 0)], [put_op(key, b"created")]).succeeded  # 0: absent


def test_a_lease_keeps_its_key_until_it_expires(client: EtcdClient, request: pytest.FixtureRequest):
    key = request.node.name.encode()
    lease = client.grant(2)
    client.put(key, b"x", lease=lease)
    assert client.get(key)[0].lease == lease  # type: ignore[union-attr]
    for _ in range(3):  # renewed past its first TTL
        time.sleep(0.8)
        assert client.keepalive(lease) == 2
    assert client.get(key)[0] is not None
    wait_until(lambda: client.get(key)[0] is None, 10, "the key to go with its lease")
    assert client.keepalive(lease) == 0
    other = client.grant(5)
    client.put(key, b"y", lease=other)
    client.revoke(other)
    assert client.get(key)[0] is None
    client.revoke(other)  # gone already: not an error


def test_the_client_goes_on_with_the_other_members_when_one_is_killed(engine: LocalEtcd):
    with EtcdClient(engine.endpoints, timeout=1.0) as etcd:
        etcd.put(b"failover", b"before")
        asked = etcd.endpoint
        index = engine.endpoints.index(asked)
        engine.kill_member(index)
        try:
            wait_until(lambda: etcd.put(b"failover", b"after"), 20, "a write with one member down",
                       retry_on=(EngineError,))
            assert etcd.endpoint != asked and etcd.get(b"failover")[0].value == b"after"  # type: ignore[union-attr]
        finally:
            engine.start(timeout=60)
    with EtcdClient([asked]) as etcd:  # the restarted member has the write
        def caught_up() -> bool:
            found, _ = etcd.get(b"failover")
            return found is not None and found.value == b"after"

        wait_until(caught_up, 20, "the restarted member to catch up", retry_on=(EngineError,))


def test_no_member_answering_is_unavailable():
    with EtcdClient([f"http://127.0.0.1:{port}" for port in free_ports(2)], timeout=0.5) as etcd:
        with pytest.raises(EngineUnavailable, match="no etcd member answered"):
            etcd.get(b"k")


@pytest.mark.parametrize("status, body, message", [
    (200, b"<html>", "not JSON"), (200, b"[1]", "list, not an object"),
    (400, b'{"error": "etcdserver: mvcc: required revision has been compacted", "code": 11}', "refused: etcdserver"),
])
def test_an_answer_that_is_not_the_api_is_an_engine_error(status: int, body: bytes, message: str):
    with pytest.raises(EngineError, match=message):
        _answer("http://127.0.0.1:1", status, body)


@pytest.mark.parametrize("url", ["", "https://127.0.0.1:2379", "127.0.0.1", "http://:2379"])
def test_a_bad_endpoint_is_refused_clearly(url: str):
    with pytest.raises(ValueError):
        EtcdClient([url] if url else [])


def test_one_candidate_leads_and_its_decisions_are_fenced(client: EtcdClient, engine: LocalEtcd,
                                                          request: pytest.FixtureRequest):
    key = f"{request.node.name}/leader".encode()
    with EtcdClient(engine.endpoints) as other_client:
        a, b = Leadership(client, key, "a", ttl=2), Leadership(other_client, key, "b", ttl=2)
        assert a.step() and not b.step()
        assert (a.leader, b.leader) == ("a", "a")
        state = f"{request.node.name}/state".encode()
        assert client.txn([a.fence()], [put_op(state, b"by a")]).succeeded
        a.resign()  # b may lead at once
        assert b.step() and not a.leading
        assert not client.txn([a.fence()], [put_op(state, b"late, by a")]).succeeded  # a's old claim
        assert client.txn([b.fence()], [put_op(state, b"by b")]).succeeded
        assert client.get(state)[0].value == b"by b"  # type: ignore[union-attr]
        b.resign()


def test_a_leader_cut_off_stops_deciding_before_another_can_lead(client: EtcdClient, engine: LocalEtcd,
                                                                 request: pytest.FixtureRequest):
    """The leader stops renewing (as when cut off from the engine): it must stop deciding, by its
    own clock, before the other candidate wins the key."""
    key = f"{request.node.name}/leader".encode()
    with EtcdClient(engine.endpoints) as other_client:
        a, b = Leadership(client, key, "a", ttl=2), Leadership(other_client, key, "b", ttl=2)
        assert a.step()
        last_renewal = time.monotonic()
        assert a.deciding_until <= last_renewal + 2 * (1 - DRIFT)
        while not b.step():  # a no longer renews
            assert time.monotonic() < last_renewal + 10, "b never took over"
            time.sleep(0.05)
        took_over = time.monotonic()
        assert not a.leading and a.deciding_until < took_over
        assert took_over - last_renewal >= 2 * (1 - DRIFT)
        b.resign()


def test_a_leader_that_loses_the_engine_leads_until_its_lease_would_end_and_no_longer(
        client: EtcdClient, request: pytest.FixtureRequest):
    """Engine errors do not escape step(): the claim runs out by this process's clock."""
    now = [1000.0]
    a = Leadership(client, f"{request.node.name}/leader".encode(), "a", ttl=2, clock=lambda: now[0])
    assert a.step()
    lease = a.lease
    with EtcdClient([f"http://127.0.0.1:{port}" for port in free_ports(1)], timeout=0.5) as unreachable:
        a.client = unreachable
        now[0] += 1.0
        assert a.step() and a.leading  # still within the lease it last renewed
        now[0] += 1.0
        assert not a.step() and not a.leading  # 2 s x (1 - DRIFT) after the renewal: over
    a.client = client
    client.revoke(lease)


def test_an_expired_leader_lease_is_noticed_and_campaigned_for_again(client: EtcdClient,
                                                                     request: pytest.FixtureRequest):
    key = f"{request.node.name}/leader".encode()
    a = Leadership(client, key, "a", ttl=2)
    assert a.step()
    first = a.created_revision
    client.revoke(a.lease)  # as if it had expired in the engine
    assert a.step() and a.created_revision > first  # a new lease, the key created again
    a.resign()


def test_a_leader_whose_key_was_deleted_stops_leading(client: EtcdClient, request: pytest.FixtureRequest):
    key = f"{request.node.name}/leader".encode()
    a = Leadership(client, key, "a", ttl=2)
    assert a.step()
    client.txn([], [delete_op(key)])
    assert not a.step() and not a.leading
    assert a.step()  # nobody leads: it campaigns again
    a.resign()


def test_the_engine_binary_is_the_one_documented():
    import subprocess

    from zcraq.engine.local import etcd_binary

    out = subprocess.run([etcd_binary(), "--version"], capture_output=True, text=True, timeout=30).stdout
    assert "etcd Version: 3.5." in out


def test_only_the_leader_extends_the_state_and_only_from_the_newest(client: EtcdClient, engine: LocalEtcd,
                                                                    request: pytest.FixtureRequest):
    from zcraq.engine.state import EngineState, StateConflict

    leader_key, state_key = (f"{request.node.name}/{name}".encode() for name in ("leader", "state"))
    with EtcdClient(engine.endpoints) as other_client:
        a, b = Leadership(client, leader_key, "a", ttl=2), Leadership(other_client, leader_key, "b", ttl=2)
        assert a.step() and not b.step()
        mine, theirs = EngineState(client, state_key, a), EngineState(other_client, state_key, b)
        assert mine.read() is None
        mine.write({"version": 1})
        mine.write({"version": 2})
        assert theirs.read() == {"version": 2}
        with pytest.raises(StateConflict, match="leadership has run out"):
            theirs.write({"version": 3, "by": "b"})  # b does not lead
        a.resign()
        assert b.step()
        theirs.write({"version": 3, "by": "b"})
        with pytest.raises(StateConflict):  # a, had it gone on: no longer leads
            mine.write({"version": 3, "by": "a"})
        stale = EngineState(other_client, state_key, b)
        stale.revision = theirs.revision - 1  # computed from an older state than the newest
        with pytest.raises(StateConflict, match="not written: the state is at revision"):
            stale.write({"version": 4})
        assert EngineState(client, state_key, a).read() == {"version": 3, "by": "b"}
        b.resign()


def test_a_state_that_is_not_a_json_object_is_refused_clearly(client: EtcdClient, request: pytest.FixtureRequest):
    from zcraq.engine.state import EngineState

    key = f"{request.node.name}/state".encode()
    state = EngineState(client, key, Leadership(client, f"{request.node.name}/leader".encode(), "a"))
    client.put(key, b"not json")
    with pytest.raises(ValueError, match="is not JSON"):
        state.read()
    client.put(key, b"[1]")
    with pytest.raises(ValueError, match="is not a JSON object"):
        state.read()
