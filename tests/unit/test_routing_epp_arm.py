"""The routing benchmark's EPP arm without running it: the cluster twin's scenario, the EPP's command line, the
loopback addresses its fleet uses, and how a missing binary becomes a skip reason. Running it is
tests/integration/test_epp_peer.py (`-m peers`)."""

from __future__ import annotations

import argparse
import ipaddress
import re
import socket
from pathlib import Path

import pytest

from harness.epp import EXT_PROC_SERVICE, EppProcess, deployment_pod_name, epp_binary
from harness.netutil import find_loopback_hosts, free_port, free_ports, port_free
from loadtests.routing.cli import all_routers
from loadtests.routing.epp import EPP_ARMS, NAMESPACE, POOL, missing_reason, scenario
from sim.cluster.scenario import parse_scenario
from sim.cluster.scenario_objects import plain_pod
from sim.fleet.cli import add_parser, run


def test_the_scenario_has_a_ready_pod_per_server_and_a_pool_over_them():
    hosts = ["127.0.0.20", "127.0.0.21", "127.0.0.22"]
    parsed = parse_scenario(scenario(hosts, 31000))
    assert [(p.name, p.ip, p.namespace, p.ready, p.labels) for p in parsed.pods] == [
        (f"{POOL}-{i}", h, NAMESPACE, True, {"app": POOL}) for i, h in enumerate(hosts)
    ]
    (pool,) = parsed.inference_pools
    assert (pool.name, pool.namespace, pool.selector, pool.target_ports) == (POOL, NAMESPACE, {"app": POOL}, [31000])
    pod = plain_pod(parsed.pods[0], "2026-01-01T00:00:00Z")
    assert pod["status"]["podIP"] == hosts[0]
    assert {"type": "Ready", "status": "True"} in [
        {k: c[k] for k in ("type", "status")} for c in pod["status"]["conditions"]
    ]


def test_epp_command_line(tmp_path: Path):
    epp = EppProcess(
        kubeconfig=tmp_path / "kubeconfig", namespace="ns", pool_name="pool", expected_endpoints=2, extra_args=["--v=2"]
    )
    cmd = epp.command()
    assert cmd[0] == str(epp_binary())
    assert cmd[1:3] == ["--pool-name=pool", "--pool-namespace=ns"]  # InferencePool mode: v1.5.0's standalone fails
    assert not any(a.startswith(("--endpoint-selector", "--config-file")) for a in cmd)  # built-in default plugins
    for flag in ("--secure-serving=false", "--tracing=false", "--metrics-endpoint-auth=false"):
        assert flag in cmd
    ports = {a.split("=")[0]: int(a.split("=")[1]) for a in cmd if a.startswith(("--grpc", "--metrics-port"))}
    assert ports == {"--grpc-port": epp.port, "--grpc-health-port": epp.health_port, "--metrics-port": epp.metrics_port}
    assert len(set(ports.values())) == 3
    assert cmd[-1] == "--v=2"
    env = epp.env()
    assert (env["KUBECONFIG"], env["NAMESPACE"]) == (str(tmp_path / "kubeconfig"), "ns")
    assert env["POD_NAME"].startswith("pool-epp-")
    assert EXT_PROC_SERVICE == "envoy.service.ext_proc.v3.ExternalProcessor"


def test_the_pod_name_looks_like_a_deployments():
    """The EPP derives its Deployment's name from POD_NAME with `^(.+)-[a-z0-9]+-[a-z0-9]+$`."""
    name = deployment_pod_name("vllm-bench-epp")
    m = re.fullmatch(r"(.+)-[a-z0-9]+-[a-z0-9]+", name)
    assert m is not None and m.group(1) == "vllm-bench-epp"


def test_free_ports_are_distinct_and_free():
    """Three `free_port()` calls in a row could return one port twice (this file's command-line test failed so, and
    an Envoy's listener once got its admin port): no port is handed out twice in a while."""
    ports = free_ports(50) + [free_port() for _ in range(50)]
    assert len(set(ports)) == 100
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))  # still free once chosen


def test_loopback_hosts_share_one_free_port():
    hosts, base = find_loopback_hosts(4, (0, 1000))
    assert len(set(hosts)) == 4 and "127.0.0.1" not in hosts
    assert all(ipaddress.IPv4Address(h).is_loopback for h in hosts)
    assert all(port_free(base + o, h) for h in hosts for o in (0, 1000))
    with pytest.raises(ValueError):
        find_loopback_hosts(0)


def test_a_missing_binary_is_a_skip_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("EPP_BIN", str(tmp_path / "no-epp"))
    reason = missing_reason("epp-default")
    assert reason is not None and "make peers" in reason and str(tmp_path / "no-epp") in reason
    binary = tmp_path / "epp"
    binary.write_text("")
    monkeypatch.setenv("EPP_BIN", str(binary))
    assert missing_reason("epp-default") is None


def test_every_epp_arm_is_a_router_of_the_benchmark():
    assert set(EPP_ARMS) <= set(all_routers())
    assert "epp-default" in EPP_ARMS


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "::1", "localhost"])
def test_the_fleet_serves_on_loopback_addresses_only(host: str, capsys: pytest.CaptureFixture[str]):
    """`autonomic fleet --host` (FleetGroup(distinct_hosts=True) passes 127.0.0.x) refuses anything else."""
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    assert run(parser.parse_args(["fleet", "--host", host])) == 2
    assert "--host must be an IPv4 loopback address" in capsys.readouterr().err
