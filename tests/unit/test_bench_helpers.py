"""The routing benchmark's pure helpers: rate scaling, the router-overhead figure, the echoed command, the table."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from loadtests.report.writer import Table, command_line, fmt
from loadtests.routing.benchmark import router_overhead_ms, scale_trace
from loadtests.routing.replay import ReplayRecord
from sim.fleet.trace import TraceRequest


def trace(*times: float) -> list[TraceRequest]:
    return [TraceRequest(t, 10, 1, (1,)) for t in times]


@pytest.mark.parametrize(
    ("times", "rate", "duration", "expected"),
    [
        ((0, 2, 4, 6), 1.0, None, [0, 2, 4, 6]),
        ((0, 2, 4, 6), 2.0, None, [0, 1, 2, 3]),
        ((0, 2, 4, 6), 2.0, 2.0, [0, 1]),  # duration counts after scaling, end excluded
        ((0, 2, 4, 6), 0.5, 5.0, [0, 4]),
    ],
)
def test_scale_trace(times: tuple[float, ...], rate: float, duration: float | None, expected: list[float]) -> None:
    scaled = scale_trace(trace(*times), rate, duration)
    assert [r.timestamp_s for r in scaled] == expected
    assert all(r.hash_ids == (1,) for r in scaled)


def test_scale_trace_refuses_a_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="rate scale must be > 0"):
        scale_trace(trace(0), 0.0, None)


def record(rid: str, ttft: float | None, status: int = 200) -> ReplayRecord:
    return ReplayRecord(index=0, request_id=rid, target="", status=status, ttft_s=ttft)


def test_router_overhead_pairs_requests_by_the_id_the_twin_logged() -> None:
    records = [record("rr-0", 0.30), record("rr-1", 0.50), record("rr-2", 0.70)]
    # the twin logs <client id>-<server>-<seq>, TTFT in model seconds; time scale 10 -> 0.25 wall s each
    logs = {0: [{"request_id": "rr-0-0-1", "ttft": 2.5}, {"request_id": "rr-2-0-2", "ttft": 2.5}]}
    logs[1] = [{"request_id": "rr-1-1-1", "ttft": 2.5}]
    assert router_overhead_ms(records, logs, 10.0) == pytest.approx(250.0)  # p50 of 50, 250, 450 ms


def test_router_overhead_falls_back_to_medians_when_ids_are_lost() -> None:
    records = [record("x-0", 0.30), record("x-1", 0.50), record("x-2", 0.70, status=500)]
    logs = {0: [{"request_id": "req-0-1", "ttft": 1.0}, {"request_id": "req-0-2", "ttft": 3.0}]}
    assert router_overhead_ms(records, logs, 10.0) == pytest.approx((0.40 - 0.20) * 1e3)


def test_command_line_spells_out_every_option() -> None:
    args = argparse.Namespace(trace=Path("/t/a b.jsonl"), servers=8, rate_scale=2.5, rates=[100.0, 400.0])
    line = command_line("autonomic bench routing", args, ("trace", "servers", "rate_scale", "rates"))
    assert line == "autonomic bench routing --trace '/t/a b.jsonl' --servers 8 --rate-scale 2.5 --rates 100,400"


@pytest.mark.parametrize(
    ("value", "spec", "expected"),
    [(0.12345, ".3f", "0.123"), (None, ".3f", "-"), (math.nan, ".2f", "-"), (3, "d", "3"), (2.0, ".1f", "2.0")],
)
def test_fmt(value: float | None, spec: str, expected: str) -> None:
    assert fmt(value, spec) == expected


def test_table_markdown() -> None:
    table = Table("T", ["a", "b"], [["1", "2"]], ["note"])
    assert table.markdown() == "## T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nnote"


@pytest.mark.parametrize("policy", ["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST"])
def test_envoy_baselines_render_their_lb_policy(policy: str) -> None:
    from scorer.extproc.envoy_config import EnvoyOptions, render

    plain = render(EnvoyOptions(picker_port=None, pool=("127.0.0.1:1", "127.0.0.1:2"), pool_lb_policy=policy))  # type: ignore[arg-type]
    (pool,) = [c for c in plain["static_resources"]["clusters"] if c["name"] == "pool"]
    assert pool["lb_policy"] == policy
    picked = render(EnvoyOptions(picker_port=9002, pool=("127.0.0.1:1",), pool_lb_policy=policy))  # type: ignore[arg-type]
    (pool,) = [c for c in picked["static_resources"]["clusters"] if c["name"] == "pool"]
    assert "lb_policy" not in pool  # with the picker, OverrideHost decides; the option only shapes the baselines


def test_cpu_table_reads_each_router_s_own_figure_and_servers_per_request() -> None:
    from loadtests.routing.benchmark import cpu_table

    summaries = {
        "picker-default": {"picker_cpu_s": 12.0, "envoy_cpu_s": 10.0, "servers_cpu_s": 80.0, "ok": 800},
        "sglang-cache-aware": {"peer_cpu_s": 4.0, "servers_cpu_s": 40.0, "ok": 800},
        "gone": {"ok": 0},
    }
    rows = cpu_table(summaries).rows
    assert rows[0] == ["picker-default", "12.0", "10.0", "80.0", "100.0"]
    assert rows[1] == ["sglang-cache-aware", "4.0", "-", "40.0", "50.0"]
    assert rows[2] == ["gone", "-", "-", "-", "-"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("picker-default", None),
        ("picker-default-x2", ("default", True, False, False, False)),
        ("picker-default-x2-unshared", ("default", False, False, False, False)),
        ("picker-default-x2-kill", ("default", True, True, False, False)),
        ("picker-default-x2-kill-buffered", ("default", True, True, True, False)),
        ("picker-default-x2-rollout", ("default", True, False, False, True)),
        ("picker-precise-x2-rollout", ("precise", True, False, False, True)),
    ],
)
def test_replica_arms_by_name(name: str, expected: tuple[str, bool, bool, bool, bool] | None) -> None:
    from loadtests.routing.replicas import replica_arm

    arm = replica_arm(name)
    got = None if arm is None else (arm.profile, arm.shared, arm.kill, arm.buffered, arm.rollout)
    assert got == expected


def test_picker_health_sums_counters_over_endpoints_by_outcome() -> None:
    from loadtests.routing.run import picker_health

    text = "\n".join(
        [
            'autonomic_picker_scrapes_total{endpoint="a",outcome="ok"} 10.0',
            'autonomic_picker_scrapes_total{endpoint="b",outcome="ok"} 5.0',
            'autonomic_picker_scrapes_total{endpoint="b",outcome="timeout"} 2.0',
            "autonomic_picker_stale_fallback_decisions_total 3.0",
            'autonomic_picker_decisions_total{outcome="routed"} 9.0',  # not a health counter
        ]
    )
    assert picker_health(text) == {
        "autonomic_picker_scrapes_total{ok}": 15.0,
        "autonomic_picker_scrapes_total{timeout}": 2.0,
        "autonomic_picker_stale_fallback_decisions_total": 3.0,
    }
