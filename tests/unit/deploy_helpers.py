"""Renders deploy/ with the real kubectl kustomize and validates objects offline; shared by the deploy tests.

`kustomizations()` lists every directory of deploy/ that kubectl can build (bases and overlays; components are
built through the overlays that use them). `render(path)` runs `kubectl kustomize` and returns the objects (cached
per process: callers copy before changing them).
`validate(obj)` checks one object: Kubernetes kinds against the `kubernetes-validate` package's OpenAPI schemas
(strict: unknown fields fail), custom kinds against tests/unit/crd_schemas/; a kind with no schema fails.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012 as _SPEC

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = Path(__file__).resolve().parent / "crd_schemas"
K8S_VERSION = "1.32"  # the Kubernetes minor the manifests are validated against
Obj = dict[str, Any]


def kubectl() -> str:
    """$AUTONOMIC_KUBECTL, the venv's kubectl (scripts/install-kubectl.sh), else the one on PATH."""
    for candidate in (os.environ.get("AUTONOMIC_KUBECTL"), str(Path(sys.executable).with_name("kubectl"))):
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("no kubectl: run `make kubectl` (scripts/install-kubectl.sh)")
    return found


def kustomizations() -> list[Path]:
    out = []
    for path in sorted(DEPLOY.rglob("kustomization.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc.get("kind", "Kustomization") == "Kustomization":
            out.append(path.parent)
    return out


def components() -> list[Path]:
    return sorted(
        p.parent for p in DEPLOY.rglob("kustomization.yaml") if yaml.safe_load(p.read_text()).get("kind") == "Component"
    )


@functools.cache
def render(path: Path) -> tuple[Obj, ...]:
    done = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path.relative_to(ROOT)} failed:\n{done.stderr}")
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def name_of(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata'].get('name')}"


@functools.cache
def _crd_schemas() -> tuple[dict[tuple[str, str], Any], Registry]:
    by_kind: dict[tuple[str, str], Any] = {}
    registry: Registry = Registry()
    for path in sorted(SCHEMAS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        uri = f"file:///crd/{path.name}"
        if path.name.startswith("_"):
            registry = registry.with_resource(
                uri, Resource.from_contents({"$id": uri, **doc}, default_specification=_SPEC)
            )
            continue
        schema = {"$id": uri, **doc["schema"]}
        registry = registry.with_resource(uri, Resource.from_contents(schema, default_specification=_SPEC))
        by_kind[(doc["apiVersion"], doc["kind"])] = schema
    return by_kind, registry


def crd_kinds() -> set[tuple[str, str]]:
    return set(_crd_schemas()[0])


def validate(obj: Obj) -> None:
    """Raise (jsonschema.ValidationError or LookupError) unless `obj` validates against its kind's schema."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    by_kind, registry = _crd_schemas()
    if key in by_kind:
        jsonschema.Draft202012Validator(by_kind[key], registry=registry).validate(obj)
        return
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise LookupError(f"{name_of(obj)}: no schema for {key} ({exc.message})") from None


def validate_each(objects: tuple[Obj, ...] | list[Obj], source: str) -> None:
    """Validate every object; the first failure is an AssertionError naming `source`, the object and the field path."""
    for obj in objects:
        try:
            validate(obj)
        except (jsonschema.ValidationError, LookupError) as exc:
            where = "/".join(str(p) for p in getattr(exc, "absolute_path", []))
            raise AssertionError(f"{source}: {name_of(obj)} at {where or '.'}: {exc}") from None
