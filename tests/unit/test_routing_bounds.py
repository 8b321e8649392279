"""The pooled-capacity bound: one shared LRU prefix cache of the fleet's capacity (loadtests.routing.bounds)."""

from __future__ import annotations

import random

import pytest

from loadtests.routing.bounds import fleet_capacity_blocks, oracle_hit_ratio, pooled_capacity_hit_ratio
from sim.fleet.trace import TraceRequest


def req(*ids: int, tokens: int | None = None, t: float = 0.0) -> TraceRequest:
    return TraceRequest(t, tokens if tokens is not None else 10 * len(ids), 1, tuple(ids))


A, B, C = req(1, 2), req(1, 3), req(4, 5)


@pytest.mark.parametrize(
    ("trace", "capacity", "expected"),
    [
        ([], 4, 0.0),
        ([A, A], 0, 0.0),  # nothing fits
        ([A, A], 2, 20 / 40),  # second request: both blocks hit
        ([A, B], 4, 10 / 40),  # shared root block only
        ([A, C, A], 4, 20 / 60),  # room for both: A hits again
        ([A, C, A], 2, 0.0),  # C evicted A entirely
        ([A, C, A], 3, 10 / 60),  # deepest first: A's root (1) survived C, its second block (2) did not
        ([req(1, 2, 3), req(9), req(1, 2, 3)], 3, 20 / 70),  # deepest first: only block 3 was evicted
        ([req(1, 2), req(2)], 4, 0.0),  # same id, other position: not a prefix hit
        ([req(1, 2), req(1, 2, tokens=15)], 4, 15 / 35),  # a partial last block counts its own 5 tokens
        ([req(1, 2, 3), req(1, 2, 3)], 2, 20 / 60),  # longer than the cache: the root prefix is what is kept
    ],
)
def test_pooled_capacity_table(trace: list[TraceRequest], capacity: int, expected: float) -> None:
    assert pooled_capacity_hit_ratio(trace, capacity, block_tokens=10) == pytest.approx(expected)


def test_unbounded_capacity_equals_the_oracle() -> None:
    rng = random.Random(7)
    trace = [req(*(rng.randrange(4) for _ in range(rng.randrange(1, 6))), t=i) for i in range(300)]
    bound = pooled_capacity_hit_ratio(trace, 10**9, block_tokens=10)
    assert bound == pytest.approx(oracle_hit_ratio(trace, block_tokens=10))
    assert 0 < bound < 1


def test_bound_grows_with_capacity_and_stays_under_the_oracle() -> None:
    rng = random.Random(3)
    trace = [req(rng.randrange(20), rng.randrange(3), rng.randrange(50), t=i) for i in range(500)]
    ratios = [pooled_capacity_hit_ratio(trace, c, block_tokens=10) for c in (0, 5, 20, 80, 10_000)]
    assert ratios == sorted(ratios) and ratios[0] == 0.0 and ratios[1] < ratios[-1]
    assert ratios[-1] == pytest.approx(oracle_hit_ratio(trace, block_tokens=10))


@pytest.mark.parametrize(
    ("args", "expected"),
    [((8, 28150, 16), 8 * 28150 * 16 // 512), ((1, 32, 16), 1), ((1, 31, 16), 0)],
)
def test_fleet_capacity_blocks(args: tuple[int, int, int], expected: int) -> None:
    assert fleet_capacity_blocks(*args) == expected


@pytest.mark.parametrize("bad", [dict(capacity_blocks=-1), dict(capacity_blocks=1, block_tokens=0)])
def test_bad_arguments_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        pooled_capacity_hit_ratio([A], **bad)
    with pytest.raises(ValueError):
        fleet_capacity_blocks(0, 1, 1)
