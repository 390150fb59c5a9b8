"""Conditional writes against a real 3-node chain: many clients racing compare-and-set loops on
one key, and ``zcraq client write/delete --if-version`` as a script sees them."""

from __future__ import annotations

import threading

import pytest

from commands import assert_exit
from commands import zcraq_binary as zcraq
from test_cli_client import json_out
from zcraq.errors import ConditionFailed, KeyNotFound

pytestmark = pytest.mark.timeout(180)


def test_racing_compare_and_set_loops_have_exactly_one_winner_per_version(make_cluster):
    """Eight clients each read the key's version and write the next value only if it is still that
    version. Only these conditional writes touch the key, so the versions that succeeded must be
    1, 2, 3, ... each won by exactly one write, and each winner must have named the version just
    before its own."""
    cluster = make_cluster(3).start_all()
    clients, rounds = 8, 12
    wins: list[tuple[int, int, str]] = []  # (version named, version got, value)
    failures: list[BaseException] = []
    lock = threading.Lock()

    def racer(index: int) -> None:
        zclient = cluster.client(timeout=20)
        try:
            for attempt in range(rounds):
                value = f"client{index}-{attempt}"
                try:
                    _, current = zclient.read_versioned("counter")
                except KeyNotFound:
                    current = 0
                try:
                    got = zclient.write("counter", value, if_version=current)
                except ConditionFailed as lost:
                    assert lost.version is not None and lost.version != current
                    continue
                with lock:
                    wins.append((current, got, value))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    assert not any(t.is_alive() for t in threads) and failures == []
    versions = sorted(got for _, got, _ in wins)
    assert versions == list(range(1, len(wins) + 1)), "a version was won twice, or skipped"
    assert all(got == named + 1 for named, got, _ in wins)
    final_value, final_version = cluster.client().read_versioned("counter")
    winner_of = {got: value for _, got, value in wins}
    assert final_version == len(wins) and final_value == winner_of[final_version].encode()
    # Every member holds the same: read the winner of the last version at each node.
    for node in ("node1", "node2", "node3"):
        assert cluster.client().read_versioned("counter", node) == (final_value, final_version)


def test_the_cli_writes_and_deletes_only_if_the_version_matches(make_cluster):
    cluster = make_cluster(1).start_all()
    c = ("client", "-c", cluster.coordinator_endpoint, "-t", "10")
    result = zcraq(*c, "write", "k", "first", "--if-version", "0")
    assert_exit(result, 0)
    assert result.stdout == b"ok version 1\n"
    result = zcraq(*c, "write", "k", "second", "--if-version", "0")
    assert_exit(result, 8)
    assert b"current version is 1" in result.stderr
    assert json_out(zcraq(*c, "write", "k", "second", "--if-version", "0", "--json"), 8) == {
        "error": "condition_failed", "version": 1,
        "message": "write of 'k' not applied: the key's current version is 1"}
    assert json_out(zcraq(*c, "write", "k", "second", "--if-version", "1", "--json"), 0) == {"key": "k", "version": 2}
    assert_exit(zcraq(*c, "delete", "k", "--if-version", "1"), 8)
    assert json_out(zcraq(*c, "delete", "k", "--if-version", "2", "--json"), 0) == {
        "key": "k", "version": 3, "existed": True}
    assert json_out(zcraq(*c, "read", "k", "--json"), 1)["error"] == "not_found"
    # Deleted: the current version is 0 again, whatever version the deletion took.
    assert json_out(zcraq(*c, "delete", "k", "--if-version", "3", "--json"), 8)["version"] == 0
    assert_exit(zcraq(*c, "write", "k", "again", "--if-version", "0"), 0)
    assert_exit(zcraq(*c, "write", "k", "x", "--if-version", "-1"), 2)
