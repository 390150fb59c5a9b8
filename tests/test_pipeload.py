"""The pipelined load generator of the benchmarks (bench/pipeload.py) against real servers: the
echo servers of bench/zmq_baseline.py and a real 3-node chain. Replies must be matched to their
requests by id with many in flight, reads must reach every member, and read_many must
read keys. Also bench/spy_top.py's summary of a profile."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import pipeload  # noqa: E402
import spy_top  # noqa: E402
from zmq_baseline import EchoServers  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def spec(target: pipeload.Target, **overrides: object) -> pipeload.PipeSpec:
    settings: dict[str, object] = dict(workload="test", inflight=32, procs=2, duration=1.0, warmup=0.5, keys=8,
                                       value_size=16, read_fraction=0.5, op_timeout=5.0)
    settings.update(overrides)
    return pipeload.PipeSpec(target=target, **settings)  # type: ignore[arg-type]


def test_every_echo_reply_is_matched_to_its_request(tmp_path):
    echo = EchoServers(2, 16, tmp_path)
    try:
        echo.wait_ready()
        target = pipeload.Target(echo.endpoints, echo.endpoints[0], echo=True)
        result = pipeload.run(spec(target), echo.pids())
        echo.check_alive()
    finally:
        echo.close()
    assert result["errors"] == 0 and result["late_replies"] == 0, result["errors_by_op"]
    assert result["ok_ops"] > 100
    assert result["latency"]["count"] == result["ok_ops"]
    assert set(result["ops_per_s_by_op"]) == {"read", "write"}
    assert result["client_cpu_us_per_op"] > 0
    assert len(result["generator_cpu_pct"]) == 2


def chain_target(cluster) -> pipeload.Target:
    services = [cluster.service(n) for n in cluster.members()]
    return pipeload.Target(services, services[0])


def test_reads_reach_every_member_and_writes_commit(make_cluster):
    cluster = make_cluster(3).start_all()
    with cluster.client() as client:
        for k in range(8):
            client.write(f"key{k:06d}", b"v")
    before = {n: cluster.node_status(n)["counters"].get("reads", 0) for n in cluster.node_ids}
    result = pipeload.run(spec(chain_target(cluster)), cluster.pids())
    cluster.check()
    assert result["errors"] == 0, result["errors_by_op"]
    assert result["ops_per_s_by_op"]["read"] > 0 and result["ops_per_s_by_op"]["write"] > 0
    for node in cluster.node_ids:
        assert cluster.node_status(node)["counters"].get("reads", 0) > before[node], f"{node} served no read"


def test_bounded_reads_are_sent_in_bounded_mode(make_cluster):
    """read_modes_bench.py's bounded windows: the nodes count bounded reads answered locally."""
    cluster = make_cluster(3).start_all()
    with cluster.client() as client:
        for k in range(8):
            client.write(f"key{k:06d}", b"v")
    result = pipeload.run(spec(chain_target(cluster), read_mode="bounded", max_staleness_ms=60_000), cluster.pids())
    cluster.check()
    assert result["errors"] == 0, result["errors_by_op"]
    counters = [cluster.node_status(n)["counters"] for n in cluster.node_ids]
    # Reads of keys with writes in flight: at a member other than the tail, answered locally.
    assert sum(c.get("bounded_local_reads", 0) for c in counters) > 0
    assert sum(c.get("dirty_reads", 0) for c in counters[:2]) == 0


def test_read_many_reads_keys(make_cluster):
    cluster = make_cluster(1).start_all()
    with cluster.client() as client:
        for k in range(8):
            client.write(f"key{k:06d}", b"v")
    result = pipeload.run(spec(chain_target(cluster), read_fraction=1.0, batch=4, procs=1), cluster.pids())
    assert result["keys_per_s"] > 0 and not result["keys_failed"] and result["errors"] == 0


def test_spy_top_ranks_functions_by_own_time():
    raw = ("main (a.py:1);loop (a.py:5);send (z.py:9) 4\nmain (a.py:1);loop (a.py:6);send (z.py:10) 2\n"
           "main (a.py:1);loop (a.py:5) 3\nmain (a.py:1);parse (b.py:2) 1\n")
    text = spy_top.top(spy_top.parse(raw))
    rows = text.splitlines()
    assert rows[1].split() == ["60.0", "60.0", "send", "(z.py)"]  # its two lines added up
    assert rows[2].split() == ["30.0", "90.0", "loop", "(a.py)"]
    assert rows[-1] == "(10 samples)"
