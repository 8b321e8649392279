"""deploy/: every kustomization renders with the real kubectl and every object validates offline; the pods are locked
down; the configs in the ConfigMaps load with the project's own loaders; the container args parse with the real CLI;
the references between objects resolve; the standalone Envoy config is current and accepted by the real Envoy.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_helpers import DEPLOY, ROOT, Obj, components, kustomizations, name_of, render, validate, validate_each

from autonomic.cli import build_parser
from controller.config import load_config as load_controller_config
from harness.envoy import envoy_binary
from scorer.config import load_config as load_picker_config
from scorer.extproc.envoy_config import main as render_envoy

DIRS = kustomizations()
IDS = [str(p.relative_to(DEPLOY)) for p in DIRS]
OVERLAYS = [p for p in DIRS if p.parent.name == "overlays"]


def _all() -> Iterator[tuple[Path, Obj]]:
    for path in DIRS:
        for obj in render(path):
            yield path, obj


def _of_kind(kind: str) -> list[tuple[Path, Obj]]:
    return [(p, o) for p, o in _all() if o["kind"] == kind]


def test_every_base_and_overlay_is_found():
    names = {str(p.relative_to(DEPLOY)) for p in DIRS}
    assert {"base/picker", "base/controller", "overlays/openshift-kubevirt", "overlays/vllm-inferencepool"} <= names
    assert {"overlays/envoy-gateway", "overlays/standalone-envoy", "overlays/kubevirt"} <= names


def test_every_component_is_used_by_an_overlay():
    used = set()
    for overlay in OVERLAYS:
        doc = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        used |= {(overlay / c).resolve() for c in doc.get("components", [])}
    assert set(components()) <= used, sorted(set(components()) - used)


@pytest.mark.parametrize("path", DIRS, ids=IDS)
def test_renders_and_validates(path: Path):
    objects = render(path)
    assert objects
    validate_each(objects, str(path.relative_to(DEPLOY)))
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), "an object is defined twice"


def _deployment() -> Obj:
    return next(o for o in render(DEPLOY / "base/picker") if o["kind"] == "Deployment")


def _set(obj: Obj, path: str, value: Any) -> Obj:
    out = copy.deepcopy(obj)
    node = out
    *head, last = path.split(".")
    for key in head:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return out


BROKEN = [  # (what is wrong, object): the validation must refuse each
    ("unknown field", lambda: _set(_deployment(), "spec.template.spec.containers.0.livenessProbes", {})),
    ("wrong type", lambda: _set(_deployment(), "spec.replicas", "one")),
    (
        "failureMode not in the enum",
        lambda: _set(_crd("InferencePool"), "spec.endpointPickerRef.failureMode", "Open"),
    ),
    ("Service ref without port", lambda: _set(_crd("InferencePool"), "spec.endpointPickerRef.port", None)),
    ("no target ports", lambda: _set(_crd("InferencePool"), "spec.targetPorts", [])),
    ("failOpen with full duplex", lambda: _set(_crd("EnvoyExtensionPolicy"), "spec.extProc.0.failOpen", True)),
    (
        "ext_proc to a Deployment",
        lambda: _set(_crd("EnvoyExtensionPolicy"), "spec.extProc.0.backendRefs.0.kind", "Pod"),
    ),
    ("bad duration", lambda: _set(_crd("HTTPRoute"), "spec.rules.0.timeouts.request", "10 minutes")),
    (
        "record and alert",
        lambda: _set(
            _set(_crd("PrometheusRule"), "spec.groups.0.rules.0.alert", "X"), "spec.groups.0.rules.0.record", "x"
        ),
    ),
    ("unknown kind", lambda: {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
]


def _crd(kind: str) -> Obj:
    return next(o for _, o in _all() if o["kind"] == kind)


@pytest.mark.parametrize(("why", "build"), BROKEN, ids=[w for w, _ in BROKEN])
def test_validation_refuses_broken_objects(why: str, build: Any):
    obj = build()
    if why == "Service ref without port":
        del obj["spec"]["endpointPickerRef"]["port"]
    with pytest.raises((jsonschema.ValidationError, LookupError)):
        validate(obj)


def _pod_specs() -> Iterator[tuple[str, Obj]]:
    for path, obj in _all():
        if obj["kind"] == "Deployment":
            yield f"{path.relative_to(DEPLOY)}:{name_of(obj)}", obj["spec"]["template"]["spec"]


def test_pods_are_locked_down():
    seen = 0
    for where, spec in _pod_specs():
        seen += 1
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, where
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            seccomp = sc.get("seccompProfile") or pod.get("seccompProfile") or {}
            assert seccomp.get("type") == "RuntimeDefault", where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("privileged", False) is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert {"cpu", "memory"} <= set(c.get("resources", {}).get("requests", {})), where
            assert "livenessProbe" in c and "readinessProbe" in c, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), where
    assert seen >= 7


def test_openshift_pods_leave_the_uid_to_the_scc():
    for obj in render(DEPLOY / "overlays/openshift-kubevirt"):
        if obj["kind"] == "Deployment":
            assert "runAsUser" not in obj["spec"]["template"]["spec"]["securityContext"]


def test_picker_probes_use_the_plaintext_grpc_health_port():
    for path, obj in _of_kind("Deployment"):
        if obj["metadata"]["name"] != "autonomic-picker":
            continue
        container = obj["spec"]["template"]["spec"]["containers"][0]
        assert container["livenessProbe"]["grpc"] == {"port": 9003, "service": "liveness"}, path
        assert container["readinessProbe"]["grpc"] == {"port": 9003, "service": "readiness"}, path


def _args(container: Obj) -> list[str]:
    """The container's args with $(VAR) replaced as the kubelet does (literal values; fieldRefs get a stand-in)."""
    env = {e["name"]: e.get("value", f"<{e['name']}>") for e in container.get("env", [])}
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in container["args"]]


def test_container_args_parse_with_the_real_cli():
    parser = build_parser()
    seen = set()
    for path, obj in _of_kind("Deployment"):
        for container in obj["spec"]["template"]["spec"]["containers"]:
            if container["image"].startswith("envoyproxy/"):
                continue
            args = parser.parse_args(_args(container))  # exits 2 on an unknown flag or a bad value
            seen.add(args.command)
            if args.command == "picker":
                assert args.pool and args.secure_serving and args.host == "0.0.0.0", path
                assert (args.port, args.health_port, args.metrics_port) == (9002, 9003, 9090), path
            else:
                assert args.prometheus_url.startswith("http") and args.metrics_port == 8080, path
                assert args.lease_name == "autonomic-controller", path  # the name the lease Role grants
    assert seen == {"picker", "controller"}


def test_configmaps_load_with_the_project_loaders(tmp_path: Path):
    loaded = set()
    for path, obj in _of_kind("ConfigMap"):
        name = obj["metadata"]["name"]
        for key, text in obj.get("data", {}).items():
            file = tmp_path / key
            file.write_text(text)
            if name.startswith("autonomic-picker-config"):
                load_picker_config(file)  # raises ConfigError naming the path of every problem
                loaded.add("picker")
            elif name.startswith("autonomic-controller-config"):
                config = load_controller_config(file)
                assert config.dry_run, f"{path}: ships in dry-run (docs/deploy.md step 6 turns it off)"
                loaded.add("controller")
    assert loaded == {"picker", "controller"}


def test_picker_config_is_the_shipped_default():
    shipped = (ROOT / "scorer/default-config.yaml").read_text()
    assert (DEPLOY / "base/picker/config.yaml").read_text() == shipped, (
        "cp scorer/default-config.yaml deploy/base/picker/"
    )


def _index(objects: tuple[Obj, ...]) -> dict[tuple[str, str], Obj]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.mark.parametrize("path", OVERLAYS, ids=[p.name for p in OVERLAYS])
def test_references_resolve(path: Path):
    objects = render(path)
    index = _index(objects)
    for obj in objects:
        spec = obj.get("spec", {})
        if obj["kind"] == "InferencePool":
            ref = spec["endpointPickerRef"]
            service = index[("Service", ref["name"])]
            assert ref["port"]["number"] in [p["port"] for p in service["spec"]["ports"]]
            picker = index[("Deployment", "autonomic-picker")]
            args = _args(picker["spec"]["template"]["spec"]["containers"][0])
            assert f"--pool={obj['metadata']['name']}" in args, "the picker follows this pool"
        if obj["kind"] == "HTTPRoute":
            for rule in spec["rules"]:
                for ref in rule["backendRefs"]:
                    assert (ref.get("kind", "Service"), ref["name"]) in index, ref
            for parent in spec["parentRefs"]:
                assert parent["name"] == "inference-gateway"
        if obj["kind"] in ("EnvoyExtensionPolicy", "BackendTrafficPolicy"):
            for target in spec["targetRefs"]:
                assert (target["kind"], target["name"]) in index, target
            for ext in spec.get("extProc", []):
                for ref in ext["backendRefs"]:
                    backend = index[(ref["kind"], ref["name"])]
                    host = backend["spec"]["endpoints"][0]["fqdn"]["hostname"]
                    assert host == f"autonomic-picker.{obj['metadata']['namespace']}.svc.cluster.local"
        if obj["kind"] == "ConfigMap" and "envoy.yaml" in obj.get("data", {}):
            clusters = yaml.safe_load(obj["data"]["envoy.yaml"])["static_resources"]["clusters"]
            picker = next(c for c in clusters if c["name"] == "picker")
            endpoint = picker["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            host = endpoint["socket_address"]["address"]
            # the headless Service: one host per replica (docs/deploy.md, "Picker replicas")
            assert host == f"autonomic-picker-replicas.{obj['metadata']['namespace']}.svc.cluster.local", host
            assert ("Service", "autonomic-picker-replicas") in index
            assert index[("Service", "autonomic-picker-replicas")]["spec"]["clusterIP"] == "None"
        if obj["kind"] in ("Service", "NetworkPolicy", "ServiceMonitor"):
            selector = spec.get("podSelector") or spec.get("selector") or {}
            labels = selector.get("matchLabels", selector) if obj["kind"] != "Service" else selector
            if obj["kind"] == "ServiceMonitor":  # selects Services by their labels
                targets = [o["metadata"].get("labels", {}) for o in objects if o["kind"] == "Service"]
            else:
                targets = [o["spec"]["template"]["metadata"]["labels"] for o in objects if o["kind"] == "Deployment"]
            if obj["metadata"]["name"].startswith("autonomic"):
                assert any(labels.items() <= t.items() for t in targets), f"{name_of(obj)} selects nothing"
            if obj["kind"] == "Service" and obj["metadata"]["name"].startswith("autonomic"):
                pods = [d["spec"]["template"] for d in objects if d["kind"] == "Deployment"]
                named = {
                    port["name"]
                    for t in pods
                    if labels.items() <= t["metadata"]["labels"].items()
                    for c in t["spec"]["containers"]
                    for port in c.get("ports", [])
                }
                for port in spec["ports"]:
                    assert port["targetPort"] in named, f"{name_of(obj)}: no container port {port['targetPort']}"


STANDALONE = DEPLOY / "components/standalone-envoy/envoy.yaml"
STANDALONE_ARGS = [
    "--routing",
    "original_dst",
    "--pool",
    "",
    "--picker-host",
    "autonomic-picker-replicas.llm.svc.cluster.local",  # headless: one host per replica, each health-checked
    "--picker-replicas",
    "--picker-tls",
    "--picker-readyz-port",  # gRPC health: the NetworkPolicy opens the picker's 9090 to monitoring only
    "0",
    "--listen-host",
    "0.0.0.0",
    "--listen-port",
    "8081",
]


def test_standalone_envoy_config_is_current_and_valid(tmp_path: Path):
    out = tmp_path / "envoy.yaml"
    render_envoy([*STANDALONE_ARGS, "-o", str(out)])
    assert out.read_text() == STANDALONE.read_text(), "re-render: see deploy/components/standalone-envoy/"
    config = yaml.safe_load(out.read_text())
    picker = next(c for c in config["static_resources"]["clusters"] if c["name"] == "picker")
    assert picker["type"] == "STRICT_DNS" and picker["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    assert picker["lb_policy"] == "RANDOM" and picker["outlier_detection"]["consecutive_local_origin_failure"] == 1
    done = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    rendered = next(
        o for o in render(DEPLOY / "overlays/standalone-envoy") if o["metadata"]["name"].startswith("autonomic-envoy")
    )
    assert rendered["kind"] == "ConfigMap" and rendered["data"]["envoy.yaml"] == STANDALONE.read_text()


CONTAINERFILE = ROOT / "Containerfile"


def _stages() -> list[list[str]]:
    stages: list[list[str]] = []
    lines = CONTAINERFILE.read_text().replace("\\\n", " ").splitlines()
    for line in (raw.strip() for raw in lines):
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_containerfile_is_multi_stage_slim_and_non_root():
    stages = _stages()
    assert len(stages) >= 2, "a build stage and a runtime stage"
    final = stages[-1]
    assert "slim" in final[0] or "distroless" in final[0], final[0]
    users = [line.split(None, 1)[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage runs as a non-root user"
    assert users[-1].split(":")[0].isdigit(), "a numeric UID, so that runAsNonRoot can be checked by the kubelet"
    entry = [line for line in final if line.upper().startswith("ENTRYPOINT ")]
    assert entry and yaml.safe_load(entry[-1].split(None, 1)[1]) == ["autonomic"]
    assert not any(re.match(r"(?i)^run .*(pip|apt-get) install", line) for line in final[1:] if "--from" not in line), (
        "install in the build stage, copy the result"
    )
    runtime_uid = int(users[-1].split(":")[0])
    for _, obj in _of_kind("Deployment"):
        pod = obj["spec"]["template"]["spec"]
        if pod["containers"][0]["image"].startswith("autonomic") and "runAsUser" in pod["securityContext"]:
            assert pod["securityContext"]["runAsUser"] == runtime_uid


def _image_wheel(tmp_path: Path) -> Path:
    """The wheel that the build stage's COPYs make (as `pip install .` in the image would)."""
    context = tmp_path / "src"
    context.mkdir()
    for line in _stages()[0]:
        if line.upper().startswith("COPY ") and "--from" not in line:
            *sources, _dest = line.split()[1:]
            for source in sources:
                src = ROOT / source
                (context / source).parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy(src, context / source)
    out = tmp_path / "wheel"
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), "."]
    done = subprocess.run(cmd, cwd=context, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("autonomic-*.whl")
    return wheel


PRODUCT = {"autonomic", "common", "controller", "scorer", "proto"}


def test_containerfile_installs_the_product_only_with_its_package_data(tmp_path: Path):
    """The image's wheel has the console script, the product's packages and the package data its processes load at
    run time, and nothing of the twins, harnesses, benchmarks or the demo."""
    wheel = _image_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "autonomic = autonomic.cli:main" in entry_points
    top = {n.split("/")[0] for n in names if not n.startswith("autonomic-0")}
    assert top == PRODUCT, top
    assert {n for n in names if n.startswith("autonomic/")} == {
        f"autonomic/{f}" for f in ("__init__.py", "__main__.py", "cli.py")
    }
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package, patterns in data.items():
        if package.split(".")[0] not in PRODUCT:
            continue
        for pattern in patterns:
            for file in (ROOT / package.replace(".", "/")).glob(pattern):
                assert str(file.relative_to(ROOT)) in names, f"{file.relative_to(ROOT)} missing from the image's wheel"


def test_the_image_wheel_runs_both_services_and_refuses_the_development_commands(tmp_path: Path):
    """The image's wheel alone (dependencies from this venv, no site hooks, so no editable source checkout) runs
    `autonomic picker --help` and `autonomic controller --help`; `autonomic demo` says what is missing and exits 2."""
    wheel = _image_wheel(tmp_path)
    target = tmp_path / "image"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-compile",
        "--target",
        str(target),
        str(wheel),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    site_packages = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{target}:{site_packages}"}

    def autonomic(*args: str) -> subprocess.CompletedProcess[str]:
        run = [sys.executable, "-S", "-m", "autonomic", *args]
        return subprocess.run(run, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)

    for service in ("picker", "controller"):
        done = autonomic(service, "--help")
        assert done.returncode == 0 and f"usage: autonomic {service}" in done.stdout, done.stderr
    for command in ("demo", "fleet", "cluster-sim", "bench"):
        done = autonomic(command, "--help")
        assert done.returncode == 2 and "needs a development install" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
