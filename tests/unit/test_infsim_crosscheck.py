"""The cross-check benchmark's pure parts: prefix-cache counters under both fleets' names, and its summary table."""

from __future__ import annotations

import pytest

from loadtests.routing.infsim_crosscheck import _PREFIX, table

TWIN = """# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 32.0
vllm:prefix_cache_hits_created{engine="0",model_name="m"} 1.7e9
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 96.0
"""
INFSIM = """# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits{model_name="m"} 32
vllm:prefix_cache_queries{model_name="m"} 96
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TWIN, [("hits", "32.0"), ("queries", "96.0")]),  # vLLM's names (prometheus_client adds _total)
        (INFSIM, [("hits", "32"), ("queries", "96")]),  # llm-d-inference-sim's (client_golang, no suffix)
        ("vllm:prefix_cache_hits_created{} 1.0\n", []),  # the _created gauge is not a counter value
        ("", []),
    ],
    ids=["twin", "infsim", "created", "empty"],
)
def test_prefix_counters_read_both_namings(text: str, expected: list[tuple[str, str]]) -> None:
    assert _PREFIX.findall(text) == expected


def test_table_reports_ratios_to_round_robin() -> None:
    results = [
        {"arm": "envoy-round-robin", "hit_ratio": 0.04, "failed": 0, "mean_latency_s": 1.0, "wall_s": 10.0},
        {"arm": "picker-precise", "hit_ratio": 0.05, "failed": 1, "mean_latency_s": 0.5, "wall_s": 5.0},
    ]
    rows = table("infsim", results).splitlines()
    assert rows[2].startswith("| infsim | envoy-round-robin | 4.0% | 1.00x | 0 |")
    assert rows[3].startswith("| infsim | picker-precise | 5.0% | 1.25x | 1 |")
