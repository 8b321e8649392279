"""Label and field selectors of the cluster twin: the query grammar and structured selectors."""

from __future__ import annotations

import pytest

from sim.cluster.errors import ApiError
from sim.cluster.selectors import (
    fields_match,
    label_selector_matches,
    matches,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"app": "web", "tier": "front", "kubevirt.io": "virt-launcher", "n": "5"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("missing!=x", True),
        ("app in (web, db)", True),
        ("app in (db)", False),
        ("app notin (db,cache)", True),
        ("missing notin (a)", True),
        ("kubevirt.io", True),
        ("!kubevirt.io", False),
        ("!missing", True),
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
        ("app in (web),!missing,tier", True),
        ("n>4", True),
        ("n<5", False),
    ],
)
def test_label_selector(selector: str, expected: bool) -> None:
    assert matches(parse_label_selector(selector), LABELS) is expected


@pytest.mark.parametrize("bad", ["app in (a", "=x", "a b c", "app=web,", "n>x", "app=" + "v" * 64])
def test_label_selector_errors_are_400(bad: str) -> None:
    with pytest.raises(ApiError) as exc:
        parse_label_selector(bad)
    assert exc.value.code == 400


POD = {"metadata": {"name": "p", "namespace": "vms"}, "spec": {"nodeName": "w0"}, "status": {"phase": "Running"}}
ALLOWED = frozenset({"metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"})


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("spec.nodeName=w0", True),
        ("spec.nodeName==w0", True),
        ("spec.nodeName!=w0", False),
        ("spec.nodeName=w1", False),
        ("metadata.name=p,metadata.namespace=vms", True),
        ("status.phase!=Succeeded,status.phase!=Failed", True),
        ("spec.nodeName=", False),
    ],
)
def test_field_selector(selector: str, expected: bool) -> None:
    assert fields_match(parse_field_selector(selector, ALLOWED), POD) is expected


def test_unsupported_field_label_is_400() -> None:
    with pytest.raises(ApiError) as exc:
        parse_field_selector("spec.hostname=x", ALLOWED)
    assert exc.value.code == 400 and "field label not supported: spec.hostname" in exc.value.message


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({}, True),
        ({"matchLabels": {"app": "web"}}, True),
        ({"matchLabels": {"app": "db"}}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, False),
        ({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}], "matchLabels": {"tier": "back"}}, False),
        ({"matchExpressions": [{"key": "n", "operator": "Gt", "values": ["4"]}]}, True),
        (None, False),
    ],
)
def test_structured_label_selector(selector: dict | None, expected: bool) -> None:
    assert label_selector_matches(selector, LABELS) is expected
