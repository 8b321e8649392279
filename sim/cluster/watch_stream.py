"""`?watch=true`: a chunked stream of JSON watch events, one per line, as kube-apiserver sends them.

Why it exists: informers and `watch.Watch().stream(...)` read this stream. Semantics kept from the apiserver
(the query is parsed, defaulted and validated in `list_options.py`):
- `sendInitialEvents=true` (the default for resourceVersion "" or "0"): synthetic ADDED events for the current
  objects first (504 if a NotOlderThan resourceVersion is newer than the store), then changes;
- resourceVersion N: every change after N, then live changes; if N has left the kept window the stream is a
  single ERROR event carrying a 410 Expired Status (HTTP 200, as the watch cache answers);
- `allowWatchBookmarks=true`: a BOOKMARK (kind, apiVersion, metadata.resourceVersion only) whenever the stream
  has been idle for the bookmark interval; with initial events, the last of them is followed by a BOOKMARK
  annotated `k8s.io/initial-events-end: "true"` at the resourceVersion of that state (client-go's WatchList);
- `timeoutSeconds`: the server ends the stream after that many (real) seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sim.cluster import errors
from sim.cluster.list_options import ListOptions
from sim.cluster.resources import ResourceType
from sim.cluster.tables import to_table, wants_table
from sim.cluster.watch import Watcher

if TYPE_CHECKING:
    from sim.cluster.http_api import ApiServer


async def serve_watch(
    request: web.Request, api: ApiServer, rt: ResourceType, namespace: str | None, opts: ListOptions
) -> web.StreamResponse:
    watcher = Watcher(rt.key, namespace, opts.labels, opts.fields)
    table = wants_table(request.headers.get("Accept", ""))

    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    try:
        first, synced_rv, unsubscribe = api.store.watch(
            watcher, rt, opts.resource_version, initial=opts.send_initial_events
        )
    except errors.ApiError as err:
        if err.code != 410:
            raise
        await resp.prepare(request)
        await _send(resp, {"type": "ERROR", "object": err.status()})
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp

    def encode(event: dict[str, Any]) -> dict[str, Any]:
        if table and event["type"] in ("ADDED", "MODIFIED", "DELETED"):
            obj = event["object"]
            rvs = obj["metadata"].get("resourceVersion", "")
            return {"type": event["type"], "object": to_table(rt, [obj], api.clock.wall(), resource_version=rvs)}
        return event

    def bookmark(initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(synced_rv if initial_end else api.store.resource_version)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}}

    bookmarks, timeout = opts.bookmarks, opts.timeout_s
    deadline = time.monotonic() + timeout if timeout else None
    try:
        await resp.prepare(request)
        for event in first:
            await _send(resp, encode(event))
        if opts.initial_end_bookmark:
            await _send(resp, bookmark(initial_end=True))
        while True:
            wait = api.bookmark_interval_s if bookmarks else None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wait = left if wait is None else min(wait, left)
            try:
                item = await asyncio.wait_for(_get(watcher), timeout=wait)
            except TimeoutError:
                if bookmarks and (deadline is None or time.monotonic() < deadline):
                    await _send(resp, bookmark())
                continue
            if item is None:
                break
            await _send(resp, encode(item))
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
    except ConnectionResetError:
        pass
    finally:
        watcher.closed = True
        unsubscribe()
    return resp


async def _get(watcher: Watcher) -> dict[str, Any] | None:
    return await watcher.queue.get()


async def _send(resp: web.StreamResponse, event: dict[str, Any]) -> None:
    await resp.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
