"""The emulated sglang-router cache_aware policy follows its rules (loadtests/routing/cache_aware_emulation.py)."""

from __future__ import annotations

import random

import pytest

from loadtests.routing.cache_aware_emulation import (
    BLOCK_CHARS,
    CacheAwareRouter,
    CacheAwareSettings,
    HalfCacheAware,
    block_chain,
)
from scorer.config import load_config
from scorer.director import Director
from scorer.scheduler import Scheduler
from scorer.types import Endpoint, EndpointMetrics, LLMRequest

A, B, C = "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"


def _text(seed: str, blocks: int) -> str:
    return "".join(f"{seed}{i:06d}".ljust(BLOCK_CHARS, "x") for i in range(blocks))


def _router(settings: CacheAwareSettings | None = None, now: list[float] | None = None) -> CacheAwareRouter:
    clock = now if now is not None else [0.0]
    router = CacheAwareRouter(lambda: clock[0], settings)
    router.set_endpoints([Endpoint(A), Endpoint(B), Endpoint(C)])
    return router


def _send(router: CacheAwareRouter, rid: str, prompt: str) -> str:
    return router.pick(LLMRequest(rid, "m", prompt=prompt)).addresses[0]


def test_block_chain_is_a_chain_of_prefixes():
    base = _text("a", 3)
    assert len(block_chain(base)) == 3 and len(block_chain(base + "tail")) == 3
    assert block_chain(base + _text("b", 1))[:3] == block_chain(base)
    assert block_chain("b" + base[1:])[0] != block_chain(base)[0]


@pytest.mark.parametrize(
    ("history", "prompt", "expected", "reason"),
    [
        # 10 blocks cached on the first worker chosen (A, all trees empty: the first smallest); 8 of 10 match: 0.8
        ([("a", 10)], _text("a", 8) + _text("n", 2), A, "longest prefix"),
        # 2 of 10 blocks match (0.2 <= 0.3): the smallest tree, B (A holds 10 blocks, B and C none)
        ([("a", 10)], _text("a", 2) + _text("n", 8), B, "smallest tree"),
        # nothing matches: smallest tree among B (5 blocks) and C (0)
        ([("a", 10), ("b", 5)], _text("z", 4), C, "smallest tree"),
    ],
)
def test_longest_prefix_over_the_threshold_else_the_smallest_tree(history, prompt, expected, reason):
    router = _router()
    for n, (seed, blocks) in enumerate(history):
        _send(router, f"h{n}", _text(seed, blocks))
        router.response_complete(f"h{n}", None, 200, None)
    result = router.pick(LLMRequest("r", "m", prompt=prompt))
    assert (result.addresses[0], result.reason) == (expected, reason)


def test_imbalance_sends_to_the_least_loaded_and_ends_release_load():
    router = _router(CacheAwareSettings(balance_abs_threshold=2, balance_rel_threshold=1.5))
    prompt = _text("a", 10)
    sent = [_send(router, f"r{i}", prompt) for i in range(4)]
    # A holds the prefix and takes r0-r2; at 3 in flight against 0 (3 - 0 > 2) the balance rule sends r3 away
    assert sent[:3] == [A, A, A] and sent[3] != A
    for i in range(3):
        router.response_complete(f"r{i}", A, 200, None)
    assert router.load[A] == 0 and _send(router, "r9", prompt) == A


def test_trees_are_trimmed_least_recently_used_each_interval():
    now = [0.0]
    router = _router(CacheAwareSettings(max_tree_size=4 * BLOCK_CHARS, eviction_interval_s=60.0), now)
    _send(router, "old", _text("a", 6))
    assert len(router.trees[A]) == 6  # no trimming before the interval
    now[0] = 61.0
    _send(router, "new", _text("z", 1))  # goes to the smallest tree (B); A is trimmed to 4 blocks first
    assert len(router.trees[A]) == 4
    assert router._matched_blocks(A, block_chain(_text("a", 6))) == 4  # the tail went first, the beginning stays


QUEUE_ONLY = """
apiVersion: autonomic.dev/v1alpha1
kind: EndpointPickerConfig
plugins: [{type: queue-scorer}, {type: max-score-picker}]
schedulingProfiles:
- name: default
  plugins: [{pluginRef: queue-scorer}, {pluginRef: max-score-picker}]
"""


def _half(halves: set[str]) -> HalfCacheAware:
    """A Director that always picks C (the only idle queue), trees as set below: A holds 10 blocks of "a", B none, C
    20 blocks of "c"."""
    director = Director(Scheduler(load_config(QUEUE_ONLY)), clock=lambda: 0.0, rng=random.Random(1))
    front = HalfCacheAware(director, frozenset(halves))
    front.set_endpoints([Endpoint(A), Endpoint(B), Endpoint(C)])
    for address, waiting in ((A, 5), (B, 5), (C, 0)):
        front.update_metrics(address, EndpointMetrics(waiting=waiting))
    for address, seed, blocks in ((A, "a", 10), (C, "c", 20)):
        front.trees.trees[address].update(dict.fromkeys(block_chain(_text(seed, blocks))))
    return front


@pytest.mark.parametrize(
    ("halves", "prompt", "expected"),
    [
        (set(), _text("a", 8) + _text("n", 2), C),  # the Director alone
        ({"sticky"}, _text("a", 8) + _text("n", 2), A),  # 0.8 of it in A's tree: A
        ({"cold"}, _text("a", 8) + _text("n", 2), C),  # a hot prompt: the Director
        ({"cold"}, _text("z", 4), B),  # nothing matches: the smallest tree
        ({"sticky"}, _text("z", 4), C),  # a cold prompt: the Director
        ({"sticky", "cold"}, _text("a", 8) + _text("n", 2), A),
        ({"sticky", "cold"}, _text("z", 4), B),
    ],
)
def test_each_half_of_the_rule_replaces_the_director_only_where_it_applies(halves, prompt, expected):
    front = _half(halves)
    assert front.pick(LLMRequest("r", "m", prompt=prompt)).addresses[0] == expected
    # both sides were told: the trees hold the prompt where it went, the Director counts it in flight until its end
    assert block_chain(prompt)[0] in front.trees.trees[expected]
    assert front.trees.load[expected] == 1 and front.director.in_flight_requests() == 1
    front.response_complete("r", expected, 200, None)
    assert front.trees.load[expected] == 0 and front.director.in_flight_requests() == 0


def test_an_unknown_half_is_refused():
    with pytest.raises(ValueError, match="halves"):
        HalfCacheAware(Director(Scheduler(load_config(QUEUE_ONLY))), frozenset({"sticky", "warm"}))
