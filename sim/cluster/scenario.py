"""The scenario file: which nodes, VMs, PDBs, model-server pods, InferencePools and DRA objects the twin starts
with, and KubeVirt settings. Typed with pydantic; `load_scenario` reports every error with its path
(`vms[3].memory: not a quantity`, `vms[1].node: unknown node 'w9'`).

Why it exists: tests, demos and benchmarks need reproducible clusters (a hot node, a GPU VM that cannot move,
a PDB that blocks) written down as data, not code. See docs/cluster-twin.md for the format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sim.cluster import quantity
from sim.cluster.cluster_shape import ClusterShape, ShapeError, expand, parse_shape
from sim.cluster.scenario_load import FaultSettings, LoadSettings, check_load

Strategy = Literal["LiveMigrate", "LiveMigrateIfPossible", "External", "None"]


class ScenarioError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid scenario:\n  " + "\n  ".join(errors))
        self.errors = errors


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _quantity(v: Any) -> str:
    try:
        quantity.parse(v)
    except quantity.QuantityError as exc:
        raise ValueError(str(exc)) from None
    return str(v)


class Taint(_Model):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodeSpec(_Model):
    name: str
    cpu: str = "8"
    memory: str = "32Gi"
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    ready: bool = True
    unschedulable: bool = False

    _q = field_validator("cpu", "memory", mode="before")(_quantity)


class VmSpec(_Model):
    name: str
    namespace: str = "default"
    cpu: int = Field(2, ge=1, description="vCPUs (cores)")
    memory: str = "4Gi"
    node: str | None = None  # None: the twin's scheduler places it
    eviction_strategy: Strategy | None = Field(None, alias="evictionStrategy")  # None: cluster default
    host_devices: list[dict[str, Any]] = Field(default_factory=list, alias="hostDevices")
    gpus: list[dict[str, Any]] = Field(default_factory=list)
    resource_claims: list[dict[str, Any]] = Field(default_factory=list, alias="resourceClaims")
    dirty_rate: str | None = Field(None, alias="dirtyRate")  # bytes per second, as a quantity ("64Mi")
    labels: dict[str, str] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    load_trace: str | None = Field(None, alias="loadTrace")  # VM id in the load trace (vm_trace.py)
    cpu_load: float | None = Field(None, ge=0, le=1, alias="cpuLoad")  # constant share of vCPUs busy (no trace)
    memory_load: float | None = Field(None, ge=0, le=1, alias="memoryLoad")  # constant share of memory in use
    virtual_machine: bool = Field(True, alias="virtualMachine")  # also create the owning VirtualMachine

    _q = field_validator("memory", mode="before")(_quantity)

    @field_validator("dirty_rate", mode="before")
    @classmethod
    def _dirty(cls, v: Any) -> Any:
        return None if v is None else _quantity(v)


class PdbSpec(_Model):
    name: str
    namespace: str = "default"
    selector: dict[str, Any]
    min_available: int | str | None = Field(None, alias="minAvailable")
    max_unavailable: int | str | None = Field(None, alias="maxUnavailable")


class PodSpec(_Model):
    """A model-server pod (or any plain pod) bound to a node, with its IP for endpoint discovery."""

    name: str
    namespace: str = "default"
    node: str
    ip: str
    labels: dict[str, str] = Field(default_factory=dict)
    cpu: str = "1"
    memory: str = "4Gi"
    port: int = 8000
    ready: bool = True

    _q = field_validator("cpu", "memory", mode="before")(_quantity)


class InferencePoolSpec(_Model):
    name: str
    namespace: str = "default"
    selector: dict[str, str]  # matchLabels
    target_ports: list[int] = Field(default_factory=lambda: [8000], alias="targetPorts")
    endpoint_picker: str = Field("autonomic-picker", alias="endpointPicker")
    endpoint_picker_port: int = Field(9002, alias="endpointPickerPort")


class KubeVirtSettings(_Model):
    parallel_migrations_per_cluster: int | None = Field(None, ge=1, alias="parallelMigrationsPerCluster")
    parallel_outbound_migrations_per_node: int | None = Field(None, ge=1, alias="parallelOutboundMigrationsPerNode")
    bandwidth_per_migration: str | None = Field(
        None, alias="bandwidthPerMigration"
    )  # bytes/s quantity, "0" = unlimited
    completion_timeout_per_gib: float | None = Field(None, gt=0, alias="completionTimeoutPerGiB")
    progress_timeout: float | None = Field(None, gt=0, alias="progressTimeout")
    allow_auto_converge: bool | None = Field(None, alias="allowAutoConverge")
    allow_post_copy: bool | None = Field(None, alias="allowPostCopy")
    eviction_strategy: Strategy | None = Field(None, alias="evictionStrategy")
    node_link_bandwidth: str | None = Field(None, alias="nodeLinkBandwidth")  # bytes/s quantity
    cpu_allocation_ratio: int | None = Field(None, ge=1, alias="cpuAllocationRatio")

    _q = field_validator("bandwidth_per_migration", "node_link_bandwidth", mode="before")(
        lambda v: None if v is None else _quantity(v)
    )


class Scenario(_Model):
    namespaces: list[str] = Field(default_factory=list)
    kubevirt: KubeVirtSettings = Field(default_factory=lambda: KubeVirtSettings.model_validate({}))
    nodes: list[NodeSpec] = Field(default_factory=list)
    vms: list[VmSpec] = Field(default_factory=list)
    pdbs: list[PdbSpec] = Field(default_factory=list)
    pods: list[PodSpec] = Field(default_factory=list)
    inference_pools: list[InferencePoolSpec] = Field(default_factory=list, alias="inferencePools")
    resources: list[dict[str, Any]] = Field(default_factory=list)  # raw manifests: DRA objects, anything served
    load: LoadSettings = Field(default_factory=lambda: LoadSettings.model_validate({}))  # scenario_load.py
    faults: FaultSettings = Field(default_factory=lambda: FaultSettings.model_validate({}))
    generate: ClusterShape | None = None  # kept as given; its nodes and VMs are already in `nodes` and `vms`


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "scenario"


def _cross_check(s: Scenario) -> list[str]:
    errors: list[str] = []
    nodes = [n.name for n in s.nodes]
    for i, name in enumerate(nodes):
        if name in nodes[:i]:
            errors.append(f"nodes[{i}].name: duplicate node {name!r}")
    seen: set[tuple[str, str]] = set()
    for i, vm in enumerate(s.vms):
        if (vm.namespace, vm.name) in seen:
            errors.append(f"vms[{i}].name: duplicate VM {vm.namespace}/{vm.name}")
        seen.add((vm.namespace, vm.name))
        if vm.node is not None and vm.node not in nodes:
            errors.append(f"vms[{i}].node: unknown node {vm.node!r}")
    for i, pod in enumerate(s.pods):
        if pod.node not in nodes:
            errors.append(f"pods[{i}].node: unknown node {pod.node!r}")
    for i, pdb in enumerate(s.pdbs):
        if (pdb.min_available is None) == (pdb.max_unavailable is None):
            errors.append(f"pdbs[{i}]: exactly one of minAvailable and maxUnavailable is required")
    for i, obj in enumerate(s.resources):
        if not obj.get("apiVersion") or not obj.get("kind") or not (obj.get("metadata") or {}).get("name"):
            errors.append(f"resources[{i}]: apiVersion, kind and metadata.name are required")
    return errors + check_load(s)


def _expand_generate(data: Any) -> Any:
    """The data with `generate:` (cluster_shape.py) turned into `nodes` and `vms` entries, before validation."""
    if not isinstance(data, dict) or data.get("generate") is None:
        return data
    if data.get("nodes") or data.get("vms"):
        raise ScenarioError(["generate: cannot be combined with nodes or vms lists (generate makes both)"])
    kubevirt = data.get("kubevirt")
    ratio = kubevirt.get("cpuAllocationRatio") if isinstance(kubevirt, dict) else None
    try:
        shape = parse_shape(data["generate"])
        nodes, vms = expand(shape, cpu_allocation_ratio=ratio if isinstance(ratio, int) and ratio >= 1 else 10)
    except ShapeError as exc:
        raise ScenarioError(exc.errors) from None
    if data.get("load") is None or isinstance(data.get("load"), dict):  # trace assignment seeded like the cluster
        data = {**data, "load": {"seed": shape.seed, **(data.get("load") or {})}}
    return {**data, "nodes": nodes, "vms": vms}


def parse_scenario(data: Any) -> Scenario:
    if data is None:
        data = {}
    data = _expand_generate(data)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError([f"{_path(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]) from None
    errors = _cross_check(scenario)
    if errors:
        raise ScenarioError(errors)
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ScenarioError([f"{path}: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError([f"yaml: {exc}".replace("\n", " ")]) from None
    scenario = parse_scenario(data)
    trace = scenario.load.trace_file
    if trace is not None:
        resolved = (Path(path).parent / Path(trace).expanduser()).resolve()
        if not resolved.is_file():
            raise ScenarioError([f"load.traceFile: no such file {str(resolved)!r}"])
        scenario.load.trace_file = str(resolved)
    return scenario


def default_scenario_path() -> Path:
    return Path(__file__).with_name("scenarios") / "default.yaml"
