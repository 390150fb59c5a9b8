"""What the Python client says when a request fails: "outcome unknown" only when a write may really
have been applied, "unavailable" when it cannot have arrived, "too large" before anything is sent."""

from __future__ import annotations

import time

import pytest

from zcraq.client import ZClient
from zcraq.errors import TooLarge, Unavailable, WriteOutcomeUnknown
from zcraq.layout import free_ports

pytestmark = pytest.mark.timeout(120)


def test_a_write_to_a_dead_coordinator_is_unavailable_not_unknown():
    (port,) = free_ports(1)
    with ZClient(f"tcp://127.0.0.1:{port}", timeout=1.5) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable) as raised:
            client.write("k", "v")
        assert not isinstance(raised.value, WriteOutcomeUnknown)
        with pytest.raises(Unavailable):
            client.delete("k")
    assert time.monotonic() - started < 10


def test_a_write_to_a_frozen_head_is_unknown_only_once_it_was_delivered(make_cluster):
    cluster = make_cluster(2, lease_ms=60_000).start_all()
    with cluster.client(timeout=1.5) as client:
        assert client.write("k", "v1") == 1  # the connection to the head is up
        cluster.pause("node1")
        try:
            # Sent over a live connection to a head that stopped answering: it may have applied it.
            with pytest.raises(WriteOutcomeUnknown):
                client.write("k", "v2")
            # A fresh connection to the frozen head never gets through its handshake, so nothing
            # was delivered (the kernel accepts the TCP connection, the process never answers).
            with pytest.raises(Unavailable) as raised:
                client.write("k", "v3")
            assert not isinstance(raised.value, WriteOutcomeUnknown)
        finally:
            cluster.resume("node1")
        assert client.read("k") in (b"v1", b"v2")


def test_sizes_over_the_limits_are_refused_before_sending(make_cluster):
    cluster = make_cluster(1).start_all()
    with cluster.client() as client:
        client.topology()
        limits = client.limits
        assert limits is not None and (limits.max_key_bytes, limits.max_value_bytes) == (1024, 1 << 20)
        with pytest.raises(TooLarge, match="value is larger than 1048576 bytes"):
            client.write("k", bytes(limits.max_value_bytes + 1))
        with pytest.raises(TooLarge, match="key is longer than 1024 bytes"):
            client.read("k" * 1025)
        with pytest.raises(TooLarge):
            client.delete("k" * 1025)
        assert client.write("k" * 1024, bytes(limits.max_value_bytes)) == 1
