"""The Director: who is a candidate (freshness, failed scrapes, subset hint), in-flight accounting, no-side-effect
explain, membership changes. Time is a variable the tests move; nothing sleeps."""

from __future__ import annotations

import random

import pytest

from scorer.config import load_config
from scorer.director import Director
from scorer.framework import Usage
from scorer.scheduler import Scheduler
from scorer.types import Endpoint, EndpointMetrics, LLMRequest, NoEndpointError

A, B, C = "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"
CONFIG = """
apiVersion: autonomic.dev/v1alpha1
kind: EndpointPickerConfig
plugins:
- {type: prefix-cache-scorer, parameters: {blockSize: 4}}
- {type: queue-scorer}
- {type: session-affinity-scorer}
- {type: max-score-picker, parameters: {maxNumOfEndpoints: 2}}
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: prefix-cache-scorer, weight: 2}
  - {pluginRef: queue-scorer}
  - {pluginRef: session-affinity-scorer, weight: 3}
  - {pluginRef: max-score-picker}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, addresses=(A, B, C), scrape: bool = True, **kwargs) -> Director:
    director = Director(Scheduler(load_config(CONFIG)), clock=clock, rng=random.Random(3), **kwargs)
    director.set_endpoints([Endpoint(a) for a in addresses])
    if scrape:
        for a in addresses:
            director.update_metrics(a, EndpointMetrics())
    return director


def req(rid: str, prompt: str = "aaaabbbbcccc", **kw) -> LLMRequest:
    return LLMRequest(rid, "m", prompt=prompt, **kw)


def state_of(director: Director, address: str):
    return next(s for s in director.endpoints() if s.address == address)


# ---- candidates ---------------------------------------------------------------------------------------------
def test_no_endpoints_or_no_metrics_is_not_ready(clock: Clock):
    empty = Director(Scheduler(load_config(CONFIG)), clock=clock)
    assert not empty.ready()
    with pytest.raises(NoEndpointError, match="no ready endpoints"):
        empty.pick(req("r"))
    unscraped = make(clock, scrape=False)
    assert not unscraped.ready()
    with pytest.raises(NoEndpointError, match="no ready endpoints"):
        unscraped.pick(req("r"))
    unscraped.update_metrics(B, EndpointMetrics())
    assert unscraped.ready() and unscraped.pick(req("r")).addresses[0] == B


def test_stale_metrics_take_an_endpoint_out(clock: Clock):
    director = make(clock, staleness_s=5.0)
    clock.now += 4.0
    director.update_metrics(A, EndpointMetrics())  # only A is scraped again
    clock.now += 2.0  # B and C are now 6 s old
    assert {s.address for s in director.endpoints() if s.stale} == {B, C}
    assert director.pick(req("r")).addresses == [A]
    assert director.stale_fallbacks == 0


def test_when_every_endpoint_is_stale_the_stale_ones_still_route_but_failed_ones_never(clock: Clock):
    director = make(clock, staleness_s=5.0)
    director.update_metrics(C, None, error="connection refused")
    clock.now += 10.0  # A and B are stale, C failed
    assert {s.address for s in director.endpoints() if s.stale and s.error is None} == {A, B}
    assert director.ready()
    picked = {director.pick(req(f"r{i}")).addresses[0] for i in range(20)}
    assert picked <= {A, B} and picked
    assert director.stale_fallbacks == 20
    director.update_metrics(A, EndpointMetrics())  # a fresh one again: only it is a candidate
    assert director.pick(req("fresh")).addresses[0] == A
    assert director.stale_fallbacks == 20
    for address in (A, B):
        director.update_metrics(address, None, error="timeout")
    assert not director.ready()
    with pytest.raises(NoEndpointError, match="no ready endpoints"):
        director.pick(req("none"))


def test_a_failed_scrape_stops_traffic_at_once_and_a_good_one_restores_it(clock: Clock):
    director = make(clock, addresses=(A, B))
    director.update_metrics(A, None, error="connection refused")
    assert state_of(director, A).error == "connection refused"
    assert all(director.pick(req(f"r{i}", prompt=f"{i}" * 8)).addresses[0] == B for i in range(5))
    director.update_metrics(A, EndpointMetrics())
    assert state_of(director, A).error is None
    assert {director.pick(req(f"s{i}", prompt=f"x{i}" * 8)).addresses[0] for i in range(20)} == {A, B}


@pytest.mark.parametrize(
    ("subset", "allowed"),
    [([B], {B}), ([B, C, "10.9.9.9:1"], {B, C}), (["10.0.0.3"], {C}), ([A + "0"], None), ([], None)],
)
def test_subset_hint(clock: Clock, subset: list[str], allowed: set[str] | None):
    director = make(clock)
    if allowed is None:
        with pytest.raises(NoEndpointError, match="subset"):
            director.pick(req("r"), subset=subset)
        return
    chosen = {director.pick(req(f"r{i}", prompt=f"p{i}" * 8), subset=subset).addresses[0] for i in range(30)}
    assert chosen == allowed


def test_subset_of_stale_endpoints_is_no_endpoint(clock: Clock):
    director = make(clock)
    director.update_metrics(B, None, error="timeout")
    with pytest.raises(NoEndpointError, match="no ready endpoint in the subset"):
        director.pick(req("r"), subset=[B])


# ---- in-flight accounting -----------------------------------------------------------------------------------
def test_pick_charges_the_primary_and_completion_releases_it_once(clock: Clock):
    director = make(clock)
    result = director.pick(req("r1", prompt="x" * 400))
    primary, fallback = result.targets
    assert (primary.in_flight, primary.in_flight_tokens, primary.dispatched_since_scrape) == (1, 100, 1)
    assert fallback.in_flight == 0
    assert director.in_flight_requests() == 1
    director.response_complete("r1", None, 200, Usage(prompt_tokens=100))
    director.response_complete("r1", None, 200, None)  # repeated: ignored
    director.response_complete("nobody", A, 200, None)  # unknown: ignored
    assert (primary.in_flight, primary.in_flight_tokens) == (0, 0)
    assert director.in_flight_requests() == 0
    director.update_metrics(primary.address, EndpointMetrics(waiting=1))
    assert primary.dispatched_since_scrape == 0  # the scrape now sees it


def test_served_endpoint_differs_from_primary(clock: Clock):
    director = make(clock)
    result = director.pick(req("r1", prompt="qqqqrrrrssss"))
    primary, fallback = result.targets
    fallback.in_flight = 3  # other requests of its own
    director.response_complete("r1", fallback.address, 200, None)
    assert primary.in_flight == 0  # the charge is released where it was made
    assert fallback.in_flight == 3  # and the served endpoint's own count is untouched
    again = director.explain(req("r2", prompt="qqqqrrrrssss"))
    by = {s.state.address: s.by_scorer["prefix-cache-scorer"] for s in again.scored}
    assert by[fallback.address] == 1.0  # the prefix was learnt where it was served


def test_a_request_in_flight_is_kept_without_its_prompt(clock: Clock):
    """Entries live as long as responses: a prompt (or its chat fields, or token ids) held there would grow memory
    with responses in flight times prompt length. What the hooks learn at the end does not need it."""
    director = make(clock)
    chat = {"messages": [{"role": "user", "content": "qqqqrrrrssss"}]}
    request = req("r1", prompt="qqqqrrrrssss", chat_fields=chat, prompt_token_ids=(1, 2, 3), headers={"x": "y"})
    primary, fallback = director.pick(request).targets
    entry = director.inflight.get("r1")
    assert entry is not None and entry.address == primary.address
    kept = entry.request
    assert (kept.prompt, kept.chat_fields, kept.prompt_token_ids) == ("", None, None)
    assert (kept.request_id, kept.model, kept.headers) == ("r1", "m", {"x": "y"})
    assert request.prompt == "qqqqrrrrssss"  # the caller's request is not changed
    director.response_complete("r1", fallback.address, 200, None)  # served elsewhere: learnt without the prompt
    again = director.explain(req("r2", prompt="qqqqrrrrssss"))
    by = {s.state.address: s.by_scorer["prefix-cache-scorer"] for s in again.scored}
    assert by[fallback.address] == 1.0


def test_lost_responses_expire_after_the_ttl(clock: Clock):
    director = make(clock, inflight_ttl_s=600.0, staleness_s=1e6)
    primary = director.pick(req("lost")).targets[0]
    clock.now += 599.0
    director.pick(req("other", prompt="zzzzzzzz"))
    assert director.in_flight_requests() == 2
    clock.now += 2.0
    director.update_metrics(A, EndpointMetrics())
    director.update_metrics(B, EndpointMetrics())
    director.update_metrics(C, EndpointMetrics())
    director.pick(req("third", prompt="yyyyyyyy"))  # picks expire what is older than the TTL
    assert director.inflight.get("lost") is None and director.in_flight_requests() == 2
    assert primary.in_flight == sum(1 for rid in ("other", "third") if director.inflight.get(rid).target is primary)
    director.response_complete("lost", None, 200, None)  # too late: ignored


def test_the_same_request_id_picked_twice_is_charged_once(clock: Clock):
    director = make(clock)
    director.pick(req("dup"))
    director.pick(req("dup"))
    assert sum(s.in_flight for s in director.endpoints()) == 1
    director.response_complete("dup", None, 200, None)
    assert sum(s.in_flight for s in director.endpoints()) == 0


# ---- membership -----------------------------------------------------------------------------------------------
def test_membership_keeps_survivors_and_forgets_the_departed(clock: Clock):
    director = make(clock)
    first = director.pick(req("r1", prompt="kkkkllll"))
    primary = first.targets[0]
    survivor = next(a for a in (A, B, C) if a != primary.address)
    director.set_endpoints([Endpoint(survivor), Endpoint("10.0.0.4:8000", labels={"new": "yes"})])
    assert [s.address for s in director.endpoints()] == [survivor, "10.0.0.4:8000"]
    assert director.endpoints()[1].metrics is None  # newcomers wait for a scrape
    assert director.pick(req("r2", prompt="kkkkllll")).addresses[0] == survivor  # the prefix index forgot primary
    director.response_complete("r1", None, 200, None)  # the departed endpoint's release is harmless
    director.set_endpoints([Endpoint(primary.address), Endpoint(survivor)])
    director.update_metrics(primary.address, EndpointMetrics())
    assert state_of(director, primary.address).in_flight == 0  # came back fresh
    assert state_of(director, survivor).in_flight == 1  # r2 still counted


def test_updates_for_unknown_endpoints_are_ignored(clock: Clock):
    director = make(clock, addresses=(A,))
    director.update_metrics("10.0.0.99:1", EndpointMetrics(waiting=5))
    assert [s.address for s in director.endpoints()] == [A]


# ---- explain --------------------------------------------------------------------------------------------------
def test_explain_has_no_side_effects(clock: Clock):
    with_explain, without = make(clock), make(clock)
    session = {"x-session-id": "s1"}
    for i in range(12):
        request = req(f"r{i}", prompt=f"shared-prefix-{i % 3}" * 4, headers=session if i % 2 else {})
        explained = with_explain.explain(request)
        assert explained.targets and explained.scored
        assert with_explain.in_flight_requests() == i  # nothing charged
        assert with_explain.pick(request).addresses == without.pick(request).addresses  # same rng, same learning
    prefix = with_explain.scheduler.plugins["prefix-cache-scorer"].index
    assert len(prefix) == len(without.scheduler.plugins["prefix-cache-scorer"].index)


def test_session_affinity_through_the_director(clock: Clock):
    director = make(clock)
    first = director.pick(req("t1", prompt="turn one....", headers={"x-session-id": "chat"}))
    director.response_complete("t1", None, 200, None)
    second = director.pick(req("t2", prompt="something else", headers={"x-session-id": "chat"}))
    assert second.addresses[0] == first.addresses[0]


def _answer(director: Director, rid: str, status: int, served: str | None = None) -> str:
    """Pick for `rid`, then end its response with `status` (on `served`, else where it was picked); the primary."""
    primary = director.pick(req(rid, prompt=f"{rid} distinct prompt")).targets[0].address
    director.response_complete(rid, served or primary, status, None)
    return primary


def test_an_endpoint_answering_5xx_in_a_row_is_ejected_then_back_after_the_ejection(clock: Clock):
    director = make(clock, eject_after_errors=3, ejection_s=5.0)
    for i, status in enumerate([500, 503, 200, 500, 500]):  # a success resets the run: not ejected yet
        director.pick(req(f"r{i}"))
        director.response_complete(f"r{i}", A, status, None)
        assert not any(s.ejected for s in director.endpoints())
    director.pick(req("r5"))
    director.response_complete("r5", A, 502, None)  # the third 5xx in a row (0 = a cancel, not judged)
    assert {s.address: s.ejected for s in director.endpoints()} == {A: True, B: False, C: False}
    assert director.ejections() == {A: 1, B: 0, C: 0}
    assert {_answer(director, f"x{i}", 200) for i in range(12)} <= {B, C}  # no traffic while ejected
    clock.now += 5.0
    assert not any(s.ejected for s in director.endpoints())
    assert A in {_answer(director, f"y{i}", 200) for i in range(12)}  # back after the ejection


def test_ejection_never_empties_the_pool_and_cancels_are_not_errors(clock: Clock):
    director = make(clock, addresses=(A, B), eject_after_errors=2)
    for i in range(2):
        director.pick(req(f"c{i}"))
        director.response_complete(f"c{i}", A, 0, None)  # ended before response headers: not judged
    assert director.ejections() == {A: 0, B: 0}
    for address in (A, B):
        for i in range(2):
            director.pick(req(f"{address}{i}"))
            director.response_complete(f"{address}{i}", address, 500, None)
    assert all(s.ejected for s in director.endpoints())
    assert _answer(director, "last", 200) in (A, B)  # every endpoint ejected: they all route again


def test_no_ejection_when_disabled(clock: Clock):
    director = make(clock, eject_after_errors=0)
    for i in range(20):
        director.pick(req(f"e{i}"))
        director.response_complete(f"e{i}", A, 500, None)
    assert director.ejections() == {A: 0, B: 0, C: 0} and not any(s.ejected for s in director.endpoints())


# ---- deferred learning ----------------------------------------------------------------------------------------
def _prefix_entries(director: Director) -> int:
    return director.scheduler.plugins["prefix-cache-scorer"].index.entries


@pytest.mark.parametrize(
    ("then", "learns"),
    [
        ("learn_pending", True),
        ("pick", True),  # the next decision sees the one before it
        ("explain", True),
        ("response_complete", True),
        ("set_endpoints", True),
        ("endpoints", False),  # reading the pool learns nothing
        ("update_metrics", False),
    ],
)
def test_a_deferred_decision_is_learnt_before_anything_that_reads_or_changes_the_index(
    clock: Clock, then: str, learns: bool
):
    director = make(clock)
    first = director.pick(req("r1", prompt="aaaabbbbcccc"), defer_learning=True)
    assert _prefix_entries(director) == 0 and director.in_flight_requests() == 1  # charged, not yet learnt
    actions = {
        "learn_pending": lambda: director.learn_pending(),
        "pick": lambda: director.pick(req("r2", prompt="zzzz"), defer_learning=True),
        "explain": lambda: director.explain(req("r2", prompt="zzzz")),
        "response_complete": lambda: director.response_complete("r1", None, 200, None),
        "set_endpoints": lambda: director.set_endpoints([Endpoint(a) for a in (A, B, C)]),
        "endpoints": lambda: director.endpoints(),
        "update_metrics": lambda: director.update_metrics(A, EndpointMetrics()),
    }
    actions[then]()
    assert (_prefix_entries(director) == 3) == learns  # the prompt's 3 blocks, on the primary
    index = director.scheduler.plugins["prefix-cache-scorer"].index
    assert index.match([]) == {} and (index.blocks(first.addresses[0]) == 3) == learns


def test_deferred_learning_decides_exactly_as_learning_at_once(clock: Clock):
    deferred, inline = make(clock), make(clock)
    for i in range(30):
        request = req(f"r{i}", prompt=f"doc-{i % 4}-" * 6 + f"turn {i}")
        assert deferred.pick(request, defer_learning=True).addresses == inline.pick(request).addresses
        if i % 3 == 0:
            assert deferred.learn_pending() == 1 and deferred.learn_pending() == 0  # at most one pending
    deferred.learn_pending()
    assert _prefix_entries(deferred) == _prefix_entries(inline)
