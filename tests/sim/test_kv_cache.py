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


def test_prefix_entries_use_free_blocks_and_are_evicted_lru() -> None:
    kv = KVCache(8, 16)
    kv.remember("a", 40)  # two whole blocks; the partial third is not shareable
    kv.remember("b", 64)
    assert (kv.cached, kv.free) == (6, 2)
    assert kv.lookup("a", 100) == 32
    assert kv.lookup("a", 20) == 16  # only the requested prefix, whole blocks
    assert kv.lookup("missing", 100) == 0
    kv.grow(1, 64)  # needs 4 blocks: evicts "b" (least recently used), not "a"
    assert kv.lookup("b", 64) == 0
    assert kv.lookup("a", 32) == 32
    assert kv.used + kv.cached + kv.free == kv.capacity


def test_an_entry_too_large_for_the_free_space_is_not_kept() -> None:
    kv = KVCache(4, 16)
    kv.grow(1, 48)
    kv.remember("big", 64)
    assert kv.lookup("big", 64) == 0
    assert kv.cached == 0


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
    for op, key, tokens in ops:
        try:
            if op == "grow":
                kv.grow(key, tokens)
            elif op == "release":
                kv.release(key)
            elif op == "remember":
                kv.remember(key, tokens)
            else:
                assert kv.lookup(key, tokens) % 16 == 0
        except KVCacheOverflow:
            pass
        assert kv.used == sum(kv.held.values())
        assert kv.used + kv.cached <= kv.capacity
        assert kv.free >= 0
    for key in list(kv.held):
        kv.release(key)
    assert kv.used == 0
