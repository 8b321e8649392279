"""The twin's metrics: counters integrated over real time, node-exporter and kube-state-metrics text, file_sd
targets, prometheus.yml and rule rendering, scrape-gap fault knobs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sim.cluster.exporter import file_sd_groups
from sim.cluster.exposition import render_kube_state, render_node
from sim.cluster.faults import FaultError, FaultState
from sim.cluster.load import VmDemand
from sim.cluster.prometheus_config import (
    RULES_PATH,
    RuleWindows,
    duration,
    parse_scrape_target,
    render_config,
    render_rules,
)
from sim.cluster.psi import PsiParams
from sim.cluster.scenario_load import LoadSettings
from sim.cluster.state_view import NodeInfo, TaintInfo
from sim.cluster.telemetry_state import Counters, Sample, take_sample

GIB = 2**30
PROMTOOL = shutil.which("promtool")
SETTINGS = LoadSettings.model_validate({"hostCpu": 0, "hostMemory": "1Gi"})


def node(name: str, *, ready: bool = True, labels: dict[str, str] | None = None) -> NodeInfo:
    return NodeInfo(
        name, 8000, 32 * GIB, 7500, 30 * GIB, ready, False, labels or {"node-role.kubernetes.io/worker": ""}
    )


def demand(name: str, node_name: str, busy: float) -> VmDemand:
    return VmDemand("vms", name, node_name, 12, busy, 8 * GIB, 4 * GIB, GIB // 2)


def sample(*demands: VmDemand, nodes: tuple[str, ...] = ("w0", "w1")) -> Sample:
    return take_sample([node(n) for n in nodes], list(demands), SETTINGS, PsiParams(), 0.0)


def test_counters_integrate_rates_over_real_seconds() -> None:
    c = Counters()
    hot = sample(demand("a", "w0", 1.0))  # 12 vCPUs always busy on 8 cores: cpu some = 0.5 + 0.03
    c.advance(hot, real_now=100.0)
    assert c.pressure["w0"]["cpu_waiting"] == 0.0
    c.advance(hot, real_now=102.0)
    assert c.pressure["w0"]["cpu_waiting"] == pytest.approx(2 * 0.53)
    assert c.cpu["w0"]["idle"] == pytest.approx(0.0) and c.cpu["w0"]["user"] + c.cpu["w0"]["system"] == pytest.approx(2)
    assert c.vm_cpu[("vms", "a", "w0")] == pytest.approx(2 * 8)  # served: all 8 cores
    moved = sample(demand("a", "w1", 1.0))
    c.advance(moved, real_now=103.0)  # the rates before the move apply until the move is seen
    assert c.pressure["w0"]["cpu_waiting"] == pytest.approx(3 * 0.53)
    assert c.vm_cpu == {("vms", "a", "w1"): 0.0}  # a new QEMU process on the target: its counter starts at 0
    c.advance(moved, real_now=104.0)
    assert c.pressure["w0"]["cpu_waiting"] == pytest.approx(3 * 0.53)  # idle now (no host load in SETTINGS)
    c.advance(sample(nodes=("w1",)), real_now=105.0)
    assert set(c.pressure) == {"w1"}


def test_a_scrape_between_ticks_sees_the_counters_advance_would_give() -> None:
    projected, advanced = Counters(), Counters()
    hot = sample(demand("a", "w0", 1.0), demand("b", "w1", 0.5))
    for c in (projected, advanced):
        c.advance(hot, real_now=100.0)
        c.advance(hot, real_now=101.0)
    mine = [vm for vm in hot.vms if vm.node == "w0"]
    view = projected.node_at("w0", mine, real_now=101.7)  # a scrape 0.7 s after the last tick
    advanced.advance(hot, real_now=101.7)
    assert view.pressure["w0"] == pytest.approx(advanced.pressure["w0"])
    assert view.cpu["w0"] == pytest.approx(advanced.cpu["w0"])
    assert view.vm_cpu == pytest.approx({("vms", "a", "w0"): advanced.vm_cpu[("vms", "a", "w0")]})
    assert projected.pressure["w0"]["cpu_waiting"] == pytest.approx(0.53)  # the projection changed nothing
    assert render_node(hot.nodes["w0"], view, mine) == render_node(hot.nodes["w0"], advanced, hot.vms)


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {f.name: [(dict(s.labels), s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def test_node_text_is_node_exporter_format() -> None:
    c = Counters()
    s = sample(demand("a", "w0", 1.0), demand('we"ird\\', "w1", 0.1))
    c.advance(s, 0.0)
    c.advance(s, 10.0)
    text = render_node(s.nodes["w0"], c, s.vms)
    fam = families(text)
    assert "# TYPE node_pressure_cpu_waiting_seconds_total counter" in text
    cpu = fam["node_cpu_seconds"]  # the parser strips _total from counters
    assert len(cpu) == 8 * 8 and {lbl["cpu"] for lbl, _ in cpu} == {str(i) for i in range(8)}
    assert fam["node_pressure_cpu_waiting_seconds"] == [({}, pytest.approx(5.3))]
    for name in ("memory_waiting", "memory_stalled", "io_waiting", "io_stalled"):
        assert f"node_pressure_{name}_seconds" in fam
    assert fam["node_memory_MemTotal_bytes"] == [({}, 32 * GIB)]
    available = fam["node_memory_MemAvailable_bytes"][0][1]
    assert available == pytest.approx(32 * GIB - GIB - 4 * GIB - GIB // 2)
    assert fam["kubevirt_vmi_cpu_usage_seconds"] == [({"name": "a", "namespace": "vms", "node": "w0"}, 80.0)]
    assert fam["kubevirt_vmi_memory_used_bytes"] == [({"name": "a", "namespace": "vms", "node": "w0"}, 4 * GIB)]
    other = families(render_node(s.nodes["w1"], c, s.vms))
    assert other["kubevirt_vmi_memory_domain_bytes"][0][0]["name"] == 'we"ird\\'  # escaped and parsed back


def test_kube_state_metrics_text() -> None:
    nodes = [
        node("w0", labels={"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/infra": ""}),
        NodeInfo("w1", 4000, 16 * GIB, 3500, 14 * GIB, False, True, {}, (TaintInfo("k", "v", "NoSchedule"),)),
    ]
    fam = families(render_kube_state(nodes))
    assert sorted(lbl["role"] for lbl, _ in fam["kube_node_role"]) == ["infra", "worker"]
    alloc = {(lbl["node"], lbl["resource"]): v for lbl, v in fam["kube_node_status_allocatable"]}
    assert alloc == {("w0", "cpu"): 7.5, ("w0", "memory"): 30 * GIB, ("w1", "cpu"): 3.5, ("w1", "memory"): 14 * GIB}
    ready = {(lbl["node"], lbl["status"]): v for lbl, v in fam["kube_node_status_condition"]}
    assert ready[("w0", "true")] == 1 and ready[("w1", "unknown")] == 1 and ready[("w1", "true")] == 0
    assert fam["kube_node_spec_unschedulable"] == [({"node": "w0"}, 0.0), ({"node": "w1"}, 1.0)]
    assert fam["kube_node_spec_taint"] == [({"node": "w1", "key": "k", "value": "v", "effect": "NoSchedule"}, 1.0)]


def test_file_sd_targets_set_instance_and_path() -> None:
    assert file_sd_groups("127.0.0.1:9100", ["w0"]) == [
        {"targets": ["127.0.0.1:9100"], "labels": {"instance": "w0", "__metrics_path__": "/nodes/w0/metrics"}}
    ]


def test_render_rules_swaps_windows_only_in_expressions() -> None:
    text = RULES_PATH.read_text()
    assert render_rules(text, RuleWindows()) == text
    fast = render_rules(text, RuleWindows(rate="4s", smoothing="10s", cooldown="30s", interval="1s"))
    groups = yaml.safe_load(fast)["groups"]
    assert groups[0]["interval"] == "1s"
    exprs = " ".join(r["expr"] for r in groups[0]["rules"])
    assert "[1m]" not in exprs and "[5m]" not in exprs and "[10m]" not in exprs
    assert "[4s]" in exprs and "[10s]" in exprs and "[30s]" in exprs
    assert "[1m] rates" in fast  # the comment still documents the reference
    with pytest.raises(ValueError, match="rate"):
        render_rules(text, RuleWindows(rate="1 minute"))
    with pytest.raises(ValueError, match="interval"):
        render_rules(text, RuleWindows(interval="0s"))


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (make prometheus)")
def test_promtool_accepts_rules_and_config(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    out = subprocess.run([PROMTOOL, "check", "rules", str(RULES_PATH)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    rules = tmp_path / "rules.yaml"
    rules.write_text(render_rules(RULES_PATH.read_text(), RuleWindows("4s", "10s", "30s", "1s")))
    targets = tmp_path / "nodes.json"
    targets.write_text(json.dumps(file_sd_groups("127.0.0.1:9100", ["w0", "w1"])))
    config = tmp_path / "prometheus.yml"
    config.write_text(
        render_config(
            scrape_interval_s=1,
            rules_path=rules,
            node_targets_path=targets,
            exporter_address="127.0.0.1:9100",
            ksm_path="/kube-state-metrics/metrics",
            extra_targets=[("controller", "127.0.0.1:9200/metrics")],
        )
    )
    out = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 23 rules found" in out.stdout


def test_config_and_targets() -> None:
    cfg = yaml.safe_load(
        render_config(
            scrape_interval_s=5,
            rules_path=Path("/r.yaml"),
            node_targets_path=Path("/t.json"),
            exporter_address="127.0.0.1:1",
            ksm_path="/ksm",
        )
    )
    assert cfg["global"] == {"scrape_interval": "5s", "scrape_timeout": "4s", "evaluation_interval": "5s"}
    assert [j["job_name"] for j in cfg["scrape_configs"]] == ["node-exporter", "kube-state-metrics"]
    assert (duration(1), duration(0.8), duration(0.25)) == ("1s", "800ms", "250ms")
    assert parse_scrape_target("controller=127.0.0.1:9200") == ("controller", "127.0.0.1:9200/metrics")
    assert parse_scrape_target("c=localhost:1/x/metrics") == ("c", "localhost:1/x/metrics")
    for bad in ("127.0.0.1:9200", "c=host", "c=:1", "9x=h:1"):
        with pytest.raises(ValueError):
            parse_scrape_target(bad)


def test_scrape_fault_knob() -> None:
    f = FaultState()
    f.apply_scrape({"node": "w1", "mode": "error"})
    f.apply_scrape({"node": "*", "mode": "stall"})
    assert (f.scrape_fault("w1"), f.scrape_fault("w0")) == ("error", "stall")
    f.apply_scrape({"node": "*", "mode": "none"})
    assert (f.scrape_fault("w1"), f.scrape_fault("w0")) == ("error", None)
    assert f.to_dict()["scrape"] == {"w1": "error"}
    for bad in ({"node": "w1"}, {"node": "", "mode": "error"}, {"node": "w1", "mode": "error", "x": 1}, []):
        with pytest.raises(FaultError):
            f.apply_scrape(bad)
    f.reset()
    assert f.scrape == {} and f.to_dict()["failNextMigrations"] == 0
