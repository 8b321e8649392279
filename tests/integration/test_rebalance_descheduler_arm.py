"""The rebalance benchmark's `descheduler` arm, briefly, on the default scenario: the real binary (`make descheduler`)
runs with the operator's policy against a fresh TLS twin and its real Prometheus (the recording rule as its metric),
evicts a virt-launcher pod from the hot worker-0, KubeVirt turns the eviction into an evacuation migration that
succeeds, and the arm reports which binary ran and what it did. Skipped when the binary is not built; without it
the benchmark skips the arm, saying why, before starting anything."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from loadtests.rebalance.descheduler_arm import DESCHEDULER, binary_path, unavailable
from loadtests.rebalance.report import text_table
from loadtests.rebalance.run import RunSettings, default_scenario, run_policies, run_policy
from sim.cluster.prometheus import DEFAULT_BINARY as PROMETHEUS

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None and not os.path.exists(PROMETHEUS),
    reason="Prometheus is not installed (make prometheus)",
)


@needs_prometheus
@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
def test_the_real_descheduler_evicts_and_the_eviction_becomes_a_migration() -> None:
    settings = RunSettings(time_scale=20, duration_s=180, warmup_s=0)
    result = run_policy(default_scenario(), DESCHEDULER, settings)
    ran = result["descheduler"]
    assert result["errors"] == [], (result["errors"], ran.get("log_tail"))
    assert "sigs.k8s.io/descheduler" in result["controller"] and ran["version"] in result["controller"]
    assert "4.21 GA" in result["controller"] and ran["interval"] == "3000ms"  # 60 model s at 20x
    assert ran["cycles"] >= 1 and ran["background_evictions"] >= 1, ran.get("log_tail")
    assert "worker-0" in ran["evicting_from"], (ran["evicting_from"], ran["log_errors"])
    # what it may log at error level here: a cycle without a node's sample in Prometheus (it then fails the cycle,
    # as on a real cluster; the loaded machine's Prometheus can miss a scrape), and its own per-cycle limit
    expected = ("unable to find metric entry for", "maximum number of evicted pods per a descheduling cycle")
    assert [e for e in ran["log_errors"] if not any(x in e for x in expected)] == [], ran["log_errors"]
    from_hot = [m for m in result["moves"] if m["source"] == "worker-0" and m["phase"] == "Succeeded"]
    assert from_hot and all(m["target"] != "worker-0" for m in from_hot), result["moves"]
    assert result["migrations"] >= 1 and result["pending_vms"] == 0


def test_without_the_binary_the_arm_is_skipped_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTONOMIC_DESCHEDULER", str(tmp_path / "descheduler"))
    assert binary_path() == tmp_path / "descheduler"
    said: list[str] = []
    comparison = run_policies(default_scenario(), [DESCHEDULER], RunSettings(), said.append)
    assert comparison["policies"] == {} and "make descheduler" in comparison["skipped"][DESCHEDULER]
    assert said and said[0].startswith("skipping the descheduler arm: no descheduler binary at")
    assert "descheduler skipped: no descheduler binary" in text_table(comparison, "t")
