"""Sizing the approximate prefix index to each server's KV cache: the formula, the bytes-per-token estimator, the
per-endpoint capacities of the index, and the prefix-cache scorer applying them from scrapes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scorer.config import load_config
from scorer.director import Director
from scorer.index_sizing import MAX_BYTES_PER_TOKEN, MIN_BYTES_PER_TOKEN, BytesPerToken, capacity_blocks
from scorer.plugins.scorers.prefix_cache import PrefixCacheParams, PrefixCacheScorer
from scorer.prefix_index import PrefixIndex
from scorer.scheduler import Scheduler
from scorer.types import CycleState, Endpoint, EndpointMetrics, EndpointState, LLMRequest, SchedulingResult

A, B = "10.0.0.1:8000", "10.0.0.2:8000"


@pytest.mark.parametrize(
    ("kv_tokens", "bytes_per_token", "block_bytes", "blocks"),
    [
        (450_400, 4.0, 64, 28_150),  # the twin's H100 profile at GIE's 4 bytes per token
        (450_400, 6.85, 64, 48_207),  # ... at the twin's measured rate
        (500_000, 4.0, 64, 31_250),  # GIE's default, which assumes a 500k-token cache
        (16, 1.0, 64, 1),  # never below one block
        (1, 32.0, 64, 1),
    ],
)
def test_capacity_is_the_cache_in_prompt_bytes(kv_tokens: int, bytes_per_token: float, block_bytes: int, blocks: int):
    assert capacity_blocks(kv_tokens, bytes_per_token, block_bytes) == blocks


@pytest.mark.parametrize(("kv_tokens", "bytes_per_token", "block_bytes"), [(0, 4.0, 64), (10, 0.0, 64), (10, 4, 0)])
def test_capacity_refuses_non_positive_sizes(kv_tokens: int, bytes_per_token: float, block_bytes: int):
    with pytest.raises(ValueError, match="positive"):
        capacity_blocks(kv_tokens, bytes_per_token, block_bytes)


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param([], 4.0, id="nothing-counted"),
        pytest.param([("c", A, 0), ("r", A, 600), ("c", A, 100)], 4.0, id="under-min-tokens"),
        pytest.param([("c", A, 0), ("r", A, 7000), ("c", A, 1000)], 7.0, id="learned"),
        pytest.param([("r", A, 9999), ("c", A, 0), ("r", A, 5000), ("c", A, 1000)], 5.0, id="before-first-sample"),
        pytest.param(
            [("c", A, 500), ("c", B, 0), ("r", A, 3000), ("r", B, 3000), ("c", A, 1000), ("c", B, 500)],
            6.0,
            id="pooled-over-endpoints",
        ),
        pytest.param([("c", A, 5000), ("r", A, 6000), ("c", A, 1000)], 6.0, id="restarted-server-counts-from-zero"),
        pytest.param([("c", A, 0), ("r", A, 100), ("c", A, 1000)], MIN_BYTES_PER_TOKEN, id="clamped-low"),
        pytest.param([("c", A, 0), ("r", A, 10**6), ("c", A, 1000)], MAX_BYTES_PER_TOKEN, id="clamped-high"),
        pytest.param([("c", A, 0), ("r", A, 0), ("r", A, -5), ("c", A, 1000)], MIN_BYTES_PER_TOKEN, id="no-bytes"),
    ],
)
def test_bytes_per_token_estimate(events: list[tuple[str, str, float]], expected: float):
    estimator = BytesPerToken(initial=4.0, min_tokens=1000)
    for kind, address, value in events:
        if kind == "r":
            estimator.routed(address, value)
        else:
            estimator.counted(address, value)
    assert estimator.value() == pytest.approx(expected)


def test_an_endpoint_that_left_and_came_back_starts_from_a_new_first_sample():
    estimator = BytesPerToken(initial=4.0, min_tokens=1)
    estimator.counted(A, 0)
    estimator.counted(B, 0)
    estimator.retain({B})
    estimator.counted(A, 10**6)  # a first sample again: no increase counted
    estimator.routed(B, 800)
    estimator.counted(B, 100)
    assert (estimator.counted_tokens, estimator.value()) == (100, 8.0)


@given(
    events=st.lists(
        st.tuples(st.booleans(), st.sampled_from([A, B]), st.floats(min_value=-1e6, max_value=1e9, allow_nan=False)),
        max_size=30,
    )
)
def test_bytes_per_token_stays_in_bounds(events: list[tuple[bool, str, float]]):
    estimator = BytesPerToken(initial=4.0, min_tokens=10)
    for routed, address, value in events:
        if routed:
            estimator.routed(address, value)
        else:
            estimator.counted(address, abs(value))
        assert MIN_BYTES_PER_TOKEN <= estimator.value() <= MAX_BYTES_PER_TOKEN
        assert estimator.learned or estimator.value() == 4.0


# ---- the index's per-endpoint capacities ----------------------------------------------------------------------
def test_a_smaller_capacity_evicts_the_oldest_blocks_at_once_and_bounds_later_records():
    index = PrefixIndex(capacity_per_endpoint=100)
    index.record(A, [1, 2, 3, 4, 5, 6])  # recorded tail first: 1 is the most recently used
    index.record(B, [1, 2, 3, 4, 5, 6])
    index.set_capacity(A, 2)
    assert (index.blocks(A), index.blocks(B), index.capacity_of(A), index.capacity_of(B)) == (2, 6, 2, 100)
    assert index.match([1, 2, 3]) == {A: 2, B: 3}
    assert index.evicted_capacity == 4
    index.record(A, [7, 8, 9])
    assert index.blocks(A) == 2
    index.set_capacity(A, 50)  # growing evicts nothing
    assert index.blocks(A) == 2


def test_removing_an_endpoint_forgets_its_capacity():
    index = PrefixIndex(capacity_per_endpoint=100)
    index.set_capacity(A, 3)
    index.remove_endpoint(A)
    assert index.capacity_of(A) == 100


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match=">= 1"):
        PrefixIndex(10).set_capacity(A, 0)


# ---- the scorer sizes its index from scrapes -----------------------------------------------------------------
def metrics(num_gpu_blocks: int | None = 1000, prompt_tokens: float | None = None, block_size: int = 16):
    return EndpointMetrics(block_size=block_size, num_gpu_blocks=num_gpu_blocks, prompt_tokens_total=prompt_tokens)


def route(scorer: PrefixCacheScorer, address: str, prompt: str, rid: str = "r") -> None:
    cycle, request = CycleState(0.0, random.Random(0)), LLMRequest(rid, "m", prompt=prompt)
    state = EndpointState(Endpoint(address))
    scorer.pre_request(cycle, request, SchedulingResult(targets=(state,), reason="test"))


def test_the_scorer_sizes_each_endpoint_from_its_cache_config_at_the_initial_rate():
    scorer = PrefixCacheScorer("p", PrefixCacheParams.model_validate({}))
    scorer.metrics_updated(A, metrics(num_gpu_blocks=1000))  # 16,000 tokens x 4 bytes / 64
    scorer.metrics_updated(B, metrics(num_gpu_blocks=None))  # no cache_config_info: the configured default
    assert (scorer.index.capacity_of(A), scorer.index.capacity_of(B)) == (1000, 31_250)


def test_the_learned_rate_resizes_every_endpoint():
    scorer = PrefixCacheScorer("p", PrefixCacheParams.model_validate({"lruCapacityPerServer": 10}))
    scorer.bytes_per_token.min_tokens = 100
    scorer.metrics_updated(A, metrics(prompt_tokens=0))
    scorer.metrics_updated(B, metrics(num_gpu_blocks=2000, prompt_tokens=0))
    route(scorer, A, "x" * 800)
    scorer.metrics_updated(A, metrics(prompt_tokens=100))  # 800 bytes over 100 tokens
    assert scorer.bytes_per_token.value() == 8.0
    assert (scorer.index.capacity_of(A), scorer.index.capacity_of(B)) == (2000, 4000)
    assert scorer.index.bytes_per_token == 8.0


def test_a_replica_that_starts_takes_its_peers_learned_rate_before_its_blocks():
    """Sized at the initial 4 bytes per token, a new replica's LRUs would cut what its peer's held at 8."""
    peer = PrefixCacheScorer("p", PrefixCacheParams.model_validate({"lruCapacityPerServer": 10}))
    peer.bytes_per_token.min_tokens = 100
    peer.metrics_updated(A, metrics(prompt_tokens=0))
    for i in range(3):
        route(peer, A, f"{i}" * 800, rid=f"r{i}")
    peer.metrics_updated(A, metrics(prompt_tokens=300))  # 2,400 bytes over 300 tokens
    assert peer.index.capacity_of(A) == 2000 and peer.index.blocks(A) == 36
    snapshot = peer.snapshot()
    assert snapshot.bytes_per_token == 8.0 and len(snapshot.endpoints[A]) == 36
    new = PrefixCacheScorer("p", PrefixCacheParams.model_validate({"lruCapacityPerServer": 10}))
    new.metrics_updated(A, metrics(prompt_tokens=0))
    assert new.index.capacity_of(A) == 1000
    assert new.restore(snapshot, frozenset({A, B})) == 36
    assert new.index.capacity_of(A) == 2000 and new.index.lru(A) == peer.index.lru(A)
    assert new.bytes_per_token.value() == 8.0 and not new.bytes_per_token.learned  # its own counting goes on
    fresh = PrefixCacheScorer("p", PrefixCacheParams.model_validate({}))
    assert fresh.snapshot().bytes_per_token is None  # nothing learned: nothing to hand on
    fixed = PrefixCacheScorer("p", PrefixCacheParams.model_validate({"bytesPerToken": 2.0}))
    fixed.metrics_updated(A, metrics())
    fixed.restore(snapshot, frozenset({A}))
    assert fixed.index.capacity_of(A) == 500  # a configured rate is kept


def test_a_fixed_rate_is_not_learned():
    scorer = PrefixCacheScorer("p", PrefixCacheParams.model_validate({"bytesPerToken": 2.0}))
    scorer.bytes_per_token.min_tokens = 1
    scorer.metrics_updated(A, metrics(prompt_tokens=0))
    route(scorer, A, "x" * 6400)
    scorer.metrics_updated(A, metrics(prompt_tokens=10))
    assert scorer.index.capacity_of(A) == 500  # 16,000 tokens x 2 bytes / 64


def test_sizing_from_metrics_can_be_turned_off():
    scorer = PrefixCacheScorer(
        "p", PrefixCacheParams.model_validate({"capacityFromMetrics": False, "lruCapacityPerServer": 77})
    )
    scorer.metrics_updated(A, metrics(num_gpu_blocks=1000))
    assert scorer.index.capacity_of(A) == 77


def test_the_director_feeds_scrapes_to_the_scorer():
    config = load_config(
        "apiVersion: autonomic.dev/v1alpha1\nkind: EndpointPickerConfig\n"
        "plugins: [{type: prefix-cache-scorer, name: p}, {type: max-score-picker}]\n"
        "schedulingProfiles: [{name: default, plugins: [{pluginRef: p}, {pluginRef: max-score-picker}]}]\n"
    )
    director = Director(Scheduler(config), clock=lambda: 0.0)
    director.set_endpoints([Endpoint(A)])
    director.update_metrics(A, metrics(num_gpu_blocks=500))
    scorer = director.scheduler.plugins["p"]
    assert isinstance(scorer, PrefixCacheScorer) and scorer.index.capacity_of(A) == 500


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ("{bytesPerToken: 0.5}", "bytesPerToken"),
        ("{bytesPerToken: 40}", "bytesPerToken"),
        ("{bytesPerToken: sometimes}", "bytesPerToken"),
        ("{capacityFromMetrics: perhaps}", "capacityFromMetrics"),
    ],
)
def test_sizing_parameters_are_validated_with_their_path(parameters: str, message: str):
    text = (
        "apiVersion: autonomic.dev/v1alpha1\nkind: EndpointPickerConfig\n"
        f"plugins: [{{type: prefix-cache-scorer, parameters: {parameters}}}, {{type: max-score-picker}}]\n"
        "schedulingProfiles: [{name: default, plugins: [{pluginRef: prefix-cache-scorer},"
        " {pluginRef: max-score-picker}]}]\n"
    )
    with pytest.raises(Exception, match=message):
        load_config(text)
