"""Endpoints from an InferencePool (`inference.networking.k8s.io/v1`): the pool's ready pods, one per IP and port.

Why it exists: in a cluster the pool is not a fixed list; pods come, go, become (un)ready, and the picker must follow
within one watch event, as GIE's EPP does. `pool_endpoints` is the pure rule (tables in tests); `InferencePoolSource`
is the thin shell that watches the pool, the pods of its namespace and (optionally) the DRA objects, recomputes the
endpoint set on the event loop after every event and hands it to `on_endpoints` when it changed.

The rule (reference/epp.md §2):
- the pool's `spec.selector.matchLabels` selects pods in the pool's namespace (matchLabels only, as the CRD says);
- a pod is an endpoint when its `Ready` condition is True, it is not terminating (no `deletionTimestamp`) and it has
  a `status.podIP`; every `spec.targetPorts[].number` makes one endpoint `podIP:port` (IPv6 as `[ip]:port`);
- the endpoint carries the pod name, the pod labels (for label-selector-filter) and the pod's DRA device hints;
- no pool (deleted, not yet created) or an unusable pool spec means no endpoints, with the reason in `problem`.
Pods of the whole namespace are watched and the selector is applied here, so a selector change needs no new watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client, config

from common.kube_watch import Obj, ResourceWatcher
from scorer.device_hints import DeviceHints
from scorer.sources.dra import DraCache
from scorer.types import Endpoint

log = logging.getLogger("autonomic.picker.discovery")
WATCH_LOG = logging.getLogger("autonomic.picker.watch")
GROUP, VERSION, PLURAL = "inference.networking.k8s.io", "v1", "inferencepools"


@dataclass(frozen=True)
class PoolSpec:
    selector: dict[str, str]
    ports: tuple[int, ...]


def parse_pool(pool: Obj | None) -> tuple[PoolSpec | None, str | None]:
    """The pool's selector and target ports, or None and why the pool cannot be used."""
    if pool is None:
        return None, "InferencePool not found"
    spec = pool.get("spec") or {}
    labels = (spec.get("selector") or {}).get("matchLabels")
    if not isinstance(labels, dict) or not labels or not all(isinstance(v, str) for v in labels.values()):
        return None, "spec.selector.matchLabels: must be a non-empty map of strings"
    ports: list[int] = []
    for i, entry in enumerate(spec.get("targetPorts") or []):
        number = entry.get("number") if isinstance(entry, dict) else None
        if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 65536:
            return None, f"spec.targetPorts[{i}].number: must be a port 1..65535, got {number!r}"
        ports.append(number)
    if not ports:
        return None, "spec.targetPorts: at least one port is required"
    return PoolSpec(dict(labels), tuple(dict.fromkeys(ports))), None


def pod_is_ready(pod: Obj) -> bool:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def pool_endpoints(
    spec: PoolSpec, pods: Iterable[Obj], hints: Callable[[Obj], DeviceHints | None] = lambda _: None
) -> list[Endpoint]:
    """One endpoint per ready selected pod and target port, in a stable order (pod name, then port)."""
    out: list[Endpoint] = []
    seen: set[str] = set()
    selected = [p for p in pods if _matches(spec.selector, (p.get("metadata") or {}).get("labels"))]
    for pod in sorted(selected, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        if not pod_is_ready(pod):
            continue
        meta, ip = pod.get("metadata") or {}, str(pod["status"]["podIP"])
        host = f"[{ip}]" if ":" in ip else ip
        pod_hints = hints(pod)
        for port in spec.ports:
            address = f"{host}:{port}"
            if address in seen:  # two pods claiming one IP (hostNetwork): the first by name wins
                log.warning("duplicate endpoint address", extra={"endpoint": address, "pod": meta.get("name")})
                continue
            seen.add(address)
            out.append(Endpoint(address, str(meta.get("name") or ""), dict(meta.get("labels") or {}), pod_hints))
    return out


def _matches(selector: dict[str, str], labels: Any) -> bool:
    return isinstance(labels, dict) and all(labels.get(k) == v for k, v in selector.items())


def kube_api_client(kubeconfig: Path | None) -> client.ApiClient:
    """A client from the kubeconfig file, or the in-cluster service account when none is given."""
    cfg = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)
    return client.ApiClient(cfg)


class InferencePoolSource:
    """Watches one pool; `on_endpoints(endpoints)` runs on the event loop each time the endpoint set changes."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        on_endpoints: Callable[[list[Endpoint]], None],
        *,
        dra: bool = True,
        watch_timeout_s: int = 300,
    ) -> None:
        self.namespace, self.name, self.on_endpoints = namespace, name, on_endpoints
        self.problem: str | None = None
        self.updates = 0  # endpoint sets handed to on_endpoints
        self._current: list[Endpoint] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = False
        watch: dict[str, Any] = {  # the picker's watchers: own logger and thread names, quicker first retry
            "watch_timeout_s": watch_timeout_s,
            "log": WATCH_LOG,
            "thread_prefix": "picker-watch",
            "first_retry_s": 0.5,
        }
        common: dict[str, Any] = {**watch, "on_event": self._event}
        custom = client.CustomObjectsApi(api)
        self.pool = ResourceWatcher(
            "inferencepools",
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            field_selector=f"metadata.name={name}",
            **common,
        )
        self.pods = ResourceWatcher("pods", client.CoreV1Api(api).list_namespaced_pod, namespace, **common)
        self.dra = DraCache(client.ResourceV1Api(api), namespace, self._changed, **watch)
        self.watchers: Sequence[ResourceWatcher] = (self.pool, self.pods, *(self.dra.watchers if dra else ()))
        self._use_dra = dra

    async def start(self, sync_timeout_s: float = 30.0) -> list[Endpoint]:
        """Start watching; wait (up to `sync_timeout_s`) for every first list; return the first endpoint set."""
        for w in self.watchers:
            w.start()
        for w in self.watchers:
            if not await asyncio.to_thread(w.synced.wait, sync_timeout_s):
                log.warning("not synced yet; serving what is known", extra={"kind": w.kind, "error": w.error})
        self._loop = asyncio.get_running_loop()  # from now on every event recomputes (the first lists are in)
        self._current = self.compute()
        return list(self._current)

    def stop(self) -> None:
        """Stop watching (no more `on_endpoints`); the daemon threads end at their stream's next event or close."""
        self._loop = None
        for w in self.watchers:
            w.stop(timeout=0)

    def endpoints(self) -> list[Endpoint]:
        return list(self._current)

    def compute(self) -> list[Endpoint]:
        """The endpoint set from the caches now (the pure rule over the watched objects)."""
        pools = self.pool.items()
        spec, problem = parse_pool(pools[0] if pools else None)
        if problem != self.problem:
            (log.warning if problem else log.info)(
                "inference pool " + (problem or "usable"), extra={"pool": f"{self.namespace}/{self.name}"}
            )
            self.problem = problem
        if spec is None:
            return []
        resolve = self.dra.resolver() if self._use_dra else (lambda _: None)
        return pool_endpoints(spec, self.pods.items(), resolve)

    # ---- events (watcher threads) -> recompute (event loop) -----------------------------------------------------
    def _event(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        self._changed()

    def _changed(self) -> None:
        loop = self._loop
        if loop is None or self._pending:
            return
        self._pending = True
        try:
            loop.call_soon_threadsafe(self._recompute)
        except RuntimeError:  # the loop is closed: shutting down
            self._pending = False

    def _recompute(self) -> None:
        self._pending = False
        if self._loop is None:  # stopped meanwhile
            return
        endpoints = self.compute()
        if endpoints == self._current:
            return
        added = {e.address for e in endpoints} - {e.address for e in self._current}
        removed = {e.address for e in self._current} - {e.address for e in endpoints}
        before = {e.address: _device_problems(e) for e in self._current}
        self._current = endpoints
        self.updates += 1
        log.info("pool endpoints changed", extra={"added": sorted(added), "removed": sorted(removed)})
        for e in endpoints:
            problems = _device_problems(e)
            if problems != before.get(e.address, []):
                (log.warning if problems else log.info)(
                    "endpoint device " + ("unhealthy" if problems else "healthy"),
                    extra={"endpoint": e.address, "pod": e.name, "reasons": problems},
                )
        self.on_endpoints(list(endpoints))


def _device_problems(endpoint: Endpoint) -> list[str]:
    return endpoint.hints.unhealthy() if endpoint.hints is not None else []


# ---- wiring into the picker process ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolRef:
    """Which pool the picker serves (`--pool`, `--pool-namespace`) and the API client to watch it with."""

    api: client.ApiClient
    namespace: str
    name: str
    dra: bool = True  # also resolve DRA device hints (claims in the namespace, all slices)


class EndpointSink(Protocol):
    def set_endpoints(self, endpoints: Sequence[Endpoint]) -> None: ...


class AddressSink(Protocol):
    def set_addresses(self, addresses: Sequence[str]) -> None: ...


@contextlib.asynccontextmanager
async def follow_pool(
    ref: PoolRef | None, director: EndpointSink, scraper: AddressSink
) -> AsyncIterator[InferencePoolSource | None]:
    """While inside, the Director's members and the scraper's targets follow the pool (nothing when `ref` is None:
    the fixed `--endpoints` list stays as the caller set it)."""
    if ref is None:
        yield None
        return

    def apply(endpoints: list[Endpoint]) -> None:
        director.set_endpoints(endpoints)
        scraper.set_addresses([e.address for e in endpoints])

    source = InferencePoolSource(ref.api, ref.namespace, ref.name, apply, dra=ref.dra)
    try:
        apply(await source.start())
        yield source
    finally:
        source.stop()
