"""`LeaseElector`: one replica acts, the others wait, through a coordination.k8s.io/v1 Lease.

Why it exists: the controller runs as two replicas for availability, and two replicas acting at once would double
every migration. The algorithm is client-go's leaderelection with a Lease lock:
- every `retry_s` a replica reads the Lease. Nobody holds it, or the holder's record (holder, renewTime,
  resourceVersion) has not changed for `lease_duration_s` as timed on this replica's own monotonic clock (clocks
  of different machines are never compared), or the holder released it: take it (holder = me, leaseTransitions +
  1), written with the read resourceVersion so that of two contenders only one succeeds (the other gets 409);
- the holder renews `renewTime` every `retry_s`; if it cannot renew for `renew_deadline_s` it stops acting at once
  (`is_leader` is False) even before anyone else can take over, since `renew_deadline_s < lease_duration_s`;
- on graceful shutdown the holder releases: holder emptied, `leaseDurationSeconds` 1, so a standby takes over
  at its next retry instead of after a full lease duration.
The client is synchronous; each API call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from common.kube_watch import read_json

log = logging.getLogger("autonomic.controller.leader")


def micro_time(at: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if at is None else at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration_s: float = 10.0,
        renew_deadline_s: float = 7.0,
        retry_s: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if not retry_s < renew_deadline_s < lease_duration_s:
            raise ValueError("leader election needs retry < renew deadline < lease duration")
        self.api = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration_s, self.renew_deadline_s, self.retry_s = lease_duration_s, renew_deadline_s, retry_s
        self.on_change = on_change
        self._leader = False
        self._renewed = -float("inf")  # monotonic time of our last successful write as holder
        self._observed: tuple[Any, ...] | None = None  # the other holder's record ...
        self._observed_at = 0.0  # ... and when it last changed (monotonic)

    @property
    def is_leader(self) -> bool:
        return self._leader and time.monotonic() - self._renewed < self.renew_deadline_s

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                leader = await asyncio.to_thread(self._try_acquire_or_renew)
            except Exception as exc:  # API unreachable: keep leading only until the renew deadline
                log.warning("lease not renewed", extra={"lease": self.name, "error": str(exc)})
                leader = self.is_leader
            self._set(leader)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.retry_s)

    async def release(self) -> None:
        if self._leader:
            try:
                await asyncio.to_thread(self._release)
            except Exception as exc:
                log.warning("lease not released", extra={"lease": self.name, "error": str(exc)})
        self._set(False)

    def _set(self, leader: bool) -> None:
        leader = leader and time.monotonic() - self._renewed < self.renew_deadline_s
        if leader == self._leader:
            return
        self._leader = leader
        log.info("leadership " + ("acquired" if leader else "lost"), extra={"lease": self.name, "id": self.identity})
        if self.on_change is not None:
            self.on_change(leader)

    def _read(self) -> dict[str, Any] | None:
        try:
            return read_json(self.api.read_namespaced_lease(self.name, self.namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _try_acquire_or_renew(self) -> bool:
        now = time.monotonic()
        lease = self._read()
        if lease is None:
            body: Any = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(transitions=0, acquired=True),
            }
            return self._write(lambda: self.api.create_namespaced_lease(self.namespace, body, _preload_content=False))
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if holder == self.identity:
            new_spec = {**spec, **self._spec(spec.get("leaseTransitions") or 0, acquired=False)}
            return self._replace(lease, new_spec)
        record = (holder, spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration_s)
        if holder and now - self._observed_at < duration:
            return False
        return self._replace(lease, {**spec, **self._spec((spec.get("leaseTransitions") or 0) + 1, acquired=True)})

    def _spec(self, transitions: int, *, acquired: bool) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration_s)),
            "renewTime": micro_time(),
            "leaseTransitions": transitions,
        }
        if acquired:
            spec["acquireTime"] = spec["renewTime"]
        return spec

    def _replace(self, lease: dict[str, Any], spec: dict[str, Any]) -> bool:
        body: Any = {**lease, "spec": spec}
        return self._write(
            lambda: self.api.replace_namespaced_lease(self.name, self.namespace, body, _preload_content=False)
        )

    def _write(self, call: Callable[[], Any]) -> bool:
        started = time.monotonic()
        try:
            call()
        except ApiException as exc:
            if exc.status in (409, 422):  # someone else wrote first
                return False
            raise
        self._renewed = started
        return True

    def _release(self) -> None:
        lease = self._read()
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": micro_time()}
        body: Any = {**lease, "spec": spec}
        self.api.replace_namespaced_lease(self.name, self.namespace, body, _preload_content=False)
