"""The in-memory object store with Kubernetes semantics: one global resourceVersion counter, optimistic
concurrency, admission hooks, list with selectors and pages, and watches that resume from a version.

Why it exists: it is the twin's etcd plus the generic registry of kube-apiserver. HTTP handlers and the KubeVirt
controller both write through it, so every change gets a new resourceVersion and reaches every watcher in
order. All methods take a lock, so the read-only `ClusterView` may be used from other threads; writes happen
on the twin's event loop (watch queues are asyncio queues).
"""

from __future__ import annotations

import base64
import copy
import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from sim.cluster import errors
from sim.cluster.clock import Clock, rfc3339
from sim.cluster.objectmeta import merge_update, prepare_create, same_content
from sim.cluster.patch import PatchError, json_merge_patch, json_patch, strategic_merge_patch
from sim.cluster.resources import NAMESPACES, ResourceType
from sim.cluster.selectors import FieldSelector, Selector, fields_match, matches
from sim.cluster.validation import check_shape, validate
from sim.cluster.watch import Change, EventLog, Watcher

# hook(operation "CREATE"|"UPDATE"|"DELETE", new object (mutable) or None, old object or None)
AdmissionHook = Callable[[str, dict[str, Any] | None, dict[str, Any] | None], None]
T = TypeVar("T")
GENERATE_NAME_ATTEMPTS = 8  # a generated name that is taken is drawn again, up to 7 more times, as the apiserver does
Obj = dict[str, Any]
CUSTOM_RESOURCE_PATCHES = ("application/json-patch+json", "application/merge-patch+json")
ObjList = list[Obj]  # spelled out: inside Store, `list` names the method


class Store:
    def __init__(self, clock: Clock, *, event_window: int = 10_000) -> None:
        self.clock = clock
        self._lock = threading.RLock()
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {}
        self._sorted: dict[str, list[Obj]] = {}  # resource -> its objects in key order, until its next write
        self._generations: dict[str, int] = {}  # resource -> writes to it so far
        self._memos: dict[str, tuple[tuple[int, ...], Any]] = {}  # name -> (stamp, value), see memo()
        self._rv = 0
        self.log = EventLog(event_window)
        self._admission: dict[str, list[AdmissionHook]] = {}
        self._listeners: list[Callable[[Change], None]] = []

    # ---- extension points ------------------------------------------------------------------------------
    def add_admission(self, rt: ResourceType, hook: AdmissionHook) -> None:
        self._admission.setdefault(rt.key, []).append(hook)

    def on_change(self, listener: Callable[[Change], None]) -> None:
        self._listeners.append(listener)

    @property
    def resource_version(self) -> int:
        return self._rv

    def memo(self, name: str, stamp: tuple[int, ...], compute: Callable[[], T]) -> T:
        """`compute()`, or what it returned last time for `name` if `stamp` (e.g. resource generations) is the
        same: for values derived from the store that many readers need between writes."""
        with self._lock:
            cached = self._memos.get(name)
            if cached is not None and cached[0] == stamp:
                return cast(T, cached[1])
            value = compute()
            self._memos[name] = (stamp, value)
            return value

    def generation(self, rt: ResourceType) -> int:
        """How many writes `rt` has had: unchanged means every object of that type is as it was."""
        return self._generations.get(rt.key, 0)

    # ---- internals ---------------------------------------------------------------------------------------
    def _table(self, rt: ResourceType) -> dict[tuple[str, str], Obj]:
        return self._objects.setdefault(rt.key, {})

    def _commit(self, rt: ResourceType, kind: str, obj: Obj, old: Obj | None) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = (obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
        self._sorted.pop(rt.key, None)
        self._generations[rt.key] = self._generations.get(rt.key, 0) + 1
        if kind == "DELETED":
            self._table(rt).pop(key, None)
        else:
            self._table(rt)[key] = obj
        change = Change(self._rv, rt.key, kind, obj, old)  # stored objects are never mutated in place
        self.log.append(change)
        for listener in list(self._listeners):
            listener(change)
        return copy.deepcopy(obj)

    def _admit(self, rt: ResourceType, op: str, new: Obj | None, old: Obj | None) -> None:
        for hook in self._admission.get(rt.key, []):
            hook(op, new, old)

    def _current(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._table(rt).get((namespace or "" if rt.namespaced else "", name))
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return obj

    # ---- verbs -------------------------------------------------------------------------------------------
    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        with self._lock:
            return copy.deepcopy(self._current(rt, namespace, name))

    def try_get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        with self._lock:
            obj = self._table(rt).get((namespace or "" if rt.namespaced else "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def create(self, rt: ResourceType, obj: Any, namespace: str | None = None, *, dry_run: bool = False) -> Obj:
        check_shape(rt, obj)
        with self._lock:
            if rt.namespaced:
                body_ns = (obj.get("metadata") or {}).get("namespace")
                namespace = namespace or body_ns or "default"
                if body_ns and body_ns != namespace:
                    raise errors.bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request"
                    )
                if (("", namespace)) not in self._table(NAMESPACES):
                    raise errors.not_found("namespaces", "", namespace)
            new = prepare_create(rt, obj, namespace, rfc3339(self.clock.wall()))
            given = obj.get("metadata") or {}
            generated = not given.get("name") and bool(given.get("generateName"))
            for _ in range(GENERATE_NAME_ATTEMPTS - 1):  # kube-apiserver's RetryGenerateName (GA in 1.31)
                if not generated or (
                    new["metadata"].get("namespace") or "",
                    new["metadata"]["name"],
                ) not in self._table(rt):
                    break
                new = prepare_create(rt, obj, namespace, rfc3339(self.clock.wall()))
            validate(rt, new)
            self._admit(rt, "CREATE", new, None)
            key = (new["metadata"].get("namespace") or "", new["metadata"]["name"])
            if key in self._table(rt):
                raise errors.already_exists(rt.plural, rt.group, new["metadata"]["name"])
            if dry_run:
                return new
            return self._commit(rt, "ADDED", new, None)

    def update(
        self, rt: ResourceType, namespace: str | None, name: str, obj: Any, *, subresource: str | None = None
    ) -> Obj:
        check_shape(rt, obj)
        with self._lock:
            current = self._current(rt, namespace, name)
            meta = obj.get("metadata") or {}
            if meta.get("name") not in (None, name):
                raise errors.bad_request(
                    f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
                )
            rv = meta.get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name)
            return self._write(rt, current, merge_update(rt, current, obj, subresource=subresource))

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch_type: str,
        body: Any,
        *,
        subresource: str | None = None,
    ) -> Obj:
        with self._lock:
            current = self._current(rt, namespace, name)
            try:
                if patch_type == "json":
                    patched = json_patch(current, body)
                elif patch_type == "merge":
                    patched = json_merge_patch(current, body)
                elif patch_type == "strategic":
                    if not rt.builtin:
                        raise errors.unsupported_media_type(CUSTOM_RESOURCE_PATCHES)
                    patched = strategic_merge_patch(current, body)
                else:
                    raise ValueError(f"unknown patch type {patch_type!r}")  # the HTTP layer only passes known ones
            except PatchError as exc:
                raise errors.ApiError(422, "Invalid", str(exc)) from exc
            check_shape(rt, patched)
            rv = (patched.get("metadata") or {}).get("resourceVersion")
            if rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name)
            return self._write(rt, current, merge_update(rt, current, patched, subresource=subresource))

    def _write(self, rt: ResourceType, current: Obj, new: Obj) -> Obj:
        validate(rt, new)
        self._admit(rt, "UPDATE", new, copy.deepcopy(current))
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if same_content(new, current):
            return copy.deepcopy(current)
        return self._commit(rt, "MODIFIED", new, current)

    def mutate(self, rt: ResourceType, namespace: str | None, name: str, fn: Callable[[Obj], None]) -> Obj:
        """Read-modify-write by a server-side controller (no admission, no conflict: it holds the lock)."""
        with self._lock:
            current = self._current(rt, namespace, name)
            new = copy.deepcopy(current)
            fn(new)
            if same_content(new, current):
                return copy.deepcopy(current)
            if _spec_changed(rt, new, current):
                new["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
            return self._commit(rt, "MODIFIED", new, current)

    def delete(self, rt: ResourceType, namespace: str | None, name: str, *, admit: bool = True) -> Obj:
        with self._lock:
            current = self._current(rt, namespace, name)
            if admit:
                self._admit(rt, "DELETE", None, copy.deepcopy(current))
            return self._commit(rt, "DELETED", copy.deepcopy(current), current)

    def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        labels: Selector = (),
        fields: FieldSelector = (),
        *,
        limit: int = 0,
        continue_token: str | None = None,
        copy_items: bool = True,
    ) -> tuple[ObjList, str, str | None, int | None]:
        """(items, resourceVersion, continue token, remaining item count). `copy_items=False` returns the stored
        objects themselves, as `peek` does, for a caller that only serializes them (the HTTP list: at 3,000 pods the
        deep copy was ~90% of a list's time, profiled); committed objects are replaced, never mutated, so they stay
        a consistent snapshot."""
        with self._lock:
            start = _decode_continue(continue_token) if continue_token else None
            items = [
                o
                for key, o in sorted(self._table(rt).items())
                if (namespace is None or key[0] == namespace)
                and (start is None or key > start)
                and matches(labels, o["metadata"].get("labels"))
                and fields_match(fields, o)
            ]
            token, remaining = None, None
            if limit and len(items) > limit:
                last = items[limit - 1]["metadata"]
                token = _encode_continue(self._rv, (last.get("namespace") or "", last["name"]))
                remaining = len(items) - limit
                items = items[:limit]
            return copy.deepcopy(items) if copy_items else items, str(self._rv), token, remaining

    def watch(
        self, watcher: Watcher, rt: ResourceType, since: int | None, *, initial: bool
    ) -> tuple[ObjList, int, Callable[[], None]]:
        """Subscribe `watcher`; return the events to send first (initial ADDEDs or the changes after `since`), the
        resourceVersion they bring the watcher to (the initial-events-end bookmark's) and the unsubscribe call."""
        with self._lock:
            if since is not None and since > self._rv:
                raise errors.ApiError(504, "Timeout", f"Too large resource version: {since}, current: {self._rv}")
            first: ObjList = []
            if initial:
                items, _, _, _ = self.list(rt, watcher.namespace, watcher.labels, watcher.fields)
                first = [{"type": "ADDED", "object": o} for o in items]
            elif since is not None:
                probe = Watcher(watcher.resource, watcher.namespace, watcher.labels, watcher.fields)
                for change in self.log.since(since, self._rv):
                    probe.offer(change)
                while not probe.queue.empty():
                    ev = probe.queue.get_nowait()
                    if ev is not None:
                        first.append(ev)
            return first, self._rv, self.log.subscribe(watcher)

    # ---- views for the twin's own controllers ----------------------------------------------------------------
    def objects(self, rt: ResourceType) -> ObjList:
        with self._lock:
            return [copy.deepcopy(o) for _, o in sorted(self._table(rt).items())]

    def peek(self, rt: ResourceType) -> ObjList:
        """The stored objects themselves, sorted by key, without copying: read them, never modify them
        (committed objects are replaced, not mutated, so a peeked object stays a consistent snapshot)."""
        with self._lock:
            ordered = self._sorted.get(rt.key)
            if ordered is None:  # sorting 3,000 keys on every peek cost more than the controllers' own work
                ordered = self._sorted[rt.key] = [o for _, o in sorted(self._table(rt).items())]
            return list(ordered)

    def peek_one(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        with self._lock:
            return self._table(rt).get((namespace or "" if rt.namespaced else "", name))

    @property
    def lock(self) -> threading.RLock:
        return self._lock


def _spec_changed(rt: ResourceType, a: Obj, b: Obj) -> bool:
    skip = {"metadata", "status"} if rt.status_subresource else {"metadata"}
    return {k: v for k, v in a.items() if k not in skip} != {k: v for k, v in b.items() if k not in skip}


def _encode_continue(rv: int, key: tuple[str, str]) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(key)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        ns, name = data["start"]
        return (str(ns), str(name))
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.bad_request(f"invalid continue token: {exc}") from exc
