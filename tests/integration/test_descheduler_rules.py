"""The descheduler's recording rules (deploy/prometheus/descheduler-rules.yaml) evaluated by `promtool test rules`
on hand-made series: utilization, the 0.7 gates, worker averages, positive deviations, the k3 score, the p66
smoothing and the eviction cooldown give the numbers ref §1.4 says they should."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.cluster.prometheus_config import RULES_PATH, RuleWindows, render_rules

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (make prometheus)")
NODES = ("w0", "w1", "w2")
W0_NODE = {"w0": {"node": "w0"}}


def node_series(node: str, *, idle: float, cpu_wait: float, mem_wait: float, available: float) -> list[dict[str, str]]:
    """Counters as per-15s increments (idle 3 = 20% idle), gauges as constants; 15 minutes of samples."""
    ne = f'instance="{node}",job="node-exporter"'
    ksm = f'instance="ksm",job="kube-state-metrics",node="{node}"'
    return [
        {"series": f'node_cpu_seconds_total{{{ne},cpu="0",mode="idle"}}', "values": f"0+{idle}x60"},
        {"series": f"node_pressure_cpu_waiting_seconds_total{{{ne}}}", "values": f"0+{cpu_wait}x60"},
        {"series": f"node_pressure_memory_waiting_seconds_total{{{ne}}}", "values": f"0+{mem_wait}x60"},
        {"series": f"node_memory_MemAvailable_bytes{{{ne}}}", "values": f"{available}x60"},
        {"series": f'kube_node_status_allocatable{{{ksm},resource="memory",unit="byte"}}', "values": "100x60"},
        {"series": f'kube_node_role{{{ksm},role="worker"}}', "values": "1x60"},
    ]


def expect(
    record: str, values: dict[str, float], at: str = "12m", extra: dict[str, dict[str, str]] | None = None
) -> dict[str, Any]:
    """The samples `record` must have at `at`: one per node, labelled instance (plus `extra[node]`)."""

    def labels(node: str) -> str:
        more = "".join(f',{k}="{v}"' for k, v in (extra or {}).get(node, {}).items())
        return f'{record}{{instance="{node}"{more}}}'

    return {
        "expr": record,
        "eval_time": at,
        "exp_samples": [{"labels": labels(n), "value": v} for n, v in values.items()],
    }


def run_promtool(tmp_path: Path, rules_text: str, tests: list[dict[str, Any]], evaluation_interval: str) -> None:
    assert PROMTOOL is not None
    (tmp_path / "rules.yaml").write_text(rules_text)
    spec = {"rule_files": ["rules.yaml"], "evaluation_interval": evaluation_interval, "tests": tests}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    out = subprocess.run(
        [PROMTOOL, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_cpu_hotspot_scores_and_gates(tmp_path: Path) -> None:
    series = (
        # w0: 80% busy, cpu some 0.1 -> counted (> 0.7 busy)
        node_series("w0", idle=3, cpu_wait=1.5, mem_wait=0, available=50)
        # w1: 50% busy, cpu some 0.05 -> gated to 0
        + node_series("w1", idle=7.5, cpu_wait=0.75, mem_wait=0, available=50)
        # w2: 50% busy, memory some 0.2 at 50% memory -> gated to 0 (#1788)
        + node_series("w2", idle=7.5, cpu_wait=0, mem_wait=3, available=50)
        # 5 evictions from w0 in any 10 minutes -> cooldown multiplier 0.5
        + [
            {
                "series": 'descheduler_pods_evicted_total{node="w0",strategy="LowNodeUtilization",result="success"}',
                "values": "0+0.125x60",
            }
        ]
    )
    # w0: deviations 0.8 - 0.6 = 0.2 (cpu) and 0.1 - 0.1/3 (cpu pressure): 3 * sqrt(0.04 + 0.0667^2) = 0.63246
    k3 = 0.6324555320336761
    tests = [
        {
            "interval": "15s",
            "input_series": series,
            "promql_expr_test": [
                expect("descheduler:nodeutilization:cpu:avg1m", {"w0": 0.8, "w1": 0.5, "w2": 0.5}),
                expect("descheduler:nodeutilization:memory:avg1m", dict.fromkeys(NODES, 0.5)),
                expect("descheduler:nodepressure:cpu:avg1m", {"w0": 0.1, "w1": 0, "w2": 0}),
                expect("descheduler:nodepressure:memory:avg1m", dict.fromkeys(NODES, 0)),
                expect("descheduler:combined_utilization_and_pressure:avg1m", {"w0": 0.8, "w1": 0.5, "w2": 0.5}),
                expect(
                    "descheduler:node:linear_amplified_ideal_point_positive_distance:k3:avg1m",
                    {"w0": k3, "w1": 0, "w2": 0},
                ),
                expect(
                    "descheduler:node:linear_amplified_ideal_point_positive_distance:k3:p66_5m",
                    {"w0": k3, "w1": 0, "w2": 0},
                ),
                # label_replace keeps the `node` label on nodes with evictions (as the operator's rule does)
                expect("descheduler:node:cooldown_multiplier:10m", {"w0": 0.5, "w1": 1, "w2": 1}, extra=W0_NODE),
                expect("descheduler:node:actuation_priority:p66_5m", {"w0": k3 / 2, "w1": 0, "w2": 0}),
            ],
        }
    ]
    run_promtool(tmp_path, RULES_PATH.read_text(), tests, "30s")


def test_memory_pressure_counts_above_70_percent_and_saturates(tmp_path: Path) -> None:
    series = (
        node_series("w0", idle=15, cpu_wait=0, mem_wait=0, available=50)
        + node_series("w1", idle=15, cpu_wait=0, mem_wait=0, available=50)
        # w2: memory 80% used (of allocatable), memory some 0.4 -> counted
        + node_series("w2", idle=15, cpu_wait=0, mem_wait=6, available=20)
    )
    tests = [
        {
            "interval": "15s",
            "input_series": series,
            "promql_expr_test": [
                expect("descheduler:nodeutilization:memory:avg1m", {"w0": 0.5, "w1": 0.5, "w2": 0.8}),
                expect("descheduler:nodepressure:memory:avg1m", {"w0": 0, "w1": 0, "w2": 0.4}),
                # w2: deviations 0.2 (memory) and 0.4 - 0.4/3 (memory pressure): 3 * 0.333 >= 1 -> capped
                expect(
                    "descheduler:node:linear_amplified_ideal_point_positive_distance:k3:avg1m",
                    {"w0": 0, "w1": 0, "w2": 1},
                ),
            ],
        }
    ]
    run_promtool(tmp_path, RULES_PATH.read_text(), tests, "30s")


def test_rendered_short_windows_answer_the_same(tmp_path: Path) -> None:
    """With 4s rate windows and a 1s rule interval (as the integration tests run), the values do not change."""
    series = node_series("w0", idle=0.25, cpu_wait=0.125, mem_wait=0, available=50) + node_series(
        "w1", idle=0.5, cpu_wait=0.125, mem_wait=0, available=50
    )  # per-1s increments: w0 75% busy, w1 50% busy, both cpu some 0.125
    tests = [
        {
            "interval": "1s",
            "input_series": series,
            "promql_expr_test": [
                expect("descheduler:nodeutilization:cpu:avg1m", {"w0": 0.75, "w1": 0.5}, at="40s"),
                expect("descheduler:nodepressure:cpu:avg1m", {"w0": 0.125, "w1": 0}, at="40s"),
            ],
        }
    ]
    run_promtool(tmp_path, render_rules(RULES_PATH.read_text(), RuleWindows("4s", "10s", "30s", "1s")), tests, "1s")
