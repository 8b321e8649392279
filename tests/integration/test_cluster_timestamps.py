"""Timestamps against the wall clock. At time scale 1 every timestamp the twin writes (creationTimestamp, node and
pod times, VMI and pod conditions, VMI migration start and end, VMIM phase transitions) lies between the test's wall
clock before it started the twin and its wall clock after reading it: a client never sees a negative age. Above time
scale 1 the twin's instants run ahead of the wall clock by (scale - 1) x the real time elapsed (docs: "Time")."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from cluster_helpers import api_client, raw, wait_for
from kubernetes import client

from sim.cluster.clock import ScaledClock
from sim.cluster.kubevirt_config import KubeVirtConfig
from sim.cluster.scenario import parse_scenario
from sim.cluster.twin import ClusterTwin

KV = ("kubevirt.io", "v1")
# phases of a few tenths of a second, so that a real-time migration takes about a second
FAST = KubeVirtConfig(target_schedule_s=0.2, target_start_s=0.2, target_prepare_s=0.1, handoff_s=0.1)
SCENARIO = {
    "nodes": [{"name": "worker-0", "cpu": "8", "memory": "32Gi"}, {"name": "worker-1", "cpu": "8", "memory": "32Gi"}],
    "vms": [
        {"name": "vm-0", "namespace": "vms", "cpu": 1, "memory": "256Mi", "node": "worker-0"},
        {"name": "huge", "namespace": "vms", "cpu": 2, "memory": "64Gi"},  # fits nowhere: Pending launcher pod
    ],
}
COLLECTIONS = (
    "/api/v1/namespaces",
    "/api/v1/nodes",
    "/api/v1/pods",
    "/apis/kubevirt.io/v1/virtualmachineinstances",
    "/apis/kubevirt.io/v1/virtualmachineinstancemigrations",
    "/apis/coordination.k8s.io/v1/leases",
)


@pytest.fixture(scope="module")
def started() -> float:
    return time.time()


@pytest.fixture(scope="module")
def twin(started: float) -> Iterator[ClusterTwin]:
    with ClusterTwin(parse_scenario(SCENARIO), time_scale=1, kubevirt=FAST) as t:
        yield t


def _parse(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _timestamps(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """Every RFC 3339 string under a key that names a time (…Timestamp, …Time, startedAt) in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}"
            if isinstance(item, str) and key.endswith(("Timestamp", "Time", "startedAt")):
                yield here, _parse(item)
            else:
                yield from _timestamps(item, here)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _timestamps(item, f"{path}[{i}]")


def _all_timestamps(twin: ClusterTwin) -> list[tuple[str, float]]:
    out = []
    for path in COLLECTIONS:
        status, _, body = raw(twin, "GET", path)
        assert status == 200
        for item in json.loads(body)["items"]:
            name = f"{item['kind']} {item['metadata'].get('namespace', '')}/{item['metadata']['name']}"
            out += [(name + field, ts) for field, ts in _timestamps(item)]
    return out


def test_timestamps_are_wall_clock_true_at_time_scale_1(twin: ClusterTwin, started: float) -> None:
    api = api_client(twin)
    before = time.time()
    lease = client.CoordinationV1Api(api).create_namespaced_lease("default", {"metadata": {"name": "l"}, "spec": {}})
    created = lease.metadata.creation_timestamp.timestamp()
    assert math.floor(before) <= created <= time.time()  # the wall clock of that instant, not a start plus an offset
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(
        *KV, "vms", "virtualmachineinstancemigrations", {"metadata": {"name": "m"}, "spec": {"vmiName": "vm-0"}}
    )
    final = wait_for(
        lambda: (
            (m := custom.get_namespaced_custom_object(*KV, "vms", "virtualmachineinstancemigrations", "m"))["status"][
                "phase"
            ]
            in ("Succeeded", "Failed")
            and m
        ),
        what="the migration to end",
    )
    assert final["status"]["phase"] == "Succeeded"
    stamps = _all_timestamps(twin)
    now = time.time()
    fields = {name.rsplit(".", 1)[-1] for name, _ in stamps}
    assert {"creationTimestamp", "lastTransitionTime", "startTimestamp", "endTimestamp"} <= fields
    assert {"phaseTransitionTimestamp", "lastHeartbeatTime", "startTime"} <= fields
    for name, ts in stamps:
        # second precision: a stamp taken at `started + 0.4` reads `floor(started)`
        assert math.floor(started) <= ts <= now, f"{name}: {ts - now:+.3f} s from the client's wall clock"
    vmi = custom.get_namespaced_custom_object(*KV, "vms", "virtualmachineinstances", "vm-0")
    state = vmi["status"]["migrationState"]
    start, end = (_parse(state["startTimestamp"]), _parse(state["endTimestamp"]))
    assert start <= end <= now


def test_server_side_ages_are_never_negative(twin: ClusterTwin) -> None:
    status, _, body = raw(
        twin, "GET", "/api/v1/pods", headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    )
    table = json.loads(body)
    age = [c["name"] for c in table["columnDefinitions"]].index("Age")
    ages = [row["cells"][age] for row in table["rows"]]
    assert status == 200 and ages and "<invalid>" not in ages


def test_scaled_clock_semantics() -> None:
    """Time scale 1: the wall clock itself. Time scale 100: ahead of it by 99 x the real time elapsed."""
    before = time.time()
    wall = ScaledClock(1.0).wall().timestamp()
    assert before <= wall <= time.time()
    fast = ScaledClock(100.0)
    t0 = time.monotonic()
    wait_for(lambda: time.monotonic() - t0 >= 0.05, what="50 ms of real time")
    lo = 99 * (time.monotonic() - t0)
    ahead = fast.wall().timestamp() - time.time()
    hi = 99 * (time.monotonic() - t0) + 0.01
    assert lo - 0.01 <= ahead <= hi
    assert fast.now() == pytest.approx(100 * (time.monotonic() - t0), abs=1.0)
