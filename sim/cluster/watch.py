"""Watch plumbing: the bounded window of past change events and the per-connection watchers fed from it.

Why it exists: informers resume a watch from the last resourceVersion they saw; the apiserver serves that
from a bounded history and answers `410 Gone` (reason Expired) once the version has left it, which forces a
relist. The window here is a number of events (`window`), so tests can make versions expire on purpose.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sim.cluster.errors import expired
from sim.cluster.selectors import FieldSelector, Selector, fields_match, matches


@dataclass(frozen=True)
class Change:
    rv: int
    resource: str  # ResourceType.key
    type: str  # ADDED | MODIFIED | DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None = None  # previous state (to turn MODIFIED into ADDED/DELETED for filtered watches)


@dataclass
class Watcher:
    resource: str
    namespace: str | None
    labels: Selector
    fields: FieldSelector
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    closed: bool = False

    def _selected(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return matches(self.labels, meta.get("labels")) and fields_match(self.fields, obj)

    def offer(self, change: Change) -> None:
        """Queue the change as this watcher sees it (an object leaving the selection is DELETED for it)."""
        if self.closed or change.resource != self.resource:
            return
        if change.type == "MODIFIED":
            was_in, now_in = self._selected(change.old), self._selected(change.obj)
            if was_in and now_in:
                kind = "MODIFIED"
            elif now_in:
                kind = "ADDED"
            elif was_in:
                kind = "DELETED"
            else:
                return
        elif self._selected(change.obj):
            kind = change.type
        else:
            return
        self.queue.put_nowait({"type": kind, "object": change.obj})  # shared, read-only

    def close(self) -> None:
        """End the stream (used by shutdown and the drop-watches fault knob)."""
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class EventLog:
    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self._events: deque[Change] = deque(maxlen=window)
        self.compacted_rv = 0  # every change with rv <= this has left the window
        self.watchers: list[Watcher] = []

    def append(self, change: Change) -> None:
        if len(self._events) == self._events.maxlen:
            self.compacted_rv = self._events[0].rv
        self._events.append(change)
        for w in list(self.watchers):
            w.offer(change)

    def since(self, rv: int, current_rv: int) -> list[Change]:
        """Changes after `rv`; 410 Expired if some of them are no longer kept."""
        if rv < self.compacted_rv:
            raise expired(rv, self.compacted_rv + 1)
        return [c for c in self._events if c.rv > rv]

    def subscribe(self, watcher: Watcher) -> Callable[[], None]:
        self.watchers.append(watcher)

        def unsubscribe() -> None:
            if watcher in self.watchers:
                self.watchers.remove(watcher)

        return unsubscribe

    def close_all(self) -> int:
        n = len(self.watchers)
        for w in list(self.watchers):
            w.close()
        self.watchers.clear()
        return n
