"""What the VMI controller looks up for each VMI, kept current from the store's changes instead of rebuilt per pass.

Why it exists: the VMI controller's pass needed every launcher pod grouped by VMI and every unfinished migration, so
each pass scanned all pods and all VirtualMachineInstanceMigrations. Both grow with the migrations a run makes (a
day of the descheduler's evictions at 100 nodes x 3,000 VMs leaves thousands of finished VMIMs), and the model-time
engine reconciles after every migration step: the scans became most of its work. `VmiIndex` follows each change
(`note`, a store listener) and answers in constant time: `pods(uid)` (the launcher pods labelled with that VMI's
uid, in key order), `key in index` (the VMI has a migration not yet Succeeded or Failed) and `waiting` (VMIs not
placed yet: Pending or Scheduling). Until `rebuild()` has run once it ignores changes.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sim.cluster.kv_objects import CREATED_BY_LABEL
from sim.cluster.resources import PODS, VMIMS, VMIS
from sim.cluster.store import Store
from sim.cluster.watch import Change

Key = tuple[str, str]
FINAL = ("Succeeded", "Failed")
UNPLACED = ("", "Pending", "Scheduling")


class VmiIndex:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.ready = False
        self._pods: dict[str, dict[Key, dict[str, Any]]] = {}  # VMI uid -> launcher pods by (namespace, name)
        self._migrating: dict[Key, Key] = {}  # unfinished VMIM (namespace, name) -> its VMI (namespace, name)
        self._active: Counter[Key] = Counter()  # VMI -> unfinished migrations
        self.waiting: set[Key] = set()
        store.on_change(self.note)

    def rebuild(self) -> None:
        self._pods, self._migrating, self._active, self.waiting = {}, {}, Counter(), set()
        for pod in self.store.peek(PODS):
            self._add_pod(pod)
        for m in self.store.peek(VMIMS):
            self._set_migration(m, deleted=False)
        for vmi in self.store.peek(VMIS):
            self._set_vmi(vmi, deleted=False)
        self.ready = True

    def pods(self, uid: str) -> list[dict[str, Any]]:
        found = self._pods.get(uid)
        return [pod for _, pod in sorted(found.items())] if found else []

    def __contains__(self, vmi: object) -> bool:
        return self._active.get(vmi, 0) > 0  # type: ignore[call-overload]

    def note(self, change: Change) -> None:
        if not self.ready:
            return
        deleted = change.type == "DELETED"
        if change.resource == PODS.key:
            if change.old is not None:
                self._remove_pod(change.old)
            self._remove_pod(change.obj)
            if not deleted:
                self._add_pod(change.obj)
        elif change.resource == VMIMS.key:
            self._set_migration(change.obj, deleted=deleted)
        elif change.resource == VMIS.key:
            self._set_vmi(change.obj, deleted=deleted)

    def _add_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = (meta.get("labels") or {}).get(CREATED_BY_LABEL)
        if uid:
            self._pods.setdefault(uid, {})[(meta.get("namespace") or "", meta["name"])] = pod

    def _remove_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = (meta.get("labels") or {}).get(CREATED_BY_LABEL)
        found = self._pods.get(uid) if uid else None
        if found is not None:
            found.pop((meta.get("namespace") or "", meta["name"]), None)
            if not found:
                del self._pods[uid]  # type: ignore[arg-type]

    def _set_migration(self, m: dict[str, Any], *, deleted: bool) -> None:
        meta = m["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        before = self._migrating.pop(key, None)
        if before is not None:
            self._active[before] -= 1
            if self._active[before] <= 0:
                del self._active[before]
        if not deleted and (m.get("status") or {}).get("phase") not in FINAL:
            vmi = (key[0], (m.get("spec") or {}).get("vmiName", ""))
            self._migrating[key] = vmi
            self._active[vmi] += 1

    def _set_vmi(self, vmi: dict[str, Any], *, deleted: bool) -> None:
        meta = vmi["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        if not deleted and (vmi.get("status") or {}).get("phase", "Pending") in UNPLACED:
            self.waiting.add(key)
        else:
            self.waiting.discard(key)
