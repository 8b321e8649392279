"""The table of resource types the twin serves: group, version, plural, kind, scope, verbs, short names,
supported field selectors and subresources.

Why it exists: discovery documents, URL routing, the store and kubectl's table output all need the same facts
about each type; keeping them in one table means a type added here is listed, routed, stored and watched
consistently. Names and short names follow kube-apiserver and the KubeVirt / GIE CRDs.
"""

from __future__ import annotations

from dataclasses import dataclass

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for core
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    fields: frozenset[str] = COMMON_FIELDS  # field selectors accepted on list/watch
    status_subresource: bool = False  # /status exists; main writes keep status, status writes keep the rest
    builtin: bool = True  # built-in kinds accept strategic merge patch; custom resources answer 415
    categories: tuple[str, ...] = ()
    returns_deleted: bool = False  # DELETE answers the object (registry ReturnDeletedObject), else a Status

    @property
    def delete_answers_object(self) -> bool:
        """Custom resources always answer the deleted object; built-ins only where their registry says so."""
        return self.returns_deleted or not self.builtin

    @property
    def key(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


def _f(*extra: str) -> frozenset[str]:
    return COMMON_FIELDS | frozenset(extra)


RESOURCE_TYPES: tuple[ResourceType, ...] = (
    # core/v1
    ResourceType(
        "", "v1", "namespaces", "Namespace", False, ("ns",), fields=_f("status.phase"), status_subresource=True
    ),
    ResourceType(
        "",
        "v1",
        "nodes",
        "Node",
        False,
        ("no",),
        fields=_f("spec.unschedulable"),
        status_subresource=True,
    ),
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        ("po",),
        fields=_f("spec.nodeName", "status.phase", "status.podIP", "spec.schedulerName", "spec.serviceAccountName"),
        status_subresource=True,
        categories=("all",),
        returns_deleted=True,
    ),
    ResourceType(
        "",
        "v1",
        "events",
        "Event",
        True,
        ("ev",),
        fields=_f(
            "involvedObject.kind",
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "reason",
            "type",
            "source",
            "reportingComponent",
        ),
    ),
    ResourceType(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        True,
        ("pvc",),
        status_subresource=True,
        returns_deleted=True,
    ),
    # events.k8s.io/v1
    ResourceType(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        True,
        ("ev",),
        fields=_f("regarding.kind", "regarding.name", "regarding.namespace", "reason", "type", "reportingController"),
    ),
    # policy/v1
    ResourceType(
        "policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), status_subresource=True
    ),
    # scheduling.k8s.io/v1 (the descheduler's DefaultEvictor reads priority thresholds from PriorityClasses)
    ResourceType("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, ("pc",)),
    # coordination.k8s.io/v1
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True),
    # kubevirt.io/v1 (CRDs: VMI has no status subresource, VMIM and VM do)
    ResourceType(
        "kubevirt.io",
        "v1",
        "virtualmachineinstances",
        "VirtualMachineInstance",
        True,
        ("vmi", "vmis"),
        fields=_f("status.nodeName", "status.phase"),
        builtin=False,
        categories=("all",),
    ),
    ResourceType(
        "kubevirt.io",
        "v1",
        "virtualmachineinstancemigrations",
        "VirtualMachineInstanceMigration",
        True,
        ("vmim", "vmims"),
        fields=_f("status.phase", "spec.vmiName"),
        status_subresource=True,
        builtin=False,
        categories=("all",),
    ),
    ResourceType(
        "kubevirt.io",
        "v1",
        "virtualmachines",
        "VirtualMachine",
        True,
        ("vm", "vms"),
        status_subresource=True,
        builtin=False,
        categories=("all",),
    ),
    # resource.k8s.io/v1 (DRA)
    ResourceType(
        "resource.k8s.io", "v1", "resourceslices", "ResourceSlice", False, fields=_f("spec.nodeName", "spec.driver")
    ),
    ResourceType("resource.k8s.io", "v1", "resourceclaims", "ResourceClaim", True, status_subresource=True),
    ResourceType("resource.k8s.io", "v1", "resourceclaimtemplates", "ResourceClaimTemplate", True),
    ResourceType("resource.k8s.io", "v1", "deviceclasses", "DeviceClass", False),
    # inference.networking.k8s.io/v1 (Gateway API Inference Extension)
    ResourceType(
        "inference.networking.k8s.io",
        "v1",
        "inferencepools",
        "InferencePool",
        True,
        status_subresource=True,
        builtin=False,
    ),
)

BY_KEY: dict[tuple[str, str, str], ResourceType] = {(t.group, t.version, t.plural): t for t in RESOURCE_TYPES}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return BY_KEY.get((group, version, plural))


def by_kind(kind: str, group: str | None = None) -> ResourceType:
    for t in RESOURCE_TYPES:
        if t.kind == kind and (group is None or t.group == group):
            return t
    raise KeyError(kind)


def groups() -> dict[str, list[str]]:
    """group -> versions served (core excluded), in a stable order."""
    out: dict[str, list[str]] = {}
    for t in RESOURCE_TYPES:
        if t.group and t.version not in out.setdefault(t.group, []):
            out[t.group].append(t.version)
    return out


# handy handles used by the controllers
NODES = BY_KEY[("", "v1", "nodes")]
PODS = BY_KEY[("", "v1", "pods")]
NAMESPACES = BY_KEY[("", "v1", "namespaces")]
EVENTS = BY_KEY[("", "v1", "events")]
PVCS = BY_KEY[("", "v1", "persistentvolumeclaims")]
PDBS = BY_KEY[("policy", "v1", "poddisruptionbudgets")]
PRIORITY_CLASSES = BY_KEY[("scheduling.k8s.io", "v1", "priorityclasses")]
LEASES = BY_KEY[("coordination.k8s.io", "v1", "leases")]
VMIS = BY_KEY[("kubevirt.io", "v1", "virtualmachineinstances")]
VMIMS = BY_KEY[("kubevirt.io", "v1", "virtualmachineinstancemigrations")]
VMS = BY_KEY[("kubevirt.io", "v1", "virtualmachines")]
RESOURCE_SLICES = BY_KEY[("resource.k8s.io", "v1", "resourceslices")]
RESOURCE_CLAIMS = BY_KEY[("resource.k8s.io", "v1", "resourceclaims")]
DEVICE_CLASSES = BY_KEY[("resource.k8s.io", "v1", "deviceclasses")]
INFERENCE_POOLS = BY_KEY[("inference.networking.k8s.io", "v1", "inferencepools")]
