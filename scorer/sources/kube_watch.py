"""One Kubernetes resource kept current in memory for the picker: list, then watch from the list's resourceVersion.

Why it exists: endpoint discovery (inferencepool.py) and DRA hints (dra.py) read pods, an InferencePool, claims and
slices from a cache that follows the API server within one watch event. The official `kubernetes` client is
synchronous, so each resource gets a daemon thread (an informer without client-go); the async side is told through
`on_event`, which runs on that thread and must be quick (the picker's shell hops to its event loop with
`call_soon_threadsafe`). The controller has its own watcher: `controller` and `scorer` never import each other.

- list in pages (`limit`/`continue`), replace the cache, remember the list's resourceVersion, call
  `on_event("RELIST", None)`;
- watch from that version with bookmarks and a server-side `timeoutSeconds`; when a stream ends, resume from the
  last resourceVersion seen (bookmarks included) without relisting;
- `410 Gone` (the version left the server's window): relist at once; any other failure: wait (0.5 s doubling to
  30 s) and relist; `error` says what is wrong meanwhile, `synced` is set after the first good list;
- `optional`: a resource the server does not serve (404 on the first list, e.g. no DRA API) is synced and empty.
Objects are the API's JSON as dicts (no model deserialisation), never mutated after they enter the cache.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("autonomic.picker.watch")
Obj = dict[str, Any]
EventHandler = Callable[[str, Obj | None], None]
PAGE = 500


def object_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name')}"


class ResourceWatcher:
    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        *args: Any,
        on_event: EventHandler | None = None,
        optional: bool = False,
        watch_timeout_s: int = 300,
        request_timeout_s: float = 30.0,
        **kwargs: Any,
    ) -> None:
        self.kind, self._list_fn, self._args, self._kwargs = kind, list_fn, args, kwargs
        self.on_event, self.optional = on_event, optional
        self.watch_timeout_s, self.request_timeout_s = watch_timeout_s, request_timeout_s
        self.synced = threading.Event()
        self.error: str | None = None
        self.relists = 0
        self.resource_version = ""  # the last version seen (list, event or bookmark)
        self._items: dict[str, Obj] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"picker-watch-{self.kind}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w.stop()
        if self._thread is not None and timeout > 0:
            self._thread.join(timeout)

    def items(self) -> list[Obj]:
        with self._lock:
            return list(self._items.values())

    # ---- the thread ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                if not self._relist():
                    return  # optional and not served
                delay = 0.5
                self._watch_from(self.resource_version)
            except ApiException as exc:
                if exc.status == 410:
                    log.info("watch expired, relisting", extra={"kind": self.kind})
                    continue
                self.error = f"{self.kind}: HTTP {exc.status} {exc.reason}"
            except Exception as exc:  # connection refused/reset, timeouts, bad JSON: relist after a pause
                self.error = f"{self.kind}: {type(exc).__name__}: {exc}"
            if self._stop.is_set():
                return
            log.warning("watch failed, relisting", extra={"kind": self.kind, "error": self.error, "retry_s": delay})
            self._stop.wait(delay)
            delay = min(delay * 2, 30.0)

    def _relist(self) -> bool:
        items: dict[str, Obj] = {}
        token: str | None = None
        while True:
            kwargs = dict(self._kwargs, limit=PAGE, _preload_content=False, _request_timeout=self.request_timeout_s)
            if token:
                kwargs["_continue"] = token
            try:
                resp = self._list_fn(*self._args, **kwargs)
            except ApiException as exc:
                if exc.status == 404 and self.optional and not self.synced.is_set():
                    log.info("resource not served: treated as empty", extra={"kind": self.kind})
                    self.synced.set()
                    return False
                raise
            body = json.loads(resp.data)
            for obj in body.get("items") or []:
                items[object_key(obj)] = obj
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                self.resource_version = str(meta.get("resourceVersion") or "")
                break
        with self._lock:
            self._items = items
        self.relists += 1
        self.error = None
        self.synced.set()
        self._notify("RELIST", None)
        return True

    def _watch_from(self, version: str) -> None:
        while not self._stop.is_set():
            w = watch.Watch(return_type="object")  # plain dicts: no model deserialisation
            self._watch = w
            stream = w.stream(
                self._list_fn,
                *self._args,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout_s,
                _request_timeout=(self.request_timeout_s, self.watch_timeout_s + self.request_timeout_s),
                **self._kwargs,
            )
            for event in stream:
                kind, obj = event["type"], event["raw_object"]
                if kind != "BOOKMARK":
                    self._apply(kind, obj)
                if w.resource_version:
                    version = self.resource_version = str(w.resource_version)
                if self._stop.is_set():
                    break
            self._watch = None

    def _apply(self, kind: str, obj: Obj) -> None:
        key = object_key(obj)
        with self._lock:
            if kind == "DELETED":
                self._items.pop(key, None)
            else:
                self._items[key] = obj
        self._notify(kind, obj)

    def _notify(self, kind: str, obj: Obj | None) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, obj)
        except Exception:  # a consumer's bug must not stop the watch
            log.exception("watch handler failed", extra={"kind": self.kind})
