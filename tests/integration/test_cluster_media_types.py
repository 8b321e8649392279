"""Media types against a real twin: a protobuf body (client-go's `POST .../events` from the descheduler's event
broadcaster) is 415 UnsupportedMediaType as a Status and logged at info level, never a 500; undecodable bodies are
400; `Accept: application/vnd.kubernetes.protobuf, application/json` is answered in JSON, protobuf alone is 406."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from cluster_helpers import api_client, raw
from kubernetes import client

from sim.cluster.scenario import parse_scenario
from sim.cluster.twin import ClusterTwin

PROTOBUF = "application/vnd.kubernetes.protobuf"
# what client-go writes for a protobuf body: the "k8s\0" magic, then a runtime.Unknown envelope
PROTOBUF_EVENT = (
    b"k8s\x00\n\x17\n\x12events.k8s.io/v1\x12\x05Event\x12\x80\x01\n\x8a\x01\n\x0cdescheduler.\xe2\x9c\x93\xff"
)
SCENARIO = {"nodes": [{"name": "worker-0", "cpu": "8", "memory": "32Gi"}]}


@pytest.fixture(scope="module")
def twin() -> Iterator[ClusterTwin]:
    with ClusterTwin(parse_scenario(SCENARIO), time_scale=10) as t:
        yield t


def test_protobuf_event_is_415_status_logged_at_info(twin: ClusterTwin, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="autonomic.cluster.api"):
        status, headers, body = raw(
            twin,
            "POST",
            "/apis/events.k8s.io/v1/namespaces/default/events",
            body=PROTOBUF_EVENT,
            headers={"Content-Type": PROTOBUF, "Accept": f"{PROTOBUF}, application/json"},
        )
    answer = json.loads(body)
    assert status == 415 and headers["Content-Type"].startswith("application/json")
    assert answer["kind"] == "Status" and answer["apiVersion"] == "v1" and answer["status"] == "Failure"
    assert answer["reason"] == "UnsupportedMediaType" and answer["code"] == 415
    assert answer["message"] == (
        "the body of the request was in an unknown format - accepted media types include: application/json"
    )
    records = [r for r in caplog.records if r.getMessage() == "unsupported media type"]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert records[0].content_type == PROTOBUF and records[0].path.endswith("/events")  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/namespaces/default/pods/nope/eviction"),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/default/leases/x"),
        ("PATCH", "/api/v1/nodes/worker-0"),
    ],
)
def test_protobuf_is_415_on_every_write(twin: ClusterTwin, method: str, path: str) -> None:
    status, _, body = raw(twin, method, path, body=PROTOBUF_EVENT, headers={"Content-Type": PROTOBUF})
    assert status == 415 and json.loads(body)["reason"] == "UnsupportedMediaType"


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe{}", b'{"metadata": ', b"[" * 100_000, b'{"spec": ' + b"9" * 5000 + b"}", b""],
    ids=["invalid-utf8", "truncated", "nesting-bomb", "huge-integer", "empty"],
)
def test_undecodable_json_is_400(twin: ClusterTwin, body: bytes) -> None:
    status, _, answer = raw(
        twin,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases",
        body=body,
        headers={"Content-Type": "application/json"},
    )
    assert status == 400 and json.loads(answer)["reason"] == "BadRequest"


def test_mistyped_fields_are_400_as_the_decoder_answers(twin: ClusterTwin) -> None:
    for obj, field in (
        ({"metadata": {"name": "l", "labels": [1]}}, "metadata.labels"),
        ({"metadata": {"name": 5}}, "metadata.name"),
        ({"metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": "x"}}, "spec.leaseDurationSeconds"),
    ):
        status, _, answer = raw(
            twin,
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            body=json.dumps(obj).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert status == 400, answer
        assert f"Go struct field {field} of type" in json.loads(answer)["message"]


def test_protobuf_then_json_accept_gets_json(twin: ClusterTwin) -> None:
    accept = f"{PROTOBUF}, application/json"
    for path in ("/api/v1/nodes", "/api/v1/nodes/worker-0", "/api/v1", "/apis", "/version"):
        status, headers, body = raw(twin, "GET", path, headers={"Accept": accept})
        assert status == 200 and headers["Content-Type"].startswith("application/json"), path
        json.loads(body)
    status, _, body = raw(twin, "GET", "/api/v1/nodes", headers={"Accept": PROTOBUF})
    answer = json.loads(body)
    assert status == 406 and answer["reason"] == "NotAcceptable" and answer["kind"] == "Status"


def test_official_client_still_speaks_json(twin: ClusterTwin) -> None:
    core = client.CoreV1Api(api_client(twin))
    assert [n.metadata.name for n in core.list_node().items] == ["worker-0"]
