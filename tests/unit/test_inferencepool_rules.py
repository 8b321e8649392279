"""InferencePool -> endpoints (scorer/sources/inferencepool.py): the pure rule, as tables."""

from __future__ import annotations

from typing import Any

import pytest

from scorer.device_hints import DeviceHints
from scorer.sources.inferencepool import PoolSpec, parse_pool, pod_is_ready, pool_endpoints


def pool(selector: Any = None, ports: Any = None) -> dict[str, Any]:
    return {
        "spec": {
            "selector": {"matchLabels": {"app": "vllm"} if selector is None else selector},
            "targetPorts": [{"number": 8000}] if ports is None else ports,
        }
    }


def pod(name: str, ip: str | None = "10.0.0.1", ready: str = "True", labels: Any = None, **meta: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": ready}]}
    if ip:
        status["podIP"] = ip
    return {
        "metadata": {"name": name, "labels": {"app": "vllm"} if labels is None else labels, **meta},
        "status": status,
    }


@pytest.mark.parametrize(
    ("obj", "spec", "problem"),
    [
        (pool(), PoolSpec({"app": "vllm"}, (8000,)), None),
        (
            pool(ports=[{"number": 8000}, {"number": 8001}, {"number": 8000}]),
            PoolSpec({"app": "vllm"}, (8000, 8001)),
            None,
        ),
        (None, None, "InferencePool not found"),
        (pool(selector={}), None, "spec.selector.matchLabels: must be a non-empty map of strings"),
        (pool(selector={"a": 1}), None, "spec.selector.matchLabels: must be a non-empty map of strings"),
        (pool(ports=[]), None, "spec.targetPorts: at least one port is required"),
        (pool(ports=[{"number": 0}]), None, "spec.targetPorts[0].number: must be a port 1..65535, got 0"),
        (pool(ports=[{"number": "80"}]), None, "spec.targetPorts[0].number: must be a port 1..65535, got '80'"),
        ({"spec": None}, None, "spec.selector.matchLabels: must be a non-empty map of strings"),
    ],
)
def test_parse_pool(obj: Any, spec: PoolSpec | None, problem: str | None) -> None:
    assert parse_pool(obj) == (spec, problem)


@pytest.mark.parametrize(
    ("p", "ready"),
    [
        (pod("a"), True),
        (pod("a", ready="False"), False),
        (pod("a", ip=None), False),
        (pod("a", deletionTimestamp="2026-01-01T00:00:00Z"), False),
        ({"metadata": {"name": "a"}, "status": {"podIP": "10.0.0.1"}}, False),  # no conditions yet
    ],
)
def test_pod_readiness(p: dict[str, Any], ready: bool) -> None:
    assert pod_is_ready(p) is ready


def test_one_endpoint_per_ready_selected_pod_and_port() -> None:
    pods = [
        pod("b", "10.0.0.2"),
        pod("a", "10.0.0.1"),
        pod("c", "10.0.0.3", ready="False"),
        pod("d", "10.0.0.4", labels={"app": "other"}),
        pod("e", "fd00::5"),
        pod("f", "10.0.0.1"),  # same IP as a (hostNetwork): a wins by name
    ]
    hints = DeviceHints(node="n")
    endpoints = pool_endpoints(PoolSpec({"app": "vllm"}, (8000, 8001)), pods, lambda p: hints)
    assert [(e.address, e.name) for e in endpoints] == [
        ("10.0.0.1:8000", "a"),
        ("10.0.0.1:8001", "a"),
        ("10.0.0.2:8000", "b"),
        ("10.0.0.2:8001", "b"),
        ("[fd00::5]:8000", "e"),
        ("[fd00::5]:8001", "e"),
    ]
    assert all(e.hints is hints and e.labels == {"app": "vllm"} for e in endpoints)
