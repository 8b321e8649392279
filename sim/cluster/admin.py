"""The twin's admin API under `/_twin/` on the API port: state, fault knobs and node readiness.

Why it exists: tests and demos break the cluster on purpose through HTTP (the same way from any process),
never by reaching into objects. Routes (JSON bodies; errors answer 400 `{"error": ...}`):

    GET  /_twin/state                         resourceVersion, model time, faults, object counts
    PUT  /_twin/faults/api                    {"errorRate": 0.2, "errorStatus": 503, "latencyMs": 50}
    PUT  /_twin/faults/migrations             {"count": 2, "reason": "..."}  the next 2 migrations fail
    PUT  /_twin/faults/scrape                 {"node": "worker-1", "mode": "error"}  scrape faults (faults.py)
    POST /_twin/faults/reset                  all fault knobs off
    POST /_twin/load/hotspot                  {"node": "worker-1", "cpuFactor": 3, "memoryFactor": 1} or
                                              {"vms": ["ns/name"], ...}: load factors of the VMIs on that node now
    POST /_twin/nodes/{name}/notready         Ready=Unknown + node.kubernetes.io/unreachable taints
    POST /_twin/nodes/{name}/ready            back to Ready, taints removed
    POST /_twin/watches/drop                  close every open watch stream now -> {"dropped": n}
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from sim.cluster.errors import ApiError
from sim.cluster.faults import FaultError, FaultState
from sim.cluster.kv_objects import CPU_LOAD_FACTOR_ANNOTATION, MEMORY_LOAD_FACTOR_ANNOTATION
from sim.cluster.placement import set_node_ready
from sim.cluster.resources import RESOURCE_TYPES, VMIS
from sim.cluster.scenario_load import Hotspot
from sim.cluster.store import Store


class AdminApi:
    def __init__(self, store: Store, faults: FaultState) -> None:
        self.store, self.faults = store, faults

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/_twin/state", self._state)
        app.router.add_put("/_twin/faults/api", self._api_faults)
        app.router.add_put("/_twin/faults/migrations", self._migration_faults)
        app.router.add_put("/_twin/faults/scrape", self._scrape_faults)
        app.router.add_post("/_twin/faults/reset", self._reset)
        app.router.add_post("/_twin/load/hotspot", self._hotspot)
        app.router.add_post("/_twin/nodes/{name}/notready", self._notready)
        app.router.add_post("/_twin/nodes/{name}/ready", self._ready)
        app.router.add_post("/_twin/watches/drop", self._drop)

    async def _state(self, request: web.Request) -> web.Response:
        counts = {t.key: len(self.store.peek(t)) for t in RESOURCE_TYPES}
        return web.json_response(
            {
                "resourceVersion": str(self.store.resource_version),
                "modelTime": self.store.clock.now(),
                "wallTime": self.store.clock.wall().timestamp(),  # the instant object timestamps are stamped with
                "timeScale": self.store.clock.time_scale,
                "faults": self.faults.to_dict(),
                "watches": len(self.store.log.watchers),
                "objects": counts,
            }
        )

    async def _body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read() or b"{}")
        except json.JSONDecodeError as exc:
            raise FaultError(f"invalid JSON: {exc}") from exc

    async def _api_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.apply_api(await self._body(request))
        except FaultError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.faults.to_dict())

    async def _migration_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.apply_migrations(await self._body(request))
        except FaultError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.faults.to_dict())

    async def _scrape_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.apply_scrape(await self._body(request))
        except FaultError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.faults.to_dict())

    async def _reset(self, request: web.Request) -> web.Response:
        self.faults.reset()
        return web.json_response(self.faults.to_dict())

    async def _hotspot(self, request: web.Request) -> web.Response:
        try:
            spec = Hotspot.model_validate(await self._body(request))
        except (FaultError, ValidationError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if (spec.node is None) == (not spec.vms):
            return web.json_response({"error": "exactly one of node and vms is required"}, status=400)
        wanted = {tuple(ref.split("/", 1)) if "/" in ref else ("*", ref) for ref in spec.vms}
        factors = {CPU_LOAD_FACTOR_ANNOTATION: spec.cpu_factor, MEMORY_LOAD_FACTOR_ANNOTATION: spec.memory_factor}

        def hit(vmi: dict[str, Any]) -> bool:
            meta = vmi["metadata"]
            if spec.node is not None:
                return bool((vmi.get("status") or {}).get("nodeName") == spec.node)
            return (meta["namespace"], meta["name"]) in wanted or ("*", meta["name"]) in wanted

        def set_factors(vmi: dict[str, Any]) -> None:
            annotations = vmi["metadata"].setdefault("annotations", {})
            for key, value in factors.items():
                if value == 1.0:
                    annotations.pop(key, None)
                else:
                    annotations[key] = f"{value:.6g}"

        changed = []
        for vmi in self.store.peek(VMIS):
            if hit(vmi):
                meta = vmi["metadata"]
                self.store.mutate(VMIS, meta["namespace"], meta["name"], set_factors)
                changed.append(f"{meta['namespace']}/{meta['name']}")
        return web.json_response({"vmis": sorted(changed)})

    async def _set_ready(self, request: web.Request, ready: bool) -> web.Response:
        try:
            node = set_node_ready(self.store, request.match_info["name"], ready)
        except ApiError as err:
            return web.json_response({"error": err.message}, status=err.code)
        return web.json_response({"node": node["metadata"]["name"], "ready": ready})

    async def _notready(self, request: web.Request) -> web.Response:
        return await self._set_ready(request, False)

    async def _ready(self, request: web.Request) -> web.Response:
        return await self._set_ready(request, True)

    async def _drop(self, request: web.Request) -> web.Response:
        return web.json_response({"dropped": self.store.log.close_all()})
