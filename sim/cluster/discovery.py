"""API discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<group>` and
`/apis/<group>/<version>`, built from the resource table.

Why it exists: kubectl resolves `get nodes` / `get vmi` through discovery (short names, scope, verbs), and the
python client's dynamic client does the same. The twin answers the legacy (unaggregated) documents with plain
`application/json`; clients that ask for aggregated discovery (`as=APIGroupDiscoveryList`) fall back to them.
"""

from __future__ import annotations

from typing import Any

from sim.cluster.resources import RESOURCE_TYPES, ResourceType, groups

SERVER_VERSION = {
    "major": "1",
    "minor": "34",
    "gitVersion": "v1.34.0-autonomic-twin",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

# subresources served per resource key, with their kind and verbs
SUBRESOURCES: dict[str, list[tuple[str, str, str, tuple[str, ...]]]] = {
    # resource key -> [(name, group, kind, verbs)]
    "pods": [("eviction", "policy", "Eviction", ("create",))],
}


def _status_entry(t: ResourceType) -> dict[str, Any]:
    return {
        "name": f"{t.plural}/status",
        "singularName": "",
        "namespaced": t.namespaced,
        "kind": t.kind,
        "verbs": ["get", "patch", "update"],
    }


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    types = [t for t in RESOURCE_TYPES if t.group == group and t.version == version]
    if not types:
        return None
    resources: list[dict[str, Any]] = []
    for t in types:
        entry: dict[str, Any] = {
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": list(t.verbs),
        }
        if t.short_names:
            entry["shortNames"] = list(t.short_names)
        if t.categories:
            entry["categories"] = list(t.categories)
        resources.append(entry)
        if t.status_subresource:
            resources.append(_status_entry(t))
        for name, sub_group, kind, verbs in SUBRESOURCES.get(t.key, []):
            resources.append(
                {
                    "name": f"{t.plural}/{name}",
                    "singularName": "",
                    "namespaced": t.namespaced,
                    "group": sub_group,
                    "version": "v1",
                    "kind": kind,
                    "verbs": list(verbs),
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def core_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def api_group(group: str) -> dict[str, Any] | None:
    versions = groups().get(group)
    if not versions:
        return None
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list() -> dict[str, Any]:
    out = []
    for group in groups():
        doc = api_group(group)
        assert doc is not None
        out.append({k: v for k, v in doc.items() if k not in ("kind", "apiVersion")})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": out}
