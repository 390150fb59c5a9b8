"""The workload's client of a partitioned cluster: the one-chain client's operations and checks,
routed as PROTOCOL.md §13.5 says a client routes them.

It asks the coordinator for the partition table, sends each key's operation (naming the key's
partition) to the head (writes) or any member (reads) of the key's partition per the newest table
it has, and refreshes the table on wrong_partition, not_head and unavailable. A scan covers one
partition: it reads the keys of that partition only.
"""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from zcraq import wire
from zcraq.messages import Delete, Error, Ok, Read, Scan, TopologyRequest, Write
from zcraq.partitioning import partition_of
from zcraq.sim.actors import COORDINATOR, service_of
from zcraq.sim.scenario import Driver, SimClient
from zcraq.topology import Topology


class PartitionedClient(SimClient):
    def __init__(self, sim: Driver, index: int, keys: tuple[str, ...]) -> None:
        super().__init__(sim, index)
        self.keys = keys
        self.count = sim.config.partitions
        self.chains: list[Topology] | None = None  # each partition's, from the newest table

    def partition(self, key: str) -> int:
        return partition_of(key, self.count)

    def _try(self) -> None:
        op = self.op
        assert op is not None
        world = self.sim.world
        if world.now >= op["deadline"]:
            self._finish("info" if op["maybe"] else "fail", None)
            return
        if self.chains is None:
            self._send(service_of(COORDINATOR), TopologyRequest(id=self._next_attempt()))
            return
        if op["f"] == "scan":
            # One partition holding some of the keys, chosen once per scan.
            partition = op.setdefault("partition", world.rng.choice(sorted({self.partition(k) for k in self.keys})))
        else:
            partition = self.partition(op["key"])
        members = self.chains[partition].members
        if op["f"] in ("read", "scan") and op["node"] is None and not members:
            self._refresh_later()
            return
        if op["f"] == "scan":
            self._send(world.rng.choice(members).service, Scan(prefix="k", limit=10, id=self._next_attempt(),
                                                               partition=partition))
        elif op["f"] == "read":
            target = service_of(op["node"]) if op["node"] is not None else world.rng.choice(members).service
            if op["staleness"] is None:
                self._send(target, Read(op["key"], id=self._next_attempt(), partition=partition))
            else:
                self._send(target, Read(op["key"], id=self._next_attempt(), mode="bounded",
                                        max_staleness_ms=op["staleness"], partition=partition))
        else:
            self._write(op, members[0].service if members else None, partition)

    def _write(self, op: dict[str, Any], head: str | None, partition: int) -> None:
        """To the partition's head; with no chain, to the coordinator (it forwards by key)."""
        target = head or service_of(COORDINATOR)
        scope: dict[str, Any] = {"partition": partition} if head else {}
        if op["f"] == "write":
            self._send(target, Write(op["key"], op["value"].encode(), id=self._next_attempt(), **scope))
        elif op["f"] == "cas":
            self._send(target, Write(op["key"], op["value"][1].encode(), id=self._next_attempt(),
                                     if_version=op["if_version"], **scope))
        else:
            self._send(target, Delete(op["key"], id=self._next_attempt(), **scope))

    def _refresh_later(self) -> None:
        self.chains = None
        super()._refresh_later()

    def _timeout(self, attempt: int) -> None:
        if attempt != self.attempt or self.op is None:
            return
        if self.op["f"] not in ("read", "scan") and self.chains is not None:
            self._finish("info", None)  # the write may have been applied: retrying could apply it twice
            return
        self._refresh_later()

    def on_reply(self, ref: tuple[Any, ...], frames: list[bytes]) -> None:
        if ref[2] != self.attempt or self.op is None:
            return
        reply, _ = wire.read_reply(frames)
        if type(reply) is Ok and reply.table is not UNSET:
            self.chains = [Topology.from_dict(entry["topology"]) for entry in reply.table["partitions"]]
            self._try()
        elif type(reply) is Error and reply.code == "wrong_partition":
            self._refresh_later()  # not applied there: a newer table names the right replicas
        else:
            super().on_reply(ref, frames)

    def scanned_keys(self) -> tuple[str, ...]:
        op = self.op
        assert op is not None
        return tuple(k for k in self.keys if self.partition(k) == op["partition"])
