"""Heterogeneous-pool routing simulation: whole H100s and 3g.40gb MIG slices behind one picker, in model time.

Why it exists: the capacity-aware profile (`scorer/dra-config.yaml`) claims that weighting load by the size of the
GPU behind each endpoint serves a mixed pool better than treating every replica alike. The fleet twin's servers all
model one whole H100, so this runs the same discrete-event loop as `loadtests/sim_routing.py` with two engine
profiles: the shipped H100 profile, and a 3g.40gb slice of it (stated scaling below). Every endpoint carries the DRA
hints discovery would give it (a whole GPU of 132 SMs / 80 GiB, a MIG slice of 60 SMs / 40 GiB) and reports its own
`num_gpu_blocks`. Each profile replays the same trace in the same run, on fresh engines.

The 3g.40gb slice (NVIDIA's MIG table for H100: 3 of 7 compute slices = 60 of 132 SMs, 4 of 8 memory slices):
compute terms (`linear_s_per_token`, `attn_s_per_token_pair`, `decode_s_per_seq`) x 132/60; memory-bandwidth terms
(`weights_read_s`, `kv_read_s_per_token`) x 2; `num_gpu_blocks` = (0.9 x 40 GiB - 16.2 GiB weights and activations)
/ 2 MiB per block = 9,945 instead of 28,150; `max_num_seqs` 256 (vLLM's default below 70 GiB).

    python -m loadtests.sim_capacity --minutes 10 --compress 6 --big 2 --small 4
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import statistics
from pathlib import Path

from loadtests.sim_routing import TRACE, RunStats
from scorer.config import PickerConfig, default_config, load_config
from scorer.device_hints import DeviceHints, DeviceInfo
from scorer.director import Director
from scorer.scheduler import Scheduler
from scorer.types import Endpoint, EndpointMetrics, LLMRequest, NoEndpointError
from sim.fleet.engine import Engine, EngineRequest
from sim.fleet.profile import EngineProfile, load_profile
from sim.fleet.synth import prompt_text_and_ids
from sim.fleet.trace import TraceRequest, load_trace

GIB = 1 << 30
SCORER = Path(__file__).resolve().parents[1] / "scorer"


def mig_3g40gb(whole: EngineProfile) -> EngineProfile:
    compute, bandwidth = 132 / 60, 2.0
    return whole.model_copy(
        update={
            "name": whole.name + "-mig-3g.40gb",
            "linear_s_per_token": whole.linear_s_per_token * compute,
            "attn_s_per_token_pair": whole.attn_s_per_token_pair * compute,
            "decode_s_per_seq": whole.decode_s_per_seq * compute,
            "weights_read_s": whole.weights_read_s * bandwidth,
            "kv_read_s_per_token": whole.kv_read_s_per_token * bandwidth,
            "num_gpu_blocks": 9945,
            "max_num_seqs": 256,
        }
    )


def pool(big: int, small: int) -> list[tuple[Endpoint, EngineProfile]]:
    whole = load_profile()
    slice_ = mig_3g40gb(whole)
    out: list[tuple[Endpoint, EngineProfile]] = []
    for i in range(big + small):
        is_big = i < big
        device = DeviceInfo(
            f"gpu.nvidia.com/node-{i}/gpu-0" + ("" if is_big else "-mig-3g40gb"),
            node=f"node-{i}",
            type="gpu" if is_big else "mig",
            product="NVIDIA H100",
            memory_bytes=(80 if is_big else 40) * GIB,
            multiprocessors=132 if is_big else 60,
            mig_profile=None if is_big else "3g.40gb",
            fraction=1.0 if is_big else 60 / 132,
        )
        endpoint = Endpoint(f"10.0.0.{i + 1}:8000", f"vllm-{i}", hints=DeviceHints(f"node-{i}", (device,)))
        out.append((endpoint, whole if is_big else slice_))
    return out


def simulate(
    name: str, config: PickerConfig, trace: list[TraceRequest], members: list[tuple[Endpoint, EngineProfile]],
    compress: float, scrape_interval_s: float = 0.05, seed: int = 1,
) -> RunStats:  # fmt: skip
    engines = [Engine(p) for _, p in members]
    addresses = [e.address for e, _ in members]
    clock = [0.0]
    director = Director(Scheduler(config), clock=lambda: clock[0], rng=random.Random(seed))
    director.set_endpoints([e for e, _ in members])
    stats = RunStats(name, per_server=[0] * len(members))
    events: list[tuple[float, int, str, object]] = []
    seq = itertools.count()
    stepping, gpu_free = [False] * len(members), [0.0] * len(members)
    heapq.heappush(events, (0.0, next(seq), "scrape", None))
    for i, req in enumerate(trace):
        heapq.heappush(events, (req.timestamp_s / compress, next(seq), "arrive", (i, req)))
    in_flight, arrivals_left = 0, len(trace)

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
                    len(engine.waiting), len(engine.running), engine.kv_usage(), block_size=p.block_size,
                    num_gpu_blocks=p.num_gpu_blocks, scraped_at=now,
                )  # fmt: skip
                director.update_metrics(addresses[k], metrics)
            if arrivals_left or in_flight:
                heapq.heappush(events, (now + scrape_interval_s, next(seq), "scrape", None))
        elif kind == "arrive":
            i, req = payload  # type: ignore[misc]
            arrivals_left -= 1
            text, ids = prompt_text_and_ids(req.hash_ids, req.input_length)
            request = LLMRequest(f"r{i}", "m", prompt=text, max_tokens=req.output_length)
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
            gpu_free[k] = end = now + res.duration
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="trace minutes to replay")
    parser.add_argument("--compress", type=float, default=6.0, help="time compression of the trace")
    parser.add_argument("--big", type=int, default=2, help="endpoints on a whole H100")
    parser.add_argument("--small", type=int, default=4, help="endpoints on a 3g.40gb MIG slice")
    args = parser.parse_args(argv)
    trace = load_trace(TRACE, max_seconds=args.minutes * 60)
    members = pool(args.big, args.small)
    runs = [("default-config.yaml", default_config()), ("dra-config.yaml", load_config(SCORER / "dra-config.yaml"))]
    print(
        f"trace: {len(trace)} requests, {args.minutes} min compressed {args.compress}x; "
        f"{args.big} whole H100 + {args.small} MIG 3g.40gb"
    )
    print("| profile | done | hit ratio | TTFT p50 s | p90 s | p99 s | mean e2e s | max/min | rejected | on H100s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for label, config in runs:
        stats = simulate(label, config, trace, members, args.compress)
        share = sum(stats.per_server[: args.big]) / max(1, sum(stats.per_server))
        print(f"{stats.row()} {share:.3f} |", flush=True)
        results.append(stats)
    base, dra = (_summary(r) for r in results)
    print("dra-config / default-config: " + ", ".join(f"{k} {dra[k] / base[k]:.2f}" for k in base))


def _summary(stats: RunStats) -> dict[str, float]:
    q = statistics.quantiles(stats.ttft, n=100)
    return {"TTFT p50": q[49], "p90": q[89], "p99": q[98], "mean e2e": statistics.mean(stats.e2e)}


if __name__ == "__main__":
    main()
