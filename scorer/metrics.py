"""The picker's Prometheus metrics and the small HTTP server that exposes them with `/healthz` and `/readyz`.

Why it exists: every decision must be observable (docs/architecture.md, convention 10): how many requests went
where and why, how long each plugin took, whether the scrapes behind the decisions are fresh, and what the ext_proc
streams and the Pick API are doing. The metrics live in a registry of their own (tests can run several pickers in
one process); pool state (readiness, staleness, in-flight) is read from the Director and the scraper when Prometheus
scrapes, so it is never out of date and departed endpoints disappear by themselves.

docs/picker.md lists every series. `decision_reason` names the dominant factor of a decision with a bounded
vocabulary (a scorer's name, `tie`, `single_candidate`, `below_max`), so it can be a label.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from scorer.loop_histogram import LoopHistogram
from scorer.prefix_index import ENTRY_BYTES, PrefixIndex
from scorer.sources.scraper import ScrapeResult
from scorer.types import EndpointState, SchedulingResult

log = logging.getLogger("autonomic.picker")

PLUGIN_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25)
SCRAPE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def decision_reason(result: SchedulingResult, weights: Mapping[str, float]) -> str:
    """The factor that decided: the scorer with the largest weighted lead of the primary over the runner-up.

    `single_candidate` when there was no choice, `tie` when the primary's total equals the best other's (a random
    tie-break decided), `below_max` when the picker chose a lower total (random pickers), `no_scorers` when the
    profile has none.
    """
    if len(result.scored) <= 1 or not result.targets:
        return "single_candidate"
    primary = result.targets[0].address
    chosen = next((s for s in result.scored if s.state.address == primary), None)
    others = [s for s in result.scored if s.state.address != primary]
    if chosen is None or not others:
        return "single_candidate"
    runner_up = max(others, key=lambda s: s.total)
    if chosen.total < runner_up.total:
        return "below_max"
    if chosen.total == runner_up.total:
        return "tie"
    leads = {
        name: weights.get(name, 1.0) * (score - runner_up.by_scorer.get(name, 0.0))
        for name, score in chosen.by_scorer.items()
    }
    return max(leads, key=lambda n: leads[n]) if leads else "no_scorers"


def _child(cache: dict[tuple[str, ...], Any], metric: Counter, *values: str) -> Any:
    """`metric.labels(*values)`, looked up once per label values. A child dropped from `metric` (`remove`) would
    stay here: the decision counters never remove theirs."""
    child = cache.get(values)
    if child is None:
        child = cache[values] = metric.labels(*values)
    return child


class PickerMetrics:
    """Counters, histograms and gauges of one picker, in `self.registry`."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = reg = registry if registry is not None else CollectorRegistry()
        self.decisions = Counter(
            "autonomic_picker_decisions",
            "Scheduling decisions by outcome (routed, no_endpoint, shed, error) and deciding factor.",
            ["outcome", "reason"],
            registry=reg,
        )
        self.picks = Counter(
            "autonomic_picker_picks", "Requests routed, by primary endpoint.", ["endpoint"], registry=reg
        )
        # observed on every decision: loop histograms, no lock or label lookup per call (scorer/loop_histogram.py)
        self.pick_seconds = LoopHistogram(
            "autonomic_picker_pick_duration_seconds", "Time of one whole pick.", buckets=PLUGIN_BUCKETS, registry=reg
        )
        self.learn_seconds = LoopHistogram(
            "autonomic_picker_learn_duration_seconds",
            "Time the plugins took to learn from one decision (prefix recording), after its answer was sent.",
            buckets=PLUGIN_BUCKETS,
            registry=reg,
        )
        self.plugin_seconds = LoopHistogram(
            "autonomic_picker_plugin_duration_seconds",
            "Time each plugin took in a scheduling cycle.",
            ["plugin"],
            buckets=PLUGIN_BUCKETS,
            registry=reg,
        )
        self.responses = Counter(
            "autonomic_picker_responses",
            "Completed requests by HTTP status class (0xx: ended before response headers).",
            ["code"],
            registry=reg,
        )
        self.scrapes = Counter(
            "autonomic_picker_scrapes",
            "Model-server /metrics scrapes by endpoint and result (ok, timeout, connect, http, parse, error).",
            ["endpoint", "result"],
            registry=reg,
        )
        self.scrape_seconds = Histogram(
            "autonomic_picker_scrape_duration_seconds", "Time of one scrape.", buckets=SCRAPE_BUCKETS, registry=reg
        )
        self.streams = Counter(
            "autonomic_picker_extproc_streams",
            "ext_proc streams opened (routing and, where configured, response-observer streams).",
            registry=reg,
        )
        self.active_streams = Gauge("autonomic_picker_extproc_active_streams", "ext_proc streams open.", registry=reg)
        self.buffered_body_bytes = Gauge(
            "autonomic_picker_extproc_buffered_body_bytes",
            "Request-body bytes the ext_proc streams hold now (past --max-buffered-body-bytes a body is shed, 429).",
            registry=reg,
        )
        self.immediate = Counter(
            "autonomic_picker_extproc_immediate_responses",
            "Requests answered by the picker itself (400, 429, 500, 503), by status.",
            ["code"],
            registry=reg,
        )
        self.stale_fallbacks = Counter(
            "autonomic_picker_stale_fallback_decisions",
            "Decisions made on stale metrics because no endpoint had fresh ones (the scrape loop is late).",
            registry=reg,
        )
        self.api_requests = Counter(
            "autonomic_picker_api_requests",
            "autonomic.picker.v1.Picker calls by method and gRPC status code.",
            ["method", "code"],
            registry=reg,
        )
        reg.register(_LoopCollector())
        # labelled children by label values, so that a decision does not pay for `labels()` (its validation and lock)
        self._routed: dict[tuple[str, ...], Any] = {}
        self._picked: dict[tuple[str, ...], Any] = {}
        self._responded: dict[tuple[str, ...], Any] = {}

    def observe_pick(self, result: SchedulingResult, weights: Mapping[str, float], seconds: float) -> str:
        reason = decision_reason(result, weights)
        _child(self._routed, self.decisions, "routed", reason).inc()
        _child(self._picked, self.picks, result.targets[0].address).inc()
        self.pick_seconds.observe(seconds)
        observe = self.plugin_seconds.observe
        for plugin, spent in result.plugin_seconds.items():
            observe(spent, plugin)
        return reason

    def observe_scrape(self, result: ScrapeResult) -> None:
        self.scrapes.labels(result.address, result.kind).inc()
        self.scrape_seconds.observe(result.seconds)

    def observe_response(self, status: int) -> None:
        _child(self._responded, self.responses, f"{status // 100}xx").inc()

    def watch_pool(
        self,
        endpoints: Callable[[], list[EndpointState]],
        staleness: Callable[[str], float],
        ejections: Callable[[], dict[str, int]] = dict,
    ) -> None:
        """Export pool state read at collection time: readiness, scrape staleness, in-flight per endpoint."""
        self.registry.register(_PoolCollector(endpoints, staleness, ejections))

    def watch_prefix_indexes(self, indexes: Callable[[], Mapping[str, PrefixIndex]]) -> None:
        """Export the approximate prefix indexes' size, budget and evictions, read at collection time."""
        self.registry.register(PrefixIndexCollector(indexes))


@dataclass(eq=False)  # registries key collectors by identity
class _PoolCollector:
    endpoints: Callable[[], list[EndpointState]]
    staleness: Callable[[str], float]
    ejections: Callable[[], dict[str, int]]

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: nothing is collected at registration

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "autonomic_picker_endpoint_ready",
            "1 if the endpoint is a candidate (its last scrape succeeded and is fresh, and it is not ejected).",
            labels=["endpoint"],
        )
        stale = GaugeMetricFamily(
            "autonomic_picker_scrape_staleness_seconds",
            "Seconds since the endpoint's last successful scrape (+Inf before the first).",
            labels=["endpoint"],
        )
        in_flight = GaugeMetricFamily(
            "autonomic_picker_endpoint_in_flight",
            "Requests picked for the endpoint, not yet completed.",
            labels=["endpoint"],
        )
        ejected = CounterMetricFamily(
            "autonomic_picker_endpoint_ejections",
            "Times the endpoint was taken out for answering 5xx too many times in a row (passive health).",
            labels=["endpoint"],
        )
        for address, count in self.ejections().items():
            ejected.add_metric([address], count)
        total = 0
        for state in self.endpoints():
            ok = state.metrics is not None and state.error is None and not state.stale and not state.ejected
            ready.add_metric([state.address], 1.0 if ok else 0.0)
            stale.add_metric([state.address], self.staleness(state.address))
            in_flight.add_metric([state.address], state.in_flight)
            total += state.in_flight
        yield ready
        yield stale
        yield in_flight
        yield ejected
        yield GaugeMetricFamily("autonomic_picker_in_flight_requests", "Requests picked, not yet completed.", total)


class _LoopCollector:
    """The picker's asyncio task count, read when Prometheus scrapes (on the event loop, in the /metrics handler):
    a count that keeps growing under steady load is a task leak (`autonomic soak` watches it)."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            tasks = asyncio.all_tasks()
        except RuntimeError:  # collected outside the event loop (a test's registry read): nothing to say
            return
        yield GaugeMetricFamily("autonomic_picker_asyncio_tasks", "asyncio tasks alive in the picker.", len(tasks))


async def serve_metrics(
    metrics: PickerMetrics, ready: Callable[[], bool], host: str, port: int
) -> tuple[web.AppRunner, int]:
    """`/metrics`, `/healthz` (the process runs) and `/readyz` (an endpoint can take traffic) on `host:port`."""

    async def exposition(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(text="not ready: no endpoint can take traffic\n", status=503)

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)


@dataclass(eq=False)  # registries key collectors by identity
class PrefixIndexCollector:
    """The approximate prefix indexes' size against their memory budget, read at scrape time (`stats()` is
    O(endpoints)): entries, distinct hashes, estimated bytes, the budget, evictions by cause, blocks per endpoint."""

    indexes: Callable[[], Mapping[str, PrefixIndex]]  # plugin name -> its index

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        p = "autonomic_picker_prefix_index_"
        entries = GaugeMetricFamily(p + "entries", "(endpoint, block) entries held: what the budget bounds.", labels=_P)
        hashes = GaugeMetricFamily(p + "hashes", "Distinct block hashes held by at least one endpoint.", labels=_P)
        size = GaugeMetricFamily(p + "bytes", "Estimated memory of the index (dict tables + hash objects).", labels=_P)
        budget = GaugeMetricFamily(
            p + "budget_bytes", "The index's memory budget (maxIndexBytes); absent when it has none.", labels=_P
        )
        evictions = CounterMetricFamily(
            p + "evictions", "Entries evicted: a full endpoint LRU (capacity) or the budget.", labels=[*_P, "reason"]
        )
        blocks = GaugeMetricFamily(
            p + "endpoint_blocks", "Blocks the index holds per endpoint.", labels=[*_P, "endpoint"]
        )
        capacity = GaugeMetricFamily(
            p + "endpoint_capacity_blocks",
            "Blocks the index may hold per endpoint: its KV cache in prompt bytes, or lruCapacityPerServer.",
            labels=[*_P, "endpoint"],
        )
        rate = GaugeMetricFamily(
            p + "bytes_per_token", "Prompt bytes per model token the capacities were sized with.", labels=_P
        )
        for plugin, index in self.indexes().items():
            stats = index.stats()
            entries.add_metric([plugin], stats.entries)
            hashes.add_metric([plugin], stats.hashes)
            size.add_metric([plugin], stats.estimated_bytes)
            if stats.max_entries is not None:
                budget.add_metric([plugin], stats.max_entries * ENTRY_BYTES)
            evictions.add_metric([plugin, "capacity"], stats.evicted_capacity)
            evictions.add_metric([plugin, "budget"], stats.evicted_budget)
            if index.bytes_per_token is not None:
                rate.add_metric([plugin], index.bytes_per_token)
            for address in index.addresses():
                blocks.add_metric([plugin, address], index.blocks(address))
                capacity.add_metric([plugin, address], index.capacity_of(address))
        yield from (entries, hashes, size, budget, evictions, blocks, capacity, rate)


_P = ["plugin"]
