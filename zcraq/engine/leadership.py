"""One coordinator's claim to lead, held through an engine lease.

A candidate holds a lease of ``ttl`` seconds and tries to create the leader key under it; the key
exists while the lease does, so whoever created it leads until the lease expires or is revoked.
Every decision of a leader is a transaction that also compares the leader key's create revision
with the one the leader created (``fence()``): a deposed leader's late write fails in the engine.

A leader must also stop deciding *before* another can start, since its answers to nodes and
clients do not pass through the engine. The engine expires a lease ``ttl`` after the renewal it
last applied, which it applied after this process sent it; so the lease surely lives until
``sent + ttl`` by this machine's clock, less what the two clocks' rates may differ
(``DRIFT``). ``deciding_until`` is that time, and ``leading`` is false from then on. (An engine
leader change renews every lease in full, which only moves the expiry later.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from zcraq.engine.etcd import EngineError, EtcdClient, create_revision_is, get_op, put_op

log = logging.getLogger("zcraq.engine")

DRIFT = 0.05  # the share of a lease by which the engine's clock may run faster than ours


class Leadership:
    """``key``: the leader key; ``me``: this candidate's name, written as the key's value."""

    def __init__(self, client: EtcdClient, key: bytes, me: str, ttl: int = 3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl < 2:
            raise ValueError("a leadership lease lasts at least 2 seconds")
        self.client, self.key, self.me, self.ttl, self.clock = client, key, me, ttl, clock
        self.lease = 0
        self.created_revision = 0  # of the leader key, when we created it
        self.leader: str | None = None  # as last seen
        self.deciding_until = float("-inf")

    @property
    def leading(self) -> bool:
        """May this candidate decide now?"""
        return self.created_revision != 0 and self.clock() < self.deciding_until

    def fence(self) -> dict[str, Any]:
        """The comparison every decision's transaction must carry: we still lead."""
        return create_revision_is(self.key, self.created_revision)

    def step(self) -> bool:
        """Renew the lease (or take a new one), try to become leader if nobody is; call it at least
        every ttl/3 seconds. Whether this candidate leads now. Engine errors are logged and leave
        the claim to run out."""
        try:
            self._renew()
            if self.created_revision == 0:
                self._campaign()
            elif not self.client.txn([self.fence()], [], []).succeeded:
                log.warning("%s: the leader key is no longer ours; no longer leading", self.me)
                self.created_revision = 0
        except EngineError as error:
            log.warning("%s: the engine did not answer (%s); leading %s", self.me, error,
                        "until its lease runs out" if self.leading else "no")
        return self.leading

    def resign(self) -> None:
        """Give up the lease now (and with it the leader key, if ours), so another can lead at once."""
        self.deciding_until = float("-inf")
        lease, self.lease, self.created_revision = self.lease, 0, 0
        if lease:
            self.client.revoke(lease)

    def _renew(self) -> None:
        sent = self.clock()
        if self.lease:
            left = self.client.keepalive(self.lease)
            if left > 0:
                self.deciding_until = sent + left * (1 - DRIFT)
                return
            if self.created_revision:
                log.warning("%s: the leadership lease expired; no longer leading", self.me)
            self.lease = self.created_revision = 0
            self.deciding_until = float("-inf")
        self.lease = self.client.grant(self.ttl)
        self.deciding_until = sent + self.ttl * (1 - DRIFT)

    def _campaign(self) -> None:
        result = self.client.txn([create_revision_is(self.key, 0)], [put_op(self.key, self.me.encode(), self.lease)],
                                 [get_op(self.key)])
        if result.succeeded:
            self.created_revision = result.revision
            self.leader = self.me
            log.info("%s leads (leader key revision %d)", self.me, result.revision)
            return
        found = result.kvs(0)
        self.leader = found[0].value.decode(errors="replace") if found else None


__all__ = ["DRIFT", "Leadership"]
