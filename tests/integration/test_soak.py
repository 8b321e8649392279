"""The soak's short form: `autonomic soak` for 36 s (a sample every 3 s, 18 s of warm-up) with the picker, Envoy and
the fleet twin under load and the controller on the cluster twin with its Prometheus; the report's shape, every
process sampled throughout, and the growth goals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROCESSES = {"picker", "envoy", "fleet twin", "cluster twin", "prometheus", "controller", "soak driver"}


def test_a_short_soak_samples_every_process_and_meets_the_growth_goals(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    cmd = [sys.executable, "-m", "autonomic", "soak", "--minutes", "0.6", "--warmup-minutes", "0.3"]
    cmd += ["--sample-seconds", "3", "--rate", "20", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["goals_met"] is True
    samples = results["samples"]
    assert len(samples) == 13 and samples[-1]["t_s"] >= 36  # one at 0 s, then every 3 s
    for sample in samples:
        assert set(sample["processes"]) == PROCESSES
        assert all(p is not None and p["rss_mb"] > 0 and p["fds"] > 0 for p in sample["processes"].values())
        assert all(0 <= p["connections"] <= p["fds"] for p in sample["processes"].values())
    last = samples[-1]
    assert last["processes"]["envoy"]["connections"] > 0 and last["processes"]["picker"]["connections"] > 0
    assert last["load"]["sent"] >= 20 * 36 * 0.9 and last["load"]["failed"] == 0
    assert last["picker"]["asyncio_tasks"] > 0 and last["picker"]["precise_index_blocks"] > 0
    assert last["controller"]["cycles"] >= 2  # the controller kept cycling against the twin
    assert set(results["growth"]) == PROCESSES
    for name in PROCESSES - {"soak driver", "prometheus"}:  # reported, not judged (third party, load generator)
        assert results["growth"][name]["rss_mb"]["growth_pct"] <= 10, name
        assert results["growth"][name]["held_fds"]["growth_pct"] <= 10, name
    assert (out / "soak.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert report.startswith("# Soak") and "| picker |" in report and "![RSS and fds over time](soak.png)" in report
    assert "goals met" in proc.stdout
