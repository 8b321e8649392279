"""The `descheduler` arm's pure parts: the policy the operator renders, the wall-clock interval, the command line, the
log summary (table-driven, and property-based for the log parser), and the reasons it skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from loadtests.rebalance.arms import ARMS, DEFAULT_ARMS, DESCHEDULER
from loadtests.rebalance.descheduler_arm import (
    SCORE_RULE,
    command,
    find_binary,
    interval_flag,
    render_policy,
    unavailable,
    write_policy,
)
from loadtests.rebalance.descheduler_log import LogSummary
from loadtests.rebalance.run import RunSettings, policy_config

URL = "http://127.0.0.1:9090"


def test_policy_is_the_operators_4_21_rendering() -> None:
    policy = render_policy(URL)
    assert policy["apiVersion"] == "descheduler/v1alpha2" and policy["kind"] == "DeschedulerPolicy"
    assert (policy["maxNoOfPodsToEvictPerNode"], policy["maxNoOfPodsToEvictTotal"]) == (2, 5)
    assert policy["metricsProviders"] == [{"source": "Prometheus", "prometheus": {"url": URL}}]
    assert policy["nodeSelector"] == "kubevirt.io/schedulable=true"
    (profile,) = policy["profiles"]
    assert profile["name"] == "KubeVirtRelieveAndMigrate"
    args = {c["name"]: c["args"] for c in profile["pluginConfig"]}
    lnu = args["LowNodeUtilization"]
    assert lnu["metricsUtilization"] == {"source": "Prometheus", "prometheus": {"query": SCORE_RULE}}
    assert (lnu["thresholds"], lnu["targetThresholds"]) == ({"MetricResource": 0}, {"MetricResource": 10})
    assert lnu["useDeviationThresholds"] is True and "evictionLimits" not in lnu  # 4.21 GA: one per node per cycle
    assert "kube-system" in lnu["evictableNamespaces"]["exclude"]
    assert args["DefaultEvictor"] == {"evictLocalStoragePods": True, "noEvictionPolicy": "Mandatory"}
    assert profile["plugins"] == {
        "balance": {"enabled": ["LowNodeUtilization"]},
        "filter": {"enabled": ["DefaultEvictor"]},
    }


def test_policy_file_is_the_rendering_as_yaml(tmp_path: Path) -> None:
    assert yaml.safe_load(write_policy(tmp_path, URL).read_text()) == render_policy(URL)


@pytest.mark.parametrize(
    ("interval_s", "time_scale", "flag"),
    [
        (60, 20, "3000ms"),  # the benchmark's default: a model minute at 20x
        (60, 30, "2000ms"),
        (60, 1, "60000ms"),  # real time
        (60, 40, "1500ms"),
        (1, 1e6, "1ms"),  # never 0: that would mean "run once" to the descheduler
    ],
)
def test_interval_is_the_model_interval_on_the_wall_clock(interval_s: float, time_scale: float, flag: str) -> None:
    assert interval_flag(interval_s, time_scale) == flag


def test_command_mounts_the_service_account_then_runs_the_operators_flags() -> None:
    argv = command(Path("/b/descheduler"), Path("/w/policy.yaml"), Path("/w/kc"), Path("/w/sa"), "3000ms")
    assert argv[0] == "unshare" and ("--mount" in argv or "-rm" in argv)
    sh = argv.index("sh")
    assert argv[sh + 1] == "-c" and "/run/secrets/kubernetes.io/serviceaccount" in argv[sh + 2]
    assert argv[sh + 4 : sh + 6] == ["/w/sa", "/b/descheduler"]
    flags = argv[sh + 6 :]
    pairs = dict(zip(flags[::2], flags[1::2], strict=True))
    assert pairs == {
        "--kubeconfig": "/w/kc",
        "--policy-config-file": "/w/policy.yaml",
        "--descheduling-interval": "3000ms",
        "--feature-gates": "EvictionsInBackground=true",
        "--secure-port": "0",
        "--v": "3",
    }


LINES = [
    'I1207 07:10:00.000001    4242 descheduler.go:235] "Resetting pod evictor counters"',
    'I1207 07:10:00.100000    4242 nodeutilization.go:194] "Evicting pods from node" node="worker-0" usage={}',
    'I1207 07:10:00.200000    4242 evictions.go:641] "Eviction in background assumed" pod="vms/virt-launcher-db-0"',
    'I1207 07:10:00.300000    4242 evictions.go:641] "Eviction in background assumed" pod="vms/virt-launcher-b-0"',
    'I1207 07:10:00.400000 4242 descheduler.go:252] "Number of evictions/requests" totalEvicted=0 evictionRequests=2',
    'I1207 07:10:03.400000    4242 nodeutilization.go:194] "Evicting pods from node" node="worker-0" usage={}',
    'E1207 07:10:03.500000    4242 descheduler.go:300] "running balance extension point failed" err="unable to find'
    ' metric entry for worker-9"',
    'E1207 07:10:03.500000    4242 descheduler.go:300] "running balance extension point failed" err="unable to find'
    ' metric entry for worker-9"',
    'I1207 07:10:03.600000 4242 descheduler.go:252] "Number of evictions/requests" totalEvicted=0 evictionRequests=2',
    "not a klog line at all",
    "",
]


@pytest.mark.parametrize(
    ("lines", "cycles", "background", "from_nodes", "errors"),
    [
        ([], 0, 0, {}, 0),
        (LINES[:1], 0, 0, {}, 0),
        (LINES[:5], 1, 2, {"worker-0": 1}, 0),
        (LINES, 2, 2, {"worker-0": 2}, 1),  # the same error twice counts once
        (LINES[-2:], 0, 0, {}, 0),
    ],
)
def test_log_summary(lines: list[str], cycles: int, background: int, from_nodes: dict[str, int], errors: int) -> None:
    summary = LogSummary.of(lines)
    assert (summary.cycles, summary.background_evictions) == (cycles, background)
    assert summary.evicting_from == from_nodes and len(summary.errors) == errors


@given(st.lists(st.text(max_size=200), max_size=30))
def test_log_summary_takes_any_text(lines: list[str]) -> None:
    summary = LogSummary.of(lines)
    plain = sum('"Number of evictions/requests"' in line for line in lines)
    assert 0 <= summary.cycles <= plain and len(summary.errors) <= 20


def test_no_binary_is_a_reason_to_skip(tmp_path: Path) -> None:
    missing = tmp_path / "descheduler"
    assert find_binary(missing) is None
    why = unavailable(missing)
    assert why is not None and "make descheduler" in why and str(missing) in why


def test_the_version_comes_from_the_install_stamp(tmp_path: Path) -> None:
    binary = tmp_path / "descheduler"
    binary.write_text("#!/bin/sh\n")
    os.chmod(binary, 0o755)
    assert find_binary(binary) is not None and find_binary(binary).version.startswith("unknown")  # type: ignore[union-attr]
    (tmp_path / "descheduler.version").write_text("v0.36.0\n")
    found = find_binary(binary)
    assert found is not None and found.version == "v0.36.0" and "sigs.k8s.io/descheduler v0.36.0" in found.describe()


def test_the_arm_is_named_not_default_and_runs_no_controller() -> None:
    assert DESCHEDULER in ARMS and DESCHEDULER not in DEFAULT_ARMS
    assert policy_config(DESCHEDULER, RunSettings()) is None


def test_a_skipped_arm_is_listed_with_its_reason_in_the_report(tmp_path: Path) -> None:
    from loadtests.rebalance.report import write_report

    comparison = {"milp_lower_bound": None, "policies": {}, "skipped": {DESCHEDULER: "no descheduler binary at /x"}}
    settings = {"threshold": 0.3, "duration_s": 60.0, "warmup_s": 0.0, "time_scale": 20.0, "interval_s": 60.0}
    paths = write_report(comparison, tmp_path, command="c", settings=settings, scenario="s")
    assert "- **descheduler**: skipped, no descheduler binary at /x" in paths["report"].read_text()


def test_another_engine_skips_the_real_descheduler_and_runs_the_rest() -> None:
    from loadtests.rebalance.run import default_scenario, run_policies

    ran: list[str] = []

    def engine(scenario: object, policy: str, *args: object, **kwargs: object) -> dict[str, object]:
        ran.append(policy)
        return {"policy": policy}

    said: list[str] = []
    out = run_policies(default_scenario(), [DESCHEDULER, "no-op"], RunSettings(), said.append, run_one=engine)
    assert ran == ["no-op"] and list(out["policies"]) == ["no-op"]
    assert out["skipped"] == {DESCHEDULER: "the real descheduler runs against the live twin only"}
    assert said[0] == "skipping the descheduler arm: the real descheduler runs against the live twin only"
