"""The LevelDB store against the memory store as a model: the same random operations (puts,
commits, prunes, deletes, flushes, restarts and crashes) on both, every answer compared.

LevelDB runs with its version index large, tiny (2 keys: keys keep falling out and are found again
by iterating) and off, so each way of knowing a key's versions is held to the model's answers.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from zcraq.store import LevelDBStore, MemoryStore
from zcraq.store.base import Item, Page
from zcraq.store.version_index import DEFAULT_MAX_KEYS

pytestmark = pytest.mark.timeout(120)

KEYS = ["", "a", "a\x00", "a\x00b", "a\x00\xff", "b", "\x00", "é", "k1", "k2", "k3", "k10"]
MAX_VERSION = 12  # small, so versions collide, go stale and come back
STEPS = 400
SEEDS = range(12)


class Pair:
    """The model and the store under test, driven together."""

    def __init__(self, path: Path, cap: int) -> None:
        self.path = path
        self.cap = cap
        self.model = MemoryStore()
        self.store = LevelDBStore(path, "async", index_max_keys=cap)

    def reopen(self) -> None:
        self.model.close()
        self.model = self.model.crash_copy()
        self.store.close()
        self.store = LevelDBStore(self.path, "async", index_max_keys=self.cap)

    def crash(self) -> None:
        model = self.model.crash_copy()
        self.model.close()
        self.model = model
        self.store.close_without_flush()
        self.store = LevelDBStore(self.path, "async", index_max_keys=self.cap)

    def both(self, method: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        expected = getattr(self.model, method)(*args, **kwargs)
        got = getattr(self.store, method)(*args, **kwargs)
        if method == "dirty_items":
            expected, got = list(expected), list(got)
        return expected, got


def committed_pages(store: MemoryStore | LevelDBStore, after: str | None, limit: int) -> list[Page]:
    pages = []
    while True:
        page = store.committed_page(after, limit)
        pages.append(page)
        if page.cursor is None:
            return pages
        after = page.cursor


def step(pair: Pair, rng: random.Random) -> tuple[str, Any, Any]:
    """One random operation on both; returns what it was and the two answers."""
    key = rng.choice(KEYS)
    version = rng.randint(1, MAX_VERSION)
    op = rng.choices(
        ["put", "commit", "prune", "delete", "drop", "flush", "reopen", "crash", "read", "pages"],
        weights=[30, 15, 4, 3, 1, 6, 2, 2, 20, 2],
    )[0]
    match op:
        case "put":
            value = rng.randbytes(rng.randint(0, 3))
            flags = {"committed": rng.random() < 0.3, "tombstone": rng.random() < 0.2}
            return (f"put({key!r}, {version}, {value!r}, {flags})", *pair.both("put", key, version, value, **flags))
        case "commit":
            return (f"commit({key!r}, {version})", *pair.both("commit", key, version))
        case "prune":
            return (f"prune({key!r}, {version})", *pair.both("prune", key, version))
        case "delete":
            return (f"delete({key!r})", *pair.both("delete", key))
        case "drop":
            return ("drop_uncommitted()", *pair.both("drop_uncommitted"))
        case "flush":
            return ("flush()", *pair.both("flush"))
        case "reopen":
            pair.reopen()
            return "reopen", None, None
        case "crash":
            pair.crash()
            return "crash", None, None
        case "read":
            reads = (
                ("latest", key),
                ("latest_committed", key),
                ("versions", key),
                ("get", key, version),
            )
            expected, got = zip(*(pair.both(*read) for read in reads))
            return f"reads of {key!r} (and version {version})", expected, got
        case _:
            after = rng.choice([None, *KEYS])
            limit = rng.randint(1, 4)
            expected = committed_pages(pair.model, after, limit), list(pair.model.dirty_items())
            got = committed_pages(pair.store, after, limit), list(pair.store.dirty_items())
            return f"committed pages after {after!r} by {limit}, dirty items", expected, got


def everything(store: MemoryStore | LevelDBStore) -> dict[str, list[Item | None] | list[int]]:
    return {
        **{f"latest {k!r}": [store.latest(k), store.latest_committed(k)] for k in KEYS},
        **{f"versions {k!r}": store.versions(k) for k in KEYS},
        "dirty": list(store.dirty_items()),
        "committed": [it for page in committed_pages(store, None, 1000) for it in page.items],
    }


@pytest.mark.parametrize("cap", [DEFAULT_MAX_KEYS, 2, 0], ids=["index", "index2", "noindex"])
@pytest.mark.parametrize("seed", SEEDS)
def test_leveldb_answers_as_the_model_does(tmp_path: Path, cap: int, seed: int) -> None:
    rng = random.Random(seed)
    pair = Pair(tmp_path / "db", cap)
    try:
        for n in range(STEPS):
            what, expected, got = step(pair, rng)
            assert got == expected, f"seed {seed}, step {n}: {what}"
        assert everything(pair.store) == everything(pair.model), f"seed {seed}, at the end"
        pair.reopen()
        assert everything(pair.store) == everything(pair.model), f"seed {seed}, after a restart"
    finally:
        pair.store.close()


def test_the_operations_reach_every_case(tmp_path: Path) -> None:
    """The random operations are not idle: puts and commits both succeed and are refused, and
    versions are pruned, deleted and dropped, so the comparison covers each outcome."""
    outcomes: dict[str, set[object]] = {}
    for seed in SEEDS:
        rng = random.Random(seed)
        pair = Pair(tmp_path / f"db{seed}", 2)
        try:
            for _ in range(STEPS):
                what, expected, _ = step(pair, rng)
                outcomes.setdefault(what.split("(")[0], set()).add(expected if isinstance(expected, bool) else bool(expected))
        finally:
            pair.store.close()
    assert outcomes["put"] == outcomes["commit"] == {True, False}
    assert True in outcomes["prune"] and True in outcomes["drop_uncommitted"]
    assert {"reopen", "crash", "delete", "flush"} <= set(outcomes)
