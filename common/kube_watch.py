"""One Kubernetes resource kept current in memory: list, then watch from the list's resourceVersion, in a thread.

Why it exists: both services read the API through a cache rather than bursts of LIST calls (the controller plans
from nodes, VMIs, VMIMs... of a 30,000-VM cluster and must hear promptly when a migration ends; the picker's pool
and DRA caches follow the API server within one watch event). `controller` and `scorer` never import each other,
so the one watcher they share lives in `common`, beside the other shared pieces (logs.py, kv_wire.py). The official
`kubernetes` client is synchronous, so each resource gets a daemon thread running `kubernetes.watch.Watch` (an
informer without client-go):

- list in pages (`limit`/`continue`), replace the cache, remember the list's resourceVersion;
- watch from it with bookmarks and a server-side `timeoutSeconds`; when a stream ends, resume from the last
  resourceVersion seen (bookmarks included, kept in `resource_version`) without relisting;
- `410 Gone` (the version left the server's window): relist at once; any other failure: wait (`first_retry_s`,
  doubling to 30 s) and relist. `synced` is set after the first good list; `error` says what is wrong meanwhile;
- `optional`: a resource the server does not serve (404 on the first list, e.g. no DRA API) is synced and empty.

`on_event(type, old, new)` runs on the watcher's thread for each change: `old` is what the cache held (None for a
new object), `new` what it holds now (None after DELETED); `("RELIST", None, None)` follows each relist. It must be
quick (the picker hops to its event loop with `call_soon_threadsafe`); an exception in it is logged and the watch
goes on. Objects are the API's JSON as dicts (no model deserialisation), never mutated after they enter the cache.
Each side names its own logger and thread prefix, so logs and thread dumps say whose watch it is.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

Obj = dict[str, Any]
EventHandler = Callable[[str, Obj | None, Obj | None], None]
PAGE = 500
MAX_RETRY_S = 30.0


def read_json(resp: Any) -> Obj:
    """The body of a call made with `_preload_content=False` (the typed client would build models), as a dict."""
    return dict(json.loads(resp.data))


def object_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name')}"


class ResourceWatcher:
    """`list_fn(*args, **kwargs)` is the client's list method (list + watch); the keywords after it are its filters."""

    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        *args: Any,
        on_event: EventHandler | None = None,
        optional: bool = False,
        watch_timeout_s: int = 300,
        request_timeout_s: float = 30.0,
        first_retry_s: float = 1.0,
        log: logging.Logger | None = None,
        thread_prefix: str = "watch",
        **kwargs: Any,
    ) -> None:
        self.kind, self._list_fn, self._args, self._kwargs = kind, list_fn, args, kwargs
        self.on_event, self.optional = on_event, optional
        self.watch_timeout_s, self.request_timeout_s = watch_timeout_s, request_timeout_s
        self.first_retry_s = first_retry_s
        self.log = log or logging.getLogger("autonomic.watch")
        self.thread_name = f"{thread_prefix}-{kind}"
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
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching; wait up to `timeout` for the thread (0: do not wait, it ends at its stream's next event)."""
        self._stop.set()
        w = self._watch
        if w is not None:
            w.stop()
        if self._thread is not None and timeout > 0:
            self._thread.join(timeout)

    def items(self) -> list[Obj]:
        with self._lock:
            return list(self._items.values())

    def get(self, namespace: str | None, name: str) -> Obj | None:
        with self._lock:
            return self._items.get(f"{namespace or ''}/{name}")

    # ---- the thread ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        delay = self.first_retry_s
        while not self._stop.is_set():
            try:
                if not self._relist():
                    return  # optional and not served
                delay = self.first_retry_s
                self._watch_from(self.resource_version)
            except ApiException as exc:
                if exc.status == 410:
                    self.log.info("watch expired, relisting", extra={"kind": self.kind})
                    continue
                self.error = f"{self.kind}: HTTP {exc.status} {exc.reason}"
            except Exception as exc:  # connection refused/reset, timeouts, bad JSON: relist after a pause
                self.error = f"{self.kind}: {type(exc).__name__}: {exc}"
            if self._stop.is_set():
                return
            self.log.warning(
                "watch failed, relisting", extra={"kind": self.kind, "error": self.error, "retry_s": delay}
            )
            self._stop.wait(delay)
            delay = min(delay * 2, MAX_RETRY_S)

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
                    self.log.info("resource not served: treated as empty", extra={"kind": self.kind})
                    self.synced.set()
                    return False
                raise
            body = read_json(resp)
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
        self._notify("RELIST", None, None)
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
            old = self._items.get(key)
            if kind == "DELETED":
                self._items.pop(key, None)
            else:
                self._items[key] = obj
        self._notify(kind, old, None if kind == "DELETED" else obj)

    def _notify(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, old, new)
        except Exception:  # a consumer's bug must not stop the watch
            self.log.exception("watch handler failed", extra={"kind": self.kind})
