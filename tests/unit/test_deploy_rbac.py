"""RBAC in deploy/ is exactly what the code calls: no wildcard, no verb or resource the code does not use, nothing the
code uses missing.

The needed permissions are read off the source: every Kubernetes client method named in controller/ or scorer/
or the watcher they share, common/kube_watch.py (any `*Api` method of the official client) must be in CALLS
below, which maps it to its API group, resource and verb; a method passed by reference (to a ResourceWatcher) means
list + watch, a call means its own verb. Custom-object methods take the resource from the plural next to them.
Granted permissions are read off the rendered Roles and ClusterRoles bound to each ServiceAccount.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from deploy_helpers import DEPLOY, ROOT, Obj, kustomizations, render
from kubernetes import client

Perm = tuple[str, str, str]  # (apiGroup, resource, verb)

COMPONENTS = {"autonomic-controller": ROOT / "controller", "autonomic-picker": ROOT / "scorer"}
SHARED = [ROOT / "common" / "kube_watch.py"]  # code both services run (the watcher), scanned for each

CALLS: dict[str, tuple[str, str]] = {  # client method -> (apiGroup, resource)
    "list_node": ("", "nodes"),
    "read_node": ("", "nodes"),
    "patch_node": ("", "nodes"),
    "list_pod_for_all_namespaces": ("", "pods"),
    "list_namespaced_pod": ("", "pods"),
    "create_namespaced_pod_eviction": ("", "pods/eviction"),
    "create_namespaced_event": ("", "events"),
    "list_pod_disruption_budget_for_all_namespaces": ("policy", "poddisruptionbudgets"),
    "list_resource_claim_for_all_namespaces": ("resource.k8s.io", "resourceclaims"),
    "list_namespaced_resource_claim": ("resource.k8s.io", "resourceclaims"),
    "list_resource_slice": ("resource.k8s.io", "resourceslices"),
    "read_namespaced_lease": ("coordination.k8s.io", "leases"),
    "create_namespaced_lease": ("coordination.k8s.io", "leases"),
    "replace_namespaced_lease": ("coordination.k8s.io", "leases"),
}
CUSTOM = {"list_cluster_custom_object", "list_namespaced_custom_object", "create_namespaced_custom_object"}
PLURALS = {  # custom resources the code names -> API group
    "virtualmachineinstances": "kubevirt.io",
    "virtualmachineinstancemigrations": "kubevirt.io",
    "inferencepools": "inference.networking.k8s.io",
}
NOT_DEPLOYED = {  # (file, method): calls that never run in the deployed processes
    ("controller/cli.py", "read_namespace"): "--twin-clock only: reads the cluster twin's clock",
}
VERB = {"list": "list", "read": "get", "create": "create", "patch": "patch", "replace": "update", "delete": "delete"}
EXTERNAL_ROLES = {"cluster-monitoring-view": "OpenShift's Prometheus query role (no Kubernetes objects)"}


def _client_methods() -> set[str]:
    names = set()
    for attr in dir(client):
        if attr.endswith("Api") and isinstance(getattr(client, attr), type):
            names |= {
                m for m in vars(getattr(client, attr)) if re.match(r"(list|read|create|patch|replace|delete)_", m)
            }
    return names


def _constants(text: str) -> dict[str, str]:
    """Module-level string constants, also from tuple assignments (`A, B = "x", "y"`)."""
    out: dict[str, str] = {}
    for names, values in re.findall(r"^([A-Z_][A-Z0-9_, ]*?)\s*=\s*(\"[^\n]*)$", text, re.M):
        strings = re.findall(r'"([^"]*)"', values)
        keys = [n.strip() for n in names.split(",")]
        if len(keys) == len(strings):
            out.update(zip(keys, strings, strict=True))
    return out


def needed(source: Path) -> tuple[set[Perm], list[str]]:
    """Permissions the code under `source` needs, and the calls that CALLS/PLURALS cannot account for."""
    methods = _client_methods() - {n for n in _client_methods() if n.endswith("_with_http_info")}
    pattern = re.compile(r"\.(" + "|".join(sorted(methods, key=len, reverse=True)) + r")\b(\s*\()?")
    perms: set[Perm] = set()
    unknown: list[str] = []
    for path in [*sorted(source.rglob("*.py")), *SHARED]:
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        constants = _constants(text)
        for m in pattern.finditer(text):
            method, called = m.group(1), m.group(2) is not None
            if (where, method) in NOT_DEPLOYED:
                continue
            verbs = [VERB[method.split("_", 1)[0]]] if called else ["list", "watch"]
            if not called and not method.startswith("list_"):
                unknown.append(f"{where}: {method} passed by reference")
                continue
            if method in CUSTOM:
                window = text[m.end() : m.end() + 300]
                names = [n for n in re.findall(r'"([a-z]+)"|\b([A-Z_]+)\b', window) for n in n if n]
                plurals = [constants.get(n, n) for n in names if constants.get(n, n) in PLURALS]
                if not plurals:
                    unknown.append(f"{where}: {method} on a resource not in PLURALS")
                    continue
                group, resource = PLURALS[plurals[0]], plurals[0]
            elif method in CALLS:
                group, resource = CALLS[method]
            else:
                unknown.append(f"{where}: {method} is not in CALLS")
                continue
            perms |= {(group, resource, v) for v in verbs}
    return perms, unknown


def granted(objects: tuple[Obj, ...], account: str) -> tuple[set[Perm], dict[Perm, set[str]]]:
    """Permissions bound to ServiceAccount `account`, and which kinds of role (Role/ClusterRole) grant each."""
    roles = {(o["kind"], o["metadata"]["name"]): o for o in objects if o["kind"] in ("Role", "ClusterRole")}
    perms: set[Perm] = set()
    by: dict[Perm, set[str]] = {}
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == account for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], ref["name"]))
        if role is None:
            assert ref["name"] in EXTERNAL_ROLES, f"{binding['metadata']['name']} binds an unknown role {ref['name']}"
            continue
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        perms.add((group, resource, verb))
                        by.setdefault((group, resource, verb), set()).add(role["kind"])
    return perms, by


RBAC_DIRS = [p for p in kustomizations() if any(o["kind"].endswith("Binding") for o in render(p))]


def test_the_code_scan_accounts_for_every_client_call():
    for account, source in COMPONENTS.items():
        perms, unknown = needed(source)
        assert not unknown, f"{account}: extend CALLS/PLURALS in this test: {unknown}"
        assert perms, account
    perms, _ = needed(ROOT / "controller")
    assert ("kubevirt.io", "virtualmachineinstancemigrations", "create") in perms
    assert ("", "nodes", "patch") in perms and ("", "pods/eviction", "create") in perms


@pytest.mark.parametrize("path", RBAC_DIRS, ids=[str(p.relative_to(DEPLOY)) for p in RBAC_DIRS])
def test_no_wildcards_and_no_escalation(path: Path):
    for obj in render(path):
        if obj["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in obj["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), f"{obj['metadata']['name']}: wildcard in {key}"
            assert not rule.get("nonResourceURLs"), obj["metadata"]["name"]
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), obj["metadata"]["name"]
            assert not {"secrets", "roles", "clusterroles", "rolebindings"} & set(rule["resources"])


@pytest.mark.parametrize("path", RBAC_DIRS, ids=[str(p.relative_to(DEPLOY)) for p in RBAC_DIRS])
def test_granted_is_exactly_what_the_code_needs(path: Path):
    objects = render(path)
    accounts = {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"}
    assert accounts and accounts <= set(COMPONENTS)
    for account in accounts:
        need, _ = needed(COMPONENTS[account])
        have, by = granted(objects, account)
        assert not have - need, f"{account}: granted but never called: {sorted(have - need)}"
        assert not need - have, f"{account}: called but not granted: {sorted(need - have)}"
        for perm, kinds in by.items():
            if perm[1] == "leases" or (account == "autonomic-picker" and perm[1] != "resourceslices"):
                assert kinds == {"Role"}, f"{account}: {perm} should come from a namespaced Role, not {kinds}"


def test_the_check_fails_on_an_extra_verb():
    objects = render(DEPLOY / "base/controller")
    role = next(o for o in objects if o["kind"] == "ClusterRole")
    widened = {**role, "rules": [*role["rules"], {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]}
    have, _ = granted(tuple(widened if o is role else o for o in objects), "autonomic-controller")
    need, _ = needed(COMPONENTS["autonomic-controller"])
    assert ("", "pods", "delete") in have - need
