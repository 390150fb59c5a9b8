from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cluster import new_cluster  # noqa: E402

from zcraq.cluster import Cluster  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--sim-seeds", type=int, default=300, help="simulated seeds to run (default 300)")
    parser.addoption("--sim-seed", type=int, default=0, help="first simulated seed (default 0)")


@pytest.fixture
def make_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Cluster]]:
    """Build clusters (``make_cluster(nodes, **options)``, see cluster.new_cluster) in this test's
    temporary directory; all are stopped at teardown, and their logs are printed when the test
    failed."""
    clusters: list[Cluster] = []

    def make(nodes: int = 3, **options: object) -> Cluster:
        cluster = new_cluster(tmp_path / f"cluster{len(clusters)}", nodes, **options)  # type: ignore[arg-type]
        clusters.append(cluster)
        return cluster

    yield make
    failed = getattr(request.node, "rep_call", None)
    for cluster in clusters:
        cluster.close()
        if failed is not None and failed.failed:
            print(cluster.dump_logs())


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port something else listens on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()
