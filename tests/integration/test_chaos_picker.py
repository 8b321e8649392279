"""The picker chaos campaign's short form: one scenario (a replica killed and restarted under steady load through
the real Envoy + `autonomic picker` + fleet twin processes), its report's shape and the goals it must meet."""

from __future__ import annotations

import json
from pathlib import Path

from loadtests.chaos.picker import main


def test_a_killed_replica_is_taken_out_within_a_second_and_back_after_its_restart(tmp_path: Path) -> None:
    out = tmp_path / "chaos"
    argv = ["--scenarios", "replica-stop", "--rate", "20", "--baseline-seconds", "2", "--fault-seconds", "4"]
    rc = main([*argv, "--recover-seconds", "15", "--quiet-seconds", "1", "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert results["command"].startswith("python -m loadtests.chaos.picker --scenarios replica-stop ")
    [r] = results["scenarios"]
    assert rc == 0 and r["recovered"], r
    assert r["scenario"] == "replica-stop" and r["victim"].startswith("127.0.0.1:")
    assert r["sent"] == sum(r["sent_by_phase"].values()) and r["sent"] >= 20 * 6 * 0.8  # the load kept its rate
    assert r["failed"] == sum(r["answers"].values()) == sum(r["failed_by_phase"].values())
    assert r["sent_by_phase"]["during"] > 0 and r["picker"]["scrapes_connect"] >= 1  # the fault was seen
    assert r["taken_out_s"] is not None and r["taken_out_s"] < 1.0  # scrape interval 0.1 s
    assert r["victim_picked_again_s"] is not None and r["victim_picked_again_s"] < 2.0
    assert r["failed_by_phase"]["after"] == 0 and r["errors_until_s"] == 0  # nothing fails once it is back
    report = (out / "report.md").read_text()
    assert report.startswith("# Chaos: picker") and "| replica-stop |" in report
