"""A coordinator's saved state as one document in the engine, written only by the leader.

The same JSON object a coordinator saves in ``state.json`` (zcraq/coordinator.py) lives under one
key. Each write is a transaction conditioned on two things: the key was last written at the
revision this coordinator read or wrote it at (the state it computed from is the newest), and the
leader key is still the one it created (``Leadership.fence``). Either failing means another
coordinator has decided since: the write is refused with ``StateConflict`` and the coordinator
must stop deciding. So two coordinators can never both extend the same state.
"""

from __future__ import annotations

from typing import Any

import orjson

from zcraq.engine.etcd import EtcdClient, get_op, mod_revision_is, put_op
from zcraq.engine.leadership import Leadership


class StateConflict(Exception):
    """The state was not written: this coordinator no longer leads, or another wrote it since."""


class EngineState:
    """``key``: where the document lives (one per cluster)."""

    def __init__(self, client: EtcdClient, key: bytes, leadership: Leadership) -> None:
        self.client, self.key, self.leadership = client, key, leadership
        self.revision = 0  # of the document as last read or written (0: absent)

    def read(self) -> dict[str, Any] | None:
        """The document (None: a new cluster), remembered as the base of the next write."""
        found, _ = self.client.get(self.key)
        self.revision = found.mod_revision if found is not None else 0
        if found is None:
            return None
        try:
            state = orjson.loads(found.value)
        except orjson.JSONDecodeError as error:
            raise ValueError(f"the coordinator state in the engine ({self.key.decode(errors='replace')}) is not "
                             f"JSON: {error}") from None
        if not isinstance(state, dict):
            raise ValueError(f"the coordinator state in the engine ({self.key.decode(errors='replace')}) is not a "
                             f"JSON object")
        return state

    def write(self, state: dict[str, Any]) -> None:
        """Replace the document, if we lead and it is still the one we read or wrote last."""
        if not self.leadership.leading:
            raise StateConflict("not written: this coordinator's leadership has run out")
        result = self.client.txn([mod_revision_is(self.key, self.revision), self.leadership.fence()],
                                 [put_op(self.key, orjson.dumps(state))], [get_op(self.key)])
        if not result.succeeded:
            found = result.kvs(0)
            raise StateConflict(f"not written: the state is at revision {found[0].mod_revision if found else 0}, not "
                                f"{self.revision}, or another coordinator leads")
        self.revision = result.revision


__all__ = ["EngineState", "StateConflict"]
