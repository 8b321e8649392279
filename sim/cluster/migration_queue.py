"""Which Pending migrations may start now: KubeVirt's priority order, concurrency limits and evacuation backoff.

Why it exists: the limits are what a rebalancer must respect and what tests check, so they live apart from
the phase machine (pkg/virt-controller/watch/migration/migration.go: pending migrations sorted by
`spec.priority`; a migration waits while running migrations >= parallelMigrationsPerCluster or migrations
leaving its VMI's node >= parallelOutboundMigrationsPerNode; evacuation migrations back off after failures).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sim.cluster.kubevirt_config import KubeVirtConfig
from sim.cluster.kv_objects import EVACUATION_ANNOTATION
from sim.cluster.migration_effects import evacuation_backoff_until

PRIORITY = {"system-critical": 2, "user-triggered": 1, "system-maintenance": 0}


def pending_in_order(migrations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pending migrations, highest priority first, then oldest (creation time, then name)."""
    pending = [m for m in migrations if (m.get("status") or {}).get("phase", "Pending") == "Pending"]
    return sorted(
        pending,
        key=lambda m: (
            -PRIORITY.get((m.get("spec") or {}).get("priority") or "user-triggered", 1),
            m["metadata"]["creationTimestamp"],
            m["metadata"]["name"],
        ),
    )


def limits_allow(config: KubeVirtConfig, running_sources: list[str], source: str) -> bool:
    """`running_sources`: the source node of every admitted, unfinished migration."""
    if len(running_sources) >= config.parallel_migrations_per_cluster:
        return False
    return running_sources.count(source) < config.parallel_outbound_migrations_per_node


def backoff_until(
    migration: dict[str, Any], all_migrations: Iterable[dict[str, Any]], failed_at: Mapping[str, float], initial: float
) -> float | None:
    """For an evacuation migration: model time before which it must stay Pending (None: no backoff)."""
    meta = migration["metadata"]
    if EVACUATION_ANNOTATION not in (meta.get("annotations") or {}):
        return None
    vmi = migration["spec"]["vmiName"]
    earlier = sorted(
        (
            o
            for o in all_migrations
            if o["metadata"]["namespace"] == meta["namespace"]
            and (o.get("spec") or {}).get("vmiName") == vmi
            and o["metadata"]["uid"] != meta["uid"]
            and EVACUATION_ANNOTATION in (o["metadata"].get("annotations") or {})
        ),
        key=lambda o: int(o["metadata"]["resourceVersion"]),
        reverse=True,
    )
    return evacuation_backoff_until(earlier, failed_at, initial)
