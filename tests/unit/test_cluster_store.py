"""The cluster twin's object store: versions, concurrency, generation, status split, watch windows."""

from __future__ import annotations

import pytest

from sim.cluster import objectmeta
from sim.cluster.clock import ManualClock
from sim.cluster.errors import ApiError
from sim.cluster.resources import LEASES, NAMESPACES, NODES, VMIMS
from sim.cluster.selectors import parse_label_selector
from sim.cluster.store import Store
from sim.cluster.watch import Watcher


@pytest.fixture
def store() -> Store:
    s = Store(ManualClock(), event_window=4)
    s.create(NAMESPACES, {"metadata": {"name": "default"}})
    return s


def test_create_sets_server_fields(store: Store) -> None:
    lease = store.create(LEASES, {"metadata": {"generateName": "l-"}, "spec": {}}, "default")
    meta = lease["metadata"]
    assert meta["name"].startswith("l-") and len(meta["name"]) == 7
    assert meta["uid"] and meta["creationTimestamp"] == "2026-01-01T00:00:00Z" and meta["generation"] == 1
    assert lease["apiVersion"] == "coordination.k8s.io/v1" and lease["kind"] == "Lease"
    assert int(meta["resourceVersion"]) == store.resource_version


@pytest.mark.parametrize(
    ("body", "code", "reason"),
    [
        ({"metadata": {"name": "Bad_Name"}}, 422, "Invalid"),
        ({"metadata": {}}, 422, "Invalid"),
        ({"metadata": {"name": "x"}, "kind": "Pod"}, 400, "BadRequest"),
        ([], 400, "BadRequest"),
    ],
)
def test_create_errors(store: Store, body: object, code: int, reason: str) -> None:
    with pytest.raises(ApiError) as exc:
        store.create(LEASES, body, "default")
    assert (exc.value.code, exc.value.reason) == (code, reason)


def test_optimistic_concurrency_and_generation(store: Store) -> None:
    node = store.create(NODES, {"metadata": {"name": "n"}, "spec": {}, "status": {"capacity": {"cpu": "1"}}})
    rv = node["metadata"]["resourceVersion"]
    labelled = store.patch(NODES, None, "n", "merge", {"metadata": {"labels": {"a": "1"}}})
    assert labelled["metadata"]["generation"] == 1  # metadata changes do not bump generation
    tainted = store.patch(NODES, None, "n", "strategic", {"spec": {"unschedulable": True}})
    assert tainted["metadata"]["generation"] == 2
    with pytest.raises(ApiError) as exc:
        store.update(NODES, None, "n", {**node, "metadata": {**node["metadata"], "resourceVersion": rv}})
    assert exc.value.code == 409 and exc.value.reason == "Conflict"
    same = store.patch(NODES, None, "n", "merge", {"metadata": {"labels": {"a": "1"}}})
    assert same["metadata"]["resourceVersion"] == tainted["metadata"]["resourceVersion"]  # no-op: no new version


def test_status_subresource_split(store: Store) -> None:
    store.create(NODES, {"metadata": {"name": "n"}, "status": {"phase": "a"}})
    main = store.patch(NODES, None, "n", "merge", {"status": {"phase": "b"}, "metadata": {"labels": {"x": "y"}}})
    assert main["status"] == {"phase": "a"} and main["metadata"]["labels"] == {"x": "y"}
    status = store.patch(
        NODES, None, "n", "merge", {"status": {"phase": "c"}, "metadata": {"labels": {"x": "z"}}}, subresource="status"
    )
    assert status["status"] == {"phase": "c"} and status["metadata"]["labels"] == {"x": "y"}


def test_watch_replays_after_version_and_expires(store: Store) -> None:
    start = store.resource_version
    for i in range(3):
        store.create(LEASES, {"metadata": {"name": f"l{i}", "labels": {"i": str(i)}}, "spec": {}}, "default")
    w = Watcher(LEASES.key, "default", parse_label_selector("i in (0,2)"), ())
    first, _, unsubscribe = store.watch(w, LEASES, start, initial=False)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in first] == [("ADDED", "l0"), ("ADDED", "l2")]
    store.patch(LEASES, "default", "l1", "merge", {"metadata": {"labels": {"i": "2"}}})  # enters the selection
    store.patch(LEASES, "default", "l0", "merge", {"metadata": {"labels": {"i": "9"}}})  # leaves it
    store.delete(LEASES, "default", "l2")
    live = [w.queue.get_nowait() for _ in range(w.queue.qsize())]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in live] == [
        ("ADDED", "l1"),
        ("DELETED", "l0"),
        ("DELETED", "l2"),
    ]
    unsubscribe()
    with pytest.raises(ApiError) as exc:  # window of 4 events: the version after `start` is gone
        store.watch(Watcher(LEASES.key, None, (), ()), LEASES, start, initial=False)
    assert exc.value.code == 410 and exc.value.reason == "Expired"
    with pytest.raises(ApiError) as exc:
        store.watch(Watcher(LEASES.key, None, (), ()), LEASES, store.resource_version + 10, initial=False)
    assert exc.value.code == 504


def test_admission_hooks_can_refuse_and_mutate(store: Store) -> None:
    def hook(op: str, new: dict | None, old: dict | None) -> None:
        if new is not None and not (new.get("spec") or {}).get("vmiName"):
            raise ApiError(400, "", "no")
        if new is not None:
            new.setdefault("metadata", {}).setdefault("labels", {})["seen"] = op

    store.add_admission(VMIMS, hook)
    created = store.create(VMIMS, {"metadata": {"name": "m"}, "spec": {"vmiName": "v"}}, "default")
    assert created["metadata"]["labels"] == {"seen": "CREATE"}
    with pytest.raises(ApiError):
        store.patch(VMIMS, "default", "m", "json", [{"op": "remove", "path": "/spec/vmiName"}])


def test_list_pages(store: Store) -> None:
    for i in range(5):
        store.create(LEASES, {"metadata": {"name": f"l{i}"}, "spec": {}}, "default")
    page, _, token, remaining = store.list(LEASES, "default", limit=2)
    assert [o["metadata"]["name"] for o in page] == ["l0", "l1"] and remaining == 3
    page, _, token, _ = store.list(LEASES, "default", limit=2, continue_token=token)
    assert [o["metadata"]["name"] for o in page] == ["l2", "l3"]
    with pytest.raises(ApiError):
        store.list(LEASES, "default", continue_token="garbage!")


def test_a_generated_name_that_is_taken_is_drawn_again(store: Store) -> None:
    """kube-apiserver's RetryGenerateName: a day of evacuations drew the same 5-letter suffix twice (a 409 the
    twin's KubeVirt then failed on); a taken generated name is drawn again instead."""
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"generateName": "x-", "namespace": "default"},
    }
    objectmeta._rng.seed(7)
    first = store.create(LEASES, body)
    objectmeta._rng.seed(7)  # the next draw repeats the first name
    second = store.create(LEASES, body)
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert second["metadata"]["name"].startswith("x-")
    named = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": first["metadata"]["name"]}}
    with pytest.raises(ApiError) as taken:  # an explicit name is never changed
        store.create(LEASES, named, "default")
    assert taken.value.code == 409
