"""The rollout modes of `loadtests.routing.replica_sim`: a replica is replaced when its restart is due, starts with
the endpoints and metrics the front has seen, and (warm) with its peer's prefix index, as the warm start does."""

from __future__ import annotations

import pytest

from loadtests.routing.replica_sim import ReplicaFront
from scorer.config import default_config
from scorer.types import Endpoint, EndpointMetrics, LLMRequest

A, B = "10.0.0.1:8000", "10.0.0.2:8000"


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("warm", [False, True])
def test_a_replica_is_replaced_at_its_restart_empty_or_warm(warm: bool):
    clock = Clock()
    front = ReplicaFront(default_config(), 2, clock, seed=1, shared=True, sync_delay_s=0.0, restarts=[10.0], warm=warm)
    front.set_endpoints([Endpoint(A), Endpoint(B)])
    for address in (A, B):
        front.update_metrics(address, EndpointMetrics(num_gpu_blocks=1000, block_size=16))
    prompt = "hello world " * 200
    for i in range(4):
        front.pick(LLMRequest(f"r{i}", "m", prompt=prompt))
    old = front.directors[0]
    clock.now = 10.0
    front.pick(LLMRequest("after", "m", prompt="another prompt " * 100))
    new = front.directors[0]
    assert new is not old and front.directors[1] is not new
    assert new.ready() and {s.address for s in new.endpoints()} == {A, B}  # endpoints and metrics replayed
    explained = new.explain(LLMRequest("x", "m", prompt=prompt))
    best = max(s.by_scorer["prefix-cache-scorer"] for s in explained.scored)
    assert (best == 1.0) == warm and (front.restored_blocks > 0) == warm
    clock.now = 20.0
    front.pick(LLMRequest("later", "m", prompt=prompt))
    assert front.directors[0] is new  # one restart scheduled, one done
