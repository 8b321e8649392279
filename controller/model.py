"""The planner's vocabulary: one immutable snapshot in, one immutable plan out.

Why it exists: the planning core (`controller.plan.plan`) is a pure function, so everything it may look at is in
a `ClusterSnapshot` that the I/O shell builds from Prometheus and the Kubernetes API, and everything it decides is
in a `Plan` that the actuators carry out (or, in dry-run, only record). Nothing here does I/O or reads the clock.

Units: times are Unix seconds (float), CPU is cores, memory is bytes, pressure and utilisation are fractions in
[0, 1]. A VM is keyed by ``"namespace/name"`` (its VMI); a node by its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

PREFER_NO_EVICTION_ANNOTATION = "descheduler.alpha.kubernetes.io/prefer-no-eviction"
# KubeVirt's own states for a VirtualMachineInstanceMigration (kubevirt.io/v1); the last two end a migration.
TERMINAL_MIGRATION_PHASES = frozenset({"Succeeded", "Failed"})


class QoS(StrEnum):
    """The virt-launcher pod's QoS class, the descheduler's tie-breaker between equal priorities."""

    BEST_EFFORT = "BestEffort"
    BURSTABLE = "Burstable"
    GUARANTEED = "Guaranteed"


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"  # NoSchedule | PreferNoSchedule | NoExecute


@dataclass(frozen=True, slots=True)
class Toleration:
    """A pod toleration; `key=None` with operator Exists tolerates everything, `effect=None` every effect."""

    key: str | None = None
    operator: str = "Equal"  # Equal | Exists
    value: str = ""
    effect: str | None = None

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' ToleratesTaint: effect, then key, then operator."""
        if self.effect is not None and self.effect != taint.effect:
            return False
        if self.key is not None and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        return self.key is not None and self.value == taint.value


@dataclass(frozen=True, slots=True)
class NodePressure:
    """What Prometheus said about one node, as read; `None` means the query returned nothing for that field.

    `score` is the descheduler's value (recording rule or custom PromQL, [0, 1]); `psi_*` are PSI "some" stall
    fractions (rate of node_pressure_*_waiting_seconds_total); `*_utilization` are busy fractions. `sampled_at` is
    the timestamp of the oldest sample behind these values (not the query time).
    """

    sampled_at: float
    score: float | None = None
    psi_cpu: float | None = None
    psi_memory: float | None = None
    psi_io: float | None = None
    cpu_utilization: float | None = None
    memory_utilization: float | None = None


@dataclass(frozen=True, slots=True)
class NodeState:
    name: str
    cpu_allocatable: float
    memory_allocatable: float
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    schedulable: bool = True  # false when spec.unschedulable (cordoned)
    pressure: NodePressure | None = None  # None: the node is absent from the metrics


@dataclass(frozen=True, slots=True)
class PastMigration:
    """One finished migration of a VM (VMI status.migrationState or a Succeeded/Failed VMIM)."""

    started: float
    ended: float
    source: str
    target: str
    succeeded: bool = True

    @property
    def duration(self) -> float:
        return max(0.0, self.ended - self.started)


@dataclass(frozen=True, slots=True)
class VMState:
    namespace: str
    name: str
    node: str
    cpu_request: float
    memory_request: float
    cpu_usage: float | None = None  # cores, from rate(kubevirt_vmi_cpu_usage_seconds_total) when available
    memory_usage: float | None = None  # bytes actually used, when available
    memory_size: float = 0.0  # guest memory to copy in a live migration, bytes
    dirty_rate: float | None = None  # guest dirty-page rate, bytes/s (kubevirt_vmi_dirty_rate_bytes_per_second)
    live_migratable: bool = True  # VMI condition LiveMigratable
    migratable_reason: str = ""  # the condition's reason when not migratable
    host_devices: bool = False  # PCI/GPU/SR-IOV passthrough: pinned to its node
    dra_claims: bool = False  # DRA resource claims: pinned to its node
    eviction_strategy: str | None = "LiveMigrate"  # effective strategy (VMI spec, else cluster default)
    priority: int | None = None  # the virt-launcher pod's spec.priority
    qos: QoS = QoS.BURSTABLE
    annotations: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)  # required node labels of the VM
    pdb_blocked: bool = False  # a user PDB (not KubeVirt's migration PDB) currently allows no disruption
    history: tuple[PastMigration, ...] = ()  # oldest first
    key: str = field(init=False, repr=False, compare=False)  # "namespace/name", computed once

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")

    @property
    def prefers_no_eviction(self) -> bool:
        return PREFER_NO_EVICTION_ANNOTATION in self.annotations


@dataclass(frozen=True, slots=True)
class MigrationState:
    """A migration in flight: a non-terminal VMIM, or a VMI marked for evacuation (status.evacuationNodeName)."""

    vm: str  # "namespace/name"
    source: str
    target: str | None
    phase: str
    started: float


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """Everything one planning cycle may look at, captured by the shell at `taken_at`.

    `metrics_error` carries the reason the shell could not read Prometheus (down, wrong result type, ...): the
    planner then skips the cycle and reports it rather than acting on partial data.
    """

    nodes: tuple[NodeState, ...]
    vms: tuple[VMState, ...]
    migrations: tuple[MigrationState, ...] = ()
    taken_at: float = 0.0
    metrics_error: str | None = None


@dataclass(frozen=True, slots=True)
class Move:
    """One live migration to start. `target=None` lets the KubeVirt scheduler choose; a named target is carried
    out by the migration actuator (VMIM `addedNodeSelector`) and is advisory for the eviction actuator."""

    vm: str
    source: str
    target: str | None
    reason: str
    source_before: float | None = None  # the policy's signal on the source now ...
    source_after: float | None = None  # ... and as predicted after this and earlier moves of the plan
    target_before: float | None = None
    target_after: float | None = None
    estimated_seconds: float | None = None  # predicted migration duration
    # a chain's or swap's second step: the VM (key) of the plan's earlier move that must have succeeded before this
    # one starts (it frees the target's memory); the shell holds it until then, counted in flight (loop.py)
    after: str | None = None


@dataclass(frozen=True, slots=True)
class TaintChange:
    node: str
    action: str  # "add" | "remove"
    key: str
    value: str = "true"
    effect: str = "PreferNoSchedule"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a VM (or node) was not moved: from the budget or a safety check."""

    subject: str  # "namespace/name" for a VM, the node name otherwise
    reason: str


@dataclass(frozen=True, slots=True)
class NodeExplanation:
    node: str
    classification: str  # "under" | "appropriate" | "over" | "excluded" | "untrusted"
    value: float | None  # the policy's signal (percent for descheduler-compatible, fraction for psi-relief)
    low: float | None
    high: float | None
    note: str = ""
    code: str = ""  # for an untrusted node, the rule it failed (metrics-stale, ...), a metric label


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision of one cycle. `skipped` says why nothing was done; `skip_code` is a short label for metrics."""

    policy: str
    dry_run: bool
    moves: tuple[Move, ...] = ()
    taint_changes: tuple[TaintChange, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    nodes: tuple[NodeExplanation, ...] = ()
    skipped: str | None = None
    skip_code: str | None = None
