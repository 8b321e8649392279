"""In-process routing simulation: the picker's Director in front of N engine twins, all in model time.

Why it exists: choosing the default scoring profile needs many runs of the same trace through different profiles,
and the full demo (fleet processes, Envoy, ext_proc) takes the trace's real duration per run. Here the engines
(`sim.fleet.engine.Engine`, the calibrated vLLM model) are stepped by a discrete-event loop, the Director is driven
with the simulated clock, metrics are "scraped" every `scrape_interval_s`, and a run of ten trace minutes takes
about a minute of CPU. Same engine model as the demo, no network: a fast way to rank profiles, not a benchmark of
the picker's overhead (see loadtests/picker/schedule_latency.py for that).

    python -m loadtests.routing.in_process --minutes 10 --compress 4 --servers 8
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from loadtests.routing.cache_aware_emulation import CacheAwareRouter, CacheAwareSettings, HalfCacheAware
from scorer.config import PickerConfig, default_config, load_config
from scorer.director import Director
from scorer.framework import Usage
from scorer.scheduler import Scheduler
from scorer.types import Endpoint, EndpointMetrics, LLMRequest, NoEndpointError, SchedulingResult
from sim.fleet.engine import Engine, EngineRequest
from sim.fleet.profile import EngineProfile, load_profile
from sim.fleet.synth import prompt_text_and_ids
from sim.fleet.trace import TraceRequest, load_trace

TRACE = Path("/work/shared/data/traces/mooncake_conversation_first30min.jsonl")
_HEAD = "apiVersion: autonomic.dev/v1alpha1\nkind: EndpointPickerConfig\n"
PROFILES: dict[str, str] = {
    "random": _HEAD + "plugins: [{type: random-picker}]\n"
    "schedulingProfiles: [{name: default, plugins: [{pluginRef: random-picker}]}]\n",
    "gie-default (prefix 3, queue 2, kv 2)": _HEAD
    + "plugins: [{type: prefix-cache-scorer}, {type: queue-scorer, parameters: {countUnscraped: false}},"
    " {type: kv-cache-utilization-scorer}]\n"
    "schedulingProfiles: [{name: default, plugins: [{pluginRef: prefix-cache-scorer, weight: 3},"
    " {pluginRef: queue-scorer, weight: 2}, {pluginRef: kv-cache-utilization-scorer, weight: 2}]}]\n",
    "gie-default + countUnscraped": _HEAD
    + "plugins: [{type: prefix-cache-scorer}, {type: queue-scorer}, {type: kv-cache-utilization-scorer}]\n"
    "schedulingProfiles: [{name: default, plugins: [{pluginRef: prefix-cache-scorer, weight: 3},"
    " {pluginRef: queue-scorer, weight: 2}, {pluginRef: kv-cache-utilization-scorer, weight: 2}]}]\n",
}


class Front(Protocol):
    """What the loop routes through: the Director, or several replicas of it."""

    def set_endpoints(self, endpoints: Sequence[Endpoint]) -> None: ...
    def update_metrics(self, address: str, metrics: EndpointMetrics | None, error: str | None = None) -> None: ...
    def pick(self, request: LLMRequest, subset: Sequence[str] | None = None) -> SchedulingResult: ...
    def response_complete(self, request_id: str, served: str | None, status: int, usage: Usage | None) -> None: ...


@dataclass
class RunStats:
    name: str
    ttft: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    per_server: list[int] = field(default_factory=list)
    rejected: int = 0

    @property
    def hit_ratio(self) -> float:
        return self.cached_tokens / max(1, self.prompt_tokens)

    def row(self) -> str:
        q = statistics.quantiles(self.ttft, n=100) if len(self.ttft) > 1 else [0.0] * 99
        hit = self.cached_tokens / max(1, self.prompt_tokens)
        spread = max(self.per_server) / max(1, min(self.per_server)) if self.per_server else 0.0
        return (
            f"| {self.name} | {len(self.ttft)} | {hit:.3f} | {q[49]:.3f} | {q[89]:.3f} | {q[98]:.3f} | "
            f"{statistics.mean(self.e2e):.2f} | {spread:.2f} | {self.rejected} |"
        )


def simulate(
    name: str,
    config: PickerConfig,
    trace: list[TraceRequest],
    servers: int,
    compress: float,
    scrape_interval_s: float = 0.05,
    seed: int = 1,
) -> RunStats:
    """`servers` identical engines on the shipped profile, endpoints without DRA hints."""
    profile = load_profile()
    members = [(Endpoint(f"10.0.0.{i + 1}:8000"), profile) for i in range(servers)]
    return replay(name, config, trace, members, compress, scrape_interval_s, seed)


def simulate_with(
    name: str,
    config: PickerConfig,
    trace: list[TraceRequest],
    servers: int,
    compress: float,
    seed: int,
    front: Callable[[Callable[[], float]], Front],
) -> RunStats:
    """`simulate` through `front(clock)` instead of one Director."""
    profile = load_profile()
    members = [(Endpoint(f"10.0.0.{i + 1}:8000"), profile) for i in range(servers)]
    return replay(name, config, trace, members, compress, seed=seed, front=front)


def replay(
    name: str,
    config: PickerConfig,
    trace: list[TraceRequest],
    members: Sequence[tuple[Endpoint, EngineProfile]],
    compress: float,
    scrape_interval_s: float = 0.05,
    seed: int = 1,
    front: Callable[[Callable[[], float]], Front] | None = None,
) -> RunStats:
    """The discrete-event loop: one fresh engine per member (on its own profile) behind a Director, the trace's
    arrivals compressed `compress` times, a scrape of every engine each `scrape_interval_s` of model time.
    `front(clock)` builds what decides instead of one Director (e.g. several replicas, loadtests.routing.replica_sim).
    """
    engines = [Engine(p) for _, p in members]
    addresses = [e.address for e, _ in members]
    model = members[0][1].model if members else ""
    clock = [0.0]
    now_is = lambda: clock[0]  # noqa: E731
    director: Front = front(now_is) if front else Director(Scheduler(config), clock=now_is, rng=random.Random(seed))
    director.set_endpoints([e for e, _ in members])
    stats = RunStats(name, per_server=[0] * len(members))
    events: list[tuple[float, int, str, object]] = []
    seq = itertools.count()
    stepping = [False] * len(members)
    gpu_free = [0.0] * len(members)
    prompt_tokens_total = [0] * len(members)  # vllm:prompt_tokens_total: counted when a prefill ends
    heapq.heappush(events, (0.0, next(seq), "scrape", None))  # first, so the pool is ready for the first arrival
    for i, req in enumerate(trace):
        heapq.heappush(events, (req.timestamp_s / compress, next(seq), "arrive", (i, req)))
    in_flight = 0
    arrivals_left = len(trace)

    def schedule_step(k: int, at: float) -> None:
        if not stepping[k]:
            stepping[k] = True
            heapq.heappush(events, (max(at, gpu_free[k]), next(seq), "step", k))

    while events:
        now, _, kind, payload = heapq.heappop(events)
        clock[0] = now
        if kind == "scrape":
            for k, engine in enumerate(engines):
                p = engine.profile
                metrics = EndpointMetrics(
                    len(engine.waiting),
                    len(engine.running),
                    engine.kv_usage(),
                    block_size=p.block_size,
                    num_gpu_blocks=p.num_gpu_blocks,
                    prompt_tokens_total=prompt_tokens_total[k],
                    scraped_at=now,
                )
                director.update_metrics(addresses[k], metrics)
            if arrivals_left or in_flight:
                heapq.heappush(events, (now + scrape_interval_s, next(seq), "scrape", None))
        elif kind == "arrive":
            i, req = payload  # type: ignore[misc]
            arrivals_left -= 1
            text, ids = prompt_text_and_ids(req.hash_ids, req.input_length)
            request = LLMRequest(f"r{i}", model, prompt=text, max_tokens=req.output_length)
            try:
                k = addresses.index(director.pick(request).addresses[0])
            except NoEndpointError:
                stats.rejected += 1
                continue
            plan = [1000 + (j % 7) for j in range(max(1, req.output_length))]
            engines[k].add_request(EngineRequest(f"r{i}", ids, plan, arrival=now))
            stats.per_server[k] += 1
            in_flight += 1
            schedule_step(k, now)
        elif kind == "step":
            k = payload  # type: ignore[assignment]
            assert isinstance(k, int)
            stepping[k] = False
            res = engines[k].step(now)
            if res.duration <= 0:
                if engines[k].has_work():
                    gpu_free[k] = now + 0.001
                    schedule_step(k, now + 0.001)
                continue
            end = now + res.duration
            gpu_free[k] = end
            prompt_tokens_total[k] += res.first_token_prompt_tokens
            for done in res.finished:
                heapq.heappush(events, (end, next(seq), "finish", (k, done)))
            if engines[k].has_work():
                schedule_step(k, end)
        elif kind == "finish":
            k, done = payload  # type: ignore[misc]
            assert isinstance(done, EngineRequest) and done.first_token is not None and done.finished is not None
            in_flight -= 1
            stats.ttft.append(done.first_token - done.arrival)
            stats.e2e.append(done.finished - done.arrival)
            stats.prompt_tokens += done.num_prompt_tokens
            stats.cached_tokens += done.cached_prompt_tokens
            director.response_complete(done.request_id, addresses[k], 200, None)
    return stats


GRID: tuple[tuple[float, float], ...] = ((5, 2.0), (5, 2.5), (5, 3.0), (10, 2.0), (10, 2.5), (15, 2.5))
EMULATED = "sglang-cache-aware (emulated)"
# its trees as large as one server's cache: 450k tokens at the twin's ~6.85 bytes per token, trimmed every second
_CACHE_CHARS = 3_000_000


def _emulated(settings: CacheAwareSettings | None = None) -> Callable[[Callable[[], float]], Front]:
    return lambda clock: CacheAwareRouter(clock, settings)


def _half(*halves: str) -> Callable[[Callable[[], float]], Front]:
    def front(clock: Callable[[], float]) -> Front:
        director = Director(Scheduler(default_config()), clock=clock, rng=random.Random(1))
        return HalfCacheAware(director, frozenset(halves))

    return front


def _parts() -> dict[str, Callable[[Callable[[], float]], Front]]:
    """`--emulate-sglang-parts`: what in sglang-router's rule keeps its hits (docs/picker-plugins.md)."""
    return {
        "sglang, trees of one cache's size": _emulated(
            CacheAwareSettings(max_tree_size=_CACHE_CHARS, eviction_interval_s=1.0)
        ),
        "sglang, trees of two caches' size": _emulated(
            CacheAwareSettings(max_tree_size=2 * _CACHE_CHARS, eviction_interval_s=1.0)
        ),
        "default + sglang's sticky half": _half("sticky"),
        "default + sglang's cold half": _half("cold"),
        "default + both halves": _half("sticky", "cold"),
    }


def emulation(label: str) -> Callable[[Callable[[], float]], Front]:
    """The front an emulated arm replays through, by its label."""
    return _emulated() if label == EMULATED else _parts()[label]


@dataclass(frozen=True)
class Arm:
    """One thing to replay: a picker config (YAML text, or a file), or (None) sglang-router's policy, emulated
    (`emulation(label)`).
    Kept as its source so that `--grid` can hand it to worker processes."""

    label: str
    source: str | Path | None


def run_arm(arm: Arm, minutes: float, compress: float, servers: int, scrape_interval_s: float = 0.05) -> RunStats:
    """One arm over the trace's first `minutes`, compressed `compress` times."""
    trace = load_trace(TRACE, max_seconds=minutes * 60)
    if arm.source is None:
        return simulate_with(arm.label, default_config(), trace, servers, compress, 1, emulation(arm.label))
    return simulate(arm.label, load_config(arm.source), trace, servers, compress, scrape_interval_s)


def _grid_cell(job: tuple[Arm, float, float, int, float]) -> RunStats:
    return run_arm(*job)


def grid_table(arms: Sequence[Arm], servers: int, jobs: int, scrape_interval_s: float = 0.05) -> list[str]:
    """Every arm over `GRID`: per cell hit ratio and TTFT p90 / p99, then the means (the docs' tuning table)."""
    from concurrent.futures import ProcessPoolExecutor

    cells = [(arm, m, c, servers, scrape_interval_s) for arm in arms for m, c in GRID]
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        stats = list(pool.map(_grid_cell, cells))
    head = " | ".join(f"{m:g} min, {c:g}x" for m, c in GRID)
    lines = [
        f"| arm | {head} | mean: hit ratio, TTFT p50 / p90 / p99 s |",
        "|---" * (len(GRID) + 2) + "|",
    ]
    for k, arm in enumerate(arms):
        row = stats[k * len(GRID) : (k + 1) * len(GRID)]
        qs = [statistics.quantiles(r.ttft, n=100) for r in row]
        text = " | ".join(f"{r.hit_ratio:.3f}, {q[89]:.2f} / {q[98]:.1f}" for r, q in zip(row, qs, strict=True))
        mean = [statistics.mean(q[i] for q in qs) for i in (49, 89, 98)]
        hit = statistics.mean(r.hit_ratio for r in row)
        lines.append(f"| {arm.label} | {text} | {hit:.3f}, {mean[0]:.3f} / {mean[1]:.3f} / {mean[2]:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="trace minutes to replay")
    parser.add_argument("--compress", type=float, default=4.0, help="time compression of the trace")
    parser.add_argument("--servers", type=int, default=8)
    parser.add_argument("--config", action="append", default=[], help="extra NAME=PATH configs to compare")
    parser.add_argument("--default", action="store_true", help="include scorer/default-config.yaml")
    parser.add_argument("--only", action="append", default=[], help="run only the named built-in profiles")
    parser.add_argument(
        "--emulate-sglang", action="store_true", help="include sglang-router's cache_aware policy, emulated"
    )
    parser.add_argument(
        "--emulate-sglang-parts",
        action="store_true",
        help="include variants of sglang-router's policy (smaller trees; each half of its rule beside our Director)",
    )
    parser.add_argument(
        "--grid", action="store_true", help="run every arm over 6 (minutes, compression) settings; print the means"
    )
    parser.add_argument("--jobs", type=int, default=2, help="processes for --grid")
    parser.add_argument(
        "--scrape-interval", type=float, default=0.05, help="model seconds between two scrapes of every engine"
    )
    args = parser.parse_args(argv)
    if not args.scrape_interval > 0:
        parser.error(f"--scrape-interval must be > 0, got {args.scrape_interval}")
    arms = [Arm(n, text) for n, text in PROFILES.items() if not args.only or n in args.only]
    if args.default:
        arms.append(Arm("default-config.yaml", Path(__file__).parents[2] / "scorer" / "default-config.yaml"))
    for spec in args.config:
        label, _, path = spec.partition("=")
        arms.append(Arm(label, Path(path)))
    for arm in arms:  # a broken config fails here, before any run
        if arm.source is not None:
            load_config(arm.source)
    if args.emulate_sglang:
        arms.append(Arm(EMULATED, None))
    if args.emulate_sglang_parts:
        arms += [Arm(label, None) for label in _parts()]
    if args.grid:
        print(f"grid: {len(GRID)} settings of (trace minutes, compression); {args.servers} servers")
        print("\n".join(grid_table(arms, args.servers, args.jobs, args.scrape_interval)))
        return
    trace_len = len(load_trace(TRACE, max_seconds=args.minutes * 60))
    print(f"trace: {trace_len} requests, {args.minutes} min compressed {args.compress}x; {args.servers} servers")
    print("| profile | done | hit ratio | TTFT p50 s | p90 s | p99 s | mean e2e s | max/min load | rejected |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arm in arms:
        print(run_arm(arm, args.minutes, args.compress, args.servers, args.scrape_interval).row(), flush=True)


if __name__ == "__main__":
    main()
