"""kubectl against the cluster twin, and `cluster-sim` as a process (ready lines, clean stop on SIGINT and SIGTERM,
with and without its Prometheus)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import AUTONOMIC, read_until_ready

from sim.cluster.scenario import default_scenario_path, load_scenario
from sim.cluster.twin import ClusterTwin

KUBECTL = shutil.which("kubectl")
RUNNER = (
    "import argparse, sys\n"
    "from sim.cluster import cli\n"
    "p = argparse.ArgumentParser(); sub = p.add_subparsers(dest='cmd'); cli.add_parser(sub)\n"
    "sys.exit(cli.run(p.parse_args(sys.argv[1:])))\n"
)


@pytest.fixture(scope="module")
def twin() -> Iterator[ClusterTwin]:
    with ClusterTwin(load_scenario(default_scenario_path()), time_scale=100) as t:
        yield t


def _kubectl(twin: ClusterTwin, *args: str) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(twin.kubeconfig_path), *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (Debian package `kubectl`)")
def test_kubectl_get_nodes(twin: ClusterTwin) -> None:
    out = _kubectl(twin, "get", "nodes")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert [line.split()[:3] for line in lines[1:]] == [[f"worker-{i}", "Ready", "worker"] for i in range(4)]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (Debian package `kubectl`)")
def test_kubectl_kubevirt_short_names_and_jsonpath(twin: ClusterTwin) -> None:
    out = _kubectl(twin, "get", "vmi", "-n", "vms")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split() == ["NAME", "AGE", "PHASE", "IP", "NODENAME", "READY"]
    out = _kubectl(twin, "get", "node", "worker-0", "-o", "jsonpath={.status.allocatable.cpu}")
    assert out.returncode == 0 and out.stdout == "7500m", out.stderr


def test_cluster_sim_process_prints_ready_lines_and_stops_on_sigint() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            RUNNER,
            "cluster-sim",
            "--nodes",
            "3",
            "--vms",
            "6",
            "--port",
            "0",
            "--no-prometheus",
            "--time-scale",
            "50",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("ready:"):
                break
        kubeconfig = next(line.split(": ", 1)[1] for line in lines if line.startswith("kubeconfig: "))
        assert any(line.startswith("prometheus: ") for line in lines)
        assert "server: http://127.0.0.1:" in Path(kubeconfig).read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


_read_until_ready = read_until_ready


@pytest.mark.skipif(not AUTONOMIC.exists(), reason="the autonomic console script is not installed")
@pytest.mark.skipif(not Path("/usr/bin/prometheus").exists(), reason="Prometheus is not installed (make prometheus)")
def test_autonomic_cluster_sim_runs_prometheus_and_stops_it_on_sigterm() -> None:
    proc = subprocess.Popen(
        [str(AUTONOMIC), "cluster-sim", "--nodes", "2", "--vms", "4", "--port", "0", "--scrape-interval", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _read_until_ready(proc)
        fields = dict(line.split(": ", 1) for line in lines)
        prometheus, metrics = fields["prometheus"], fields["metrics"]
        assert Path(fields["kubeconfig"]).exists() and prometheus.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{prometheus}/-/ready", timeout=10) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(metrics.replace("<node>", "worker-0"), timeout=10) as resp:
            assert b"node_pressure_cpu_waiting_seconds_total " in resp.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        with pytest.raises(OSError):  # Prometheus went with it
            urllib.request.urlopen(f"{prometheus}/-/ready", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
