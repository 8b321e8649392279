"""PATCH semantics of the cluster twin: JSON merge patch, strategic merge (subset) and JSON patch."""

from __future__ import annotations

from typing import Any

import pytest

from sim.cluster.patch import PatchError, json_merge_patch, json_patch, strategic_merge_patch

NODE: dict[str, Any] = {
    "metadata": {"name": "n", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
    "spec": {"taints": [{"key": "k1", "effect": "NoSchedule"}, {"key": "k2", "effect": "PreferNoSchedule"}]},
    "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]},
}
POD: dict[str, Any] = {"spec": {"containers": [{"name": "a", "image": "i1"}, {"name": "b", "image": "i2"}]}}


@pytest.mark.parametrize(
    ("doc", "patch", "expected"),
    [
        ({"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
        ({"a": 1, "b": 2}, {"b": None}, {"a": 1}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": None, "z": 3}}, {"a": {"x": 1, "z": 3}}),
        ({"l": [1, 2]}, {"l": [3]}, {"l": [3]}),
        ({"a": 1}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ],
)
def test_json_merge_patch(doc: Any, patch: Any, expected: Any) -> None:
    assert json_merge_patch(doc, patch) == expected


@pytest.mark.parametrize(
    ("doc", "patch", "path", "expected"),
    [
        # lists without a patch strategy (node taints) are replaced, as in Kubernetes
        (
            NODE,
            {"spec": {"taints": [{"key": "k3", "effect": "NoExecute"}]}},
            ("spec", "taints"),
            [{"key": "k3", "effect": "NoExecute"}],
        ),
        # conditions merge by type
        (
            NODE,
            {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
            ("status", "conditions"),
            [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}],
        ),
        (
            NODE,
            {"status": {"conditions": [{"type": "PIDPressure", "status": "False"}]}},
            ("status", "conditions"),
            [
                {"type": "Ready", "status": "True"},
                {"type": "DiskPressure", "status": "False"},
                {"type": "PIDPressure", "status": "False"},
            ],
        ),
        (
            NODE,
            {"status": {"conditions": [{"type": "Ready", "$patch": "delete"}]}},
            ("status", "conditions"),
            [{"type": "DiskPressure", "status": "False"}],
        ),
        (
            NODE,
            {"status": {"conditions": [{"$patch": "replace"}, {"type": "X", "status": "True"}]}},
            ("status", "conditions"),
            [{"type": "X", "status": "True"}],
        ),
        # containers merge by name
        (
            POD,
            {"spec": {"containers": [{"name": "b", "image": "i3"}]}},
            ("spec", "containers"),
            [{"name": "a", "image": "i1"}, {"name": "b", "image": "i3"}],
        ),
        # finalizers: set union; $deleteFromPrimitiveList removes
        (NODE, {"metadata": {"finalizers": ["y", "x"]}}, ("metadata", "finalizers"), ["x", "y"]),
        (NODE, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}, ("metadata", "finalizers"), []),
        # maps merge, null deletes
        (NODE, {"metadata": {"labels": {"a": None, "c": "3"}}}, ("metadata", "labels"), {"b": "2", "c": "3"}),
        (
            NODE,
            {"metadata": {"$setElementOrder/finalizers": ["x"], "labels": {"z": "9"}}},
            ("metadata", "labels"),
            {"a": "1", "b": "2", "z": "9"},
        ),
    ],
)
def test_strategic_merge_patch(doc: dict, patch: dict, path: tuple[str, ...], expected: Any) -> None:
    out = strategic_merge_patch(doc, patch)
    for part in path:
        out = out[part]
    assert out == expected


def test_strategic_merge_needs_merge_keys() -> None:
    with pytest.raises(PatchError):
        strategic_merge_patch(POD, {"spec": {"containers": [{"image": "no-name"}]}})


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ([{"op": "add", "path": "/b", "value": 2}], {"a": {"x": [1, 2]}, "b": 2}),
        ([{"op": "add", "path": "/a/x/-", "value": 3}], {"a": {"x": [1, 2, 3]}}),
        ([{"op": "add", "path": "/a/x/0", "value": 0}], {"a": {"x": [0, 1, 2]}}),
        ([{"op": "remove", "path": "/a/x/1"}], {"a": {"x": [1]}}),
        ([{"op": "replace", "path": "/a/x", "value": []}], {"a": {"x": []}}),
        ([{"op": "move", "from": "/a/x", "path": "/y"}], {"a": {}, "y": [1, 2]}),
        ([{"op": "copy", "from": "/a/x", "path": "/y"}], {"a": {"x": [1, 2]}, "y": [1, 2]}),
        (
            [{"op": "test", "path": "/a/x/0", "value": 1}, {"op": "add", "path": "/t", "value": True}],
            {"a": {"x": [1, 2]}, "t": True},
        ),
        ([{"op": "add", "path": "/a~1b", "value": 1}], {"a": {"x": [1, 2]}, "a/b": 1}),
    ],
)
def test_json_patch(ops: list, expected: Any) -> None:
    doc = {"a": {"x": [1, 2]}}
    assert json_patch(doc, ops) == expected
    assert doc == {"a": {"x": [1, 2]}}  # the input is not modified


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "remove", "path": "/missing"}],
        [{"op": "replace", "path": "/missing", "value": 1}],
        [{"op": "test", "path": "/a/x/0", "value": 2}],
        [{"op": "add", "path": "/a/x/9", "value": 1}],
        [{"op": "frobnicate", "path": "/a"}],
        {"op": "add"},
    ],
)
def test_json_patch_errors(ops: Any) -> None:
    with pytest.raises(PatchError):
        json_patch({"a": {"x": [1, 2]}}, ops)
