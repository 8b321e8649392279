"""PersistentVolumeClaims and client-go's WatchList protocol against the cluster twin, with the official client and
kubectl: discovery lists PVCs; list and watch (namespaced and all namespaces); `sendInitialEvents=true` with
`resourceVersionMatch=NotOlderThan` and bookmarks gives the initial ADDEDs, then a BOOKMARK annotated
`k8s.io/initial-events-end`, for PVCs exactly as for every other kind; the option combinations kube-apiserver
refuses are 422 Invalid, malformed numbers 400."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import api_client, raw
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from sim.cluster.scenario import parse_scenario
from sim.cluster.twin import ClusterTwin

KUBECTL = shutil.which("kubectl")
INITIAL_END = "k8s.io/initial-events-end"
SCENARIO = {
    "namespaces": ["vms", "other"],
    "nodes": [{"name": "worker-0", "cpu": "8", "memory": "32Gi"}],
    "vms": [{"name": "db-0", "namespace": "vms", "cpu": 2, "memory": "4Gi", "node": "worker-0"}],
    "resources": [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "db-0-disk", "namespace": "vms"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "20Gi"}},
                "storageClassName": "ceph-rbd",
                "volumeMode": "Block",
            },
            "status": {"phase": "Bound", "accessModes": ["ReadWriteMany"], "capacity": {"storage": "20Gi"}},
        }
    ],
}


@pytest.fixture(scope="module")
def twin() -> Iterator[ClusterTwin]:
    with ClusterTwin(parse_scenario(SCENARIO), time_scale=100, bookmark_interval_s=0.2) as t:
        yield t


@pytest.fixture(scope="module")
def core(twin: ClusterTwin) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(twin))


def _pvc(name: str, size: str = "1Gi") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


def _watch_list(list_fn: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """The raw events of a WatchList request up to its initial-events-end bookmark (then the stream is closed)."""
    resp = list_fn(
        *args,
        watch=True,
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True,
        timeout_seconds=10,
        _preload_content=False,
        **kwargs,
    )
    events: list[dict[str, Any]] = []
    try:
        buffer = b""
        for chunk in resp.stream(4096):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                events.append(json.loads(line))
                annotations = events[-1]["object"]["metadata"].get("annotations") or {}
                if events[-1]["type"] == "BOOKMARK" and annotations.get(INITIAL_END) == "true":
                    return events
    finally:
        resp.release_conn()
    raise AssertionError(f"the stream ended without an initial-events-end bookmark: {events}")


def _raw_watch_list(twin: ClusterTwin, path: str) -> list[dict[str, Any]]:
    """The same request for a kind the python client has no WatchList parameters for (custom resources)."""
    query = {
        "watch": "true",
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "1",
    }
    status, _, body = raw(twin, "GET", path, query=query)
    assert status == 200
    events = [json.loads(line) for line in body.splitlines() if line]
    end = next(i for i, e in enumerate(events) if e["type"] == "BOOKMARK")
    return events[: end + 1]


def test_discovery_lists_persistentvolumeclaims(core: client.CoreV1Api) -> None:
    resources = {r.name: r for r in core.get_api_resources().resources}
    pvc = resources["persistentvolumeclaims"]
    assert pvc.kind == "PersistentVolumeClaim" and pvc.namespaced and pvc.short_names == ["pvc"]
    assert {"list", "watch", "get", "create"} <= set(pvc.verbs)
    assert "persistentvolumeclaims/status" in resources


def test_list_pvcs_namespaced_all_namespaces_and_empty(core: client.CoreV1Api) -> None:
    listed = core.list_namespaced_persistent_volume_claim("vms")
    assert [p.metadata.name for p in listed.items] == ["db-0-disk"]
    assert listed.items[0].status.phase == "Bound" and listed.items[0].spec.resources.requests == {"storage": "20Gi"}
    assert int(listed.metadata.resource_version) > 0
    everywhere = core.list_persistent_volume_claim_for_all_namespaces()
    assert "db-0-disk" in {p.metadata.name for p in everywhere.items}
    assert core.list_namespaced_persistent_volume_claim("other").items == []


def test_pvc_validation_is_422(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_persistent_volume_claim("other", {"metadata": {"name": "bad"}, "spec": {}})
    assert exc.value.status == 422
    fields = {c["field"] for c in json.loads(exc.value.body)["details"]["causes"]}
    assert fields == {"spec.accessModes", "spec.resources[storage]"}


def test_watch_pvcs_namespaced_and_all_namespaces(core: client.CoreV1Api) -> None:
    rv = core.list_persistent_volume_claim_for_all_namespaces().metadata.resource_version
    core.create_namespaced_persistent_volume_claim("other", _pvc("scratch"))
    core.patch_namespaced_persistent_volume_claim("scratch", "other", {"metadata": {"labels": {"x": "1"}}})
    core.delete_namespaced_persistent_volume_claim("scratch", "other")
    for fn, args in (
        (core.list_namespaced_persistent_volume_claim, ("other",)),
        (core.list_persistent_volume_claim_for_all_namespaces, ()),
    ):
        seen = []
        for e in watch.Watch().stream(fn, *args, resource_version=rv, timeout_seconds=2):
            seen.append((e["type"], e["object"].metadata.name))
            if e["type"] == "DELETED":
                break
        assert seen == [("ADDED", "scratch"), ("MODIFIED", "scratch"), ("DELETED", "scratch")], fn.__name__


@pytest.mark.parametrize("namespaced", [True, False])
def test_watchlist_pvcs_initial_events_then_initial_end_bookmark(core: client.CoreV1Api, namespaced: bool) -> None:
    if namespaced:
        events = _watch_list(core.list_namespaced_persistent_volume_claim, "vms")
    else:
        events = _watch_list(core.list_persistent_volume_claim_for_all_namespaces)
    *added, end = events
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in added] == [("ADDED", "db-0-disk")]
    assert end["object"]["kind"] == "PersistentVolumeClaim" and end["object"]["apiVersion"] == "v1"
    assert end["object"]["metadata"]["annotations"] == {INITIAL_END: "true"}
    assert int(end["object"]["metadata"]["resourceVersion"]) >= int(added[0]["object"]["metadata"]["resourceVersion"])


def test_watchlist_of_an_empty_collection_is_just_the_bookmark(core: client.CoreV1Api) -> None:
    events = _watch_list(core.list_namespaced_persistent_volume_claim, "kube-system")
    assert [e["type"] for e in events] == ["BOOKMARK"]


def test_watchlist_is_the_same_for_every_kind(twin: ClusterTwin, core: client.CoreV1Api) -> None:
    """Pods, nodes, VMIs (a custom resource) and Leases take the same path as PVCs."""
    api = api_client(twin)
    streams = {
        "Pod": _watch_list(core.list_namespaced_pod, "vms"),
        "Node": _watch_list(core.list_node),
        "Lease": _watch_list(client.CoordinationV1Api(api).list_lease_for_all_namespaces),
        "VirtualMachineInstance": _raw_watch_list(twin, "/apis/kubevirt.io/v1/virtualmachineinstances"),
    }
    for kind, events in streams.items():
        assert events[-1]["object"]["kind"] == kind and events[-1]["object"]["metadata"]["annotations"] == {
            INITIAL_END: "true"
        }
    assert [e["object"]["metadata"]["name"] for e in streams["Node"][:-1]] == ["worker-0"]
    assert [e["object"]["metadata"]["name"] for e in streams["VirtualMachineInstance"][:-1]] == ["db-0"]


def test_watchlist_then_live_changes(core: client.CoreV1Api) -> None:
    resp = core.list_namespaced_persistent_volume_claim(
        "other",
        watch=True,
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True,
        timeout_seconds=10,
        _preload_content=False,
    )
    try:
        lines = resp.stream(4096)
        first = json.loads(next(lines).split(b"\n")[0])
        assert first["type"] == "BOOKMARK" and first["object"]["metadata"]["annotations"] == {INITIAL_END: "true"}
        core.create_namespaced_persistent_volume_claim("other", _pvc("late"))
        event = next(
            json.loads(line)
            for chunk in lines
            for line in chunk.split(b"\n")
            if line and json.loads(line)["type"] != "BOOKMARK"
        )
        assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "late"
        assert int(event["object"]["metadata"]["resourceVersion"]) > int(first["object"]["metadata"]["resourceVersion"])
    finally:
        resp.release_conn()
        core.delete_namespaced_persistent_volume_claim("late", "other")


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        (
            {"watch": "true", "sendInitialEvents": "true"},
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ),
        (
            {"watch": "true", "resourceVersionMatch": "NotOlderThan"},
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ),
        ({"sendInitialEvents": "true"}, "sendInitialEvents", "sendInitialEvents is forbidden for list"),
        (
            {"resourceVersionMatch": "Exact"},
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
    ],
)
def test_forbidden_option_combinations_are_422(
    twin: ClusterTwin, query: dict[str, str], field: str, message: str
) -> None:
    status, _, body = raw(twin, "GET", "/api/v1/namespaces/vms/persistentvolumeclaims", query=query)
    answer = json.loads(body)
    assert status == 422 and answer["reason"] == "Invalid" and answer["kind"] == "Status"
    assert answer["message"].startswith('ListOptions.meta.k8s.io "" is invalid: ')
    assert [(c["field"], c["message"]) for c in answer["details"]["causes"]] == [(field, f"Forbidden: {message}")]


@pytest.mark.parametrize("param", ["resourceVersion", "limit", "timeoutSeconds"])
def test_malformed_numbers_are_400(twin: ClusterTwin, param: str) -> None:
    status, _, body = raw(twin, "GET", "/api/v1/persistentvolumeclaims", query={"watch": "true", param: "1e3"})
    assert status == 400 and json.loads(body)["reason"] == "BadRequest"


def test_watchlist_newer_than_the_store_is_504(core: client.CoreV1Api) -> None:
    current = int(core.list_persistent_volume_claim_for_all_namespaces().metadata.resource_version)
    with pytest.raises(ApiException) as exc:
        core.list_persistent_volume_claim_for_all_namespaces(
            watch=True,
            send_initial_events=True,
            resource_version_match="NotOlderThan",
            allow_watch_bookmarks=True,
            resource_version=str(current + 1000),
            _preload_content=False,
        )
    assert exc.value.status == 504


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (Debian package `kubectl`)")
def test_kubectl_get_pvc(twin: ClusterTwin) -> None:
    out = subprocess.run(
        [KUBECTL, "--kubeconfig", str(twin.kubeconfig_path), "get", "pvc", "-n", "vms"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "STATUS", "VOLUME", "CAPACITY"]
    assert row.split()[:2] == ["db-0-disk", "Bound"] and "20Gi" in row and "RWX" in row and "ceph-rbd" in row
