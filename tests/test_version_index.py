"""The version index on its own: entries, the least-recently-used cap, completeness, dirty keys,
and what it costs in memory. (The store's behaviour with it is tests/test_store.py's conformance
suite and tests/test_store_model.py.)"""

from __future__ import annotations

import tracemalloc

import pytest

from zcraq.store.version_index import (
    COMMITTED,
    TOMBSTONE,
    VersionIndex,
    below,
    find,
    is_dirty,
    newest_committed,
    pack,
    version_of,
)

pytestmark = pytest.mark.timeout(60)


def test_entries_order_by_version_whatever_the_flags() -> None:
    entry = (pack(3, COMMITTED), pack(4, TOMBSTONE), pack(9, 0), pack(2**64 - 1, COMMITTED | TOMBSTONE))
    assert entry == tuple(sorted(entry))
    assert [version_of(p) for p in entry] == [3, 4, 9, 2**64 - 1]
    assert [find(entry, v) for v in (3, 4, 9, 2**64 - 1, 1, 5, 10, 2**64)] == [0, 1, 2, 3, -1, -1, -1, -1]
    assert [below(entry, v) for v in (0, 3, 4, 5, 2**64)] == [0, 0, 1, 2, 4]
    assert newest_committed(entry) == 3 and newest_committed(entry[1:3]) == -1 and newest_committed(()) == -1
    assert is_dirty(entry) and not is_dirty(entry[:1]) and not is_dirty(())


def test_the_least_recently_used_key_falls_out() -> None:
    index = VersionIndex(2)
    assert index.complete and index.get("a") == ()  # complete: unknown means holds nothing
    index.set("a", (pack(1, COMMITTED),))
    index.set("b", (pack(1, COMMITTED),))
    assert index.get("a") == (pack(1, COMMITTED),)  # a is now the most recently used
    index.set("c", (pack(2, COMMITTED),))
    assert len(index) == 2 and not index.complete
    assert index.get("b") is None  # fell out: not known any more, nor assumed empty
    assert index.get("a") is not None and index.get("c") is not None
    assert index.get("b") is None and index.get("never") is None


def test_a_look_that_does_not_touch_leaves_the_order() -> None:
    index = VersionIndex(2)
    index.set("a", (pack(1, 0),))
    index.set("b", (pack(1, 0),))
    assert index.get("a", touch=False) is not None
    index.set("c", (pack(1, 0),))
    assert index.get("a") is None and index.get("b") is not None


def test_holding_nothing_is_no_entry_while_complete_and_an_entry_after() -> None:
    index = VersionIndex(2)
    index.set("a", (pack(1, 0),))
    index.set("a", ())
    assert len(index) == 0 and index.get("a") == ()
    for key in "bcd":
        index.set(key, (pack(1, COMMITTED),))
    assert not index.complete
    index.set("gone", ())  # now "holds nothing" must be said, or it would read as unknown
    assert index.get("gone") == ()


def test_loading_at_open_keeps_the_first_keys_and_every_dirty_one() -> None:
    index = VersionIndex(2)
    index.fill([
        ("a", (pack(1, COMMITTED),)),
        ("b", (pack(1, COMMITTED), pack(2, 0))),
        ("c", (pack(1, COMMITTED),)),
        ("d", (pack(5, TOMBSTONE),)),
    ])
    assert len(index) == 2 and not index.complete
    assert index.get("a") is not None and index.get("c") is None
    assert index.dirty_keys() == ["b", "d"]
    whole = VersionIndex(4)
    whole.fill((key, (pack(1, COMMITTED),)) for key in "abcd")
    assert whole.complete and whole.get("e") == ()


def test_dirty_keys_follow_every_change_and_outlive_eviction() -> None:
    index = VersionIndex(1)
    index.set("é", (pack(1, 0),))
    index.set("a\x00", (pack(1, COMMITTED), pack(2, TOMBSTONE)))
    index.set("z", (pack(1, COMMITTED),))
    assert len(index) == 1
    assert index.dirty_keys() == ["a\x00", "é"]  # code point order, the store's UTF-8 order
    index.set("é", (pack(1, COMMITTED),))
    index.set("a\x00", ())
    assert index.dirty_keys() == []


def test_a_cap_of_zero_knows_nothing() -> None:
    index = VersionIndex(0)
    assert not index.enabled and not index.complete
    index.set("a", (pack(1, 0),))
    index.fill([("b", (pack(1, 0),))])
    assert len(index) == 0 and index.get("a") is None and index.dirty_keys() == []
    with pytest.raises(ValueError, match="at least 0"):
        VersionIndex(-1)


def test_a_key_costs_what_the_module_says() -> None:
    """The module's figure (190 to 230 bytes for a key of 10 characters with one version) with a
    generous margin: a change that doubled it would fail here."""
    keys = 20_000
    tracemalloc.start()
    try:
        index = VersionIndex(keys)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(keys):
            index.set(f"key{i:07d}", (pack(1000 + i, COMMITTED),))
        per_key = (tracemalloc.get_traced_memory()[0] - before) / keys
    finally:
        tracemalloc.stop()
    assert 150 < per_key < 300, per_key
