"""KubeVirt in the twin: its webhooks, the VMI/evacuation controller and the migration controller, driven by
one async task per cluster.

Why it exists: the controllers are pure reactions to the store; something must run them whenever the store
changes and whenever a migration's next step falls due in model time. `KubeVirt.run()` is that task: it wakes
on every store change (a store listener sets an event) or at the next due model time, and reconciles.
Migration endings are also reported to subscribers (the ClusterView's migration callbacks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sim.cluster.eviction import EvictionHandler
from sim.cluster.faults import FaultState
from sim.cluster.kubevirt_admission import KubeVirtAdmission
from sim.cluster.kubevirt_config import KubeVirtConfig
from sim.cluster.migration_controller import MigrationController
from sim.cluster.placement import IpAllocator
from sim.cluster.store import Store
from sim.cluster.vmi_controller import VmiController
from sim.cluster.watch import Change

log = logging.getLogger("autonomic.cluster.kubevirt")
FinalListener = Callable[[dict[str, Any], str | None], None]
MAX_IDLE_S = 1.0  # real seconds between reconciles even when nothing is due (cheap safety net)


class KubeVirt:
    def __init__(
        self, store: Store, config: KubeVirtConfig, faults: FaultState, ips: IpAllocator | None = None
    ) -> None:
        self.store, self.config = store, config
        self.ips = ips or IpAllocator()
        self.admission = KubeVirtAdmission(store)
        self.vmis = VmiController(store, config, self.admission, self.ips)
        self.migrations = MigrationController(store, config, faults, self.ips, self._final)
        self.eviction = EvictionHandler(store, cluster_default_strategy=config.default_eviction_strategy)
        self._listeners: list[FinalListener] = []
        self._wake = asyncio.Event()
        store.on_change(self._changed)

    def on_migration_final(self, listener: FinalListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _changed(self, change: Change) -> None:
        self._wake.set()

    def _final(self, migration: dict[str, Any], reason: str | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(migration, reason)
            except Exception:  # a subscriber's bug must not stop KubeVirt
                log.exception("migration listener failed")

    def reconcile(self) -> None:
        now = self.store.clock.now()
        self.vmis.reconcile(now)
        self.migrations.reconcile(now)

    async def run(self) -> None:
        """The one task that drives KubeVirt; cancel it to stop."""
        while True:
            self._wake.clear()
            try:
                self.reconcile()
            except Exception:
                log.exception("kubevirt reconcile failed")
            delay = MAX_IDLE_S
            due = self.migrations.next_due
            if due is not None:
                delay = min(delay, self.store.clock.real_delay(due - self.store.clock.now()))
            if self.store.clock.time_scale > 0 and self.vmis.pending_restart:
                delay = min(delay, self.store.clock.real_delay(self.config.vm_restart_s) / 4)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.001))
