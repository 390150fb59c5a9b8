"""The conformance suite every store must pass.

Each check is a plain function taking a ``StoreFactory`` and raising ``AssertionError`` on failure,
so any test runner can drive it. To run it against a new store::

    from zcraq.store.conformance import CHECKS, FreshFactory, PathFactory

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_conformance(check, tmp_path):
        factory = PathFactory(tmp_path, MyStore)   # or FreshFactory(MyStore) if not persistent
        try:
            check(factory)
        finally:
            factory.close_all()

``StoreFactory.new()`` returns a fresh, empty store. ``StoreFactory.reopen()`` closes the store
most recently returned and opens the same storage again, or returns None when the store does not
persist; checks about persistence then return early (they pass vacuously). ``crash_reopen()`` is
``reopen()`` after a crash: the store is dropped without a flush, so what was not flushed is lost
(None when the factory cannot crash its stores).

Call ``pytest.register_assert_rewrite("zcraq.store.conformance")`` before importing this module to
get pytest's detailed assertion messages.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .base import Item, Page, Store


class StoreFactory(Protocol):
    def new(self) -> Store:
        """A fresh, empty, open store."""

    def reopen(self) -> Store | None:
        """Close the store last returned by new()/reopen() and open its storage again;
        None when the store kind does not persist."""

    def crash_reopen(self) -> Store | None:
        """Drop the store last returned without flushing it, as a crash would, and open its
        storage again; None when the store kind does not persist or cannot be crashed."""


class FreshFactory:
    """A factory for stores that do not persist: ``reopen()`` always returns None."""

    def __init__(self, make: Callable[[], Store]) -> None:
        self._make = make
        self._opened: list[Store] = []

    def new(self) -> Store:
        store = self._make()
        self._opened.append(store)
        return store

    def reopen(self) -> Store | None:
        return None

    def crash_reopen(self) -> Store | None:
        return None

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


class PathFactory:
    """A factory for stores living in a directory: each ``new()`` gets its own directory under
    ``root`` and ``reopen()`` opens the last one again. ``crash`` releases a store the way a crash
    would (losing what was not flushed); without it ``crash_reopen()`` returns None."""

    def __init__(
        self,
        root: Path,
        open_at: Callable[[Path], Store],
        crash: Callable[[Store], None] | None = None,
    ) -> None:
        self._root = root
        self._open_at = open_at
        self._crash = crash
        self._opened: list[Store] = []
        self._last: tuple[Path, Store] | None = None

    def new(self) -> Store:
        path = self._root / f"store-{len(self._opened)}"
        return self._open(path)

    def reopen(self) -> Store | None:
        if self._last is None:
            raise RuntimeError("reopen() before new()")
        path, store = self._last
        store.close()
        return self._open(path)

    def crash_reopen(self) -> Store | None:
        if self._last is None:
            raise RuntimeError("crash_reopen() before new()")
        if self._crash is None:
            return None
        path, store = self._last
        self._crash(store)
        return self._open(path)

    def close_all(self) -> None:
        for store in self._opened:
            store.close()

    def _open(self, path: Path) -> Store:
        store = self._open_at(path)
        self._opened.append(store)
        self._last = (path, store)
        return store


Check = Callable[[StoreFactory], None]


# -- helpers -------------------------------------------------------------------------------------


def _all_committed(store: Store, limit: int = 1000) -> list[Item]:
    items: list[Item] = []
    cursor: str | None = None
    while True:
        page = store.committed_page(cursor, limit)
        items.extend(page.items)
        if page.cursor is None:
            return items
        cursor = page.cursor


def _snapshot(store: Store, keys: list[str]) -> dict[str, object]:
    return {
        "items": {k: [store.get(k, v) for v in store.versions(k)] for k in keys},
        "latest": {k: store.latest(k) for k in keys},
        "committed": _all_committed(store),
        "dirty": list(store.dirty_items()),
    }


def _utf8_order(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


# -- basics --------------------------------------------------------------------------------------


def check_put_and_get(factory: StoreFactory) -> None:
    s = factory.new()
    assert s.put("k", 1, b"one") is True
    assert s.get("k", 1) == Item("k", 1, b"one", committed=False, tombstone=False)
    assert s.get("k", 2) is None
    assert s.get("missing", 1) is None
    assert s.latest("missing") is None
    assert s.latest_committed("missing") is None
    assert s.versions("missing") == []
    assert s.latest("k") == Item("k", 1, b"one")
    assert s.latest_committed("k") is None


def check_latest_and_latest_committed(factory: StoreFactory) -> None:
    s = factory.new()
    s.put("k", 1, b"one")
    assert s.commit("k", 1) is True
    s.put("k", 2, b"two")
    assert s.latest("k") == Item("k", 2, b"two")
    assert s.latest_committed("k") == Item("k", 1, b"one", committed=True)
    assert s.versions("k") == [1, 2]


def check_latest_version(factory: StoreFactory) -> None:
    s = factory.new()
    assert s.latest_version("k") is None
    s.put("k", 1, b"one", committed=True)
    s.put("k", 2, b"two")
    assert s.latest_version("k") == (2, False)
    s.put("k", 3, b"", tombstone=True)
    assert s.latest_version("k") == (3, True)
    s.flush()
    s.commit("k", 3)
    assert s.latest_version("k") == (3, True) and s.latest_version("other") is None


def check_versions_order_numerically(factory: StoreFactory) -> None:
    s = factory.new()
    for v in (2, 10, 9):
        assert s.put("k", v, str(v).encode())
    assert s.versions("k") == [2, 9, 10]
    assert s.latest("k") == Item("k", 10, b"10")
    # Byte boundaries of the on-disk encoding and the largest allowed version.
    big = [255, 256, 65535, 65536, 2**32, 2**63, 2**64 - 1]
    for v in reversed(big):
        assert s.put("k", v, b"")
    assert s.versions("k") == [2, 9, 10, *big]
    assert s.latest("k") == Item("k", 2**64 - 1, b"")
    assert s.commit("k", 256)
    assert s.versions("k") == big[1:]
    assert s.latest_committed("k") == Item("k", 256, b"", committed=True)


def check_keys_never_mix(factory: StoreFactory) -> None:
    s = factory.new()
    keys = ["", "a", "a\x00", "a\x00\x00", "a\x00b", "a\x01", "ab", "b", "\x00"]
    for i, key in enumerate(keys):
        for v in (i + 1, i + 100):
            assert s.put(key, v, key.encode() + b"|" + str(v).encode())
        assert s.commit(key, i + 1)
    for i, key in enumerate(keys):
        assert s.versions(key) == [i + 1, i + 100], key
        assert s.latest(key) == Item(key, i + 100, key.encode() + b"|" + str(i + 100).encode())
        assert s.latest_committed(key) == Item(
            key, i + 1, key.encode() + b"|" + str(i + 1).encode(), committed=True
        )
    assert [it.key for it in _all_committed(s)] == _utf8_order(keys)
    assert [(it.key, it.version) for it in s.dirty_items()] == [
        (k, keys.index(k) + 100) for k in _utf8_order(keys)
    ]
    s.delete("a")
    assert s.versions("a") == []
    for i, key in enumerate(keys):
        if key != "a":
            assert s.versions(key) == [i + 1, i + 100], key
    assert s.prune("a\x00", 10**6) == 2
    assert s.versions("a\x00b") == [keys.index("a\x00b") + 1, keys.index("a\x00b") + 100]
    assert s.versions("a\x00\x00") == [keys.index("a\x00\x00") + 1, keys.index("a\x00\x00") + 100]


# -- put and commit rules ------------------------------------------------------------------------


def check_put_rejects_held_versions(factory: StoreFactory) -> None:
    s = factory.new()
    assert s.put("k", 1, b"first")
    assert s.put("k", 1, b"second") is False
    assert s.get("k", 1) == Item("k", 1, b"first")
    assert s.put("k", 2, b"x")
    assert s.put("k", 2, b"y", committed=True) is False
    assert s.get("k", 2) == Item("k", 2, b"x")
    assert s.put("k", 2, b"y", tombstone=True) is False
    assert s.versions("k") == [1, 2]


def check_put_rejects_versions_not_newer_than_committed(factory: StoreFactory) -> None:
    s = factory.new()
    s.put("k", 5, b"five")
    s.commit("k", 5)
    assert s.put("k", 3, b"late duplicate") is False
    assert s.put("k", 5, b"again") is False
    assert s.put("k", 4, b"old", committed=True) is False
    assert s.put("k", 3, b"old", tombstone=True) is False
    assert s.versions("k") == [5]
    assert s.latest_committed("k") == Item("k", 5, b"five", committed=True)
    assert s.put("k", 6, b"six")
    assert s.versions("k") == [5, 6]


def check_commit_prunes_older_keeps_newer(factory: StoreFactory) -> None:
    s = factory.new()
    s.put("k", 1, b"1", committed=True)
    for v in (2, 3, 4):
        s.put("k", v, str(v).encode())
    assert s.commit("k", 3) is True
    assert s.versions("k") == [3, 4]
    assert s.get("k", 3) == Item("k", 3, b"3", committed=True)
    assert s.get("k", 4) == Item("k", 4, b"4")
    assert s.get("k", 1) is None and s.get("k", 2) is None
    assert s.latest_committed("k") == Item("k", 3, b"3", committed=True)


def check_commits_out_of_order(factory: StoreFactory) -> None:
    s = factory.new()
    for v in (3, 4, 5):
        s.put("k", v, str(v).encode())
    assert s.commit("k", 5) is True
    before = _snapshot(s, ["k"])
    assert s.commit("k", 3) is False
    assert s.commit("k", 4) is False
    assert s.put("k", 3, b"3") is False
    assert s.put("k", 4, b"4", committed=True) is False
    assert _snapshot(s, ["k"]) == before
    assert s.latest_committed("k") == Item("k", 5, b"5", committed=True)
    assert s.versions("k") == [5]


def check_commit_is_idempotent(factory: StoreFactory) -> None:
    s = factory.new()
    assert s.commit("k", 1) is False  # not held
    assert s.versions("k") == []
    s.put("k", 1, b"1")
    s.put("k", 2, b"2")
    assert s.commit("k", 1) is True
    before = _snapshot(s, ["k"])
    assert s.commit("k", 1) is False
    assert s.commit("k", 7) is False  # not held
    assert _snapshot(s, ["k"]) == before


def check_put_committed(factory: StoreFactory) -> None:
    s = factory.new()
    assert s.put("k", 1, b"1", committed=True) is True
    assert s.latest_committed("k") == Item("k", 1, b"1", committed=True)
    s.put("k", 2, b"2")
    s.put("k", 4, b"4")
    # Stored committed, prunes older versions dirty or committed, keeps newer dirty ones.
    assert s.put("k", 3, b"3", committed=True) is True
    assert s.versions("k") == [3, 4]
    assert s.latest_committed("k") == Item("k", 3, b"3", committed=True)
    assert s.latest("k") == Item("k", 4, b"4")
    assert s.put("k", 2, b"2", committed=True) is False
    assert s.put("k", 4, b"4", committed=True) is False  # already held: commit() it instead
    assert s.put("k", 5, b"5", committed=True) is True
    assert s.versions("k") == [5]


# -- tombstones, prune, delete -------------------------------------------------------------------


def check_tombstones(factory: StoreFactory) -> None:
    s = factory.new()
    s.put("k", 1, b"alive", committed=True)
    assert s.put("k", 2, b"", tombstone=True)
    assert s.latest("k") == Item("k", 2, b"", tombstone=True)
    assert s.latest_committed("k") == Item("k", 1, b"alive", committed=True)
    assert s.commit("k", 2)
    dead = Item("k", 2, b"", committed=True, tombstone=True)
    assert s.latest_committed("k") == dead
    assert s.versions("k") == [2]
    assert _all_committed(s) == [dead]
    # The deletion takes part in versioning: its version cannot be reused.
    assert s.put("k", 2, b"again") is False
    assert s.put("k", 3, b"reborn")
    s.put("gone", 7, b"", committed=True, tombstone=True)
    assert s.latest_committed("gone") == Item("gone", 7, b"", committed=True, tombstone=True)
    assert [it.key for it in _all_committed(s)] == ["gone", "k"]


def check_prune(factory: StoreFactory) -> None:
    s = factory.new()
    for v in range(1, 6):
        s.put("k", v, str(v).encode())
    s.commit("k", 2)
    s.put("other", 1, b"o")
    assert s.prune("k", 4) == 2  # the committed 2 and the dirty 3
    assert s.versions("k") == [4, 5]
    assert s.latest_committed("k") is None
    assert s.prune("k", 4) == 0
    assert s.prune("missing", 10) == 0
    assert s.versions("other") == [1]
    assert s.prune("k", 100) == 2
    assert s.versions("k") == [] and s.latest("k") is None


def check_delete(factory: StoreFactory) -> None:
    s = factory.new()
    s.put("k", 1, b"1", committed=True)
    s.put("k", 2, b"2")
    s.put("keep", 1, b"k", committed=True)
    s.delete("k")
    assert s.versions("k") == [] and s.latest("k") is None and s.latest_committed("k") is None
    assert [it.key for it in _all_committed(s)] == ["keep"]
    assert list(s.dirty_items()) == []
    s.delete("missing")  # no error
    assert s.put("k", 1, b"fresh")  # nothing held any more, so nothing blocks it
    assert s.latest("k") == Item("k", 1, b"fresh")


# -- scans ---------------------------------------------------------------------------------------


def check_committed_page_pages_many_keys(factory: StoreFactory) -> None:
    s = factory.new()
    expected: dict[str, Item] = {}
    for i in range(2500):
        key = f"k{i}"  # string order differs from numeric order on purpose
        if i % 7 == 0:
            s.put(key, 1, b"dirty only")
            continue
        s.put(key, 1, b"old", committed=True)
        s.put(key, 2, f"v{i}".encode())
        s.commit(key, 2)
        expected[key] = Item(key, 2, f"v{i}".encode(), committed=True)
        if i % 3 == 0:
            s.put(key, 3, b"newer dirty")
        if i % 300 == 0:
            s.flush()  # leave a mix of flushed and buffered data
    pages: list[Page] = []
    cursor: str | None = None
    while True:
        page = s.committed_page(cursor, 1000)
        pages.append(page)
        assert len(page.items) <= 1000
        if page.cursor is None:
            break
        assert page.cursor == page.items[-1].key
        cursor = page.cursor
        assert len(pages) < 10, "paging does not terminate"
    got = [it for p in pages for it in p.items]
    assert [it.key for it in got] == _utf8_order(list(expected))
    assert got == [expected[k] for k in _utf8_order(list(expected))]
    assert [len(p.items) for p in pages] == [1000, 1000, len(expected) - 2000]


def check_committed_share_along_the_pages(factory: StoreFactory) -> None:
    """The estimate a catch-up page carries: None, or 0..1 and never going back along the pages
    of an unchanged store. Persistent stores are reopened first, so the data is where a store
    that weighs it on disk can see it."""
    s = factory.new()
    _share_or_none(s.committed_share("k"))  # empty: None, or a share all the same
    for i in range(3000):
        s.put(f"k{i:05d}", 1, b"v" * 100, committed=True)
        if i % 5 == 0:
            s.put(f"k{i:05d}", 2, b"dirty")
    s.flush()
    s = factory.reopen() or s
    shares: list[float] = []
    cursor: str | None = None
    while True:
        page = s.committed_page(cursor, 250)
        share = _share_or_none(s.committed_share(page.items[-1].key))
        if share is not None:
            shares.append(share)
        if page.cursor is None:
            break
        cursor = page.cursor
    assert shares == sorted(shares), f"the estimate went back along the pages: {shares}"
    for key in ("", "a", "k00000", "k99999", "z"):  # any key, held or not
        _share_or_none(s.committed_share(key))


def _share_or_none(share: float | None) -> float | None:
    assert share is None or (isinstance(share, float) and 0.0 <= share <= 1.0), f"not None nor 0..1: {share!r}"
    return share


def check_committed_page_edges(factory: StoreFactory) -> None:
    s = factory.new()
    assert s.committed_page(None, 10) == Page([], None)
    for key in ("a", "c", "e"):
        s.put(key, 1, key.encode(), committed=True)
    s.put("d", 1, b"dirty")
    a, c, e = (Item(k, 1, k.encode(), committed=True) for k in "ace")
    # A full last page still ends with cursor None.
    assert s.committed_page(None, 3) == Page([a, c, e], None)
    assert s.committed_page(None, 2) == Page([a, c], "c")
    assert s.committed_page("c", 2) == Page([e], None)
    # The cursor need not be a key the store holds.
    assert s.committed_page("b", 10) == Page([c, e], None)
    assert s.committed_page("", 1) == Page([a], "a")
    assert s.committed_page("e", 10) == Page([], None)
    assert s.committed_page("z", 10) == Page([], None)
    # A cursor that is a prefix of held keys excludes only itself.
    s.put("c\x00", 1, b"x", committed=True)
    s.put("cc", 1, b"y", committed=True)
    assert [it.key for it in s.committed_page("c", 10).items] == ["c\x00", "cc", "e"]


def check_committed_rows_are_the_committed_page(factory: StoreFactory) -> None:
    s = factory.new()
    for i in range(30):
        s.put(f"k{i:02d}", 1, b"old", committed=True)
        if i % 3:
            s.put(f"k{i:02d}", 2, f"v{i}".encode(), tombstone=i % 5 == 0)
            s.commit(f"k{i:02d}", 2)
        if i % 4 == 0:
            s.put(f"k{i:02d}", 3, b"dirty")
        if i == 15:
            s.flush()  # some on disk, some buffered
    s.put("dirty only", 1, b"x")
    for after, limit in ((None, 7), ("k06", 7), ("k20", 100), ("k29", 3), (None, 1)):
        page, rows = s.committed_page(after, limit), s.committed_rows(after, limit)
        assert rows.cursor == page.cursor
        assert rows.rows == [(i.key, i.version, i.value, i.tombstone) for i in page.items]


def check_put_committed_is_a_committed_put_per_row(factory: StoreFactory) -> None:
    s = factory.new()
    s.put("live", 5, b"live", committed=True)
    s.put("older", 1, b"1", committed=True)
    s.put("older", 4, b"dirty")
    rows = [("live", 3, b"page", False), ("older", 2, b"page", False), ("new", 7, b"", True),
            ("new", 7, b"again", False), ("older", 4, b"held", False)]
    assert s.put_committed(rows) == 2
    assert s.put_committed([]) == 0
    assert s.latest_committed("live") == Item("live", 5, b"live", committed=True)
    assert s.versions("older") == [2, 4] and s.latest("older") == Item("older", 4, b"dirty")
    assert s.latest_committed("new") == Item("new", 7, b"", committed=True, tombstone=True)
    s.flush()
    s = factory.reopen() or s
    assert s.versions("older") == [2, 4] and s.versions("new") == [7]
    # A bad row raises; the rows before it are stored as their puts would have been.
    try:
        s.put_committed([("before", 1, b"b", False), ("bad", 0, b"x", False), ("after", 1, b"a", False)])
    except ValueError:
        pass
    else:
        raise AssertionError("put_committed accepted version 0")
    assert s.latest_committed("before") == Item("before", 1, b"b", committed=True)
    assert s.versions("bad") == [] and s.versions("after") == []
    s.flush()
    s = factory.reopen() or s
    assert s.latest_committed("before") == Item("before", 1, b"b", committed=True)


def check_keys_in_ranges_and_prefixes(factory: StoreFactory) -> None:
    s = factory.new()
    for key in ("b", "a", "ab", "a\x00z", "abc", "ac", "é", "b2"):
        s.put(key, 1, b"v", committed=True)
    s.put("dirty-only", 1, b"d")  # held only dirty: listed too
    s.put("gone", 1, b"", committed=True, tombstone=True)  # a deletion: listed too
    s.flush()
    s.put("aa", 3, b"unflushed")  # seen before a flush
    s.delete("b2")  # gone entirely: not listed
    # UTF-8 byte order: "a" < "a\x00z" < "aa" < "ab" < ... < "é".
    assert s.keys("", None, "", 100) == ["a", "a\x00z", "aa", "ab", "abc", "ac", "b", "dirty-only", "gone", "é"]
    assert s.keys("", None, "a", 100) == ["a", "a\x00z", "aa", "ab", "abc", "ac"]
    assert s.keys("ab", None, "a", 100) == ["ab", "abc", "ac"]  # start is inclusive
    assert s.keys("", "ab", "a", 100) == ["a", "a\x00z", "aa"]  # end is not
    assert s.keys("", None, "ab", 100) == ["ab", "abc"]
    assert s.keys("aa", None, "", 2) == ["aa", "ab"]
    assert s.keys("zz", None, "", 5) == ["é"] and s.keys("", None, "x", 5) == []
    assert s.keys("", "a", "", 5) == []
    try:
        s.keys("", None, "", 0)
    except ValueError:
        pass
    else:
        raise AssertionError("keys() accepted limit 0")


def check_dirty_items(factory: StoreFactory) -> None:
    s = factory.new()
    s.put("b", 10, b"b10")
    s.put("b", 9, b"b9")
    s.put("a\x00", 2, b"a02")
    s.put("a", 10, b"a10")
    s.put("a", 2, b"a2")
    s.put("c", 1, b"c1", committed=True)
    s.put("c", 5, b"c5", tombstone=True)
    assert list(s.dirty_items()) == [
        Item("a", 2, b"a2"),
        Item("a", 10, b"a10"),
        Item("a\x00", 2, b"a02"),
        Item("b", 9, b"b9"),
        Item("b", 10, b"b10"),
        Item("c", 5, b"c5", tombstone=True),
    ]
    # Mutating while iterating is allowed (recovery commits dirty items as it walks them).
    for item in s.dirty_items():
        s.commit(item.key, item.version)
    assert list(s.dirty_items()) == []


def check_drop_uncommitted(factory: StoreFactory) -> None:
    s = factory.new()
    s.put("a", 1, b"a1", committed=True)
    s.put("a", 2, b"a2")
    s.put("b", 1, b"b1")
    s.put("c", 3, b"c3", committed=True)
    assert s.drop_uncommitted() == 2
    assert list(s.dirty_items()) == []
    assert s.versions("a") == [1] and s.versions("b") == [] and s.versions("c") == [3]
    assert s.latest("a") == s.latest_committed("a") == Item("a", 1, b"a1", committed=True)
    assert s.drop_uncommitted() == 0


# -- buffering and persistence -------------------------------------------------------------------


def check_reads_see_unflushed_writes(factory: StoreFactory) -> None:
    s = factory.new()
    keys = ["a", "b", "c"]
    s.put("a", 1, b"a1", committed=True)
    s.put("b", 1, b"b1")
    s.put("c", 1, b"c1")
    s.put("c", 2, b"c2")
    before = _snapshot(s, keys)
    assert before["committed"] == [Item("a", 1, b"a1", committed=True)]
    s.flush()
    assert _snapshot(s, keys) == before
    # Mutations over flushed data are visible before the next flush.
    s.commit("c", 2)
    s.delete("a")
    s.put("b", 2, b"b2")
    s.prune("b", 2)
    after = _snapshot(s, keys)
    assert after["items"] == {
        "a": [],
        "b": [Item("b", 2, b"b2")],
        "c": [Item("c", 2, b"c2", committed=True)],
    }
    assert after["committed"] == [Item("c", 2, b"c2", committed=True)]
    assert after["dirty"] == [Item("b", 2, b"b2")]
    s.flush()
    assert _snapshot(s, keys) == after
    s.drop_uncommitted()
    assert s.versions("b") == []
    s.flush()
    assert s.versions("b") == []


def check_reopen_keeps_flushed_data(factory: StoreFactory) -> None:
    s = factory.new()
    keys = ["live", "dead", "dirty", "gone", "ü"]
    s.put("live", 1, b"l1", committed=True)
    s.put("live", 2, b"l2")
    s.put("dead", 4, b"", committed=True, tombstone=True)
    s.put("dirty", 9, b"d9")
    s.put("gone", 1, b"g", committed=True)
    s.put("ü", 3, b"\x00\xff", committed=True)
    s.flush()
    s.delete("gone")
    s.commit("live", 2)
    s.flush()
    expected = _snapshot(s, keys)
    reopened = factory.reopen()
    if reopened is None:
        return  # the store does not persist
    assert _snapshot(reopened, keys) == expected
    # Versioning rules hold across the restart.
    assert reopened.put("live", 1, b"stale") is False
    assert reopened.put("live", 3, b"l3")


def check_close_flushes(factory: StoreFactory) -> None:
    s = factory.new()
    s.put("k", 1, b"1", committed=True)
    s.flush()
    s.put("k", 2, b"2")
    s.commit("k", 2)
    s.put("k", 3, b"3")
    expected = _snapshot(s, ["k"])
    reopened = factory.reopen()  # closes s, which must flush
    if reopened is None:
        return
    assert _snapshot(reopened, ["k"]) == expected


def check_overwrites_before_flush(factory: StoreFactory) -> None:
    s = factory.new()
    s.put("k", 1, b"1")
    s.commit("k", 1)
    s.put("k", 2, b"2")
    s.prune("k", 3)
    s.put("k", 3, b"3")
    s.delete("k")
    s.put("k", 1, b"one", committed=True)
    s.put("j", 1, b"j")
    s.delete("j")
    s.flush()
    assert s.versions("k") == [1] and s.versions("j") == []
    reopened = factory.reopen()
    if reopened is None:
        return
    assert reopened.versions("k") == [1] and reopened.versions("j") == []
    assert reopened.get("k", 1) == Item("k", 1, b"one", committed=True)


# -- data ----------------------------------------------------------------------------------------


def check_binary_values(factory: StoreFactory) -> None:
    s = factory.new()
    values = [
        b"",
        b"\x00",
        b"\x00\x00\xff\x00",
        b"\xff\xfe\xfd",  # not UTF-8
        b"\x01\x02",  # looks like a flags byte
        bytes(range(256)),
        bytes(range(256)) * 4096,  # 1 MiB
    ]
    for i, value in enumerate(values):
        s.put(f"v{i}", 1, value, committed=True)
        s.put(f"v{i}", 2, value)
    s.put("t", 1, b"\x00tomb", committed=True, tombstone=True)
    for i, value in enumerate(values):
        assert s.get(f"v{i}", 1) == Item(f"v{i}", 1, value, committed=True)
        assert s.latest(f"v{i}") == Item(f"v{i}", 2, value)
    s.flush()
    for i, value in enumerate(values):
        assert s.latest_committed(f"v{i}") == Item(f"v{i}", 1, value, committed=True)
    assert s.latest_committed("t") == Item("t", 1, b"\x00tomb", committed=True, tombstone=True)
    reopened = factory.reopen()
    if reopened is None:
        return
    for i, value in enumerate(values):
        assert reopened.get(f"v{i}", 2) == Item(f"v{i}", 2, value)


def check_unicode_keys(factory: StoreFactory) -> None:
    s = factory.new()
    keys = ["e", "é", "e\u0301", "ключ", "鍵", "\uffff", "🔑", "a🔑b", "\x7f", "\x80"]
    for i, key in enumerate(keys):
        s.put(key, i + 1, key.encode("utf-8"), committed=True)
    for i, key in enumerate(keys):
        assert s.latest(key) == Item(key, i + 1, key.encode("utf-8"), committed=True)
    assert [it.key for it in _all_committed(s, limit=3)] == _utf8_order(keys)
    s.flush()
    reopened = factory.reopen()
    if reopened is None:
        return
    assert [it.key for it in _all_committed(reopened, limit=3)] == _utf8_order(keys)


def check_rejects_invalid_versions(factory: StoreFactory) -> None:
    s = factory.new()
    for bad in (0, -1, 2**64):
        try:
            s.put("k", bad, b"x")
        except ValueError:
            pass
        else:
            raise AssertionError(f"put accepted version {bad}")
    assert s.versions("k") == []


def check_closed_store_raises(factory: StoreFactory) -> None:
    s = factory.new()
    s.put("k", 1, b"1")
    s.close()
    s.close()  # closing twice is harmless
    calls: list[Callable[[], object]] = [
        lambda: s.put("k", 2, b"2"),
        lambda: s.get("k", 1),
        lambda: s.latest("k"),
        lambda: s.committed_page(None, 10),
        lambda: s.committed_rows(None, 10),
        lambda: s.put_committed([("k", 3, b"3", False)]),
        lambda: s.committed_share("k"),
        lambda: list(s.dirty_items()),
        s.flush,
    ]
    for call in calls:
        try:
            call()
        except RuntimeError:
            pass
        else:
            raise AssertionError("a closed store accepted a call")


# -- many keys, restarts and crashes (a store that remembers per key what it holds must keep it
# -- right when it forgets some keys, and rebuild it after a restart) ------------------------------

_MANY_KEYS = [f"k{i}" for i in range(12)] + ["", "\x00", "k\x00", "k\x00\x00", "k\x00\xff", "ü\x00"]


def check_many_keys_in_turns(factory: StoreFactory) -> None:
    """Every key written, then changed again in another order: a store that keeps only a few keys'
    versions at hand must find the others again, before and after a flush."""
    s = factory.new()
    for i, key in enumerate(_MANY_KEYS):
        assert s.put(key, 1, f"{i}.1".encode(), committed=True)
        assert s.put(key, 2, f"{i}.2".encode())
        assert s.put(key, 3, f"{i}.3".encode(), tombstone=True)
    for turn, order in enumerate((_MANY_KEYS[::-1], _MANY_KEYS[::2] + _MANY_KEYS[1::2])):
        for key in order:
            assert s.versions(key) == [1, 2, 3], (turn, key)
        if turn == 0:
            s.flush()
    for i, key in enumerate(_MANY_KEYS):
        match i % 4:
            case 0:
                assert s.commit(key, 2) and s.versions(key) == [2, 3]
            case 1:
                assert s.put(key, 4, b"late", committed=True) and s.versions(key) == [4]
            case 2:
                assert s.prune(key, 3) == 2 and s.versions(key) == [3]
            case 3:
                s.delete(key)
    for i, key in reversed(list(enumerate(_MANY_KEYS))):
        value = f"{i}.2".encode()
        match i % 4:
            case 0:
                assert s.latest_committed(key) == Item(key, 2, value, committed=True)
                assert s.latest(key) == Item(key, 3, f"{i}.3".encode(), tombstone=True)
                assert s.put(key, 1, b"stale") is False and s.commit(key, 2) is False
            case 1:
                assert s.latest(key) == s.latest_committed(key) == Item(key, 4, b"late", committed=True)
                assert s.put(key, 3, b"stale") is False
            case 2:
                assert s.latest_committed(key) is None
                assert s.latest(key) == Item(key, 3, f"{i}.3".encode(), tombstone=True)
                assert s.put(key, 1, b"again") is True  # nothing committed holds it back
            case 3:
                assert s.latest(key) is None and s.versions(key) == []
                assert s.put(key, 2, b"fresh") is True
    expected_dirty = [
        (k, v) for k in _utf8_order(_MANY_KEYS) for v in {0: [3], 1: [], 2: [1, 3], 3: [2]}[_MANY_KEYS.index(k) % 4]
    ]
    assert [(it.key, it.version) for it in s.dirty_items()] == expected_dirty
    assert [it.key for it in _all_committed(s, limit=5)] == _utf8_order(
        [k for i, k in enumerate(_MANY_KEYS) if i % 4 in (0, 1)]
    )
    assert s.drop_uncommitted() == len(expected_dirty)
    assert list(s.dirty_items()) == []
    for i, key in enumerate(_MANY_KEYS):
        assert s.versions(key) == {0: [2], 1: [4], 2: [], 3: []}[i % 4], key


def check_reopen_rebuilds_what_each_key_holds(factory: StoreFactory) -> None:
    """After a restart every key's versions, flags and dirty state are what was flushed, and the
    versioning rules go on from there."""
    s = factory.new()
    for i, key in enumerate(_MANY_KEYS):
        if i % 3 != 2:
            s.put(key, 10, f"{i}".encode(), committed=True, tombstone=i % 5 == 0)
        if i % 3 != 0:
            s.put(key, 11 + i, f"dirty {i}".encode())
            s.put(key, 12 + i, f"dirtier {i}".encode(), tombstone=True)
    s.flush()
    expected = _snapshot(s, _MANY_KEYS)
    reopened = factory.reopen()
    if reopened is None:
        return
    assert _snapshot(reopened, _MANY_KEYS) == expected
    for i, key in enumerate(_MANY_KEYS):
        if i % 3 != 2:
            assert reopened.put(key, 10, b"again") is False
        if i % 3 != 0:
            assert reopened.commit(key, 11 + i) is True
            assert reopened.versions(key) == [11 + i, 12 + i]
            assert reopened.commit(key, 11 + i) is False
    assert [(it.key, it.version) for it in reopened.dirty_items()] == [
        (k, 12 + _MANY_KEYS.index(k)) for k in _utf8_order(_MANY_KEYS) if _MANY_KEYS.index(k) % 3 != 0
    ]


def check_dirty_versions_survive_a_restart(factory: StoreFactory) -> None:
    """Versions left dirty by the previous run are listed (and dropped) after a restart, among more
    keys than a store might keep at hand."""
    s = factory.new()
    for i in range(40):
        s.put(f"key{i:02d}", 1, b"clean", committed=True)
        if i % 7 == 3:
            s.put(f"key{i:02d}", 2, b"left dirty")
    s.flush()
    reopened = factory.reopen()
    if reopened is None:
        return
    dirty = [f"key{i:02d}" for i in range(40) if i % 7 == 3]
    assert [(it.key, it.version, it.value) for it in reopened.dirty_items()] == [
        (k, 2, b"left dirty") for k in dirty
    ]
    for i in range(40):  # every key used once more, in an order unlike the one on disk
        assert reopened.latest_committed(f"key{39 - i:02d}") == Item(f"key{39 - i:02d}", 1, b"clean", committed=True)
    assert reopened.drop_uncommitted() == len(dirty)
    reopened.flush()
    again = factory.reopen()
    assert again is not None
    assert list(again.dirty_items()) == [] and again.drop_uncommitted() == 0
    assert all(again.versions(f"key{i:02d}") == [1] for i in range(40))


def check_crash_loses_unflushed_mutations(factory: StoreFactory) -> None:
    """A crash keeps what was flushed and nothing else; what a store knows of each key after it is
    what was flushed."""
    s = factory.new()
    keys = ["kept", "dirty", "gone", "a\x00b", "new"]
    s.put("kept", 1, b"k1", committed=True)
    s.put("kept", 2, b"k2")
    s.put("dirty", 5, b"d5")
    s.put("gone", 1, b"g1", committed=True)
    s.put("a\x00b", 3, b"nul", committed=True)
    s.flush()
    expected = _snapshot(s, keys)
    s.commit("kept", 2)
    s.put("kept", 3, b"k3")
    s.delete("gone")
    s.drop_uncommitted()
    s.put("new", 1, b"n1", committed=True)
    s.prune("a\x00b", 10)
    crashed = factory.crash_reopen()
    if crashed is None:
        return
    assert _snapshot(crashed, keys) == expected
    assert crashed.put("kept", 1, b"stale") is False
    assert crashed.put("new", 1, b"n1 again") is True
    assert crashed.commit("kept", 2) is True and crashed.versions("kept") == [2]
    assert crashed.latest_committed("gone") == Item("gone", 1, b"g1", committed=True)
    assert [it.key for it in crashed.dirty_items()] == ["dirty", "new"]


CHECKS: list[Check] = [
    check_put_and_get,
    check_latest_and_latest_committed,
    check_latest_version,
    check_versions_order_numerically,
    check_keys_never_mix,
    check_put_rejects_held_versions,
    check_put_rejects_versions_not_newer_than_committed,
    check_commit_prunes_older_keeps_newer,
    check_commits_out_of_order,
    check_commit_is_idempotent,
    check_put_committed,
    check_tombstones,
    check_prune,
    check_delete,
    check_committed_page_pages_many_keys,
    check_committed_page_edges,
    check_committed_share_along_the_pages,
    check_committed_rows_are_the_committed_page,
    check_put_committed_is_a_committed_put_per_row,
    check_keys_in_ranges_and_prefixes,
    check_dirty_items,
    check_drop_uncommitted,
    check_reads_see_unflushed_writes,
    check_reopen_keeps_flushed_data,
    check_close_flushes,
    check_overwrites_before_flush,
    check_many_keys_in_turns,
    check_reopen_rebuilds_what_each_key_holds,
    check_dirty_versions_survive_a_restart,
    check_crash_loses_unflushed_mutations,
    check_binary_values,
    check_unicode_keys,
    check_rejects_invalid_versions,
    check_closed_store_raises,
]


def run_all(make_factory: Callable[[], StoreFactory]) -> None:
    """Run every check, each with its own factory (closed afterwards if it has ``close_all``)."""
    for check in CHECKS:
        factory = make_factory()
        try:
            check(factory)
        finally:
            close_all = getattr(factory, "close_all", None)
            if close_all is not None:
                close_all()
