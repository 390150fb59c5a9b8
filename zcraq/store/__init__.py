"""Versioned key-value stores for zcraq nodes."""

from __future__ import annotations

from pathlib import Path

from .base import Item, Page, ReplicaStore, Store
from .errors import StoreClosedError, StoreError
from .leveldb import LevelDBStore
from .memory import MemoryStore
from .version_index import DEFAULT_MAX_KEYS

__all__ = [
    "Item",
    "LevelDBStore",
    "MemoryStore",
    "Page",
    "ReplicaStore",
    "Store",
    "StoreClosedError",
    "StoreError",
    "open_store",
]

STORE_KINDS = ("leveldb", "memory")


def open_store(
    kind: str,
    path: str | Path | None = None,
    durability: str = "sync",
    index_max_keys: int = DEFAULT_MAX_KEYS,
) -> Store:
    """Open a store by kind: "leveldb" (needs ``path``) or "memory" (ignores path, durability and
    the version index's cap)."""
    if kind == "memory":
        return MemoryStore()
    if kind == "leveldb":
        if path is None:
            raise ValueError("a leveldb store needs a path")
        return LevelDBStore(path, durability, index_max_keys)
    raise ValueError(f"unknown store kind {kind!r}; expected one of {STORE_KINDS}")
