"""The upstream descheduler (sigs.k8s.io/descheduler v0.36.0, `make descheduler`) against the twin over verified TLS:
client-go lists and watches nodes, pods, namespaces, PVCs, PDBs and PriorityClasses, LowNodeUtilization evicts a
virt-launcher pod from the overloaded node, KubeVirt's webhook answers "Eviction triggered evacuation", the
descheduler (EvictionsInBackground) counts it as an eviction in progress, and the evacuation migration moves the VM
with priority system-maintenance. Skipped when the binary is not built."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import api_client, wait_for
from kubernetes import client

from sim.cluster.scenario import default_scenario_path, load_scenario
from sim.cluster.twin import ClusterTwin

ROOT = Path(__file__).resolve().parents[2]
DESCHEDULER = Path(os.environ.get("AUTONOMIC_DESCHEDULER", ROOT / ".gopath" / "bin" / "descheduler"))
KV = ("kubevirt.io", "v1")
# worker-0 holds 82% of its memory in requests, worker-3 20%: one node under 30%, three above 60% or in between
POLICY = """\
apiVersion: descheduler/v1alpha2
kind: DeschedulerPolicy
profiles:
  - name: default
    pluginConfig:
      - name: DefaultEvictor
      - name: LowNodeUtilization
        args:
          thresholds: {memory: 30}
          targetThresholds: {memory: 60}
    plugins:
      balance:
        enabled: [LowNodeUtilization]
"""

pytestmark = pytest.mark.skipif(not DESCHEDULER.exists(), reason=f"no descheduler at {DESCHEDULER} (make descheduler)")


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTwin]:
    kubeconfig = tmp_path_factory.mktemp("descheduler") / "kubeconfig"
    scenario = load_scenario(default_scenario_path())
    with ClusterTwin(scenario, time_scale=10, tls=True, kubeconfig_path=kubeconfig) as t:
        yield t


def test_descheduler_evicts_and_kubevirt_evacuates(twin: ClusterTwin, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    run = subprocess.run(
        [
            str(DESCHEDULER),
            "--kubeconfig",
            str(twin.kubeconfig_path),
            "--policy-config-file",
            str(policy),
            "--descheduling-interval",
            "0",  # one cycle, then exit
            "--secure-port",
            "0",
            "--feature-gates",
            "EvictionsInBackground=true",
            "--v",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "Failed to watch" not in log and "could not find the requested resource" not in log, log[-3000:]
    assert '"Evicting pods from node" node="worker-0"' in log
    assert "Eviction in background assumed" in log, log[-3000:]
    requests = re.findall(r'"Number of evictions/requests" totalEvicted=\d+ evictionRequests=(\d+)', log)
    assert requests and int(requests[-1]) >= 1  # which launcher pods go first is the descheduler's (random) order
    custom = client.CustomObjectsApi(api_client(twin))
    migrations = custom.list_namespaced_custom_object(*KV, "vms", "virtualmachineinstancemigrations")["items"]
    evacuations = [m for m in migrations if m["metadata"]["name"].startswith("kubevirt-evacuation-")]
    assert evacuations and all(m["spec"]["priority"] == "system-maintenance" for m in evacuations)
    name = evacuations[0]["metadata"]["name"]

    def ended() -> dict | None:
        m = custom.get_namespaced_custom_object(*KV, "vms", "virtualmachineinstancemigrations", name)
        return m if m["status"]["phase"] in ("Succeeded", "Failed") else None

    done = wait_for(ended, timeout=60, what="the evacuation to end")
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["migrationState"]["sourceNode"] == "worker-0"
    assert done["status"]["migrationState"]["targetNode"] != "worker-0"
