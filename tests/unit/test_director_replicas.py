"""Active-active replicas in the Director (pure core): what a replica publishes, and how a peer's decisions and
response ends are applied (charges, prefix learning, ends that overtake their decision). Time is a variable."""

from __future__ import annotations

import random

import pytest

from scorer.config import default_config, load_config
from scorer.director import TOMBSTONE_S, Director
from scorer.replica_wire import Ended, Routed
from scorer.scheduler import Scheduler
from scorer.types import Endpoint, EndpointMetrics, IndexSnapshot, LLMRequest

A, B = "10.0.0.1:8000", "10.0.0.2:8000"
CONFIG = """
apiVersion: autonomic.dev/v1alpha1
kind: EndpointPickerConfig
plugins:
- {type: prefix-cache-scorer, parameters: {blockSize: 4}}
- {type: max-score-picker}
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: prefix-cache-scorer}
  - {pluginRef: max-score-picker}
"""
PROMPT = "aaaabbbbccccdddd"
KEY = "prefix-cache-scorer@4B"  # what peers exchange the index under: its name and block size


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def replica(clock: Clock) -> tuple[Director, list[Routed | Ended]]:
    director = Director(Scheduler(load_config(CONFIG)), clock=clock, rng=random.Random(1))
    director.set_endpoints([Endpoint(A), Endpoint(B)])
    for address in (A, B):
        director.update_metrics(address, EndpointMetrics())
    published: list[Routed | Ended] = []
    director.on_routed = published.append
    director.on_ended = published.append
    return director, published


def in_flight(director: Director) -> dict[str, int]:
    return {s.address: s.in_flight for s in director.endpoints()}


def prefix_score(director: Director, address: str, prompt: str = PROMPT) -> float:
    result = director.explain(LLMRequest("x", "m", prompt=prompt))
    return next(s.by_scorer["prefix-cache-scorer"] for s in result.scored if s.state.address == address)


def test_a_decision_and_its_end_are_published_with_the_prompt_blocks():
    director, published = replica(Clock())
    result = director.pick(LLMRequest("r1", "m", prompt=PROMPT))
    director.response_complete("r1", None, 200, None)
    routed, ended = published
    assert isinstance(routed, Routed) and routed.address == result.targets[0].address
    assert routed.tokens == len(PROMPT) // 4
    assert len(routed.blocks[KEY]) == 4  # 16 bytes in blocks of 4
    assert ended == Ended("r1", None, 200)


def test_a_prompt_under_one_block_publishes_no_blocks():
    director, published = replica(Clock())
    director.pick(LLMRequest("r1", "m", prompt="abc"))
    assert published[0].blocks == {}  # type: ignore[union-attr]


def test_a_peer_decision_teaches_the_prefix_and_charges_until_any_replica_hears_its_end():
    clock = Clock()
    first, published = replica(clock)
    second, _ = replica(clock)
    first.pick(LLMRequest("r1", "m", prompt=PROMPT))
    routed = published[0]
    assert isinstance(routed, Routed)
    assert prefix_score(second, routed.address) == 0.0
    second.peer_routed(routed)
    assert prefix_score(second, routed.address) == 1.0
    assert in_flight(second)[routed.address] == 1
    second.response_complete("r1", routed.address, 200, None)  # the observer stream landed on the second replica
    assert in_flight(second)[routed.address] == 0
    first.peer_ended(Ended("r1", routed.address, 200))
    assert in_flight(first)[routed.address] == 0


@pytest.mark.parametrize(
    ("events", "charged", "learned"),
    [
        ([Routed("p1", A, 10, {KEY: [1, 2]})], 1, True),
        ([Routed("p1", A, 10, {}), Ended("p1", A, 200)], 0, False),
        ([Ended("p1", A, 200), Routed("p1", A, 10, {KEY: [1]})], 0, True),  # end overtook it
        ([Routed("p1", A, 10, {}), Routed("p1", A, 10, {})], 1, False),  # the same decision twice counts once
        ([Routed("p1", "10.9.9.9:1", 10, {KEY: [1]})], 0, False),  # not a member here
        ([Routed("p1", A, 10, {"unknown-plugin": [1]})], 1, False),
    ],
)
def test_peer_events_in_any_order(events: list[Routed | Ended], charged: int, learned: bool):
    director, published = replica(Clock())
    for event in events:
        if isinstance(event, Routed):
            director.peer_routed(event)
        else:
            director.peer_ended(event)
    assert in_flight(director).get(A, 0) == charged
    scorer = director.scheduler.plugins["prefix-cache-scorer"]
    assert (scorer.index.blocks(A) > 0) == learned  # type: ignore[attr-defined]
    assert published == []  # a peer's events are never published again


def test_a_tombstone_is_forgotten_after_its_time():
    clock = Clock()
    director, _ = replica(clock)
    director.peer_ended(Ended("late", A, 200))
    clock.now += TOMBSTONE_S + 1
    director.peer_ended(Ended("other", A, 200))  # any end sweeps the old tombstones
    director.peer_routed(Routed("late", A, 10, {}))
    assert in_flight(director)[A] == 1  # charged: the tombstone was gone (the in-flight TTL releases it later)


def test_a_peer_charge_expires_with_the_in_flight_ttl():
    clock = Clock()
    director, _ = replica(clock)
    director.peer_routed(Routed("p1", A, 10, {}))
    clock.now += director.inflight.ttl_s + 1
    director.pick(LLMRequest("r2", "m", prompt="zzzz"))  # expiry runs with each decision
    assert director.in_flight_requests() == 1


def test_the_ttft_estimate_backlog_includes_the_peers_dispatches():
    """With the shipped default profile, a peer's dispatch extends this replica's virtual prefill queue as its own do
    (without it, each replica saw only its half of the prefill work and piled requests on the same server)."""
    clock = Clock()
    replicas = []
    for _ in range(2):
        director = Director(Scheduler(default_config()), clock=clock, rng=random.Random(1))
        director.set_endpoints([Endpoint(A), Endpoint(B)])
        for address in (A, B):
            director.update_metrics(address, EndpointMetrics())
        replicas.append(director)
    first, second = replicas
    published: list[Routed | Ended] = []
    first.on_routed = published.append
    first.pick(LLMRequest("r1", "m", prompt="x" * 40_000))
    routed = published[0]
    assert isinstance(routed, Routed)
    prefill_us, uncached = routed.blocks["ttft-estimate-scorer"]
    assert prefill_us > 0 and uncached == 10_000
    ttft = second.scheduler.plugins["ttft-estimate-scorer"]
    assert ttft.backlog_until.get(routed.address, 0.0) <= clock.now  # type: ignore[attr-defined]
    second.peer_routed(routed)
    assert ttft.backlog_until[routed.address] == pytest.approx(clock.now + prefill_us / 1e6)  # type: ignore[attr-defined]
    assert second.scheduler.plugins["ttft-estimate-scorer"].backlog_until == (  # type: ignore[attr-defined]
        first.scheduler.plugins["ttft-estimate-scorer"].backlog_until  # type: ignore[attr-defined]
    )


def test_a_deferred_decision_is_published_once_learnt_with_what_was_learnt():
    """Deferred learning (the picker process' default) and replica sync together: the peers hear of a decision after
    its plugins learnt from it, with the same blocks as an immediate one, and before any later entry point runs."""
    deferred, published = replica(Clock())
    immediate, expected = replica(Clock())
    request = LLMRequest("r1", "m", prompt=PROMPT)
    target = deferred.pick(request, defer_learning=True).targets[0].address
    assert published == []  # nothing learnt yet, nothing told
    assert deferred.learn_pending() == 1
    immediate.pick(LLMRequest("r1", "m", prompt=PROMPT))
    assert published == expected and len(published) == 1
    assert isinstance(published[0], Routed) and published[0].address == target and published[0].blocks
    deferred.pick(LLMRequest("r2", "m", prompt=PROMPT), defer_learning=True)
    deferred.response_complete("r1", target, 200, None)  # learns r2 first, then tells r1's end
    assert [type(e).__name__ for e in published] == ["Routed", "Routed", "Ended"]


def test_a_replica_that_starts_restores_a_peers_snapshot_for_the_endpoints_it_tracks():
    clock = Clock()
    running, _ = replica(clock)
    picked = running.pick(LLMRequest("r1", "m", prompt=PROMPT)).addresses[0]
    snapshot = running.snapshot()
    assert list(snapshot) == [KEY] and len(snapshot[KEY].endpoints[picked]) == 4
    starting, _ = replica(clock)
    assert prefix_score(starting, picked) == 0.0
    foreign = {
        KEY: IndexSnapshot({"10.9.9.9:8000": [1, 2, 3]}),
        "no-such-plugin": IndexSnapshot({A: [7]}),
        "prefix-cache-scorer@64B": IndexSnapshot({A: [7, 8]}),  # a peer hashing 64-byte blocks: not this index's
    }
    assert starting.restore(foreign) == 0  # untracked endpoints, unknown plugins, other block sizes: skipped
    assert starting.restore(snapshot) == 4
    assert prefix_score(starting, picked) == prefix_score(running, picked) == 1.0
    assert in_flight(starting) == {A: 0, B: 0}  # what is copied is the index, not the peer's charges


def test_a_peer_with_another_block_size_is_ignored_mid_rollout():
    """Replicas whose prefix indexes hash blocks of different sizes (a rollout changing `blockSize`) exchange them
    under different keys: neither learns the other's hashes, which would never match its own."""
    clock = Clock()
    old = Director(Scheduler(load_config(CONFIG.replace("blockSize: 4", "blockSize: 8"))), clock=clock)
    old.set_endpoints([Endpoint(A), Endpoint(B)])
    for address in (A, B):
        old.update_metrics(address, EndpointMetrics())
    sent: list[Routed | Ended] = []
    old.on_routed = sent.append
    old.pick(LLMRequest("r1", "m", prompt=PROMPT))
    routed = next(e for e in sent if isinstance(e, Routed))
    assert list(routed.blocks) == ["prefix-cache-scorer@8B"]
    new, _ = replica(clock)
    new.peer_routed(routed)
    scorer = new.scheduler.plugins["prefix-cache-scorer"]
    assert scorer.index.blocks(routed.address) == 0  # type: ignore[attr-defined]
    assert new.restore(old.snapshot()) == 0
