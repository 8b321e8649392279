"""DRA resolution (scorer/sources/dra.py): pod -> claims -> allocated devices -> slice data, degrading to unknown."""

from __future__ import annotations

from typing import Any

import pytest

from scorer.device_hints import DeviceHints, DeviceTaint
from scorer.sources.dra import index_slices, pod_claim_names, resolve_pod

GI = 1 << 30
NS = "llm"


def device(name: str, **kw: Any) -> dict[str, Any]:
    attrs = {"type": {"string": kw.get("type", "gpu")}, "uuid": {"string": kw.get("uuid", f"GPU-{name}")}}
    if "product" in kw:
        attrs["productName"] = {"string": kw["product"]}
    if "profile" in kw:
        attrs["profile"] = {"string": kw["profile"]}
    if "parent" in kw:
        attrs["parentUUID"] = {"string": kw["parent"]}
    if "root" in kw:
        attrs["resource.kubernetes.io/pcieRoot"] = {"string": kw["root"]}
    capacity = {}
    if "memory" in kw:
        capacity["memory"] = {"value": kw["memory"]}
    if "sms" in kw:
        capacity["multiprocessors"] = {"value": kw["sms"]}
    out: dict[str, Any] = {"name": name, "attributes": attrs, "capacity": capacity}
    if "taints" in kw:
        out["taints"] = kw["taints"]
    return out


def slice_(devices: list[dict[str, Any]], gen: int = 1, count: int = 1, pool: str = "node-a") -> dict[str, Any]:
    return {
        "metadata": {"name": f"{pool}-{gen}-{len(devices)}"},
        "spec": {
            "driver": "gpu.nvidia.com",
            "nodeName": "node-a",
            "pool": {"name": pool, "generation": gen, "resourceSliceCount": count},
            "devices": devices,
        },
    }


def claim(name: str, *devices: str, tolerations: list[Any] | None = None, ready: str | None = None) -> dict[str, Any]:
    results = [
        {"request": "gpu", "driver": "gpu.nvidia.com", "pool": "node-a", "device": d, "tolerations": tolerations or []}
        for d in devices
    ]
    status: dict[str, Any] = {"allocation": {"devices": {"results": results}}} if devices else {}
    if ready is not None:
        status["devices"] = [
            {
                "driver": "gpu.nvidia.com",
                "pool": "node-a",
                "device": d,
                "conditions": [{"type": "Ready", "status": ready}],
            }
            for d in devices
        ]
    return {"metadata": {"name": name, "namespace": NS}, "status": status}


def pod(*claims: str, template: bool = True, health: str | None = None) -> dict[str, Any]:
    spec_claims = [
        {"name": f"c{i}", "resourceClaimTemplateName": "t"} if template else {"name": f"c{i}", "resourceClaimName": c}
        for i, c in enumerate(claims)
    ]
    status: dict[str, Any] = {
        "resourceClaimStatuses": [{"name": f"c{i}", "resourceClaimName": c} for i, c in enumerate(claims)]
        if template
        else []
    }
    if health:
        status["containerStatuses"] = [
            {
                "allocatedResourcesStatus": [
                    {
                        "name": "claim:c0/gpu",
                        "resources": [{"resourceID": "gpu.nvidia.com/node-a/gpu-0", "health": health}],
                    }
                ]
            }
        ]
    return {
        "metadata": {"name": "vllm-0", "namespace": NS},
        "spec": {"nodeName": "node-a", "resourceClaims": spec_claims},
        "status": status,
    }


H100 = device("gpu-0", product="NVIDIA H100", memory="80Gi", sms=132, root="pci0000:15")
MIG = device(
    "gpu-1-mig-1g10gb-19-0",
    type="mig",
    uuid="MIG-1",
    profile="1g.10gb",
    parent="GPU-gpu-1",
    memory="10Gi",
    sms=16,
    root="pci0000:16",
)
MIG_PARENT = device("gpu-1", product="NVIDIA H100", memory="80Gi", sms=132)


def resolve(p: dict[str, Any], claims: list[dict[str, Any]], slices: list[dict[str, Any]]) -> DeviceHints:
    return resolve_pod(p, {(NS, c["metadata"]["name"]): c for c in claims}, index_slices(slices))


@pytest.mark.parametrize(
    ("p", "claims", "slices", "expect"),
    [
        pytest.param(
            pod("a"),
            [claim("a", "gpu-0")],
            [slice_([H100])],
            {
                "product": "NVIDIA H100",
                "memory_bytes": 80 * GI,
                "multiprocessors": 132,
                "fraction": 1.0,
                "pcie_root": "pci0000:15",
                "type": "gpu",
                "node": "node-a",
                "health": "unknown",
            },
            id="whole-gpu",
        ),
        pytest.param(
            pod("a", template=False),
            [claim("a", "gpu-0")],
            [slice_([H100])],
            {"product": "NVIDIA H100"},
            id="claim-named-in-spec",
        ),
        pytest.param(
            pod("a"),
            [claim("a", "gpu-1-mig-1g10gb-19-0")],
            [slice_([MIG_PARENT, MIG])],
            {
                "type": "mig",
                "mig_profile": "1g.10gb",
                "memory_bytes": 10 * GI,
                "multiprocessors": 16,
                "fraction": pytest.approx(16 / 132),
            },
            id="mig-fraction-by-sms",
        ),
        pytest.param(
            pod("a"),
            [claim("a", "gpu-1-mig-1g10gb-19-0")],
            [slice_([MIG])],
            {"type": "mig", "fraction": None},
            id="mig-without-parent-fraction-unknown",
        ),
        pytest.param(
            pod("a"),
            [claim("a", "gpu-0")],
            [slice_([device("gpu-0", memory="40Gi")], gen=1), slice_([device("gpu-0", memory="80Gi")], gen=2)],
            {"memory_bytes": 80 * GI},
            id="highest-generation-only",
        ),
        pytest.param(
            pod("a"),
            [claim("a", "gpu-0")],
            [slice_([device("gpu-0", memory="80Gi")], gen=3), slice_([device("gpu-0", memory="40Gi")], gen=2)],
            {"memory_bytes": 80 * GI},
            id="older-generation-listed-later-ignored",
        ),
        pytest.param(
            pod("a"),
            [claim("a", "gpu-0")],
            [slice_([device("gpu-0", memory="lots")])],
            {"memory_bytes": None, "type": "gpu"},
            id="malformed-quantity-unknown",
        ),
        pytest.param(
            pod("a"),
            [claim("a", "gpu-0")],
            [slice_([device("gpu-0", taints=[{"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}])])],
            {"taints": (DeviceTaint("gpu.nvidia.com/xid", "79", "NoSchedule"),)},
            id="taint",
        ),
        pytest.param(
            pod("a"),
            [claim("a", "gpu-0", tolerations=[{"key": "gpu.nvidia.com/xid", "operator": "Exists"}])],
            [slice_([device("gpu-0", taints=[{"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}])])],
            {"taints": ()},
            id="tolerated-taint",
        ),
        pytest.param(
            pod("a"),
            [claim("a", "gpu-0", tolerations=[{"key": "gpu.nvidia.com/xid", "value": "48", "effect": "NoSchedule"}])],
            [slice_([device("gpu-0", taints=[{"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}])])],
            {"taints": (DeviceTaint("gpu.nvidia.com/xid", "79", "NoSchedule"),)},
            id="toleration-other-value",
        ),
        pytest.param(
            pod("a"),
            [claim("a", "gpu-0", ready="False")],
            [slice_([H100])],
            {"health": "unhealthy"},
            id="claim-device-not-ready",
        ),
        pytest.param(
            pod("a"),
            [claim("a", "gpu-0", ready="True")],
            [slice_([H100])],
            {"health": "healthy"},
            id="claim-ready",
        ),
        pytest.param(
            pod("a", health="Unhealthy"),
            [claim("a", "gpu-0", ready="True")],
            [slice_([H100])],
            {"health": "unhealthy"},
            id="pod-resource-health-wins",
        ),
    ],
)
def test_resolved_device(
    p: dict[str, Any], claims: list[dict[str, Any]], slices: list[dict[str, Any]], expect: dict[str, Any]
) -> None:
    hints = resolve(p, claims, slices)
    assert len(hints.devices) == 1, hints
    for field, value in expect.items():
        assert getattr(hints.devices[0], field) == value, field


@pytest.mark.parametrize(
    ("p", "claims", "slices", "unresolved"),
    [
        pytest.param({"metadata": {"name": "x"}}, [], [], [], id="no-claims-no-dra"),
        pytest.param(pod("a"), [], [slice_([H100])], ["claim llm/a: not found"], id="claim-missing"),
        pytest.param(pod("a"), [claim("a")], [slice_([H100])], ["claim llm/a: not allocated"], id="not-allocated"),
        pytest.param(
            pod("a"),
            [claim("a", "gpu-9")],
            [slice_([H100], count=2)],
            ["device gpu.nvidia.com/node-a/gpu-9: not in the pool's slices (pool has 1 of 2 slices at generation 1)"],
            id="pool-incomplete",
        ),
        pytest.param(
            {
                "metadata": {"namespace": NS},
                "spec": {"resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "t"}]},
            },
            [],
            [],
            ["pod claim 'gpu': no ResourceClaim in status.resourceClaimStatuses yet"],
            id="template-not-yet",
        ),
        pytest.param(
            pod("a"),
            [
                {
                    "metadata": {"name": "a", "namespace": NS},
                    "status": {"allocation": {"devices": {"results": [{"driver": "gpu.nvidia.com"}]}}},
                }
            ],
            [],
            ["claim llm/a: allocation result without pool"],
            id="malformed-result",
        ),
        pytest.param(
            pod("a"),
            [claim("a", "gpu-0")],
            [{"spec": None}, {"nonsense": 1}, "x"],
            ["device gpu.nvidia.com/node-a/gpu-0: not in the pool's slices"],
            id="garbage-slices",
        ),
    ],
)
def test_missing_data_degrades_to_unknown(
    p: dict[str, Any], claims: list[dict[str, Any]], slices: list[Any], unresolved: list[str]
) -> None:
    hints = resolve(p, claims, slices)
    assert list(hints.unresolved) == unresolved
    assert all(d.memory_bytes is None for d in hints.devices)
    assert hints.total("memory_bytes") is None and not hints.unhealthy()


def test_extended_resource_claim_and_totals() -> None:
    p = {"metadata": {"namespace": NS}, "status": {"extendedResourceClaimStatus": {"resourceClaimName": "ext"}}}
    hints = resolve(p, [claim("ext", "gpu-0", "gpu-1")], [slice_([H100, MIG_PARENT])])
    assert [d.id for d in hints.devices] == ["gpu.nvidia.com/node-a/gpu-0", "gpu.nvidia.com/node-a/gpu-1"]
    assert hints.total("memory_bytes") == 160 * GI and hints.total("multiprocessors") == 264


def test_claim_names_from_spec_and_status() -> None:
    p = {
        "spec": {
            "resourceClaims": [
                {"name": "a", "resourceClaimName": "shared"},
                {"name": "b", "resourceClaimTemplateName": "t"},
            ]
        },
        "status": {"resourceClaimStatuses": [{"name": "b", "resourceClaimName": "pod-b-x1"}]},
    }
    assert pod_claim_names(p) == (["shared", "pod-b-x1"], [])
