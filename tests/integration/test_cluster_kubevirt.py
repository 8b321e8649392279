"""KubeVirt behaviour of the cluster twin through the official client: evictions that start evacuations,
PDBs, non-migratable VMIs, direct migrations, concurrency limits, failures and the ClusterView."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import admin, api_client, launcher_pod, wait_for
from kubernetes import client
from kubernetes.client.rest import ApiException

from sim.cluster.resources import VMIMS, VMIS
from sim.cluster.scenario import default_scenario_path, load_scenario, parse_scenario
from sim.cluster.state_view import ClusterView, MigrationInfo
from sim.cluster.twin import ClusterTwin
from sim.cluster.watch import Change

KV = ("kubevirt.io", "v1")


@pytest.fixture
def twin() -> Iterator[ClusterTwin]:
    with ClusterTwin(load_scenario(default_scenario_path()), time_scale=500) as t:
        yield t


def _status(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def _evict(core: client.CoreV1Api, pod: client.V1Pod, **annotations: str) -> ApiException | None:
    body = client.V1Eviction(
        metadata=client.V1ObjectMeta(
            name=pod.metadata.name, namespace=pod.metadata.namespace, annotations=annotations or None
        )
    )
    try:
        core.create_namespaced_pod_eviction(pod.metadata.name, pod.metadata.namespace, body)
    except ApiException as exc:
        return exc
    return None


def _vmi(custom: client.CustomObjectsApi, ns: str, name: str) -> dict[str, Any]:
    return custom.get_namespaced_custom_object(*KV, ns, "virtualmachineinstances", name)


def _migrations(custom: client.CustomObjectsApi, ns: str, vmi: str) -> list[dict[str, Any]]:
    items = custom.list_namespaced_custom_object(
        *KV, ns, "virtualmachineinstancemigrations", label_selector=f"kubevirt.io/vmi-name={vmi}"
    )["items"]
    return items


def _phase(m: dict[str, Any]) -> str:
    return (m.get("status") or {}).get("phase", "")


def test_evicting_live_migrate_vmi_starts_an_evacuation(twin: ClusterTwin) -> None:
    api = api_client(twin)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    pod = launcher_pod(core, "vms", "web-0")
    assert pod.spec.node_name == "worker-0"
    assert "descheduler.alpha.kubernetes.io/request-evict-only" in pod.metadata.annotations
    exc = _evict(core, pod, **{"requested-by": "sigs.k8s.io/descheduler"})
    assert exc is not None and exc.status == 429
    assert 'Eviction triggered evacuation of VMI "vms/web-0"' in _status(exc)["message"]
    again = _evict(core, pod)  # the VMI is marked now
    assert again is not None and again.status == 429 and "Evacuation in progress" in _status(again)["message"]
    migs = wait_for(lambda: _migrations(custom, "vms", "web-0"), what="evacuation migration")
    assert len(migs) == 1
    mig = migs[0]
    assert mig["metadata"]["name"].startswith("kubevirt-evacuation-")
    assert mig["metadata"]["annotations"]["kubevirt.io/evacuationMigration"] == "worker-0"
    assert mig["spec"]["priority"] == "system-maintenance"  # requested by the descheduler
    done = wait_for(
        lambda: [m for m in _migrations(custom, "vms", "web-0") if _phase(m) in ("Succeeded", "Failed")],
        what="migration to finish",
    )[0]
    assert _phase(done) == "Succeeded"
    seen = [p["phase"] for p in done["status"]["phaseTransitionTimestamps"]]
    assert seen == ["Scheduling", "Scheduled", "PreparingTarget", "TargetReady", "Running", "Succeeded"]
    vmi = _vmi(custom, "vms", "web-0")
    state = vmi["status"]["migrationState"]
    assert vmi["status"]["nodeName"] == state["targetNode"] != "worker-0"
    assert state["sourceNode"] == "worker-0" and state["completed"] and not state.get("failed")
    assert state["startTimestamp"] and state["endTimestamp"] and state["mode"] == "PreCopy"
    assert "evacuationNodeName" not in vmi["status"]
    assert vmi["metadata"]["labels"]["kubevirt.io/nodeName"] == state["targetNode"]
    new_pod = launcher_pod(core, "vms", "web-0")
    assert new_pod.spec.node_name == state["targetNode"] and new_pod.metadata.name != pod.metadata.name
    assert "descheduler.alpha.kubernetes.io/eviction-in-progress" not in (new_pod.metadata.annotations or {})


def test_pdb_blocks_eviction_as_the_api_does(twin: ClusterTwin) -> None:
    api = api_client(twin)
    core, policy = client.CoreV1Api(api), client.PolicyV1Api(api)
    pdb = wait_for(
        lambda: policy.read_namespaced_pod_disruption_budget("vllm", "llm").status or None, what="PDB status"
    )
    assert (pdb.current_healthy, pdb.desired_healthy, pdb.disruptions_allowed) == (2, 2, 0)
    pod = core.read_namespaced_pod("vllm-0", "llm")
    exc = _evict(core, pod)
    assert exc is not None and exc.status == 429
    body = _status(exc)
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"][0]["reason"] == "DisruptionBudget"
    policy.patch_namespaced_pod_disruption_budget("vllm", "llm", {"spec": {"minAvailable": 1}})
    assert _evict(core, pod) is None  # 201: allowed, the pod is deleted
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_pod("vllm-0", "llm")
    assert gone.value.status == 404
    exc = _evict(core, core.read_namespaced_pod("vllm-1", "llm"))
    assert exc is not None and exc.status == 429


def test_non_migratable_vmis_are_refused(twin: ClusterTwin) -> None:
    api = api_client(twin)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    for name, message in (("gpu-vm-0", "PCI host devices"), ("dra-vm-0", "DRA")):
        cond = next(c for c in _vmi(custom, "vms", name)["status"]["conditions"] if c["type"] == "LiveMigratable")
        assert (
            cond["status"] == "False" and cond["reason"] == "HostDeviceNotLiveMigratable" and message in cond["message"]
        )
        exc = _evict(core, launcher_pod(core, "vms", name))
        assert exc is not None and exc.status == 429
        assert (
            f"VMI {name} is configured with an eviction strategy but is not live-migratable" in _status(exc)["message"]
        )
        with pytest.raises(ApiException) as direct:
            custom.create_namespaced_custom_object(
                *KV,
                "vms",
                "virtualmachineinstancemigrations",
                {"metadata": {"generateName": "m-"}, "spec": {"vmiName": name}},
            )
        assert direct.value.status == 400
        assert "Cannot migrate VMI, Reason: HostDeviceNotLiveMigratable" in _status(direct.value)["message"]


def test_eviction_strategy_none_deletes_the_pod_and_the_vm_restarts(twin: ClusterTwin) -> None:
    api = api_client(twin)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    pod = launcher_pod(core, "vms", "ci-0")
    assert _evict(core, pod) is None
    old_uid = _vmi(custom, "vms", "ci-0")["metadata"]["uid"]
    wait_for(lambda: _vmi(custom, "vms", "ci-0")["status"]["phase"] == "Failed", what="VMI to fail")

    def restarted() -> bool:
        try:
            vmi = _vmi(custom, "vms", "ci-0")
        except ApiException:
            return False
        return vmi["metadata"]["uid"] != old_uid and vmi["status"].get("phase") == "Running"

    wait_for(restarted, what="VM to restart its VMI")
    assert launcher_pod(core, "vms", "ci-0").metadata.name != pod.metadata.name


def test_direct_migration_creation(twin: ClusterTwin) -> None:
    api = api_client(twin)
    custom = client.CustomObjectsApi(api)
    body = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "move-db-0"},
        "spec": {"vmiName": "db-0"},
    }
    created = custom.create_namespaced_custom_object(*KV, "vms", "virtualmachineinstancemigrations", body)
    assert created["status"]["phase"] == "Pending"
    assert created["metadata"]["labels"]["kubevirt.io/vmi-name"] == "db-0"
    with pytest.raises(ApiException) as conflict:
        custom.create_namespaced_custom_object(
            *KV, "vms", "virtualmachineinstancemigrations", {"metadata": {"name": "again"}, "spec": {"vmiName": "db-0"}}
        )
    assert conflict.value.status == 400 and "in-flight migration detected" in _status(conflict.value)["message"]
    with pytest.raises(ApiException) as prio:
        custom.create_namespaced_custom_object(
            *KV,
            "vms",
            "virtualmachineinstancemigrations",
            {"metadata": {"name": "p"}, "spec": {"vmiName": "web-1", "priority": "user-triggered"}},
        )
    assert (
        prio.value.status == 422 and "only virt-controller is allowed to set priority" in _status(prio.value)["message"]
    )
    with pytest.raises(ApiException) as missing:
        custom.create_namespaced_custom_object(
            *KV, "vms", "virtualmachineinstancemigrations", {"metadata": {"name": "m"}, "spec": {"vmiName": "nope"}}
        )
    assert missing.value.status == 400 and 'the VMI "vms/nope" does not exist' in _status(missing.value)["message"]
    final = wait_for(
        lambda: (
            (m := custom.get_namespaced_custom_object(*KV, "vms", "virtualmachineinstancemigrations", "move-db-0"))[
                "status"
            ]["phase"]
            in ("Succeeded", "Failed")
            and m
        ),
        what="migration to finish",
    )
    assert final["status"]["phase"] == "Succeeded"
    assert final["status"]["migrationState"]["sourceNode"] == "worker-0"
    assert _vmi(custom, "vms", "db-0")["status"]["nodeName"] == final["status"]["migrationState"]["targetNode"]


def _running_counts(twin: ClusterTwin) -> list[tuple[int, dict[str, int]]]:
    """Record (cluster, per-source-node) running-migration counts at every VMIM change, inside the twin."""
    samples: list[tuple[int, dict[str, int]]] = []
    assert twin.app is not None
    store = twin.app.store

    def on_change(change: Change) -> None:
        if change.resource != VMIMS.key:
            return
        running: dict[str, int] = {}
        for m in store.peek(VMIMS):
            phase = (m.get("status") or {}).get("phase")
            if phase in ("Scheduling", "Scheduled", "PreparingTarget", "TargetReady", "Running"):
                src = _node_of(store, m)  # a migrating VMI stays on its source node until it succeeds
                running[src] = running.get(src, 0) + 1
        samples.append((sum(running.values()), running))

    twin.call(lambda: store.on_change(on_change))
    return samples


def _node_of(store: Any, m: dict[str, Any]) -> str:
    vmi = store.peek_one(VMIS, m["metadata"]["namespace"], m["spec"]["vmiName"])
    return ((vmi or {}).get("status") or {}).get("nodeName", "")


def test_concurrency_limits_are_respected() -> None:
    vms = [{"name": f"a{i}", "cpu": 1, "memory": "2Gi", "node": "src-a"} for i in range(5)]
    vms += [{"name": f"b{i}", "cpu": 1, "memory": "2Gi", "node": "src-b"} for i in range(3)]
    scenario = parse_scenario(
        {
            "kubevirt": {"parallelMigrationsPerCluster": 3, "parallelOutboundMigrationsPerNode": 2},
            "nodes": [{"name": n, "cpu": "16", "memory": "64Gi"} for n in ("src-a", "src-b", "dst-0", "dst-1")],
            "vms": vms,
        }
    )
    with ClusterTwin(scenario, time_scale=500) as twin:
        samples = _running_counts(twin)
        custom = client.CustomObjectsApi(api_client(twin))
        for vm in vms:
            custom.create_namespaced_custom_object(
                *KV,
                "default",
                "virtualmachineinstancemigrations",
                {"metadata": {"name": f"m-{vm['name']}"}, "spec": {"vmiName": vm["name"]}},
            )

        def all_done() -> bool:
            items = custom.list_namespaced_custom_object(*KV, "default", "virtualmachineinstancemigrations")["items"]
            return all(_phase(m) == "Succeeded" for m in items)

        wait_for(all_done, what="all migrations to succeed")
        assert max(total for total, _ in samples) == 3
        assert max(n for _, per_node in samples for n in per_node.values()) == 2
        moved = {v.name: v.node for v in twin.view.vmis()}
        assert all(moved[vm["name"]] != vm["node"] for vm in vms)


def test_migration_failure_knob_then_evacuation_retries(twin: ClusterTwin) -> None:
    api = api_client(twin)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    admin(twin, "PUT", "faults/migrations", {"count": 1, "reason": "injected: target crashed"})
    assert _evict(core, launcher_pod(core, "vms", "web-1")) is not None
    failed = wait_for(
        lambda: [m for m in _migrations(custom, "vms", "web-1") if _phase(m) == "Failed"], what="failure"
    )[0]
    state = failed["status"]["migrationState"]
    assert state["failed"] and state["failureReason"] == "injected: target crashed"
    assert state["sourceNode"] == "worker-0"
    # the VMI stays marked, so the evacuation controller tries again (after KubeVirt's 20 s backoff)
    ok = wait_for(lambda: [m for m in _migrations(custom, "vms", "web-1") if _phase(m) == "Succeeded"], what="retry")[0]
    assert ok["metadata"]["name"] != failed["metadata"]["name"]
    assert _vmi(custom, "vms", "web-1")["status"]["nodeName"] != "worker-0"


def test_migration_that_cannot_converge_fails(twin: ClusterTwin) -> None:
    custom = client.CustomObjectsApi(api_client(twin))
    # batch-0 dirties 256 MiB/s: converges. Raise it above the 1 GiB/s link: pre-copy cannot converge.
    custom.patch_namespaced_custom_object(
        *KV,
        "vms",
        "virtualmachineinstances",
        "batch-0",
        {"metadata": {"annotations": {"sim.autonomic.io/dirty-rate-bytes-per-second": str(2 * 2**30)}}},
    )
    custom.create_namespaced_custom_object(
        *KV, "vms", "virtualmachineinstancemigrations", {"metadata": {"name": "hot"}, "spec": {"vmiName": "batch-0"}}
    )
    final = wait_for(
        lambda: (
            (m := custom.get_namespaced_custom_object(*KV, "vms", "virtualmachineinstancemigrations", "hot"))["status"][
                "phase"
            ]
            in ("Succeeded", "Failed")
            and m
        ),
        timeout=60,
        what="migration to end",
    )
    assert final["status"]["phase"] == "Failed"
    assert "did not converge" in final["status"]["migrationState"]["failureReason"]
    assert _vmi(custom, "vms", "batch-0")["status"]["nodeName"] == "worker-0"


def test_cluster_view_and_migration_callbacks(twin: ClusterTwin) -> None:
    view = twin.view
    assert isinstance(view, ClusterView)
    nodes = {n.name: n for n in view.nodes()}
    assert nodes["worker-0"].cpu_millis == 8000 and nodes["worker-0"].ready
    vmis = {v.name: v for v in view.vmis()}
    assert vmis["db-0"].node == "worker-0" and vmis["db-0"].vcpus == 4 and vmis["db-0"].cpu_millis == 400
    assert vmis["db-0"].memory_bytes == 8 * 2**30 and vmis["db-0"].dirty_rate_bytes_per_s == 64 * 2**20
    ended: list[MigrationInfo] = []
    unsubscribe = twin.call(lambda: view.subscribe_migrations(ended.append))
    custom = client.CustomObjectsApi(api_client(twin))
    custom.create_namespaced_custom_object(
        *KV, "vms", "virtualmachineinstancemigrations", {"metadata": {"name": "mv"}, "spec": {"vmiName": "web-2"}}
    )
    wait_for(lambda: ended, what="callback")
    twin.call(unsubscribe)
    info = ended[0]
    assert info.name == "mv" and info.succeeded and info.source_node == "worker-1"
    assert {v.name: v.node for v in view.vmis()}["web-2"] == info.target_node
    assert info.started_at is not None and info.ended_at is not None and info.ended_at >= info.started_at
    assert [m.name for m in view.migrations()] == ["mv"]
