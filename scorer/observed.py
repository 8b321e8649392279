"""Decorators that turn what passes through the picker into metrics, without touching the core or the ext_proc shell.

Why it exists: the Director and the ext_proc servicer are pure of observability concerns and tested as such. The
`autonomic picker` process wraps them instead: `ObservedDirector` is the `PickBackend` the shell and the Pick API
call (every decision counted with its outcome and deciding factor, every plugin's time observed, every completion
counted), and `ExtProcStreamMetrics` is told by the servicer of every ext_proc stream and of the requests the
picker answered itself (ImmediateResponse: 400, 429, 500, 503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from scorer.director import Director
from scorer.framework import Usage
from scorer.metrics import PickerMetrics
from scorer.types import LLMRequest, NoEndpointError, SchedulingResult

log = logging.getLogger("autonomic.picker")


class ObservedDirector:
    """A `PickBackend` that delegates to the Director and records each decision in `PickerMetrics`."""

    def __init__(self, director: Director, metrics: PickerMetrics):
        self.director = director
        self.metrics = metrics
        self._weights = {p.name: dict(p.scorers) for p in director.scheduler.config.profiles}
        self.preparers: list[Callable[[LLMRequest], Awaitable[None]]] = []  # e.g. tokenize for precise prefixes

    async def prepare(self, request: LLMRequest) -> None:
        """Run the async preparation steps before a decision on `request`; a failing step is logged and skipped
        (the decision then goes without what it would have added, e.g. exact tokens)."""
        for step in self.preparers:
            try:
                await step(request)
            except Exception:
                log.exception("preparation step failed", extra={"request_id": request.request_id})

    def ready(self) -> bool:
        return self.director.ready()

    def pick(self, request: LLMRequest, subset: Sequence[str] | None = None) -> SchedulingResult:
        started = time.perf_counter()
        fallbacks = self.director.stale_fallbacks
        try:
            result = self.director.pick(request, subset, defer_learning=True)
        except NoEndpointError as exc:
            outcome = "shed" if exc.shed else "no_endpoint"
            self.metrics.decisions.labels(outcome, outcome).inc()
            raise
        except Exception:
            self.metrics.decisions.labels("error", "error").inc()
            raise
        self.metrics.observe_pick(result, self._weights.get(result.profile, {}), time.perf_counter() - started)
        if self.director.stale_fallbacks != fallbacks:
            self.metrics.stale_fallbacks.inc()
        self._learn_soon()
        return result

    def _learn_soon(self) -> None:
        """Learn from the decision once the caller has handed its answer to gRPC: the callback runs at the event
        loop's next turn, when the servicer awaits the write. Without a running loop (a synchronous caller), now."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.learn_pending()
            return
        loop.call_soon(self.learn_pending)

    def learn_pending(self) -> None:
        """The deferred learning, timed (`autonomic_picker_learn_duration_seconds`); it never raises."""
        started = time.perf_counter()
        try:
            learnt = self.director.learn_pending()
        except Exception:
            log.exception("learning from a decision failed")
            return
        if learnt:
            self.metrics.learn_seconds.observe(time.perf_counter() - started)

    def explain(self, request: LLMRequest, subset: Sequence[str] | None = None) -> SchedulingResult:
        return self.director.explain(request, subset)

    def response_complete(self, request_id: str, served: str | None, status: int, usage: Usage | None) -> None:
        self.metrics.observe_response(status)
        self.director.response_complete(request_id, served, status, usage)

    def weights(self, profile: str) -> dict[str, float]:
        return dict(self._weights.get(profile, {}))


class ExtProcStreamMetrics:
    """`StreamHooks` of the ext_proc servicer: counts streams (opened, open now) and the ImmediateResponses sent on
    them, by status. Inline hooks, not a gRPC interceptor: an interceptor wraps every stream in one more async
    generator and runs a coroutine per call, which cost the picker capacity (BENCHMARKS.md, "Capacity per core")."""

    def __init__(self, metrics: PickerMetrics):
        self.metrics = metrics
        self._opened = metrics.streams.inc
        self._active = metrics.active_streams

    def opened(self) -> None:
        self._opened()
        self._active.inc()

    def closed(self) -> None:
        self._active.dec()

    def immediate(self, status: int) -> None:
        self.metrics.immediate.labels(str(status)).inc()
