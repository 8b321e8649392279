"""One scheduling cycle as a pure function: profile -> filters -> scorers -> picker, each plugin timed.

Why it exists: the decision must be explainable and testable without a network, so `schedule()` only reads its
arguments and the plugins' state and returns a `SchedulingResult` that says why (scores per scorer, what each
filter removed, time per plugin). Learning from a decision is a separate step, `commit()`, which the Director calls
for real picks and Explain never calls; `response_complete()` fans the answer out to the plugins that learn from it.

Rules the framework owns so that plugins don't:
- filters run in the profile's order, each on the previous one's output; what each removed is recorded. A filter
  that removes every candidate fails the cycle (`NoEndpointError`, 503) unless it declares itself *soft*
  (`soft = True`): then it is skipped and the reason says so (a preference such as "avoid saturated replicas"
  must not turn a busy pool into an outage). A filter may itself raise `NoEndpointError(shed=True)` to shed (429).
- a scorer's score is clamped to [0, 1] (NaN and missing count as 0), multiplied by its weight and summed;
  `by_scorer` keeps the clamped, unweighted score.
- every plugin's time is measured with `time.perf_counter` (measurement, not I/O).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scorer.config import PickerConfig
from scorer.framework import (
    Filter,
    MembershipHook,
    MetricsHook,
    Picker,
    Plugin,
    PluginBinder,
    PreRequestHook,
    ProfileHandler,
    ResponseHook,
    Scorer,
    SharedRoutingHook,
    SnapshotHook,
    Usage,
    is_soft_filter,
    plugin_roles,
    share_key,
)
from scorer.registry import PluginRuntime
from scorer.types import (
    CycleState,
    EndpointMetrics,
    EndpointState,
    IndexSnapshot,
    LLMRequest,
    NoEndpointError,
    SchedulingResult,
    ScoredEndpoint,
)


@dataclass(frozen=True)
class Profile:
    """A profile's plugin instances, slotted by extension point."""

    name: str
    filters: tuple[Filter, ...]
    scorers: tuple[tuple[Scorer, float], ...]
    picker: Picker


class Scheduler:
    def __init__(self, config: PickerConfig, runtime: PluginRuntime | None = None):
        """Build every plugin of `config` through the registry it was resolved against; plugins that read run-time
        inputs get them from `runtime` (by default a new one: each such plugin starts empty)."""
        self.config = config
        self.runtime = runtime if runtime is not None else PluginRuntime()
        self.plugins: dict[str, Plugin] = {
            p.name: config.registry[p.type].build(p.name, p.params, self.runtime) for p in config.plugins
        }
        for plugin in self.plugins.values():
            if isinstance(plugin, PluginBinder):
                plugin.bind(self.plugins)
        handler = self.plugins[config.handler]
        assert isinstance(handler, ProfileHandler)
        self.handler: ProfileHandler = handler
        self.profiles = {p.name: self._profile(p.name, p.filters, p.scorers, p.picker) for p in config.profiles}
        self.profile_names = tuple(self.profiles)
        hooks = list(self.plugins.values())
        self._pre_request = [p for p in hooks if isinstance(p, PreRequestHook)]
        self._response = [p for p in hooks if isinstance(p, ResponseHook)]
        self._membership = [p for p in hooks if isinstance(p, MembershipHook)]
        self._metrics = [p for p in hooks if isinstance(p, MetricsHook)]
        # keyed as peers exchange them (framework.share_key): a plugin's name, or its configuration-bound key
        self._shared = {share_key(n, p): p for n, p in self.plugins.items() if isinstance(p, SharedRoutingHook)}
        self._snapshots = {share_key(n, p): p for n, p in self.plugins.items() if isinstance(p, SnapshotHook)}

    def schedule(self, request: LLMRequest, candidates: Sequence[EndpointState], cycle: CycleState) -> SchedulingResult:
        """Choose the targets for one request among `candidates`. Changes no state; raises `NoEndpointError`."""
        seconds: dict[str, float] = {}
        clock = time.perf_counter
        start = clock()
        profile = self.profiles.get(self.handler.select(cycle, request, self.profile_names))
        _add(seconds, self.handler.name, clock() - start)
        if profile is None:
            raise NoEndpointError(f"profile handler {self.handler.name!r} chose an unknown profile")
        remaining = list(candidates)
        if not remaining:
            raise NoEndpointError("no candidate endpoints")
        filtered_out: dict[str, tuple[str, ...]] = {}
        notes: list[str] = []
        for plugin in profile.filters:
            start = clock()
            try:
                kept = plugin.filter(cycle, request, remaining)
            except NoEndpointError as exc:
                merged = {**filtered_out, **exc.filtered_out}
                raise NoEndpointError(str(exc), shed=exc.shed, filtered_out=merged) from exc
            finally:
                _add(seconds, plugin.name, clock() - start)
            if not kept:
                if is_soft_filter(plugin):
                    notes.append(f"soft filter {plugin.name} skipped: it would remove all {len(remaining)}")
                    continue
                filtered_out[plugin.name] = tuple(s.address for s in remaining)
                raise NoEndpointError(f"filter {plugin.name!r} removed every candidate", filtered_out=filtered_out)
            if len(kept) != len(remaining):
                kept_addresses = {s.address for s in kept}
                filtered_out[plugin.name] = tuple(s.address for s in remaining if s.address not in kept_addresses)
            remaining = kept
        scored = self._score(profile, cycle, request, remaining, seconds)
        start = clock()
        chosen, why = profile.picker.pick(cycle, request, scored)
        _add(seconds, profile.picker.name, clock() - start)
        if not chosen:
            raise NoEndpointError(f"picker {profile.picker.name!r} chose no endpoint", filtered_out=filtered_out)
        reason = "; ".join([why, *notes])
        return SchedulingResult(
            targets=tuple(s.state for s in chosen),
            reason=reason,
            scored=tuple(scored),
            filtered_out=filtered_out,
            plugin_seconds=seconds,
            profile=profile.name,
            notes=cycle.notes,  # a cycle is one decision's: no copy on the pick path
        )

    def commit(self, request: LLMRequest, result: SchedulingResult, cycle: CycleState) -> dict[str, float]:
        """Let the plugins learn from a decision that is really sent (pre_request hooks); returns seconds per hook."""
        seconds: dict[str, float] = {}
        for hook in self._pre_request:
            start = time.perf_counter()
            hook.pre_request(cycle, request, result)
            _add(seconds, getattr(hook, "name", type(hook).__name__), time.perf_counter() - start)
        return seconds

    def response_complete(
        self, request: LLMRequest, address: str, status: int, usage: Usage | None, now: float
    ) -> None:
        """Tell the response hooks how a request ended and which endpoint served it."""
        for hook in self._response:
            hook.response_complete(request, address, status, usage, now)

    def routing_blocks(self, cycle: CycleState, request: LLMRequest) -> dict[str, Sequence[int]]:
        """Per sharing plugin (by share key), the block hashes it learned from this cycle's decision (for peers)."""
        shared = {name: hook.routing_blocks(cycle, request) for name, hook in self._shared.items()}
        return {name: blocks for name, blocks in shared.items() if blocks}

    def learn_peer_routing(self, address: str, blocks: Mapping[str, Sequence[int]], now: float) -> None:
        """A peer replica sent a request to `address`: each plugin learns its state (unknown share keys ignored)."""
        for name, hashes in blocks.items():
            hook = self._shared.get(name)
            if hook is not None:
                hook.learn_peer_routing(address, hashes, now)

    def snapshot(self) -> dict[str, IndexSnapshot]:
        """Per plugin that keeps one (by share key), its per-endpoint block lists, least recently used first."""
        return {name: hook.snapshot() for name, hook in self._snapshots.items()}

    def restore(self, plugins: Mapping[str, IndexSnapshot], present: frozenset[str]) -> int:
        """Give each plugin its snapshot, for the endpoints in `present` (unknown share keys are skipped); returns
        the blocks the plugins took."""
        return sum(hook.restore(plugins[name], present) for name, hook in self._snapshots.items() if name in plugins)

    def metrics_updated(self, address: str, metrics: EndpointMetrics) -> None:
        """Tell the metrics hooks what a successful scrape of `address` read."""
        for hook in self._metrics:
            hook.metrics_updated(address, metrics)

    def endpoints_changed(self, present: frozenset[str]) -> None:
        """Tell the membership hooks which endpoints exist now (state of the others can be dropped)."""
        for hook in self._membership:
            hook.endpoints_changed(present)

    # ---- helpers -----------------------------------------------------------------------------------------
    def _profile(self, name: str, filters: Sequence[str], scorers: Sequence[tuple[str, float]], picker: str) -> Profile:
        filter_plugins: tuple[Filter, ...] = tuple(self._in_role(f, "filter") for f in filters)
        scorer_plugins: tuple[tuple[Scorer, float], ...] = tuple((self._in_role(s, "scorer"), w) for s, w in scorers)
        return Profile(name, filter_plugins, scorer_plugins, self._in_role(picker, "picker"))

    def _in_role(self, name: str, role: str) -> Any:
        plugin = self.plugins[name]
        if role not in plugin_roles(type(plugin)):
            raise TypeError(f"plugin {name!r} cannot be a {role}")
        return plugin

    @staticmethod
    def _score(
        profile: Profile,
        cycle: CycleState,
        request: LLMRequest,
        candidates: list[EndpointState],
        seconds: dict[str, float],
    ) -> list[ScoredEndpoint]:
        raws: list[tuple[str, float, dict[str, float]]] = []
        for plugin, weight in profile.scorers:
            start = time.perf_counter()
            raws.append((plugin.name, weight, plugin.score(cycle, request, candidates)))
            _add(seconds, plugin.name, time.perf_counter() - start)
        scored: list[ScoredEndpoint] = []
        for state in candidates:
            address = state.address
            total = 0.0
            by_scorer: dict[str, float] = {}
            for name, weight, raw in raws:
                value = raw.get(address, 0.0)
                value = 0.0 if not value > 0.0 else (1.0 if value > 1.0 else value)  # clamp_score, inlined
                by_scorer[name] = value
                total += weight * value
            scored.append(ScoredEndpoint(state, total, by_scorer))
        return scored


def clamp_score(value: float) -> float:
    """Into [0, 1]; NaN (and anything not > 0) is 0."""
    if not value > 0.0:
        return 0.0
    return 1.0 if value > 1.0 else float(value)


def _add(seconds: dict[str, float], name: str, elapsed: float) -> None:
    seconds[name] = seconds.get(name, 0.0) + elapsed
