"""KubeVirt's cluster-wide migration settings and the twin's timing model, in one typed config.

Why it exists: the limits a rebalancer must respect (5 migrations per cluster, 2 outbound per node) and the
timeouts that make migrations fail are KubeVirt configuration (`spec.configuration.migrations` of the KubeVirt
CR, defaults in pkg/virt-config/virt-config.go); the twin also needs numbers KubeVirt does not have (link
speed, how long a target pod takes to start). Scenario files and tests override any of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.cluster.migration_model import MigrationParams

GIB = 2**30


@dataclass(frozen=True)
class KubeVirtConfig:
    # KubeVirt migration configuration (defaults as in virt-config.go)
    parallel_migrations_per_cluster: int = 5
    parallel_outbound_migrations_per_node: int = 2
    bandwidth_per_migration: float = 0.0  # bytes/s; 0 = unlimited (KubeVirt's default)
    completion_timeout_per_gib: float = 150.0
    progress_timeout: float = 150.0
    max_downtime_ms: float = 900.0
    allow_auto_converge: bool = False
    allow_post_copy: bool = False
    unschedulable_pending_timeout: float = 300.0  # target pod unschedulable this long -> migration Failed
    evacuation_backoff_initial: float = 20.0  # migration controller backoff after failed evacuations, doubling
    # cluster default eviction strategy (KubeVirt CR spec.configuration.evictionStrategy); OpenShift
    # Virtualization (HCO) sets LiveMigrate, vanilla KubeVirt leaves it unset
    default_eviction_strategy: str | None = "LiveMigrate"
    cpu_allocation_ratio: int = 10  # developerConfiguration.cpuAllocationRatio: launcher requests vCPUs/ratio
    # the twin's own model (not KubeVirt settings)
    node_link_bytes_per_s: float = 1.0 * GIB  # each node's migration network link, shared by its migrations
    default_dirty_rate: float = 16.0 * 2**20  # bytes/s when a VM does not say
    target_schedule_s: float = 1.0  # Scheduling -> Scheduled (target pod bound)
    target_start_s: float = 4.0  # Scheduled -> PreparingTarget (virt-launcher container started)
    target_prepare_s: float = 1.0  # PreparingTarget -> TargetReady (domain prepared on the target)
    handoff_s: float = 0.5  # TargetReady -> Running (virt-handler starts the transfer)
    vm_restart_s: float = 10.0  # a failed VMI owned by a running VM is recreated after this

    def migration_params(self) -> MigrationParams:
        return MigrationParams(
            completion_timeout_per_gib=self.completion_timeout_per_gib,
            progress_timeout=self.progress_timeout,
            max_downtime_ms=self.max_downtime_ms,
            allow_auto_converge=self.allow_auto_converge,
            allow_post_copy=self.allow_post_copy,
        )
