"""The paged KV cache: block accounting, prefix-cache eviction, overflow as a typed error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.exceptions import InternalError
from autellix.sim.kv_cache import KVCache, KVCacheOverflow, blocks_for


def test_blocks_round_up() -> None:
    assert [blocks_for(t, 16) for t in (0, 1, 16, 17, 32, 33)] == [0, 1, 1, 2, 2, 3]


def test_grow_and_release_account_every_block() -> None:
    kv = KVCache(10, 16)
    assert kv.grow(1, 20) == 2
    assert kv.grow(1, 32) == 0  # still fits in two blocks
    assert kv.grow(1, 33) == 1
    assert kv.grow(2, 16) == 1
    assert (kv.used, kv.free) == (4, 6)
    assert kv.release(1) == 3
    assert kv.release(1) == 0  # releasing twice frees nothing more
    assert (kv.used, kv.free, kv.held) == (1, 9, {2: 1})


def test_overflow_is_a_typed_error_and_changes_nothing() -> None:
    kv = KVCache(4, 16)
    kv.grow(1, 48)
    with pytest.raises(KVCacheOverflow, match="needed 2 KV blocks but only 1"):
        kv.grow(2, 32)
    assert issubclass(KVCacheOverflow, InternalError)
    assert (kv.used, kv.held) == (3, {1: 3})


def test_finished_blocks_become_prefix_entries_evicted_lru() -> None:
    kv = KVCache(8, 16)
    kv.grow(1, 40)
    kv.remember("a", 40, call=1)  # the call's three blocks become entry "a"
    kv.grow(2, 48)
    kv.remember("b", 48, call=2)
    assert (kv.used, kv.cached, kv.free) == (0, 6, 2)
    assert kv.lookup("a", 100) == 32  # whole blocks only: the partial third is not shareable
    # A prompt that uses only part of the entry (a cut history) shares none of it: pinning the
    # entry would hold blocks its token count does not cover.
    assert kv.lookup("a", 20) == 0
    assert kv.lookup("missing", 100) == 0
    kv.grow(3, 64)  # needs 4 blocks: evicts "b" (least recently used), not "a"
    assert kv.lookup("b", 48) == 0
    assert kv.lookup("a", 40) == 32
    assert kv.used + kv.cached + kv.free == kv.capacity


def test_shared_prefix_is_pinned_and_stored_once() -> None:
    kv = KVCache(10, 16)
    kv.grow(1, 64)
    kv.remember("parent", 64, call=1)  # 4 blocks
    assert kv.lookup("parent", 64) == 64
    kv.pin("parent")
    kv.pin("parent")  # two children share it
    assert kv.pinned == 4
    kv.grow(2, 80 - 64)  # each child holds only what follows the prefix
    kv.grow(3, 80 - 64)
    assert (kv.used, kv.cached, kv.free) == (2, 4, 4)
    with pytest.raises(KVCacheOverflow, match="4 in shared prefixes"):
        kv.grow(4, 16 * 5)  # a pinned entry is never evicted
    kv.remember("child", 80, call=2, parent="parent")  # holds only its own block
    kv.unpin("parent")
    kv.unpin("parent")
    kv.release(3)
    assert (kv.pinned, kv.cached) == (0, 5)
    assert kv.lookup("child", 80) == 80
    kv.grow(5, 16 * 8)  # evicts "parent" first (least recently used)...
    assert kv.lookup("child", 80) == 0  # ...which breaks the child's chain


def test_an_entry_of_a_pinned_key_is_not_replaced() -> None:
    kv = KVCache(4, 16)
    kv.grow(1, 32)
    kv.remember("k", 32, call=1)
    kv.pin("k")
    kv.grow(2, 32)
    kv.remember("k", 32, call=2)  # the new blocks are freed, the pinned entry stays
    assert (kv.used, kv.cached, kv.pinned) == (0, 2, 2)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["grow", "release", "remember", "lookup"]), st.integers(0, 5), st.integers(0, 200)
        ),
        max_size=60,
    )
)
def test_blocks_are_never_lost_or_oversubscribed(ops: list[tuple[str, int, int]]) -> None:
    kv = KVCache(20, 16)
    pins: list[tuple[str, int]] = []
    for op, key, tokens in ops:
        try:
            if op == "grow":
                kv.grow(key, tokens)
            elif op == "release":
                kv.release(key)
            elif op == "remember":
                kv.remember(("entry", key), tokens, call=key)
            elif op == "pin":
                if kv.lookup(("entry", key), tokens):
                    kv.pin(("entry", key))
                    pins.append(("entry", key))
            else:
                assert kv.lookup(("entry", key), tokens) % 16 == 0
        except KVCacheOverflow:
            pass
        assert kv.used == sum(kv.held.values())
        assert kv.used + kv.cached <= kv.capacity
        assert 0 <= kv.pinned <= kv.cached
        assert kv.free >= 0
    for key in list(kv.held):
        kv.release(key)
    for pin in pins:
        kv.unpin(pin)
    assert kv.used == 0 and kv.pinned == 0
