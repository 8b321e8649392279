"""The picker chaos campaign's short form: two scenarios under steady load through the real Envoy + `autonomic
picker` + fleet twin processes — a replica killed and restarted, a replica answering 500 while its /metrics still
answers — the report's shape and the goals each must meet."""

from __future__ import annotations

import json
from pathlib import Path

from loadtests.chaos.picker import main


def test_a_killed_replica_and_an_erroring_one_are_taken_out_and_come_back(tmp_path: Path) -> None:
    out = tmp_path / "chaos"
    argv = ["--scenarios", "replica-stop,replica-error", "--rate", "20", "--baseline-seconds", "2"]
    rc = main([*argv, "--fault-seconds", "4", "--recover-seconds", "15", "--quiet-seconds", "1", "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert results["command"].startswith("python -m loadtests.chaos.picker --scenarios replica-stop,replica-error ")
    stop, error = results["scenarios"]
    assert rc == 0 and stop["recovered"] and error["recovered"], results
    for r in (stop, error):
        assert r["victim"].startswith("127.0.0.1:")
        assert r["sent"] == sum(r["sent_by_phase"].values()) and r["sent"] >= 20 * 6 * 0.8  # the load kept its rate
        assert r["failed"] == sum(r["answers"].values()) == sum(r["failed_by_phase"].values())
        assert r["sent_by_phase"]["during"] > 0
        # bounds tied to the scenario, not to how fast this machine is: out while the fault lasted, and back
        assert r["taken_out_s"] is not None and r["taken_out_s"] < r["fault_seconds"]
        assert r["victim_picked_again_s"] is not None
        assert r["failed_by_phase"]["after"] == 0 and r["errors_until_s"] == 0  # nothing fails once it is back
    # stopped: refused scrapes take it out (scrape interval 0.1 s), Envoy's retries hide the few requests in between
    assert stop["scenario"] == "replica-stop" and stop["picker"]["scrapes_connect"] >= 1
    # erroring: its scrapes still succeed; 5 errors in a row eject it for 5 s (longer than this 4 s fault)
    assert error["scenario"] == "replica-error" and error["picker"]["ejections"] == 1
    assert error["failed"] >= 5 and set(error["answers"]) == {"500 InternalServerError"}
    # without the ejection the victim would fail its whole share (a third) of the requests sent during the fault
    assert error["failed"] < error["sent_by_phase"]["during"] / 3
    ejection_ends = error["taken_out_s"] + 5.0 - error["fault_seconds"]  # after the fault: picked only once it ends
    assert error["victim_picked_again_s"] > ejection_ends - 0.5
    report = (out / "report.md").read_text()
    assert report.startswith("# Chaos: picker") and "| replica-stop |" in report and "| replica-error |" in report
