"""Fuzz target: the cluster twin's HTTP API (sim/cluster/http_api.py, negotiation.py, list_options.py), a real server on
loopback, with any bytes in any content type, any Accept header and any list query.

Invariant: no answer is a 5xx. Every error is a Kubernetes `Status` (kind Status, its code equal to the HTTP status,
a reason); a protobuf or other non-JSON body is 415 UnsupportedMediaType; an undecodable JSON body (invalid UTF-8,
bad syntax, nesting bombs, 4300+ digit integers) is 400; an Accept header without JSON is 406; a malformed list query
is 400 or 422. Nothing is logged at error level (the API's guard logs every unexpected exception there).
"""

from __future__ import annotations

import http.client
import json
import string
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from fuzz_support import JSON, counted, describe, error_logs, nested
from hypothesis import given
from hypothesis import strategies as st

from sim.cluster.scenario import parse_scenario
from sim.cluster.twin import ClusterTwin

SCENARIO = {
    "nodes": [{"name": "worker-0", "cpu": "8", "memory": "32Gi"}],
    "vms": [{"name": "vm-0", "namespace": "default", "cpu": 1, "memory": "1Gi", "node": "worker-0"}],
}
COLLECTIONS = [
    "/api/v1/namespaces/default/pods",
    "/api/v1/namespaces/default/persistentvolumeclaims",
    "/api/v1/namespaces/default/events",
    "/apis/events.k8s.io/v1/namespaces/default/events",
    "/apis/coordination.k8s.io/v1/namespaces/default/leases",
    "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancemigrations",
    "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
]
OBJECTS = [
    "/api/v1/namespaces/default/pods/fuzz",
    "/api/v1/namespaces/default/pods/fuzz/status",
    "/api/v1/namespaces/default/pods/fuzz/eviction",
    "/api/v1/namespaces/default/persistentvolumeclaims/fuzz",
    "/apis/coordination.k8s.io/v1/namespaces/default/leases/fuzz",
    "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances/fuzz",
]
CONTENT_TYPES = st.sampled_from(
    [
        "application/vnd.kubernetes.protobuf",
        "application/json",
        "application/json; charset=utf-8",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
        "application/yaml",
        "application/cbor",
        "text/plain",
        "",
    ]
) | st.text(alphabet=string.printable.strip("\r\n\x0b\x0c"), max_size=40)
ACCEPTS = st.sampled_from(
    [
        "application/vnd.kubernetes.protobuf, application/json",
        "application/vnd.kubernetes.protobuf",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        "application/yaml",
        "*/*",
        "",
    ]
) | st.text(alphabet=string.printable.strip("\r\n\x0b\x0c"), max_size=40)
NAMES = st.sampled_from(["fuzz", "fuzz-a", "Fuzz", "", "a" * 300]) | JSON
META = st.fixed_dictionaries(
    {},
    optional={
        "name": NAMES,
        "generateName": st.sampled_from(["fuzz-", ""]) | JSON,
        "namespace": st.sampled_from(["default", "other"]) | JSON,
        "labels": st.dictionaries(st.text(max_size=8), st.text(max_size=8) | JSON, max_size=3) | JSON,
        "annotations": st.dictionaries(st.text(max_size=8), st.text(max_size=8) | JSON, max_size=3) | JSON,
        "resourceVersion": st.sampled_from(["1", "0", "x"]) | JSON,
        "ownerReferences": JSON,
        "finalizers": JSON,
        "uid": JSON,
        "creationTimestamp": JSON,
    },
)
OBJECT = st.fixed_dictionaries(
    {"metadata": META | JSON},
    optional={
        "apiVersion": st.sampled_from(["v1", "coordination.k8s.io/v1", "kubevirt.io/v1"]) | JSON,
        "kind": st.sampled_from(["Pod", "Lease", "Eviction", "PersistentVolumeClaim"]) | JSON,
        "spec": JSON,
        "status": JSON,
        "deleteOptions": JSON,
    },
).map(lambda o: json.dumps(o).encode())
QUANTITIES = st.sampled_from(["1", "500m", "1Gi", "1e3", "abc", "-1", "1.5.5", "9" * 5000, "1e999999"]) | JSON
POD = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries({"generateName": st.just("fuzz-")}, optional={"labels": JSON}),
        "spec": st.fixed_dictionaries(
            {
                "containers": st.lists(
                    st.fixed_dictionaries(
                        {"name": st.just("c")},
                        optional={"resources": st.fixed_dictionaries({}, optional={"requests": st.dictionaries(
                            st.sampled_from(["cpu", "memory"]), QUANTITIES, max_size=2)}) | JSON},
                    ),
                    min_size=1,
                    max_size=2,
                )
            },
            optional={"nodeName": st.just("worker-0") | JSON, "tolerations": JSON, "nodeSelector": JSON},
        ),
    },
    optional={"status": st.fixed_dictionaries({"phase": st.just("Running") | JSON}) | JSON},
).map(lambda o: json.dumps(o).encode())  # fmt: skip
BODIES = (
    OBJECT
    | POD
    | st.binary(max_size=512)
    | JSON.map(lambda v: json.dumps(v).encode())
    | st.builds(lambda kind, extra: json.dumps({"kind": kind, "metadata": extra}).encode(), st.text(max_size=8), JSON)
    | nested(max_depth=5000)
    | st.binary(max_size=64).map(lambda b: b"k8s\x00" + b)  # the protobuf envelope client-go sends
    | st.builds(lambda a, b: a + b"\xff\xfe" + b, st.binary(max_size=16), st.binary(max_size=16))
    | st.sampled_from([b'{"metadata":{"name":"' + b"9" * 5000 + b'"}}', b'{"a":' + b"9" * 5000 + b"}"])
)
QUERY_KEYS = st.sampled_from(
    [
        "limit",
        "continue",
        "resourceVersion",
        "resourceVersionMatch",
        "sendInitialEvents",
        "allowWatchBookmarks",
        "labelSelector",
        "fieldSelector",
        "timeoutSeconds",
        "dryRun",
    ]
)
QUERY_VALUES = st.sampled_from(["", "0", "1", "-1", "1e3", "NotOlderThan", "Exact", "true", "x", "9" * 5000]) | st.text(
    max_size=12
)


@pytest.fixture(scope="module")
def twin() -> Iterator[ClusterTwin]:
    with ClusterTwin(parse_scenario(SCENARIO), time_scale=1) as t:
        yield t


class _Client:
    """One keep-alive connection to the twin, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def conn(twin: ClusterTwin) -> _Client:
    return _Client(int(twin.api_url.rsplit(":", 1)[1]))


def _check(status: int, body: bytes, what: str) -> dict | None:
    assert status < 500, f"{what}: {status} {body[:300]!r}"
    if status < 400:
        return None
    answer = json.loads(body)
    assert answer["kind"] == "Status" and answer["code"] == status and answer["reason"], (what, answer)
    return answer


@given(
    method=st.sampled_from(["POST", "PUT", "PATCH"]),
    path=st.sampled_from(COLLECTIONS + OBJECTS),
    content_type=CONTENT_TYPES,
    body=BODIES,
)
@counted
def test_any_body_in_any_content_type_is_never_a_5xx(
    conn: _Client, method: str, path: str, content_type: str, body: bytes
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    with error_logs() as errors:
        status, answer = conn.request(method, path, body, headers)
    assert not errors, describe(errors)
    status_obj = _check(status, answer, f"{method} {path} {content_type!r}")
    if content_type.split(";")[0].strip().lower() == "application/vnd.kubernetes.protobuf":
        assert status in (404, 405, 415), status  # no such route or verb, else the body's media type is refused
        if method == "POST" and path in COLLECTIONS:
            assert status == 415 and status_obj is not None and status_obj["reason"] == "UnsupportedMediaType"


@given(path=st.sampled_from(COLLECTIONS + OBJECTS + ["/api/v1", "/apis", "/version"]), accept=ACCEPTS)
@counted
def test_any_accept_header_gets_json_or_406(conn: _Client, path: str, accept: str) -> None:
    status, answer = conn.request("GET", path, None, {"Accept": accept})
    _check(status, answer, f"GET {path} Accept {accept!r}")
    json.loads(answer)  # JSON whatever the answer
    parts = [p.split(";")[0].strip().lower() for p in accept.split(",")]
    if accept.strip() and not {"application/json", "application/*", "*/*"} & set(parts):
        assert status == 406
    elif status == 406:
        raise AssertionError(f"406 for an Accept that allows JSON: {accept!r}")


@given(
    path=st.sampled_from(COLLECTIONS),
    query=st.dictionaries(QUERY_KEYS, QUERY_VALUES, max_size=4),
)
@counted
def test_any_list_query_is_never_a_5xx(conn: _Client, path: str, query: dict[str, str]) -> None:
    status, answer = conn.request("GET", f"{path}?{urlencode(query)}", None, {})
    if status == 504:  # a resourceVersion newer than the store: kube-apiserver's "Too large resource version"
        assert json.loads(answer)["reason"] == "Timeout"
        return
    _check(status, answer, f"GET {path} {query}")
