"""A read-only view of the cluster twin for the load, PSI and exporter models (issue 4, part 2).

Why it exists: the load model needs to know, at any moment, which VM runs on which node, how big nodes and
VMs are and which migrations are under way, and must hear when a migration completes (demand moves with the
VM). Reading the API objects would tie it to JSON shapes; this module gives it plain frozen dataclasses.

How to use it (the twin passes a `ClusterView` to the telemetry hook, see `TelemetryHook` below):

    view.now()            -> model seconds since the twin started (follows --time-scale)
    view.nodes()          -> list[NodeInfo]      every node, sorted by name
    view.vmis()           -> list[VmiInfo]       every VMI, sorted by (namespace, name)
    view.migrations()     -> list[MigrationInfo] every VirtualMachineInstanceMigration, oldest first
    unsubscribe = view.subscribe_migrations(callback)   # callback(MigrationInfo) when one ends

Units: cpu in millicores, memory in bytes, times in model seconds (`view.now()` clock). Snapshots are
consistent (taken under the store's lock) and safe to call from any thread. Callbacks run on the twin's event
loop right after the VMI has moved (success) or the migration has been marked Failed; they must not block or
raise (exceptions are logged and swallowed). A migration's `phase` is KubeVirt's: Pending, Scheduling,
Scheduled, PreparingTarget, TargetReady, Running, Succeeded, Failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sim.cluster.scenario_load import LoadSettings

FINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class TaintInfo:
    key: str
    value: str
    effect: str  # NoSchedule | PreferNoSchedule | NoExecute


@dataclass(frozen=True)
class NodeInfo:
    name: str
    cpu_millis: int  # status.capacity.cpu
    memory_bytes: int  # status.capacity.memory
    allocatable_cpu_millis: int
    allocatable_memory_bytes: int
    ready: bool  # condition Ready == "True"
    unschedulable: bool  # spec.unschedulable (cordoned)
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[TaintInfo, ...] = ()


@dataclass(frozen=True)
class VmiInfo:
    namespace: str
    name: str
    node: str | None  # status.nodeName; None while unscheduled
    cpu_millis: int  # what the launcher pod requests for the guest: vCPUs/cpuAllocationRatio (10) unless set
    memory_bytes: int  # guest memory (spec.domain.resources.requests.memory / memory.guest)
    vcpus: int  # guest vCPUs (cores x sockets x threads): what the guest can actually burn
    phase: str  # Pending | Scheduling | Scheduled | Running | Succeeded | Failed
    migrating: bool  # memory transfer under way: migrationState.startTimestamp set, no endTimestamp yet
    migration_target: str | None  # target node of an in-flight migration from Scheduled on (room reserved), else None
    dirty_rate_bytes_per_s: float  # guest memory dirtying rate used by the migration model
    load_trace: str | None  # VM id of a row group in the load trace (scenario field `loadTrace`), or None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)  # the load overrides live here (scenario_load.py)


@dataclass(frozen=True)
class MigrationInfo:
    namespace: str
    name: str
    vmi: str
    phase: str
    source_node: str | None
    target_node: str | None
    started_at: float | None  # model seconds when the memory transfer started
    ended_at: float | None  # model seconds when it succeeded or failed
    failure_reason: str | None = None

    @property
    def final(self) -> bool:
        return self.phase in FINAL_PHASES

    @property
    def succeeded(self) -> bool:
        return self.phase == "Succeeded"


MigrationCallback = Callable[[MigrationInfo], None]


@runtime_checkable
class ClusterView(Protocol):
    def now(self) -> float: ...

    def nodes(self) -> list[NodeInfo]: ...

    def vmis(self) -> list[VmiInfo]: ...

    def migrations(self) -> list[MigrationInfo]: ...

    def subscribe_migrations(self, callback: MigrationCallback) -> Callable[[], None]: ...

    def scrape_fault(self, node: str) -> str | None:
        """The scrape-gap fault knob for this node's metrics endpoint: "error", "stall" or None (faults.py)."""
        ...


@dataclass(frozen=True)
class TelemetryOptions:
    """What the CLI asked for, handed to the telemetry hook (sim/cluster/prometheus.py)."""

    prometheus: bool = True  # False with --no-prometheus: the exporter still serves, no Prometheus is started
    prometheus_port: int | None = None  # --prometheus-port (None: pick a free one)
    time_scale: float = 1.0
    load: LoadSettings | None = None  # the scenario's `load:` section; None: its defaults
    scrape_interval_s: float = 5.0  # --scrape-interval
    rate_window: str = "1m"  # --rate-window: the recording rules' rate()/avg_over_time() window (ref: 1m)
    smoothing_window: str = "5m"  # the p66 rules' quantile_over_time window (ref: 5m)
    cooldown_window: str = "10m"  # the eviction-count rules' increase() window (ref: 10m)
    rule_interval: str = "30s"  # --rule-interval: evaluation interval of the rule group (ref: 30s)
    retention: str = "6h"  # --storage.tsdb.retention.time
    exporter_port: int | None = None  # --exporter-port (None: pick a free one)
    tick_s: float = 0.25  # real seconds between load/PSI updates (each scrape also updates)
    prometheus_binary: str | None = None  # None: $AUTONOMIC_PROMETHEUS or /usr/bin/prometheus
    extra_scrape_targets: tuple[tuple[str, str], ...] = ()  # (job, "host:port[/path]"), e.g. the controller


class Telemetry(Protocol):
    """What part 2 returns from its hook: where Prometheus answers and how to stop everything it started."""

    @property
    def prometheus_url(self) -> str | None: ...

    async def stop(self) -> None: ...


# The hook part 2 provides as `sim.cluster.prometheus.start_telemetry`; `sim.cluster.server` calls it once the
# API serves, with the view and the options, and awaits `stop()` at shutdown.
TelemetryHook = Callable[[ClusterView, TelemetryOptions], Awaitable[Telemetry]]
