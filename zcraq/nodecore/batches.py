"""Batched requests (read_many, write_many, delete_many, and a scan's page): each key runs through
the same path as a single read, write or delete, and the per-key answers are gathered into one
reply.

A key that must wait (a dirty read for the tail, a write for its commit) goes to reads.py or
replication.py with a ``Slot`` as its client: the answer those units would send to a client becomes
a ``Respond`` to the slot, and ``gather`` (run over a loop turn's effects in ``NodeCore.ready``)
files it into its batch instead of sending it. A read answered from the local store is filed at
once (``Batch.found``), as the single read would have answered it. The batch's reply leaves once
every key is answered, so a key gets exactly what the single request would have got: a dirty read
waits for the tail, a write for its commit or its time-out (``unknown_outcome``), and nothing about
the single paths changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from msgspec import UNSET

from zcraq.effects import Effect, Respond
from zcraq.messages import Error, Ok
from zcraq.store.base import Item


UNANSWERED = ""  # a result not filed yet (every error code is non-empty)


class Batch:
    """One batched request in progress: a result per key, filled as the keys are answered."""

    __slots__ = ("client", "request_id", "results", "values", "existed", "left", "waiting", "keys", "cursor")

    def __init__(self, client: Any, request_id: Any, keys: int, reads: bool, deletes: bool) -> None:
        self.keys: list[str] | None = None  # a scan's: its keys, named in the reply
        self.cursor: str | None = None  # a scan's: where its next page starts (None: no next page)
        self.client = client
        self.request_id = request_id
        self.results: list[int | str] = [UNANSWERED] * keys
        self.values: list[bytes] | None = [b""] * keys if reads else None  # a read_many's, one per key
        self.existed: list[bool | None] | None = [None] * keys if deletes else None
        self.left = keys
        self.waiting = False  # some key answers through a slot

    def found(self, index: int, item: Item | None) -> None:
        """Key ``index`` read locally: ``item`` is what a single read would answer."""
        if item is None or item.tombstone:
            self.results[index] = "not_found"
        else:
            self.results[index] = item.version
            if self.values is not None:
                self.values[index] = item.value
        self.left -= 1

    def reply(self) -> Respond:
        """The answer to the whole batch. A read_many's values travel in one frame, one after the
        other, with their lengths in ``sizes`` (one frame, not one per key: each frame costs the
        sender and the receiver more than copying a small value)."""
        if self.values is None:
            existed = UNSET if self.existed is None else self.existed
            return Respond(self.client, Ok(self.request_id, results=self.results, existed=existed))
        if self.keys is not None:
            return self._scan_reply(self.keys, self.values)
        sizes = [len(value) for value in self.values]
        return Respond(self.client, Ok(self.request_id, results=self.results, sizes=sizes), (b"".join(self.values),))


    def _scan_reply(self, keys: list[str], values: list[bytes]) -> Respond:
        """A scan's page: the keys with a value (or an error), not those without one."""
        kept = [i for i, result in enumerate(self.results) if result != "not_found"]
        page_values = [values[i] for i in kept]
        return Respond(self.client, Ok(self.request_id, keys=[keys[i] for i in kept],
                                       results=[self.results[i] for i in kept],
                                       sizes=[len(v) for v in page_values], cursor=self.cursor),
                       (b"".join(page_values),))


@dataclass(frozen=True, slots=True, eq=False)
class Slot:
    """Stands in for the client of one key of a batch."""

    batch: Batch
    index: int


class Batches:
    def __init__(self) -> None:
        self.open = 0  # batches not yet answered: while none is, gather has nothing to do

    def start(self, client: Any, request_id: Any, keys: int, *, reads: bool = False,
              deletes: bool = False, scan: bool = False, cursor: str | None = None) -> Batch:
        batch = Batch(client, request_id, keys, reads, deletes)
        if scan:
            batch.keys, batch.cursor = [], cursor
        return batch

    def slot(self, batch: Batch, index: int) -> Slot:
        """What to pass as key ``index``'s client when its answer comes later."""
        if not batch.waiting:
            batch.waiting = True
            self.open += 1
        return Slot(batch, index)

    def gather(self, effects: list[Effect]) -> list[Effect]:
        """``effects`` with every answer to a slot filed into its batch, and each batch that is
        complete now answered in one reply (where its last key's answer stood)."""
        kept: list[Effect] = []
        for effect in effects:
            if type(effect) is not Respond or type(effect.client) is not Slot:
                kept.append(effect)
                continue
            slot: Slot = effect.client
            batch, index, reply = slot.batch, slot.index, effect.reply
            if batch.results[index] != UNANSWERED:
                continue  # each key is answered once; a second answer would be a bug, not a reply
            if isinstance(reply, Error):
                batch.results[index] = reply.code
            elif type(reply.version) is not int:
                batch.results[index] = "internal"
            else:
                batch.results[index] = reply.version
                if effect.values and batch.values is not None:
                    batch.values[index] = effect.values[0]
                if batch.existed is not None and type(reply.existed) is bool:
                    batch.existed[index] = reply.existed
            batch.left -= 1
            if batch.left == 0:
                self.open -= 1
                kept.append(batch.reply())
        return kept
