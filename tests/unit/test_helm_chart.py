"""deploy/helm/autonomic: the chart renders with the real `helm template` (offline) for every value set below and
every object validates offline like the Kustomize manifests; its pods, probes, Services, NetworkPolicies, gateway
objects and monitoring objects are the Kustomize ones; its RBAC is exactly what the code calls and the Kustomize
RBAC; the container args parse with the real CLI; the ConfigMaps load with the project's loaders; `helm lint`
passes; bad values are refused with a message naming the value at fault.

helm comes from `make helm` (scripts/install-helm.sh): without it these tests fail, they do not skip.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import DEPLOY, ROOT, Obj, name_of, render, validate_each
from test_deploy_rbac import COMPONENTS, granted, needed

from autonomic.cli import build_parser
from controller.config import load_config as load_controller_config
from scorer.config import load_config as load_picker_config

CHART = DEPLOY / "helm" / "autonomic"
NAMESPACE = "llm"
CUSTOM_PICKER_CONFIG = """\
apiVersion: autonomic.dev/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: queue-scorer, weight: 1}
  - {pluginRef: max-score-picker}
"""
POOL = {"inferencePool": {"name": "vllm-pool", "modelServers": {"matchLabels": {"app": "vllm"}}}}  # required
BOTH = {"controller": {"enabled": True}}
CONTROLLER_ONLY = {"picker": {"enabled": False}, "controller": {"enabled": True}}
MONITORING = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
CASES: dict[str, dict[str, Any]] = {  # name -> values over POOL (release "autonomic" in namespace llm, or RELEASES')
    "defaults": {},
    "both": BOTH,
    "tls-secret": {"picker": {"tls": {"secretName": "autonomic-picker-tls"}}},
    "envoy-gateway": {"provider": {"name": "envoy-gateway"}},
    "istio": {"provider": {"name": "istio"}, "httpRoute": {"enabled": True}},
    "inference-route": {"httpRoute": {"enabled": True}},
    "controller-only": CONTROLLER_ONLY,
    "picker-only": {"picker": {"enabled": True}, "controller": {"enabled": False}},
    "monitoring": {
        "picker": {"monitoring": MONITORING},
        "controller": {"enabled": True, "monitoring": MONITORING},
        "grafanaDashboard": {"enabled": True},
    },
    "precise": {"picker": {"config": {"profile": "precise"}}},
    "dra": {"picker": {"config": {"profile": "dra"}}},
    "custom-config": {"picker": {"config": {"custom": CUSTOM_PICKER_CONFIG}}},
    "no-dra": {"picker": {"dra": {"enabled": False}}},
    "no-leader-election": {
        "picker": {"enabled": False},
        "controller": {"enabled": True, "replicas": 1, "leaderElection": {"enabled": False}, "dryRun": False},
    },
    "openshift": {
        "picker": {"enabled": False},
        "runAsUser": None,
        "runAsGroup": None,
        "controller": {
            "enabled": True,
            "policy": "descheduler-compatible",
            "actuator": "eviction",
            "config": {
                "limits": {"maxInFlightTotal": 3},
                "psiRelief": {"high": 0.4},
                "deschedulerCompatible": {"profileVersion": "4.21-ga"},  # the GA baseline, reachable by name
            },
            "prometheus": {
                "url": "https://prometheus-k8s.openshift-monitoring.svc:9091",
                "tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token",
                "caConfigMap": "autonomic-service-ca",
                "clusterMonitoringView": True,
            },
        },
    },
    "second-pool": {  # another release (another pool) in the same namespace, everything else changed too
        "inferencePool": {"name": "pool-b", "modelServers": {"matchLabels": {"app": "vllm-b"}}},
        "image": {"repository": "registry.example/autonomic", "tag": "1.2.3", "pullPolicy": "Always"},
        "picker": {
            "ports": {"extProc": 9102, "health": 9103, "metrics": 9190},
            "flags": {"scrape-interval": 0.2, "staleness": 3, "no-color": None},
            "extraArgs": ["--scrape-timeout=0.5"],
            "env": [{"name": "EXTRA", "value": "1"}],
            "nodeSelector": {"pool": "b"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "monitoring": MONITORING,
        },
        "provider": {"name": "envoy-gateway"},
    },
}
RELEASES = {"second-pool": "pool-b", "openshift": "rebalancer"}


def helm() -> str:
    """$AUTONOMIC_HELM, the venv's helm (scripts/install-helm.sh), else the one on PATH."""
    for candidate in (os.environ.get("AUTONOMIC_HELM"), str(Path(sys.executable).with_name("helm"))):
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("helm")
    if found is None:
        raise FileNotFoundError("no helm: run `make helm` (scripts/install-helm.sh)")
    return found


def run_helm(*args: str, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """helm with `values` as a values file read from stdin (JSON is YAML)."""
    extra = ["--values", "-"] if values is not None else []
    return subprocess.run(
        [helm(), *args, *extra],
        input=json.dumps(values) if values is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HELM_CACHE_HOME": "/nonexistent", "HELM_CONFIG_HOME": "/nonexistent"},
    )


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, maps merged key by key (as helm merges values files)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def values_of(case: str) -> dict[str, Any]:
    return merged(POOL, CASES[case])


@functools.cache
def template(case: str) -> tuple[Obj, ...]:
    release = RELEASES.get(case, "autonomic")
    done = run_helm("template", release, str(CHART), "--namespace", NAMESPACE, values=values_of(case))
    assert done.returncode == 0, f"helm template ({case}) failed:\n{done.stderr}"
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def _one(objects: tuple[Obj, ...], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def _deployment(objects: tuple[Obj, ...], component: str) -> Obj | None:
    found = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith(f"-{component}")]
    return found[0] if found else None


def _container(objects: tuple[Obj, ...], component: str) -> Obj:
    deployment = _deployment(objects, component)
    assert deployment is not None, f"no {component} Deployment"
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _args(container: Obj) -> list[str]:
    """The container's args with $(VAR) replaced as the kubelet does (literal values; fieldRefs get a stand-in)."""
    env = {e["name"]: e.get("value", f"<{e['name']}>") for e in container.get("env", [])}
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in container["args"]]


def _parse(container: Obj) -> dict[str, Any]:
    return vars(build_parser().parse_args(_args(container)))  # exits 2 on an unknown flag or a bad value


KUSTOMIZE = {"picker": DEPLOY / "base/picker", "controller": DEPLOY / "base/controller"}


def _kustomize_deployment(component: str) -> Obj:
    return _one(render(KUSTOMIZE[component]), "Deployment")


# --- helm itself -----------------------------------------------------------------------------------------------


def test_helm_is_installed_and_new_enough():
    done = subprocess.run([helm(), "version", "--template", "{{.Version}}"], capture_output=True, text=True)
    major, minor = (int(x) for x in re.findall(r"\d+", done.stdout)[:2])
    assert (major, minor) >= (3, 18), f"helm {done.stdout}: scripts/install-helm.sh needs >= 3.18"


@pytest.mark.parametrize("case", ["defaults", "both", "envoy-gateway", "istio", "openshift", "second-pool"])
def test_helm_lint_passes(case: str):
    done = run_helm("lint", "--strict", str(CHART), values=values_of(case))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_the_chart_copies_are_current():
    """Helm reads only files inside the chart: the shipped picker profiles, alerts and dashboard are copies."""
    files = CHART / "files"
    for profile in ("default", "precise", "dra"):
        shipped = (ROOT / f"scorer/{profile}-config.yaml").read_text()
        assert (files / f"picker-{profile}.yaml").read_text() == shipped, f"cp scorer/{profile}-config.yaml"
    for component in ("picker", "controller"):
        source = DEPLOY / f"components/monitoring-{component}/prometheusrule.yaml"
        assert (files / f"{component}-prometheusrule.yaml").read_text() == source.read_text(), f"cp {source}"
    dashboard = DEPLOY / "components/grafana-dashboard/autonomic.json"
    assert (files / "grafana-dashboard.json").read_text() == dashboard.read_text()


# --- every value set renders and validates -----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_renders_and_validates(case: str):
    objects = template(case)
    assert objects
    validate_each(objects, case)
    for obj in objects:
        if not obj["kind"].startswith("Cluster"):
            assert obj["metadata"]["namespace"] == NAMESPACE, f"{case}: {name_of(obj)}"
        else:
            assert obj["metadata"]["name"].endswith(f"-{NAMESPACE}"), f"{case}: cluster-scoped names say the namespace"
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), f"{case}: an object is defined twice"


def test_components_are_enabled_independently():
    def components(case: str) -> set[str]:
        return {o["metadata"]["labels"].get("app.kubernetes.io/component", "") for o in template(case)} - {""}

    assert components("defaults") == components("picker-only") == {"endpoint-picker"}
    assert components("controller-only") == {"rebalancer"}
    assert components("both") == {"endpoint-picker", "rebalancer"}
    assert not [o for o in template("controller-only") if o["kind"] == "InferencePool"]


def test_two_pools_in_one_namespace_do_not_collide():
    first, second = template("defaults"), template("second-pool")
    names = {(o["kind"], o["metadata"]["name"]) for o in first}
    assert not names & {(o["kind"], o["metadata"]["name"]) for o in second}
    for a, b in ((first, second), (second, first)):
        for selector in (o["spec"]["selector"] for o in a if o["kind"] == "Service"):
            for pod in (d["spec"]["template"]["metadata"]["labels"] for d in b if d["kind"] == "Deployment"):
                assert not selector.items() <= pod.items(), "a Service of one release selects the other's pods"


# --- the objects are the Kustomize ones ----------------------------------------------------------------------------


POD_FIELDS = ("securityContext", "terminationGracePeriodSeconds")
CONTAINER_FIELDS = ("securityContext", "ports", "livenessProbe", "readinessProbe", "resources", "imagePullPolicy")


@pytest.mark.parametrize(("case", "component"), [("defaults", "picker"), ("both", "picker"), ("both", "controller")])
def test_deployments_are_the_kustomize_ones(case: str, component: str):
    """Same pod and container security, probes, ports, resources, volumes and strategy; args with the same meaning."""
    mine, theirs = _deployment(template(case), component), _kustomize_deployment(component)
    assert mine is not None
    assert mine["spec"]["replicas"] == theirs["spec"]["replicas"]
    assert mine["spec"].get("strategy") == theirs["spec"].get("strategy")
    pod, ref = mine["spec"]["template"]["spec"], theirs["spec"]["template"]["spec"]
    for field in POD_FIELDS:
        assert pod[field] == ref[field], field
    (container,), (ref_container,) = pod["containers"], ref["containers"]
    for field in CONTAINER_FIELDS:
        assert container[field] == ref_container[field], field
    assert container["volumeMounts"] == ref_container["volumeMounts"]
    assert [(v["name"], v.get("emptyDir")) for v in pod["volumes"]] == [
        (v["name"], v.get("emptyDir")) for v in ref["volumes"]
    ]
    assert container["image"] == "autonomic:0.1.0" == ref_container["image"]
    assert _parse(container) == _parse(ref_container)


def test_pods_are_locked_down_in_every_value_set():
    """Every Deployment of every value set has the Kustomize base's security contexts (the OpenShift set without the
    UID/GID, which the SCC assigns) and probes."""
    for case in CASES:
        for component in ("picker", "controller"):
            mine = _deployment(template(case), component)
            if mine is None:
                continue
            ref = _kustomize_deployment(component)["spec"]["template"]["spec"]
            pod = mine["spec"]["template"]["spec"]
            expected = dict(ref["securityContext"])
            if CASES[case].get("runAsUser", 0) is None:
                del expected["runAsUser"], expected["runAsGroup"]
            assert pod["securityContext"] == expected, (case, component)
            assert pod["containers"][0]["securityContext"] == ref["containers"][0]["securityContext"], (case, component)
            assert not pod.get("hostNetwork") and not pod.get("hostPID")
            container = pod["containers"][0]
            health = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("livenessProbe", "readinessProbe"):
                check = container[probe].get("grpc") or container[probe]["httpGet"]
                assert check["port"] in (health.get("grpc-health"), "metrics"), (case, probe)


def _spec_without_instance(obj: Obj) -> Obj:
    """The spec with the release's instance label dropped from selectors (the chart adds it, Kustomize has none)."""
    text = json.dumps(obj["spec"])
    return json.loads(re.sub(r',?\s*"app.kubernetes.io/instance": "[^"]*"', "", text).replace("{, ", "{"))


@pytest.mark.parametrize(("kind", "component"), [(k, c) for k in ("Service", "NetworkPolicy") for c in KUSTOMIZE])
def test_services_and_network_policies_are_the_kustomize_ones(kind: str, component: str):
    mine = [o for o in template("both") if o["kind"] == kind and f"-{component}" in o["metadata"]["name"]]
    theirs = [o for o in render(KUSTOMIZE[component]) if o["kind"] == kind]
    assert len(mine) == len(theirs) >= 1
    by_name = lambda objs: sorted(objs, key=lambda o: o["metadata"]["name"])  # noqa: E731
    for ours, ref in zip(by_name(mine), by_name(theirs), strict=True):
        assert _spec_without_instance(ours) == ref["spec"], ref["metadata"]["name"]


GATEWAY_OVERLAYS = {  # case -> (overlay, kinds to compare)
    "defaults": ("vllm-inferencepool", ("InferencePool",)),
    "inference-route": ("vllm-inferencepool", ("InferencePool", "HTTPRoute")),
    "envoy-gateway": (
        "envoy-gateway",
        ("InferencePool", "HTTPRoute", "Backend", "EnvoyExtensionPolicy", "BackendTrafficPolicy", "Service"),
    ),
}


@pytest.mark.parametrize("case", GATEWAY_OVERLAYS)
def test_gateway_objects_are_the_kustomize_ones(case: str):
    """The pool and the gateway wiring equal the overlay's objects (the chart names the HTTPRoute after the pool)."""
    overlay, kinds = GATEWAY_OVERLAYS[case]
    theirs = json.loads(
        json.dumps(render(DEPLOY / "overlays" / overlay)).replace('"name": "vllm"', '"name": "vllm-pool"')
    )
    for kind in kinds:
        mine = {o["metadata"]["name"]: o for o in template(case) if o["kind"] == kind}
        ref = {o["metadata"]["name"]: o for o in theirs if o["kind"] == kind}
        if kind == "Service":
            mine, ref = (
                {k: v for k, v in mine.items() if k == "vllm-pool"},
                {k: v for k, v in ref.items() if k == "vllm-pool"},
            )
        assert mine.keys() == ref.keys(), kind
        for name in mine:
            assert mine[name]["spec"] == ref[name]["spec"], f"{kind}/{name}"


def test_istio_dials_the_picker_over_tls_on_the_ext_proc_port_only():
    objects = template("istio")
    rule = _one(objects, "DestinationRule")
    service = _one(objects, "Service", "autonomic-picker")
    assert rule["spec"]["host"] == f"autonomic-picker.{NAMESPACE}.svc.cluster.local"
    (setting,) = rule["spec"]["trafficPolicy"]["portLevelSettings"]
    ext_proc = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "ext-proc")
    assert setting["port"]["number"] == ext_proc
    assert setting["tls"] == {"mode": "SIMPLE", "insecureSkipVerify": True}
    assert "tls" not in rule["spec"]["trafficPolicy"], "health and metrics are plaintext"
    route = _one(objects, "HTTPRoute")
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "vllm-pool"}
    ]


@pytest.mark.parametrize("component", KUSTOMIZE)
def test_monitoring_objects_are_the_kustomize_ones(component: str):
    objects = template("monitoring")
    theirs = render(DEPLOY / "overlays" / ("vllm-inferencepool" if component == "picker" else "kubevirt"))
    for kind in ("ServiceMonitor", "PrometheusRule"):
        mine = _one(objects, kind, f"autonomic-{component}")
        ref = _one(theirs, kind, f"autonomic-{component}")
        assert _spec_without_instance(mine) == ref["spec"], kind
        assert ref["metadata"]["labels"].items() <= mine["metadata"]["labels"].items()
    dashboard = _one(objects, "ConfigMap", "autonomic-grafana-dashboard")
    ref_dashboard = _one(render(DEPLOY / "overlays/kubevirt"), "ConfigMap", "autonomic-grafana-dashboard")
    assert json.loads(dashboard["data"]["autonomic.json"]) == json.loads(ref_dashboard["data"]["autonomic.json"])
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


@pytest.mark.parametrize("case", ["monitoring", "second-pool"])
def test_alerts_name_the_jobs_the_service_monitors_scrape(case: str):
    """Prometheus Operator's job label is the scraped Service's name: each `up{job=...}` must be one of them."""
    objects = template(case)
    scraped = set()
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        scraped |= {
            s["metadata"]["name"]
            for s in objects
            if s["kind"] == "Service" and selector.items() <= s["metadata"]["labels"].items()
        }
    jobs = {
        job
        for rule in (o for o in objects if o["kind"] == "PrometheusRule")
        for group in rule["spec"]["groups"]
        for r in group["rules"]
        for job in re.findall(r'job="([^"]+)"', r.get("expr", ""))
    }
    assert jobs and jobs <= scraped, (jobs, scraped)


def test_recording_rules_can_be_left_to_the_descheduler_operator():
    values = merged(CONTROLLER_ONLY, {"controller": {"monitoring": {"prometheusRule": {"enabled": True}}}})
    values["controller"]["monitoring"]["prometheusRule"]["recordingRules"] = False
    done = run_helm("template", "autonomic", str(CHART), "-n", NAMESPACE, values=values)
    assert done.returncode == 0, done.stderr
    rule = _one(tuple(d for d in yaml.safe_load_all(done.stdout) if d), "PrometheusRule")
    assert [g["name"] for g in rule["spec"]["groups"]] == ["autonomic-controller"]


# --- RBAC ------------------------------------------------------------------------------------------------------


DRA = {("resource.k8s.io", "resourceclaims", v) for v in ("list", "watch")} | {
    ("resource.k8s.io", "resourceslices", v) for v in ("list", "watch")
}
LEASE = {("coordination.k8s.io", "leases", v) for v in ("create", "get", "update")}


def _account(objects: tuple[Obj, ...], component: str) -> str | None:
    names = [o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"]
    found = [n for n in names if n.endswith(f"-{component}")]
    return found[0] if found else None


@pytest.mark.parametrize("case", CASES)
def test_rbac_is_exactly_what_the_code_calls(case: str):
    objects = template(case)
    accounts = 0
    for component, source in (
        ("picker", COMPONENTS["autonomic-picker"]),
        ("controller", COMPONENTS["autonomic-controller"]),
    ):
        account = _account(objects, component)
        if account is None:
            assert not [o for o in objects if o["kind"].endswith("Role") and f"-{component}" in o["metadata"]["name"]]
            continue
        accounts += 1
        need, _ = needed(source)
        if component == "picker" and case == "no-dra":
            need -= DRA  # --no-dra: the picker never starts its DRA watchers
        if component == "controller" and case == "no-leader-election":
            need -= LEASE  # --no-leader-election: it never touches a Lease
        have, by = granted(objects, account)
        assert not have - need, f"{account}: granted but never called: {sorted(have - need)}"
        assert not need - have, f"{account}: called but not granted: {sorted(need - have)}"
        for perm, kinds in by.items():
            if perm[1] == "leases" or (component == "picker" and perm[1] != "resourceslices"):
                assert kinds == {"Role"}, f"{account}: {perm} should come from a namespaced Role, not {kinds}"
        for binding in (o for o in objects if o["kind"].endswith("Binding")):
            for subject in binding["subjects"]:
                assert subject.get("namespace") == NAMESPACE, binding["metadata"]["name"]
    assert accounts


def _rules(objects: tuple[Obj, ...], account: str, lease: str | None) -> set[tuple[str, str, str, str, str]]:
    """(role kind, group, resource, verb, resourceNames) bound to `account`, the Lease's name written as LEASE."""
    roles = {(o["kind"], o["metadata"]["name"]): o for o in objects if o["kind"] in ("Role", "ClusterRole")}
    out = set()
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if any(s["name"] == account for s in binding["subjects"]):
            ref = binding["roleRef"]
            role = roles.get((ref["kind"], ref["name"]))
            for rule in role["rules"] if role else [{"external": ref["name"]}]:
                if "external" in rule:
                    out.add((ref["kind"], "", rule["external"], "bind", ""))
                    continue
                names = ",".join("LEASE" if n == lease else n for n in rule.get("resourceNames", []))
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            out.add((ref["kind"], group, resource, verb, names))
    return out


@pytest.mark.parametrize("component", KUSTOMIZE)
def test_rbac_equals_the_kustomize_rbac(component: str):
    """Same roles, kinds, verbs and resourceNames, the Lease Role granting exactly the name --lease-name uses."""
    mine = template("both")
    theirs = render(KUSTOMIZE[component])
    lease = None
    if component == "controller":
        lease = _parse(_container(mine, "controller"))["lease_name"]
    assert _rules(mine, f"autonomic-{component}", lease) == _rules(
        theirs, f"autonomic-{component}", "autonomic-controller"
    )
    for obj in mine:
        if obj["kind"] in ("Role", "ClusterRole"):
            for rule in obj["rules"]:
                for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(key, []), f"{obj['metadata']['name']}: wildcard in {key}"
                assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
                assert not {"secrets", "roles", "clusterroles", "rolebindings"} & set(rule["resources"])


def test_openshift_binds_only_the_external_monitoring_role():
    objects = template("openshift")
    external = {o["roleRef"]["name"] for o in objects if o["kind"].endswith("Binding")} - {
        o["metadata"]["name"] for o in objects if o["kind"].endswith("Role")
    }
    assert external == {"cluster-monitoring-view"}


# --- args and configs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_container_args_parse_with_the_real_cli(case: str):
    objects = template(case)
    values = values_of(case)
    picker = _deployment(objects, "picker")
    if picker is not None:
        container = picker["spec"]["template"]["spec"]["containers"][0]
        args = _parse(container)
        pool = values["inferencePool"]["name"]
        assert args["command"] == "picker" and args["pool"] == pool and args["pool_namespace"] == "<POD_NAMESPACE>"
        assert args["secure_serving"] and args["host"] == "0.0.0.0"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert (args["port"], args["health_port"], args["metrics_port"]) == (
            ports["ext-proc"],
            ports["grpc-health"],
            ports["metrics"],
        )
        secret = values.get("picker", {}).get("tls", {}).get("secretName")
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        if secret:
            assert str(args["tls_cert"]).startswith(mounts["tls"]) and str(args["tls_key"]).startswith(mounts["tls"])
            volume = next(v for v in picker["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
            assert volume["secret"]["secretName"] == secret
        else:
            assert args["tls_cert"] is None and "tls" not in mounts
        assert args["no_dra"] == (case == "no-dra")
        assert str(args["config"]).startswith(mounts["config"])
        if case == "second-pool":
            assert (args["scrape_interval"], args["staleness"], args["scrape_timeout"]) == (0.2, 3.0, 0.5)
            assert container["image"] == "registry.example/autonomic:1.2.3" and container["imagePullPolicy"] == "Always"
        pool_obj = [o for o in objects if o["kind"] == "InferencePool"]
        if pool_obj:
            ref = pool_obj[0]["spec"]["endpointPickerRef"]
            service = _one(objects, "Service", ref["name"])
            assert pool_obj[0]["metadata"]["name"] == pool
            assert ref["port"]["number"] == next(p["port"] for p in service["spec"]["ports"] if p["name"] == "ext-proc")
    controller = _deployment(objects, "controller")
    if controller is not None:
        container = controller["spec"]["template"]["spec"]["containers"][0]
        args = _parse(container)
        assert args["command"] == "controller" and args["prometheus_url"].startswith("http")
        assert args["metrics_port"] == container["ports"][0]["containerPort"]
        leases = [o for o in objects if o["kind"] == "Role" and o["metadata"]["name"].endswith("-lease")]
        if args["no_leader_election"]:
            assert not leases and controller["spec"]["replicas"] <= 1
        else:
            (role,) = leases
            assert [args["lease_name"]] in [r.get("resourceNames") for r in role["rules"]], "the Role grants its Lease"
            assert args["lease_namespace"] == "<POD_NAMESPACE>" and args["identity"] == "<POD_NAME>"
        if case == "openshift":
            assert str(args["prometheus_token_file"]).endswith("serviceaccount/token")
            env = {e["name"]: e.get("value") for e in container["env"]}
            mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "prometheus-ca")
            assert env["REQUESTS_CA_BUNDLE"] == f"{mount}/service-ca.crt"
    assert picker is not None or controller is not None


@pytest.mark.parametrize("case", CASES)
def test_configmaps_load_with_the_project_loaders(case: str, tmp_path: Path):
    objects = template(case)
    values = values_of(case)
    for obj in (o for o in objects if o["kind"] == "ConfigMap" and "config.yaml" in o.get("data", {})):
        file = tmp_path / "config.yaml"
        file.write_text(obj["data"]["config.yaml"])
        name = obj["metadata"]["name"]
        component = "picker" if name.endswith("-picker-config") else "controller"
        deployment = _deployment(objects, component)
        assert deployment is not None
        volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
        assert volume["configMap"]["name"] == name
        if component == "picker":
            load_picker_config(file)  # raises ConfigError naming the path of every problem
            settings = values.get("picker", {}).get("config", {})
            profile = settings.get("profile", "default")
            expected = settings.get("custom") or (ROOT / f"scorer/{profile}-config.yaml").read_text()
            assert obj["data"]["config.yaml"].strip() == expected.strip()
        else:
            config = load_controller_config(file)
            settings = values.get("controller", {})
            assert config.dry_run == settings.get("dryRun", True), "ships in dry-run unless told"
            assert config.policy == settings.get("policy", "psi-relief")
            assert config.actuator == settings.get("actuator", "migration")
            version = settings.get("config", {}).get("deschedulerCompatible", {}).get("profileVersion", "main")
            assert config.descheduler_compatible.profile_version == version  # main unless the values say 4.21-ga
            if case == "openshift":
                assert (config.limits.max_in_flight_total, config.psi_relief.high) == (3, 0.4)
                assert not config.descheduler_compatible.migration_aware.enabled


def test_a_config_change_rolls_the_picker():
    def checksum(case: str) -> str:
        picker = _deployment(template(case), "picker")
        assert picker is not None
        return picker["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert len({checksum("defaults"), checksum("precise"), checksum("dra"), checksum("custom-config")}) == 4


# --- bad values are refused ------------------------------------------------------------------------------------


SELECT = {"modelServers": {"matchLabels": {"app": "vllm"}}}
REFUSED = [  # (what is wrong, values (over POOL unless they set inferencePool), what the error must say)
    ("the chart's defaults alone", {"inferencePool": {}}, "at '/inferencePool': missing property 'name'"),
    ("no pool name", {"inferencePool": SELECT}, "at '/inferencePool': missing property 'name'"),
    ("empty pool name", {"inferencePool": {"name": "", **SELECT}}, "at '/inferencePool/name': minLength: got 0"),
    ("bad pool name", {"inferencePool": {"name": "Pool_A", **SELECT}}, "at '/inferencePool/name': 'Pool_A' does not"),
    ("no model servers", {"inferencePool": {"name": "p"}}, "at '/inferencePool': missing property 'modelServers'"),
    (
        "empty model-server selector",
        {"inferencePool": {"name": "p", "modelServers": {"matchLabels": {}}}},
        "at '/inferencePool/modelServers/matchLabels': minProperties",
    ),
    ("no target port", {"inferencePool": {"name": "p", **SELECT, "targetPorts": []}}, "/inferencePool/targetPorts"),
    ("bad provider", {"provider": {"name": "nginx"}}, "at '/provider/name': value must be one of"),
    ("bad profile", {"picker": {"config": {"profile": "fast"}}}, "at '/picker/config/profile': value must be one of"),
    ("misspelt key", {"picker": {"replcas": 2}}, "additional properties 'replcas' not allowed"),
    ("bad failure mode", {"inferencePool": {"name": "p", **SELECT, "failureMode": "Open"}}, "/failureMode"),
    ("bad port", {"picker": {"ports": {"extProc": 70000}}}, "at '/picker/ports/extProc'"),
    ("bad policy", {"controller": {"enabled": True, "policy": "greedy"}}, "at '/controller/policy'"),
    (
        "bad baseline profile version",
        {"controller": {"enabled": True, "config": {"deschedulerCompatible": {"profileVersion": "4.20"}}}},
        "at '/controller/config/deschedulerCompatible/profileVersion': value must be one of",
    ),
    ("bad prometheus url", {"controller": {"enabled": True, "prometheus": {"url": "prometheus:9090"}}}, "/url"),
    ("chart-owned picker flag", {"picker": {"flags": {"port": 1}}}, "picker.flags.port: --port is set by the chart"),
    ("chart-owned controller flag", {"controller": {"enabled": True, "flags": {"dry-run": True}}}, "controller.dryRun"),
    (
        "dryRun in config",
        {"controller": {"enabled": True, "config": {"dryRun": False}}},
        "set controller.dryRun instead",
    ),
    (
        "replicas without leader election",
        {"controller": {"enabled": True, "leaderElection": {"enabled": False}}},
        "controller.replicas: 2 replicas without leader election",
    ),
    (
        "lease timings",
        {"controller": {"enabled": True, "leaderElection": {"enabled": True, "retryPeriod": 20}}},
        "retryPeriod (20) < renewDeadline (7) < leaseDuration (10)",
    ),
    ("custom config of another kind", {"picker": {"config": {"custom": "kind: Pod\n"}}}, "picker.config.custom"),
    ("custom config not YAML", {"picker": {"config": {"custom": "a: [\n"}}}, "picker.config.custom: not a YAML"),
    ("ports collide", {"picker": {"ports": {"health": 9002}}}, "picker.ports: extProc, health and metrics must differ"),
    ("nothing enabled", {"picker": {"enabled": False}}, "nothing to install"),
    ("bad secret name", {"picker": {"tls": {"secretName": "My Secret"}}}, "at '/picker/tls/secretName'"),
]


@pytest.mark.parametrize(("why", "values", "message"), REFUSED, ids=[w for w, _, _ in REFUSED])
def test_invalid_values_are_refused_clearly(why: str, values: dict[str, Any], message: str):
    if "inferencePool" not in values:
        values = merged(POOL, values)
    done = run_helm("template", "autonomic", str(CHART), "-n", NAMESPACE, values=values)
    assert done.returncode != 0, f"{why}: rendered anyway"
    assert message in done.stderr, done.stderr
