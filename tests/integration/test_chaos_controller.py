"""The controller chaos campaign's short form (loadtests/chaos): the fastest scenarios through the same code as
`autonomic chaos controller`, checking the figures' shape and the goals. The real controller runs as a child
process against a fresh cluster twin and a real Prometheus per scenario."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from loadtests.chaos.cli import run_campaign
from loadtests.chaos.report import summary_table, write_report
from loadtests.chaos.scenarios import by_name
from sim.cluster.prometheus import DEFAULT_BINARY

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None and not os.path.exists(DEFAULT_BINARY),
    reason="Prometheus is not installed (make prometheus)",
)


def test_fast_scenarios_meet_every_goal(tmp_path: Path) -> None:
    scenarios = by_name("fast")
    assert [s.name for s in scenarios] == ["baseline", "prometheus-down", "sigkill-restart"]
    results = asyncio.run(run_campaign(scenarios, 1, tmp_path))
    table = summary_table(results)
    assert all(r.passed for r in results), table
    down = next(r for r in results if r.scenario.name == "prometheus-down")
    assert down.figures["skips"].keys() == {"metrics-unavailable"}  # the reason matches the fault
    assert down.figures["log_skips"].keys() == {"metrics-unavailable"}  # and the logs say the same
    assert down.figures["untrusted_actions"] == 0 and down.figures["recovered_s"] > 0
    for r in results:
        assert r.figures["duplicates"] == 0 and r.figures["max_in_flight"] <= 2 and r.figures["observer_samples"] > 10
    killed = next(r for r in results if r.scenario.name == "sigkill-restart")
    assert killed.figures["migrations"] >= 1 and not killed.figures["overlapping_vms"]
    write_report(results, tmp_path, command="test", seconds=1.0)
    data = json.loads((tmp_path / "results.json").read_text())
    assert [run["scenario"] for run in data["runs"]] == ["baseline", "prometheus-down", "sigkill-restart"]
    assert all(run["passed"] and run["goals"] for run in data["runs"])
    assert "| prometheus-down | PASS |" in (tmp_path / "report.md").read_text()
