"""deploy/'s monitoring: the PrometheusRules pass promtool, carry exactly the descheduler's recording rules, and their
alerts fire on the series the code exports (promtool evaluates each alert's expression on made-up series); the
Grafana dashboard parses and every series it or an alert names is one the picker or the controller exports, or a
recorded one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import DEPLOY, render

from controller.metrics import ControllerMetrics
from scorer.metrics import PickerMetrics
from scorer.sources.precise_inputs import PreciseCollector

PROMTOOL = shutil.which("promtool")
RULES_FILE = DEPLOY / "prometheus/descheduler-rules.yaml"
DASHBOARD = DEPLOY / "components/grafana-dashboard/autonomic.json"
OURS = re.compile(r"\b((?:autonomic_|descheduler[_:])[A-Za-z0-9_:]*)")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


def exported() -> set[str]:
    """Every series name the picker (the precise profile's too) and the controller expose (families with their
    sample suffixes)."""
    picker = PickerMetrics()
    picker.watch_pool(lambda: [], lambda _address: 0.0)
    names: set[str] = set()
    families = [*picker.registry.collect(), *ControllerMetrics().registry.collect(), *PreciseCollector([]).collect()]
    for family in families:
        names.add(family.name)
        names |= {family.name + s for s in SUFFIXES.get(family.type, ())}
    return names


def rules() -> dict[str, Any]:
    """name -> PrometheusRule object, from the overlays that ship them."""
    out = {}
    for overlay in ("kubevirt", "vllm-inferencepool"):
        for obj in render(DEPLOY / "overlays" / overlay):
            if obj["kind"] == "PrometheusRule":
                out[obj["metadata"]["name"]] = obj
    return out


def recorded() -> set[str]:
    return {
        r["record"] for rule in rules().values() for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r
    }


def alerts() -> dict[str, dict[str, Any]]:
    return {
        r["alert"]: r for rule in rules().values() for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r
    }


def test_recording_rules_are_the_descheduler_rules():
    shipped = rules()["autonomic-controller"]["spec"]["groups"]
    reference = yaml.safe_load(RULES_FILE.read_text())["groups"]
    assert shipped[: len(reference)] == reference
    assert "descheduler:node:linear_amplified_ideal_point_positive_distance:k3:avg1m" in recorded()


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (make prometheus)")
@pytest.mark.parametrize("name", ["autonomic-controller", "autonomic-picker"])
def test_promtool_accepts_the_rules(tmp_path: Path, name: str):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rules()[name]["spec"]["groups"]}))
    done = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_queries_name_only_exported_or_recorded_series():
    known = exported() | recorded()
    queries = [a["expr"] for a in alerts().values()]
    queries += [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]
    unknown = {name for q in queries for name in OURS.findall(q)} - known
    assert not unknown, unknown
    assert len(queries) > 20


def test_required_alerts_exist():
    names = set(alerts())
    assert {"AutonomicPickerNotReady", "AutonomicPickerStaleMetrics", "AutonomicMigrationFailures"} <= names
    assert {"AutonomicControllerCyclesSkipped", "AutonomicPressureMetricsStale"} <= names
    for alert in alerts().values():
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


# (alert, input series as promtool writes them, minutes to evaluate at, whether the expression returns something)
FIRES = [
    ("AutonomicPickerNotReady", [('autonomic_picker_endpoint_ready{pod="p",endpoint="a"}', "0x10")], 5, True),
    ("AutonomicPickerNotReady", [('autonomic_picker_endpoint_ready{pod="p",endpoint="a"}', "1x10")], 5, False),
    ("AutonomicPickerStaleMetrics", [('autonomic_picker_scrape_staleness_seconds{endpoint="a"}', "30x10")], 5, True),
    ("AutonomicPickerStaleMetrics", [('autonomic_picker_scrape_staleness_seconds{endpoint="a"}', "0.1x10")], 5, False),
    ("AutonomicMigrationFailures", [('autonomic_controller_migrations_total{outcome="failed"}', "0+1x40")], 30, True),
    (
        "AutonomicMigrationFailures",
        [('autonomic_controller_migrations_total{outcome="succeeded"}', "0+1x40")],
        30,
        False,
    ),
    (
        "AutonomicControllerCyclesSkipped",
        [('autonomic_controller_skipped_cycles_total{reason="metrics-stale"}', "0+1x40")],
        30,
        True,
    ),
    (
        "AutonomicControllerCyclesSkipped",
        [('autonomic_controller_skipped_cycles_total{reason="metrics-stale"}', "0x40")],
        30,
        False,
    ),
    (
        "AutonomicPressureMetricsStale",
        [('autonomic_controller_skipped_cycles_total{reason="metrics-missing"}', "0+1x40")],
        30,
        True,
    ),
    ("AutonomicControllerStalled", [("autonomic_controller_last_cycle_timestamp_seconds", "0x40")], 30, True),
]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (make prometheus)")
def test_alert_expressions_fire_on_the_exported_series(tmp_path: Path):
    (tmp_path / "empty.yaml").write_text("groups: []\n")
    tests = []
    for alert, series, minutes, fires in FIRES:
        expr = alerts()[alert]["expr"]
        case: dict[str, Any] = {"expr": f"count({expr}) > 0", "eval_time": f"{minutes}m"}
        case["exp_samples"] = [{"labels": "{}", "value": 1}] if fires else []
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "promql_expr_test": [case],
            }
        )
    spec = {"rule_files": ["empty.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = subprocess.run([str(PROMTOOL), "test", "rules", "test.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_parses_and_covers_both_components():
    dash = json.loads(DASHBOARD.read_text())
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    exprs = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    assert "autonomic_picker_" in exprs and "autonomic_controller_" in exprs
    for p in panels:
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"].strip() and t["refId"] for t in p["targets"]), p["title"]
            assert p["datasource"]["uid"] == "${datasource}"
    rendered = [
        o for o in render(DEPLOY / "overlays/kubevirt") if o["metadata"]["name"] == "autonomic-grafana-dashboard"
    ]
    assert json.loads(rendered[0]["data"]["autonomic.json"]) == dash
    assert rendered[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
