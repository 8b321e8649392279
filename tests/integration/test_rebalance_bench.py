"""`autonomic bench rebalance` and the demo's rebalance part, short: every policy on a fresh cluster twin with a real
Prometheus; the report directory is complete and well-formed (results.json in exactly the schema of issue 7, strict
JSON, report.md with every policy, a PNG plot). Figures are checked for sense, never for timings: the hotspot is
there without a controller and nothing moves then. The default baseline arm of both is the operator's main profile
(KubevirtMigrationAware), as the controller that ran says; the 4.21 GA one runs when named."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest

from autonomic import demo
from autonomic.cli import main as autonomic
from loadtests.rebalance.cli import main as bench
from loadtests.rebalance.cli import parse_args
from loadtests.rebalance.report import SCHEMA_KEYS
from sim.cluster.prometheus import DEFAULT_BINARY

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None and not os.path.exists(DEFAULT_BINARY),
    reason="Prometheus is not installed (make prometheus)",
)
POLICIES = ("no-op", "descheduler-compatible", "psi-relief")
INTS = {"migrations", "failed_migrations", "pingpong_vms"}
MAIN = "descheduler-compatible, profile main (evictionLimits.node 2, KubevirtMigrationAware)"
GA = "descheduler-compatible, profile 4.21-ga (1 per node, no KubevirtMigrationAware)"
PNG = b"\x89PNG\r\n\x1a\n"


def test_bench_rebalance_writes_a_complete_report(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ["--duration", "120", "--time-scale", "40", "--warmup", "0", "--out", str(out)]
    assert bench(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"milp_lower_bound", "policies"}
    assert results["milp_lower_bound"] is None or isinstance(results["milp_lower_bound"], int)
    assert list(results["policies"]) == list(POLICIES)
    for name, figures in results["policies"].items():
        assert tuple(figures) == SCHEMA_KEYS, name
        for key, value in figures.items():
            assert isinstance(value, int if key in INTS else float), (name, key, value)
            assert value >= 0, (name, key, value)
        assert figures["p95_pressure"] <= figures["peak_pressure"] <= 1.0
    noop = results["policies"]["no-op"]
    assert noop["node_minutes_over"] > 0 and noop["migrations"] == 0 and noop["gib_moved"] == 0.0
    assert results["milp_lower_bound"] >= 1  # worker-0 is over: at least one VM must move
    report = (out / "report.md").read_text()
    assert "autonomic bench rebalance --duration 120" in report
    for name in POLICIES:
        assert f"**{name}**" in report
    assert "| node-minutes over threshold |" in report and "![pressure over time](pressure.png)" in report
    assert (out / "pressure.png").read_bytes().startswith(PNG)
    runs = json.loads((out / "runs.json").read_text(), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert runs["settings"]["time_scale"] == 40 and set(runs["policies"]) == set(POLICIES)
    ran = {name: r["controller"] for name, r in runs["policies"].items()}  # from the controllers that ran
    assert ran == {
        "no-op": "no controller",
        "descheduler-compatible": MAIN,
        "psi-relief": "psi-relief, actuator migration",
    }
    assert f"- **descheduler-compatible**: {MAIN}" in report


def test_bench_and_demo_refuse_bad_options_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench(["--policies", "no-op,round-robin"]) == 2
    assert "--policies: unknown ['round-robin']" in capsys.readouterr().err
    assert bench(["--nodes", "4"]) == 2
    assert "--nodes and --vms go together" in capsys.readouterr().err
    assert bench(["--nodes", "4", "--memory-fill", "1.5"]) == 2
    assert "--memory-fill: Input should be less than or equal to 1" in capsys.readouterr().err
    assert bench(["--node-cpus", "64"]) == 2
    assert "--node-cpus, --node-memory-gib and --memory-fill need --nodes" in capsys.readouterr().err
    assert bench(["--nodes", "2", "--vms", "10", "--memory-fill", "0.85"]) == 2
    assert "--memory-fill: a memory fill of 0.85 with 10 VMs is infeasible" in capsys.readouterr().err
    trace = tmp_path / "trace.csv"
    trace.write_text("vm,minute,cpu_pct\nvm-a,0,10\n")
    assert bench(["--vm-trace", str(trace)]) == 2
    assert "trace header must have columns vm, minute, cpu_pct, mem_pct" in capsys.readouterr().err
    assert autonomic(["bench", "rebalance", "--threshold", "1.5"]) == 2
    assert "--threshold must be in (0, 1)" in capsys.readouterr().err
    assert autonomic(["demo", "--parts", "rebalance,scheduling"]) == 2
    assert "--parts: 'rebalance,scheduling'" in capsys.readouterr().err
    assert autonomic(["demo", "--parts", "rebalance", "--policies", "psi-relief,psi-relief"]) == 2
    assert "--policies: 'psi-relief,psi-relief'" in capsys.readouterr().err


def test_demo_rebalance_part_adds_its_figures_to_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    code = autonomic(
        ["demo", "--parts", "rebalance", "--policies", "no-op", "--rebalance-minutes", "1", "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "node-minutes over threshold" in printed and "VMs moved more than once" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert "routers" not in summary  # the routing part was not asked for
    rebalance = summary["rebalance"]
    assert tuple(rebalance["policies"]["no-op"]) == SCHEMA_KEYS
    assert rebalance["settings"]["duration_s"] == 60
    assert (out / "pressure.png").read_bytes().startswith(PNG)


def test_the_default_baseline_arm_is_migration_aware_and_the_ga_one_runs_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    demo.add_parser(parser.add_subparsers())
    assert parser.parse_args(["demo"]).policies == parse_args([]).policies == ",".join(POLICIES)
    out = tmp_path / "demo"
    arms = "descheduler-compatible,descheduler-compatible-ga"
    code = autonomic(
        ["demo", "--parts", "rebalance", "--policies", arms, "--rebalance-minutes", "1", "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"descheduler-compatible ({MAIN}): running" in printed and f"descheduler-compatible-ga ({GA})" in printed
    rebalance = json.loads((out / "summary.json").read_text())["rebalance"]
    assert rebalance["controllers"] == {"descheduler-compatible": MAIN, "descheduler-compatible-ga": GA}
    assert list(rebalance["policies"]) == arms.split(",")
