"""Wires the inputs of every precise-prefix-cache-scorer in the picker's config: KV events and tokenization.

Why it exists: the plugin is pure (it reads a `PreciseState`: an index and a token cache, handed to it through the
Scheduler's `PluginRuntime`); something in the picker process must feed them. For each state in the runtime this
creates a `KVEventsSource` over the pool (ports from the plugin's parameters) that fills the index and follows
membership changes through the plugin's `endpoints_changed` hook, and a `Tokenizer` that fills the token cache in a
`prepare` step the ext_proc shell and the Picker API await before each decision (it awaits a round trip only when
the request's tokens are neither cached nor derivable from an earlier prompt it extends). A config without the
plugin gets nothing (no sockets, no extra step).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scorer.director import Director
from scorer.observed import ObservedDirector
from scorer.plugins.scorers.precise_prefix import PrecisePrefixCacheScorer, PreciseState
from scorer.registry import PluginRuntime
from scorer.sources.kv_events import KVEventsOptions, KVEventsSource
from scorer.sources.tokenize import Tokenizer


@dataclass(frozen=True)
class PreciseInputs:
    plugin: PrecisePrefixCacheScorer
    source: KVEventsSource
    tokenizer: Tokenizer


def _ready_servers(director: Director) -> list[str]:
    return [s.address for s in director.endpoints() if s.metrics is not None and s.error is None and not s.stale]


class PreciseCollector(Collector):
    """The precise inputs' counters on the picker's /metrics (read at scrape time, nothing kept twice)."""

    def __init__(self, wired: list[PreciseInputs]):
        self.wired = wired

    def collect(self) -> Iterable[Metric]:
        p = "autonomic_picker_kv_events_"
        per_endpoint: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "synced": GaugeMetricFamily(
                p + "synced", "1 when the endpoint's KV events are followed and caught up.", labels=_L
            ),
            "batches": CounterMetricFamily(p + "batches", "KV-event batches applied (live and replayed).", labels=_L),
            "gaps": CounterMetricFamily(p + "gaps", "Sequence gaps seen in the live stream.", labels=_L),
            "gaps_repaired": CounterMetricFamily(p + "gaps_repaired", "Gaps filled exactly by replay.", labels=_L),
            "resyncs": CounterMetricFamily(
                p + "resyncs", "Entries cleared and rebuilt (lost gap, restart).", labels=_L
            ),
            "bad_messages": CounterMetricFamily(p + "bad_messages", "Malformed messages or events skipped.", labels=_L),
        }
        blocks = GaugeMetricFamily(
            "autonomic_picker_precise_index_blocks", "Blocks the precise index holds.", labels=_L
        )
        matched = CounterMetricFamily(
            "autonomic_picker_precise_matches",
            "Requests matched against the precise index (tokens known).",
            labels=["plugin"],
        )
        tokenize = CounterMetricFamily(
            "autonomic_picker_tokenize_requests",
            "Calls to a server's /tokenize, by outcome (skipped: a background call not made, its queue full).",
            labels=["plugin", "outcome"],
        )
        waits = CounterMetricFamily(
            "autonomic_picker_tokenize_waits",
            "Requests whose decision waited for a /tokenize round trip (nothing cached or derivable), by outcome "
            "(answered: the answer came within tokenizeTimeoutSeconds; timed_out: decided without it).",
            labels=["plugin", "outcome"],
        )
        background = GaugeMetricFamily(
            "autonomic_picker_tokenize_background",
            "Background /tokenize calls in flight or queued for a slot (backgroundTokenizeConcurrency).",
            labels=["plugin"],
        )
        sources = CounterMetricFamily(
            "autonomic_picker_precise_tokens",
            "Prefix matches by where the request's tokens came from: exact (cached /tokenize answer or token ids), "
            "derived (a cached earlier prompt it extends, minus a margin), none (approximate).",
            labels=["plugin", "source"],
        )
        for w in self.wired:
            for address, status in w.source.status.items():
                for name, family in per_endpoint.items():
                    family.add_metric([w.plugin.name, address], float(getattr(status, name)))
                blocks.add_metric([w.plugin.name, address], float(w.plugin.precise.blocks(address)))
            matched.add_metric([w.plugin.name], float(w.plugin.precise_requests))
            t = w.tokenizer
            tokenize.add_metric([w.plugin.name, "ok"], float(t.requests - t.failures))
            tokenize.add_metric([w.plugin.name, "failed"], float(t.failures))
            tokenize.add_metric([w.plugin.name, "skipped"], float(t.skipped))
            waits.add_metric([w.plugin.name, "answered"], float(t.waited - t.wait_timeouts))
            waits.add_metric([w.plugin.name, "timed_out"], float(t.wait_timeouts))
            background.add_metric([w.plugin.name], float(t.in_background()))
            for source, count in w.plugin.by_source.items():
                sources.add_metric([w.plugin.name, source], float(count))
        yield from per_endpoint.values()
        yield from (blocks, matched, tokenize, waits, background, sources)


_L = ["plugin", "endpoint"]


@contextlib.asynccontextmanager
async def precise_inputs(
    director: Director, backend: ObservedDirector, runtime: PluginRuntime, registry: CollectorRegistry | None = None
) -> AsyncIterator[list[PreciseInputs]]:
    """Yields one `PreciseInputs` per precise plugin built with `runtime`; run each `source.run()` as a task while
    inside.

    With a `registry`, their counters are exported there (`autonomic_picker_kv_events_*`, `..._precise_*`,
    `autonomic_picker_tokenize_requests_total`, `autonomic_picker_tokenize_waits_total`).
    """
    wired: list[PreciseInputs] = []
    async with contextlib.AsyncExitStack() as stack:
        for name, state in runtime.provided(PreciseState).items():
            plugin = director.scheduler.plugins[name]
            assert isinstance(plugin, PrecisePrefixCacheScorer) and plugin.state is state
            params = plugin.precise_params
            opts = KVEventsOptions(
                port_offset=params.kv_events_port_offset,
                replay_port_offset=params.kv_replay_port_offset,
                topic=params.kv_topic,
            )
            source = KVEventsSource(state.index, [s.address for s in director.endpoints()], opts)
            state.membership_listeners.append(source.set_endpoints)
            tokenizer = Tokenizer(
                state.tokens,
                lambda: _ready_servers(director),
                params.tokenize_timeout_seconds,
                margin=params.derived_prefix_margin_tokens,
                max_background=params.background_tokenize_concurrency,
            )
            await stack.enter_async_context(tokenizer)
            backend.preparers.append(tokenizer.prepare)
            wired.append(PreciseInputs(plugin, source, tokenizer))
        if wired and registry is not None:
            collector = PreciseCollector(wired)
            registry.register(collector)
            stack.callback(registry.unregister, collector)
        yield wired
