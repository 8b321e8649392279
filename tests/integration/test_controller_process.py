"""The controller as replicas and as a process, against the cluster twin (no Prometheus needed: the URL points
nowhere, so the leader's cycles skip with `metrics-unavailable`): two replicas elect one leader and the other
takes over when it stops, after the lease expires or at once when it releases it; `autonomic controller` prints a
ready line, serves /metrics, /healthz and /readyz, stops on SIGTERM, and exits 2 on a bad configuration naming the
path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import api_client, wait_for
from controller_helpers import BackgroundController, controller_config, twin_options, two_nodes_one_vm
from kubernetes import client

from harness.netutil import free_port
from sim.cluster.twin import ClusterTwin

DOWN = f"http://127.0.0.1:{free_port()}"  # nothing listens there
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def twin() -> Iterator[ClusterTwin]:
    with ClusterTwin(two_nodes_one_vm(), time_scale=10) as t:
        yield t


def lease(twin: ClusterTwin, name: str) -> dict[str, Any]:
    with api_client(twin) as api:
        resp = client.CoordinationV1Api(api).read_namespaced_lease(name, "default", _preload_content=False)
        return dict(json.loads(resp.data)["spec"])


def replica(twin: ClusterTwin, identity: str, name: str, **kw: Any) -> BackgroundController:
    config = controller_config(policy="descheduler-compatible")
    return BackgroundController(twin_options(twin, config, DOWN, identity=identity, lease_name=name, **kw))


def leader(a: BackgroundController) -> bool:
    return a.running is not None and a.running.elector is not None and a.running.elector.is_leader


def test_two_replicas_elect_one_leader_and_the_other_takes_over(twin: ClusterTwin) -> None:
    name = "elect"
    a = replica(twin, "replica-a", name, release_on_stop=False).start()  # stops like a crashed process
    b = replica(twin, "replica-b", name).start()
    try:
        wait_for(lambda: leader(a) or leader(b), what="a leader")
        first, second = (a, b) if leader(a) else (b, a)
        assert first.running is not None and second.running is not None
        wait_for(lambda: first.skipped("metrics-unavailable") >= 2, what="the leader's cycles")
        wait_for(lambda: second.skipped("not-leader") >= 2, what="the follower's cycles")
        assert not leader(second) and second.skipped("metrics-unavailable") == 0  # it never acted
        assert lease(twin, name)["holderIdentity"] == first.running.identity
        assert first.sample("autonomic_controller_leader") == 1 and second.sample("autonomic_controller_leader") == 0
        transitions = lease(twin, name).get("leaseTransitions", 0)
        if first is a:
            a.stop()  # no release: b waits for the lease to expire
        else:
            b.stop()  # released: a takes over at its next retry
        wait_for(lambda: leader(second), timeout=15, what="the standby to take over")
        assert lease(twin, name)["holderIdentity"] == second.running.identity
        assert lease(twin, name)["leaseTransitions"] == transitions + 1
        skipped = second.skipped("metrics-unavailable")
        wait_for(lambda: second.skipped("metrics-unavailable") > skipped, what="the new leader's cycles")
    finally:
        for r in (a, b):
            r.stop()


def test_a_released_lease_is_taken_over_before_it_expires(twin: ClusterTwin) -> None:
    name = "release"
    # a long lease: only the release lets the standby in before the test's bound
    slow = {"lease_duration_s": 60.0, "renew_deadline_s": 40.0, "retry_s": 0.2}
    a = replica(twin, "replica-a", name, **slow).start()
    wait_for(lambda: leader(a), what="a leads")
    b = replica(twin, "replica-b", name, **slow).start()
    try:
        wait_for(lambda: b.skipped("not-leader") >= 2, what="b waits")
        a.stop()
        assert lease(twin, name)["holderIdentity"] in ("", "replica-b")  # released (b may have taken it already)
        wait_for(lambda: leader(b), timeout=10, what="b takes the released lease")
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def process_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def test_cli_serves_until_sigterm(twin: ClusterTwin, process_env: dict[str, str], tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "autonomic",
        "controller",
        "--kubeconfig",
        str(twin.kubeconfig_path),
        "--prometheus-url",
        DOWN,
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        "0",
        "--interval",
        "0.2",
        "--dry-run",
        "--twin-clock",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=process_env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready: policy=descheduler-compatible profile=main actuator=dry-run"), line
        assert "leader-election=off" in line and "nodes=2 vmis=1" in line
        url = line.split("metrics=")[1].split()[0].removesuffix("/metrics")

        def skipped() -> bool:
            with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
                text = resp.read().decode()
            return 'autonomic_controller_skipped_cycles_total{reason="metrics-unavailable"}' in text

        wait_for(skipped, what="a skipped cycle in /metrics")
        for path, body in (("/healthz", "ok"), ("/readyz", "ready")):
            with urllib.request.urlopen(url + path, timeout=5) as resp:
                assert resp.status == 200 and resp.read().decode().strip() == body
        with urllib.request.urlopen(url + "/debug/state", timeout=5) as resp:
            state = json.loads(resp.read())
        assert state["lastSkip"][0] == "metrics-unavailable" and "unreachable" in state["lastSkip"][1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None
        logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
        skips = [r for r in logs if r.get("reason_code") == "metrics-unavailable"]
        assert skips and skips[0]["msg"].startswith("cycle skipped: metrics unavailable: prometheus")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_exits_2_on_a_bad_configuration(process_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "controller.yaml"
    bad.write_text("policy: psi-relief\npsiRelief: {low: 0.5, high: 0.3}\nlimits: {maxInFlightTotal: -1}\n")
    args = [sys.executable, "-m", "autonomic", "controller", "--prometheus-url", DOWN, "--config", str(bad)]
    done = subprocess.run(args, capture_output=True, text=True, env=process_env, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert f"error: {bad}: limits.maxInFlightTotal: Input should be greater than or equal to 0" in done.stderr


def test_twin_clock_retries_through_a_503_storm(twin: ClusterTwin) -> None:
    """Found by `autonomic chaos controller` (scenario 503+drops+sigkill): a controller restarted during an API storm
    read the twin's clock once, got a 503 and exited 1 before it was ready."""
    import threading

    from cluster_helpers import admin

    from controller.cli import twin_clock
    from controller.service import StartupError

    admin(twin, "PUT", "faults/api", {"errorRate": 1.0, "errorStatus": 503})
    try:
        with pytest.raises(StartupError, match=r"cannot read the twin's clock: \(503\)"):
            twin_clock(twin.kubeconfig_path, timeout_s=0.5)  # a storm longer than the patience still fails
        requests = threading.Timer(1.0, admin, (twin, "POST", "faults/reset"))
        requests.start()
        clock = twin_clock(twin.kubeconfig_path, timeout_s=30)  # retried until the storm ended
        requests.join()
    finally:
        admin(twin, "POST", "faults/reset")
    assert clock.now() > 0
