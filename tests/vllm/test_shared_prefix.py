"""Sibling calls sharing a prompt prefix (a tree search's expansions) on the real vLLM 0.33
scheduler: the core counts the prefix once, so it does not preempt a call for memory vLLM has."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import Engine
from .test_retention import _all_back, _call, _check, _tokens, _watch

Make = Callable[..., Engine]

#: the parent's prompt: 20 full blocks, which both siblings' prompts start with
PARENT_BLOCKS = 20


def _siblings(e: Engine, counted: list[int] | None = None) -> list[str]:
    """A parent call, then two sibling calls extending it that start together and each decode 200
    tokens. The core counts each sibling's whole context (2 x 34 blocks > 63) while vLLM holds the
    prefix once (20 + 2 x 14 blocks): records what the plug-in gives back while both run, and
    returns the requests preempted."""
    hits, preempted = _watch(e)
    parent = _call(e, "tree-0", _tokens("tree-0", PARENT_BLOCKS * 16), 16, program_id="tree")
    e.run()
    for branch in ("a", "b"):
        prompt = [*parent.all_token_ids[: PARENT_BLOCKS * 16], *_tokens(f"tree-{branch}", 16)]
        _call(e, f"tree-{branch}", prompt, 200, program_id="tree", thread_id=branch)
    while e.loop.busy():
        e.step()
        _check(e)
        if counted is not None:
            counted.append(e.scheduler._shared.total)
    assert hits["tree-a"] == hits["tree-b"] == PARENT_BLOCKS * 16
    return preempted


@pytest.mark.parametrize("kv_policy", ["lru", "autellix"])
def test_siblings_sharing_a_prefix_are_not_preempted(engine: Make, kv_policy: str) -> None:
    e = engine("plas", num_blocks=64, max_num_seqs=4, kv_policy=kv_policy)
    counted: list[int] = []
    assert _siblings(e, counted) == []
    # one sibling counts the prefix, the other shares it (a retention hold is not a sharer)
    assert max(counted) == PARENT_BLOCKS * 16
    assert e.scheduler._shared.total == 0 and len(e.scheduler._shared) == 0
    assert sorted(e.loop.tokens) == ["tree-0", "tree-a", "tree-b"] and e.loop.tokens["tree-a"] == 200
    if kv_policy == "autellix":
        e.scheduler.finish_program("tree")
        _all_back(e)


def test_without_the_shared_count_the_core_preempts_a_sibling(engine: Make) -> None:
    # What the count prevents: the core alone sees 2 x 34 blocks in a 63-block cache
    e = engine("plas", num_blocks=64, max_num_seqs=4)
    e.scheduler._shared.started = lambda requests, holds: None  # type: ignore[method-assign]
    assert _siblings(e) != []
    stock = engine(stock=True, num_blocks=64, max_num_seqs=4)  # vLLM alone has the memory
    assert _siblings(stock) == []


def test_a_prefix_shared_across_programs_is_given_back_while_both_run(engine: Make) -> None:
    # Two programs with the same 20-block system prompt: the second finds the first running on
    # the same blocks when it starts
    e = engine("plas", num_blocks=64, max_num_seqs=4)
    _, preempted = _watch(e)
    system = _tokens("system", PARENT_BLOCKS * 16)
    _call(e, "first-0", [*system, *_tokens("first", 16)], 200, program_id="first")
    e.step(3)  # running, its prefix computed
    _call(e, "second-0", [*system, *_tokens("second", 16)], 200, program_id="second")
    counted = []
    while e.loop.busy():
        e.step()
        counted.append(e.scheduler._shared.total)
    assert preempted == [] and max(counted) == PARENT_BLOCKS * 16 and counted[-1] == 0
