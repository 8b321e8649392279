"""The label that says what decided a pick, and the explain table, from hand-built results (no server)."""

from __future__ import annotations

import pytest

from proto.autonomic.picker.v1 import picker_pb2 as pb
from scorer.explain_cli import render
from scorer.metrics import PickerMetrics, decision_reason
from scorer.prefix_index import ENTRY_BYTES, PrefixIndex
from scorer.types import Endpoint, EndpointState, SchedulingResult, ScoredEndpoint

WEIGHTS = {"prefix": 1.0, "ttft": 4.0, "queue": 1.0}


def _result(primary: str, *rows: tuple[str, dict[str, float]]) -> SchedulingResult:
    states = {a: EndpointState(Endpoint(a)) for a, _ in rows}
    scored = tuple(ScoredEndpoint(states[a], sum(WEIGHTS[k] * v for k, v in s.items()), s) for a, s in rows)
    return SchedulingResult(targets=(states[primary],), reason="test", scored=scored)


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (_result("a:1", ("a:1", {"prefix": 1, "ttft": 0.5})), "single_candidate"),
        # prefix gives a the lead (1 x 1.0) although b has the better ttft estimate (4 x -0.1)
        (_result("a:1", ("a:1", {"prefix": 1.0, "ttft": 0.9}), ("b:1", {"prefix": 0.0, "ttft": 1.0})), "prefix"),
        # the weighted lead counts: ttft 4 x 0.3 = 1.2 beats queue 1 x 1.0
        (
            _result(
                "a:1",
                ("a:1", {"prefix": 0.0, "ttft": 1.0, "queue": 0.0}),
                ("b:1", {"prefix": 0.0, "ttft": 0.7, "queue": 1.0}),
                ("c:1", {"prefix": 0.0, "ttft": 0.1, "queue": 0.0}),
            ),
            "ttft",
        ),
        (_result("b:1", ("a:1", {"queue": 1.0}), ("b:1", {"queue": 1.0})), "tie"),
        (_result("b:1", ("a:1", {"queue": 1.0}), ("b:1", {"queue": 0.2})), "below_max"),
        (_result("a:1", ("a:1", {}), ("b:1", {})), "tie"),
    ],
)
def test_decision_reason(result: SchedulingResult, reason: str):
    assert decision_reason(result, WEIGHTS) == reason


def test_observe_pick_counts_decision_endpoint_and_plugin_time():
    metrics = PickerMetrics()
    result = _result("a:1", ("a:1", {"prefix": 1.0}), ("b:1", {"prefix": 0.0}))
    result = SchedulingResult(result.targets, "x", result.scored, plugin_seconds={"prefix": 0.002, "picker": 1e-5})
    assert metrics.observe_pick(result, WEIGHTS, 0.003) == "prefix"
    sample = metrics.registry.get_sample_value
    assert sample("autonomic_picker_decisions_total", {"outcome": "routed", "reason": "prefix"}) == 1
    assert sample("autonomic_picker_picks_total", {"endpoint": "a:1"}) == 1
    assert sample("autonomic_picker_plugin_duration_seconds_count", {"plugin": "prefix"}) == 1
    assert sample("autonomic_picker_plugin_duration_seconds_sum", {"plugin": "prefix"}) == pytest.approx(0.002)


def _answer() -> pb.ExplainResponse:
    answer = pb.ExplainResponse(profile="default", targets=["10.0.0.2:8000", "10.0.0.1:8000"], reason="max score")
    answer.scorers.add(name="prefix-cache-scorer", weight=1)
    answer.scorers.add(name="ttft-estimate-scorer", weight=4)
    e = answer.endpoints.add(endpoint="10.0.0.2:8000", total=5.0)
    e.scores.update({"prefix-cache-scorer": 1.0, "ttft-estimate-scorer": 1.0})
    e.load.waiting, e.load.running, e.load.kv_usage, e.load.in_flight = 3, 7, 0.5, 2
    e = answer.endpoints.add(endpoint="10.0.0.1:8000", total=2.0)
    e.scores.update({"prefix-cache-scorer": 0.0, "ttft-estimate-scorer": 0.5})
    answer.filters.add(filter="h100-only", removed=["10.0.0.3:8000"])
    answer.unavailable.add(endpoint="10.0.0.4:8000", why="scrape failed: connect: refused")
    answer.plugin_seconds.update({"prefix-cache-scorer": 0.0004, "ttft-estimate-scorer": 0.0001})
    answer.prompt_tokens = 1234
    return answer


def test_render_table():
    text = render(_answer(), "127.0.0.1:9002")
    lines = text.splitlines()
    assert lines[0] == "picker 127.0.0.1:9002, profile default, prompt ~1,234 tokens (estimated)"
    assert lines[1] == "choice: 10.0.0.2:8000 (fallbacks: 10.0.0.1:8000)"
    assert lines[2] == "reason: max score"
    header = next(line for line in lines if "endpoint" in line and "total" in line)
    assert header.split() == [
        "endpoint", "total", "prefix-cache-scorer", "ttft-estimate-scorer", "waiting", "running", "kv", "in-flight"
    ]  # fmt: skip
    chosen = next(line for line in lines if line.startswith("*"))
    assert chosen.split() == ["*", "10.0.0.2:8000", "5.000", "1.000", "1.000", "3", "7", "0.50", "2"]
    assert next(line for line in lines if line.startswith("+")).split()[1:4] == ["10.0.0.1:8000", "2.000", "0.000"]
    assert "  h100-only: 10.0.0.3:8000" in lines
    assert "  10.0.0.4:8000  scrape failed: connect: refused" in lines
    assert lines[-1] == "plugin time (ms): prefix-cache-scorer 0.400, ttft-estimate-scorer 0.100"


def test_render_no_choice():
    answer = pb.ExplainResponse(error="no ready endpoints", prompt_tokens=3)
    answer.unavailable.add(endpoint="10.0.0.4:8000", why="no successful scrape yet")
    text = render(answer)
    assert "choice: none (no endpoint): no ready endpoints" in text
    assert "10.0.0.4:8000  no successful scrape yet" in text


def test_prefix_index_collector_reports_size_budget_and_evictions():
    metrics = PickerMetrics()
    bounded, unbounded = PrefixIndex(3, max_entries=4), PrefixIndex(100)
    bounded.record("a:1", [1, 2])
    bounded.record("a:1", [3, 4])  # a full LRU: 1 goes (capacity)
    bounded.record("b:1", [5, 6])  # 5 entries for 4: a gives up its oldest (budget)
    unbounded.record("a:1", [1, 2])
    metrics.watch_prefix_indexes(lambda: {"bounded": bounded, "unbounded": unbounded})
    sample = metrics.registry.get_sample_value
    p = "autonomic_picker_prefix_index_"
    assert sample(p + "entries", {"plugin": "bounded"}) == 4
    assert sample(p + "hashes", {"plugin": "bounded"}) == 4
    assert sample(p + "budget_bytes", {"plugin": "bounded"}) == 4 * ENTRY_BYTES
    assert sample(p + "budget_bytes", {"plugin": "unbounded"}) is None  # no budget, no series
    assert sample(p + "bytes", {"plugin": "bounded"}) == bounded.stats().estimated_bytes
    assert sample(p + "evictions_total", {"plugin": "bounded", "reason": "capacity"}) == 1
    assert sample(p + "evictions_total", {"plugin": "bounded", "reason": "budget"}) == 1
    assert sample(p + "endpoint_blocks", {"plugin": "bounded", "endpoint": "a:1"}) == 2
    assert sample(p + "endpoint_blocks", {"plugin": "unbounded", "endpoint": "a:1"}) == 2
    assert sample(p + "endpoint_capacity_blocks", {"plugin": "bounded", "endpoint": "a:1"}) == 3
    assert sample(p + "bytes_per_token", {"plugin": "bounded"}) is None  # nobody sized it
    bounded.set_capacity("b:1", 1)
    bounded.bytes_per_token = 6.5
    assert sample(p + "endpoint_capacity_blocks", {"plugin": "bounded", "endpoint": "b:1"}) == 1
    assert sample(p + "bytes_per_token", {"plugin": "bounded"}) == 6.5
