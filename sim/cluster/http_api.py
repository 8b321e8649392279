"""The Kubernetes REST API over aiohttp: URL routing, verbs, query parameters, content types and Status errors.

Why it exists: the official python client, kubectl and informers speak HTTP to an apiserver; this module maps
their requests onto the store exactly as kube-apiserver's generic registry would (paths, 201 on create,
PATCH content types, `?watch=true` streams with bookmarks, `as=Table` for kubectl). Watch streaming lives in
`watch_stream.py`, list/watch query options in `list_options.py`, media types (415, 406, undecodable bodies 400)
in `negotiation.py`, discovery documents in `discovery.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sim.cluster import discovery, errors
from sim.cluster.clock import Clock
from sim.cluster.faults import FaultState
from sim.cluster.list_options import EXACT, ListOptions, parse_list_options
from sim.cluster.negotiation import accepts_json, not_acceptable, read_body, read_patch
from sim.cluster.resources import ResourceType, lookup
from sim.cluster.selectors import parse_field_selector, parse_label_selector
from sim.cluster.store import Store
from sim.cluster.tables import to_table, wants_table
from sim.cluster.watch_stream import serve_watch

log = logging.getLogger("autonomic.cluster.api")

API_PATHS = ("/api", "/version")  # /api and /apis; the health and /_twin admin endpoints are not negotiated
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# (resource key, subresource) -> handler(request, namespace, name, body) -> (status, object)
SubresourceHandler = Callable[[web.Request, str | None, str, Any], Awaitable[tuple[int, dict[str, Any]]]]


def status_response(err: errors.ApiError) -> web.Response:
    return web.json_response(err.status(), status=err.code)


class ApiServer:
    def __init__(self, store: Store, clock: Clock, faults: FaultState, *, bookmark_interval_s: float = 5.0) -> None:
        self.store, self.clock, self.faults = store, clock, faults
        self.bookmark_interval_s = bookmark_interval_s
        self.subresources: dict[tuple[str, str], SubresourceHandler] = {}
        self.server_address = "127.0.0.1:0"

    def routes(self, app: web.Application) -> None:
        app.middlewares.append(self._guard)
        app.router.add_get("/version", self._version)
        app.router.add_get("/version/", self._version)
        app.router.add_get("/healthz", self._ok)
        app.router.add_get("/readyz", self._ok)
        app.router.add_get("/livez", self._ok)
        app.router.add_route("*", "/api", self._core_root)
        app.router.add_route("*", "/api/{tail:.*}", self._core)
        app.router.add_route("*", "/apis", self._apis_root)
        app.router.add_route("*", "/apis/{tail:.*}", self._apis)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """406 when no JSON answer is acceptable; any unexpected error is a logged 500 Status, never a bare 500."""
        if not request.path.startswith(API_PATHS):
            return await handler(request)
        if not accepts_json(request.headers.get("Accept", "")):
            return status_response(not_acceptable())
        try:
            return await handler(request)
        except errors.ApiError as err:
            return status_response(err)
        except (web.HTTPException, ConnectionResetError):
            raise
        except Exception:
            log.exception("unhandled error", extra={"method": request.method, "path": request.path})
            return status_response(errors.internal("an unexpected error occurred in the twin (see its log)"))

    # ---- discovery ---------------------------------------------------------------------------------------
    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(discovery.SERVER_VERSION)

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _core_root(self, request: web.Request) -> web.Response:
        return web.json_response(discovery.core_versions(self.server_address))

    async def _apis_root(self, request: web.Request) -> web.Response:
        return web.json_response(discovery.api_group_list())

    async def _core(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.match_info["tail"].split("/") if p]
        if not parts:
            return await self._core_root(request)
        if parts == ["v1"]:
            return web.json_response(discovery.resource_list("", "v1"))
        if not parts or parts[0] != "v1":
            return status_response(errors.not_found("", "", request.path))
        return await self._resource(request, "", "v1", parts[1:])

    async def _apis(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.match_info["tail"].split("/") if p]
        if not parts:
            return await self._apis_root(request)
        if len(parts) == 1:
            doc = discovery.api_group(parts[0])
            return web.json_response(doc) if doc else status_response(errors.not_found("", "", request.path))
        if len(parts) == 2:
            doc = discovery.resource_list(parts[0], parts[1])
            return web.json_response(doc) if doc else status_response(errors.not_found("", "", request.path))
        if len(parts) < 3:
            return status_response(errors.not_found("", "", request.path))
        return await self._resource(request, parts[0], parts[1], parts[2:])

    # ---- resources ---------------------------------------------------------------------------------------
    def _route(
        self, group: str, version: str, rest: list[str]
    ) -> tuple[ResourceType, str | None, str | None, str | None]:
        """(type, namespace, name, subresource) for the path after /api/v1 or /apis/<g>/<v>."""
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            candidate = lookup(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        rt = lookup(group, version, rest[0])
        if rt is None or len(rest) > 3:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return rt, namespace, name, sub

    async def _resource(self, request: web.Request, group: str, version: str, rest: list[str]) -> web.StreamResponse:
        try:
            rt, namespace, name, sub = self._route(group, version, rest)
            if self.faults.latency_s > 0:
                await asyncio.sleep(self.faults.latency_s)
            if self.faults.api_error_now(request.method):
                raise _injected(self.faults.error_status, rt, name)
            return await self._dispatch(request, rt, namespace, name, sub)
        except errors.ApiError as err:
            return status_response(err)

    async def _dispatch(
        self, request: web.Request, rt: ResourceType, namespace: str | None, name: str | None, sub: str | None
    ) -> web.StreamResponse:
        q, method = request.query, request.method
        if name is None:
            if method == "GET":
                opts = parse_list_options(q, rt)
                if opts.watch:
                    return await serve_watch(request, self, rt, namespace, opts)
                return self._list(request, rt, namespace, opts)
            if method == "POST":
                obj = self.store.create(rt, await read_body(request), namespace, dry_run=q.get("dryRun") == "All")
                return self._object(request, rt, obj, status=201)
            if method == "DELETE":
                items, _, _, _ = self.store.list(rt, namespace, *self.selectors(rt, q))
                for o in items:
                    self.store.delete(rt, namespace, o["metadata"]["name"])
                return web.json_response(
                    {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": {}, "items": items}
                )
            raise errors.method_not_allowed()
        if sub is not None and sub != "status":
            handler = self.subresources.get((rt.key, sub))
            if handler is None or method != "POST":
                raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
            code, obj = await handler(request, namespace, name, await read_body(request))
            return web.json_response(obj, status=code)
        if sub == "status" and not rt.status_subresource and rt.builtin:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if method == "GET":
            return self._object(request, rt, self.store.get(rt, namespace, name))
        if method == "PUT":
            obj = self.store.update(rt, namespace, name, await read_body(request), subresource=sub)
            return self._object(request, rt, obj)
        if method == "PATCH":
            patch_type, body = await read_patch(request)
            obj = self.store.patch(rt, namespace, name, patch_type, body, subresource=sub)
            return self._object(request, rt, obj)
        if method == "DELETE":
            obj = self.store.delete(rt, namespace, name)
            if rt.delete_answers_object:
                return web.json_response(obj)
            details = {"name": name, "kind": rt.plural, "uid": obj["metadata"]["uid"]}
            if rt.group:
                details["group"] = rt.group
            return web.json_response(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
            )
        raise errors.method_not_allowed()

    def selectors(self, rt: ResourceType, q: Any) -> tuple[Any, Any]:
        return parse_label_selector(q.get("labelSelector")), parse_field_selector(q.get("fieldSelector"), rt.fields)

    def _list(self, request: web.Request, rt: ResourceType, namespace: str | None, opts: ListOptions) -> web.Response:
        current = self.store.resource_version
        rv = opts.resource_version
        if rv is not None:
            if rv > current:
                raise errors.ApiError(504, "Timeout", f"Too large resource version: {rv}, current: {current}")
            if opts.match == EXACT and rv != current:
                raise errors.expired(rv, current)
        items, list_rv, token, remaining = self.store.list(  # read-only here: serialized, never modified
            rt,
            namespace,
            opts.labels,
            opts.fields,
            limit=opts.limit,
            continue_token=opts.continue_token,
            copy_items=False,
        )
        if wants_table(request.headers.get("Accept", "")):
            table = to_table(
                rt,
                items,
                self.clock.wall(),
                resource_version=list_rv,
                include=request.query.get("includeObject", "Metadata"),
            )
            if token:
                table["metadata"]["continue"] = token
            return web.json_response(table)
        meta: dict[str, Any] = {"resourceVersion": list_rv}
        if token:
            meta["continue"] = token
            meta["remainingItemCount"] = remaining
        return web.json_response({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta, "items": items})

    def _object(
        self, request: web.Request, rt: ResourceType, obj: dict[str, Any], *, status: int = 200
    ) -> web.Response:
        if wants_table(request.headers.get("Accept", "")):
            rv = obj["metadata"].get("resourceVersion", "")
            table = to_table(
                rt,
                [obj],
                self.clock.wall(),
                resource_version=rv,
                include=request.query.get("includeObject", "Metadata"),
            )
            return web.json_response(table, status=status)
        return web.json_response(obj, status=status)


def _injected(status: int, rt: ResourceType, name: str | None) -> errors.ApiError:
    """The Status an API fault answers with (faults.py): what kube-apiserver says for that code."""
    if status == 503:
        return errors.unavailable()
    if status == 429:
        return errors.too_many_requests(
            "the server has received too many requests and has asked us to try again later", reason="TooManyRequests"
        )
    if status == 409:
        return errors.conflict(rt.plural, rt.group, name or "")
    return errors.internal("injected fault")
