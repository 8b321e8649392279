"""The official kubernetes client against the cluster twin: discovery, list, selectors, watch (resume, bookmarks,
410), patch flavours and optimistic concurrency, validation Status objects, Leases, Events, DRA objects and
InferencePools, and the fault knobs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from cluster_helpers import admin, api_client
from kubernetes import client, dynamic, watch
from kubernetes.client.rest import ApiException

from sim.cluster.scenario import default_scenario_path, load_scenario
from sim.cluster.twin import ClusterTwin


@pytest.fixture(scope="module")
def twin() -> Iterator[ClusterTwin]:
    with ClusterTwin(load_scenario(default_scenario_path()), time_scale=200, bookmark_interval_s=0.1) as t:
        yield t


@pytest.fixture(scope="module")
def api(twin: ClusterTwin) -> client.ApiClient:
    return api_client(twin)


def _status(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_discovery_and_list_nodes(api: client.ApiClient) -> None:
    assert client.VersionApi(api).get_code().git_version.startswith("v1.34")
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"kubevirt.io", "resource.k8s.io", "policy", "coordination.k8s.io", "inference.networking.k8s.io"} <= groups
    nodes = client.CoreV1Api(api).list_node()
    assert [n.metadata.name for n in nodes.items] == ["worker-0", "worker-1", "worker-2", "worker-3"]
    assert nodes.items[0].status.capacity == {"cpu": "8", "memory": "32Gi", "pods": "250"}
    assert int(nodes.metadata.resource_version) > 0


def test_dynamic_client_resolves_kubevirt_kinds(api: client.ApiClient) -> None:
    dyn = dynamic.DynamicClient(api)
    vmis = dyn.resources.get(api_version="kubevirt.io/v1", kind="VirtualMachineInstance").get(namespace="vms")
    assert "db-0" in {v.metadata.name for v in vmis.items}
    nodes = dyn.resources.get(api_version="v1", kind="Node").get()
    assert len(nodes.items) == 4


def test_label_and_field_selectors(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    launchers = core.list_namespaced_pod("vms", label_selector="kubevirt.io=virt-launcher").items
    assert len(launchers) == 10
    web = core.list_namespaced_pod("vms", label_selector="app in (web, db),kubevirt.io").items
    assert {p.metadata.labels["app"] for p in web} == {"web", "db"}
    not_web = core.list_namespaced_pod("vms", label_selector="app!=web,!nonexistent").items
    assert all(p.metadata.labels["app"] != "web" for p in not_web) and not_web
    on_w0 = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=worker-0,status.phase=Running").items
    assert {p.spec.node_name for p in on_w0} == {"worker-0"} and len(on_w0) == 4
    with pytest.raises(ApiException) as exc:
        core.list_pod_for_all_namespaces(field_selector="spec.hostname=x")
    assert exc.value.status == 400 and "field label not supported" in _status(exc.value)["message"]
    with pytest.raises(ApiException) as exc:
        core.list_pod_for_all_namespaces(label_selector="app in (a")
    assert exc.value.status == 400


def test_pagination(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    first = core.list_namespaced_pod("vms", limit=4)
    assert len(first.items) == 4 and first.metadata._continue and first.metadata.remaining_item_count == 6
    rest = core.list_namespaced_pod("vms", limit=100, _continue=first.metadata._continue)
    names = [p.metadata.name for p in first.items + rest.items]
    assert len(names) == 10 == len(set(names))


def test_watch_resume_from_resource_version(api: client.ApiClient) -> None:
    coord = client.CoordinationV1Api(api)
    rv = coord.list_namespaced_lease("default").metadata.resource_version
    lease = coord.create_namespaced_lease("default", {"metadata": {"name": "w1"}, "spec": {"holderIdentity": "a"}})
    coord.patch_namespaced_lease("w1", "default", {"spec": {"holderIdentity": "b"}})
    coord.delete_namespaced_lease("w1", "default")
    events = []
    for e in watch.Watch().stream(coord.list_namespaced_lease, "default", resource_version=rv, timeout_seconds=1):
        events.append((e["type"], e["object"].metadata.name, e["object"].spec.holder_identity))
        if e["type"] == "DELETED":
            break
    assert events == [("ADDED", "w1", "a"), ("MODIFIED", "w1", "b"), ("DELETED", "w1", "b")]
    assert lease.metadata.uid


def test_watch_live_events_and_initial_state(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    seen: list[tuple[str, str]] = []
    started = threading.Event()
    w = watch.Watch()

    def run() -> None:
        for e in w.stream(core.list_namespace, timeout_seconds=5):
            seen.append((e["type"], e["object"].metadata.name))
            if e["object"].metadata.name == "kube-system":
                started.set()
            if e["type"] == "DELETED" and e["object"].metadata.name == "live-ns":
                w.stop()

    t = threading.Thread(target=run)
    t.start()
    started.wait(5)
    core.create_namespace({"metadata": {"name": "live-ns"}})
    core.patch_namespace("live-ns", {"metadata": {"labels": {"x": "1"}}})
    core.delete_namespace("live-ns")
    t.join(10)
    assert ("ADDED", "default") in seen  # no resourceVersion: the current state first
    assert [s for s in seen if s[1] == "live-ns"] == [
        ("ADDED", "live-ns"),
        ("MODIFIED", "live-ns"),
        ("DELETED", "live-ns"),
    ]


def test_watch_bookmarks(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    rv = core.list_node().metadata.resource_version
    resp = core.list_node(
        watch=True, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=1, _preload_content=False
    )
    lines = [json.loads(line) for line in resp.read().decode().splitlines() if line]
    bookmarks = [e for e in lines if e["type"] == "BOOKMARK"]
    assert bookmarks and int(bookmarks[0]["object"]["metadata"]["resourceVersion"]) >= int(rv)
    assert bookmarks[0]["object"]["kind"] == "Node"


def test_watch_too_old_resource_version_is_410_gone() -> None:
    scenario = load_scenario(default_scenario_path())
    with ClusterTwin(scenario, time_scale=200, event_window=5) as small:
        api = api_client(small)
        coord = client.CoordinationV1Api(api)
        old = coord.list_namespaced_lease("default").metadata.resource_version
        for i in range(10):
            coord.create_namespaced_lease("default", {"metadata": {"name": f"l{i}"}, "spec": {}})
        raw = coord.list_namespaced_lease("default", watch=True, resource_version=old, _preload_content=False)
        assert raw.status == 200  # the watch cache answers with an ERROR event, not an HTTP error
        event = json.loads(raw.read().decode().splitlines()[0])
        assert event["type"] == "ERROR"
        assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
        with pytest.raises(ApiException) as exc:  # watch.Watch retries once, then raises
            for _ in watch.Watch().stream(coord.list_namespaced_lease, "default", resource_version=old):
                pass
        assert exc.value.status == 410
        fresh = coord.list_namespaced_lease("default").metadata.resource_version
        events = watch.Watch().stream(coord.list_namespaced_lease, "default", resource_version=fresh, timeout_seconds=1)
        assert list(events) == []


def test_patch_flavours_and_conflicts(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    node = core.patch_node("worker-3", {"metadata": {"labels": {"tier": "gold"}}})  # strategic (dict body)
    assert node.metadata.labels["tier"] == "gold" and node.metadata.labels["kubevirt.io/schedulable"] == "true"
    taint = {
        "key": "nodeutilization.descheduler.openshift.io/overutilized",
        "value": "true",
        "effect": "PreferNoSchedule",
    }
    node = core.patch_node("worker-3", {"spec": {"taints": [taint]}})
    assert [t.key for t in node.spec.taints] == [taint["key"]]
    node = core.patch_node(
        "worker-3", [{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]
    )  # JSON patch
    assert node.metadata.annotations == {"a": "b"}
    node = core.patch_node("worker-3", {"spec": {"taints": None}})
    assert not node.spec.taints
    stale = node.metadata.resource_version
    core.patch_node("worker-3", {"metadata": {"labels": {"tier": "silver"}}})
    with pytest.raises(ApiException) as exc:
        core.patch_node("worker-3", {"metadata": {"resourceVersion": stale, "labels": {"tier": "bronze"}}})
    assert exc.value.status == 409 and _status(exc.value)["reason"] == "Conflict"
    node.metadata.labels["tier"] = "bronze"
    with pytest.raises(ApiException) as exc:
        core.replace_node("worker-3", node)  # update with the stale object
    assert exc.value.status == 409
    custom = client.CustomObjectsApi(api)  # merge patch for custom resources
    vmi = custom.patch_namespaced_custom_object(
        "kubevirt.io", "v1", "vms", "virtualmachineinstances", "web-3", {"metadata": {"labels": {"patched": "yes"}}}
    )
    assert vmi["metadata"]["labels"]["patched"] == "yes"
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(
            "kubevirt.io",
            "v1",
            "vms",
            "virtualmachineinstances",
            "web-3",
            {"metadata": {"labels": {"x": "y"}}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert exc.value.status == 415


def test_status_errors(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod("nope", "vms")
    assert exc.value.status == 404 and _status(exc.value)["reason"] == "NotFound"
    assert _status(exc.value)["message"] == 'pods "nope" not found'
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod("vms", {"metadata": {"name": "bad"}, "spec": {"containers": []}})
    body = _status(exc.value)
    assert exc.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0] == {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec.containers",
    }
    with pytest.raises(ApiException) as exc:
        core.create_namespace({"metadata": {"name": "vms"}})
    assert exc.value.status == 409 and _status(exc.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod("missing-ns", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}})
    assert exc.value.status == 404


def test_lease_create_and_update_conflict(api: client.ApiClient) -> None:
    coord = client.CoordinationV1Api(api)
    body = client.V1Lease(
        metadata=client.V1ObjectMeta(name="autonomic-controller"),
        spec=client.V1LeaseSpec(holder_identity="pod-a", lease_duration_seconds=15),
    )
    lease = coord.create_namespaced_lease("kube-system", body)
    with pytest.raises(ApiException) as exc:
        coord.create_namespaced_lease("kube-system", body)
    assert exc.value.status == 409 and _status(exc.value)["reason"] == "AlreadyExists"
    lease.spec.holder_identity = "pod-b"
    updated = coord.replace_namespaced_lease("autonomic-controller", "kube-system", lease)
    assert updated.spec.holder_identity == "pod-b"
    assert int(updated.metadata.resource_version) > int(lease.metadata.resource_version)
    lease.spec.holder_identity = "pod-c"  # still carries the old resourceVersion
    with pytest.raises(ApiException) as exc:
        coord.replace_namespaced_lease("autonomic-controller", "kube-system", lease)
    assert exc.value.status == 409 and _status(exc.value)["reason"] == "Conflict"
    with pytest.raises(ApiException) as exc:
        coord.create_namespaced_lease("kube-system", {"metadata": {"name": "bad"}, "spec": {"leaseDurationSeconds": 0}})
    assert exc.value.status == 422


def test_events_core_and_events_k8s_io(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    ev = core.create_namespaced_event(
        "vms",
        {
            "metadata": {"generateName": "db-0."},
            "involvedObject": {"kind": "VirtualMachineInstance", "name": "db-0", "namespace": "vms"},
            "reason": "RebalanceProposed",
            "message": "node worker-0 is hot",
            "type": "Normal",
        },
    )
    assert ev.metadata.name.startswith("db-0.")
    found = core.list_namespaced_event("vms", field_selector="involvedObject.name=db-0").items
    assert [e.reason for e in found] == ["RebalanceProposed"]
    new = client.EventsV1Api(api).create_namespaced_event(
        "vms",
        {
            "metadata": {"name": "evict-db-0"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "type": "Normal",
            "reason": "Evicted",
            "action": "Evict",
            "reportingController": "autonomic.io/rebalancer",
            "reportingInstance": "rebalancer-0",
            "regarding": {"kind": "Pod", "name": "x", "namespace": "vms"},
        },
    )
    assert new.reason == "Evicted"
    with pytest.raises(ApiException) as exc:
        client.EventsV1Api(api).create_namespaced_event(
            "vms", {"metadata": {"name": "bad"}, "type": "Normal", "eventTime": "2026-01-01T00:00:00.000000Z"}
        )
    assert exc.value.status == 422
    causes = {c["field"] for c in _status(exc.value)["details"]["causes"]}
    assert {"reportingController", "reportingInstance", "action", "reason"} <= causes


def test_dra_objects_via_resource_v1_api(api: client.ApiClient) -> None:
    dra = client.ResourceV1Api(api)
    slices = dra.list_resource_slice(field_selector="spec.nodeName=worker-2").items
    assert len(slices) == 1 and slices[0].spec.driver == "gpu.nvidia.com"
    device = slices[0].spec.devices[0]
    assert device.attributes["productName"].string.startswith("NVIDIA H100")
    assert device.capacity["memory"].value == "80Gi"
    assert dra.list_resource_slice(field_selector="spec.nodeName=worker-0").items == []
    assert [c.metadata.name for c in dra.list_device_class().items] == ["gpu.nvidia.com"]
    claim = dra.read_namespaced_resource_claim("dra-vm-0-gpu", "vms")
    result = claim.status.allocation.devices.results[0]
    assert (result.driver, result.pool, result.device) == ("gpu.nvidia.com", "worker-2", "gpu-0")


def test_inference_pool_via_custom_objects(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    pools = custom.list_namespaced_custom_object("inference.networking.k8s.io", "v1", "llm", "inferencepools")["items"]
    assert [p["metadata"]["name"] for p in pools] == ["llama"]
    selector = pools[0]["spec"]["selector"]["matchLabels"]
    pods = client.CoreV1Api(api).list_namespaced_pod(
        "llm", label_selector=",".join(f"{k}={v}" for k, v in selector.items())
    )
    assert sorted(p.status.pod_ip for p in pods.items) == ["10.129.0.10", "10.129.0.11"]


def test_fault_knobs(twin: ClusterTwin, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    admin(twin, "PUT", "faults/api", {"errorRate": 1.0, "errorStatus": 503})
    try:
        with pytest.raises(ApiException) as exc:
            core.list_node()
        assert exc.value.status == 503 and _status(exc.value)["reason"] == "ServiceUnavailable"
        client.VersionApi(api).get_code()  # discovery is not affected
        admin(twin, "PUT", "faults/api", {"errorStatus": 429})
        with pytest.raises(ApiException) as exc:
            core.list_node()
        assert exc.value.status == 429 and _status(exc.value)["reason"] == "TooManyRequests"
        admin(twin, "PUT", "faults/api", {"errorStatus": 409})
        assert core.list_node().items  # a read cannot conflict
        with pytest.raises(ApiException) as exc:
            core.patch_node("worker-1", {"metadata": {"labels": {"x": "y"}}})
        assert exc.value.status == 409 and _status(exc.value)["reason"] == "Conflict"
    finally:
        admin(twin, "POST", "faults/reset", {})
    assert core.list_node().items
    admin(twin, "POST", "nodes/worker-1/notready")
    node = core.read_node("worker-1")
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert ready.status == "Unknown"
    assert {(t.key, t.effect) for t in node.spec.taints} == {
        ("node.kubernetes.io/unreachable", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
    }
    admin(twin, "POST", "nodes/worker-1/ready")
    assert not core.read_node("worker-1").spec.taints


def test_dropped_watch_ends_the_stream(twin: ClusterTwin, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    rv = core.list_node().metadata.resource_version
    # The call returns once the response headers arrive, and the twin registers a watcher before it sends them: the
    # drop below is sure to find this stream. (Waiting for the twin's watch count raced with watches other tests had
    # left open: the drop could run before this one registered, and the stream then lasted its whole timeout.)
    resp = core.list_node(watch=True, resource_version=rv, timeout_seconds=600, _preload_content=False)
    done = threading.Event()

    def read_to_the_end() -> None:
        resp.read()
        done.set()

    t = threading.Thread(target=read_to_the_end, daemon=True)
    t.start()
    assert admin(twin, "POST", "watches/drop")["dropped"] >= 1
    assert done.wait(120), "the dropped stream did not end"  # a bound far below the watch's own 600 s
    t.join()


async def test_asyncio_client(twin: ClusterTwin) -> None:
    from kubernetes.aio import client as aio_client
    from kubernetes.aio import config as aio_config
    from kubernetes.aio import watch as aio_watch

    cfg = aio_client.Configuration()
    await aio_config.load_kube_config(config_file=str(twin.kubeconfig_path), client_configuration=cfg)
    async with aio_client.ApiClient(cfg) as api:
        core = aio_client.CoreV1Api(api)
        assert len((await core.list_node()).items) == 4
        names = [e["object"].metadata.name async for e in aio_watch.Watch().stream(core.list_node, timeout_seconds=1)]
        assert names == ["worker-0", "worker-1", "worker-2", "worker-3"]


def test_system_priority_classes_are_served(api: client.ApiClient) -> None:
    """The descheduler's DefaultEvictor lists PriorityClasses; kube-apiserver creates these two at start."""
    classes = {pc.metadata.name: pc.value for pc in client.SchedulingV1Api(api).list_priority_class().items}
    assert classes == {"system-cluster-critical": 2000000000, "system-node-critical": 2000001000}
