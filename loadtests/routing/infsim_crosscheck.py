"""Cross-check of the two twins under routing: the same requests through Envoy, round robin versus our picker
(approximate and precise profiles), in front of a fleet of llm-d-inference-sim servers or of our own fleet twin.

Why it exists: issue 14 asks whether what our picker gains on our twin also holds on llm-d's simulator (another
reading of vLLM; docs/peers.md, "Cross-check: llm-d-inference-sim"). Each arm meets a fresh fleet and the same
requests: the first `--requests` of the Mooncake trace, prompts synthesized from their block ids
(sim.fleet.synth), sent closed-loop `--concurrency` at a time with `max_tokens` = min(output_length,
`--max-tokens`) and `ignore_eos`. Not the routing benchmark's timed replay: the simulator has no request log and no
model clock, so the figures are what both fleets report the same way: the prefix-cache hit ratio from each server's
own `/metrics` (prefix-cache hits / queries, in the server's tokens), HTTP errors, and the client's mean latency and
wall time. Hit ratios are reported as ratios to round robin in the same run and on the same fleet kind.

    python -m loadtests.routing.infsim_crosscheck --fleet infsim --requests 300 --out out/infsim-crosscheck
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from harness.envoy import LocalEnvoy
from harness.inference_sim import MODEL, InferenceSimFleet, SimOptions
from harness.inference_sim import missing_reason as infsim_missing
from harness.netutil import find_base_port, free_port
from harness.picker import PickerProcess
from scorer.extproc.envoy_config import EnvoyOptions
from sim.fleet.process import FleetProcess
from sim.fleet.synth import prompt_text
from sim.fleet.trace import TraceRequest, load_trace

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TRACE = REPO.parent / "shared/data/traces/mooncake_conversation_first30min.jsonl"
PRECISE_CONFIG = REPO / "scorer" / "precise-config.yaml"
ARMS = ("envoy-round-robin", "picker", "picker-precise")
FLEETS = ("infsim", "twin")
TWIN_BLOCKS = 28150  # num_gpu_blocks of the twin's default profile (sim/fleet/profiles)
_PREFIX = re.compile(r"^vllm:prefix_cache_(hits|queries)(?:_total)?\{[^}]*\} (\S+)$", re.MULTILINE)


def precise_config_for(fleet: str, workdir: Path) -> Path:
    """The shipped precise profile; for the simulator without replay and with llm-d's `kv@...` topics."""
    if fleet == "twin":
        return PRECISE_CONFIG
    doc = yaml.safe_load(PRECISE_CONFIG.read_text())
    for plugin in doc["plugins"]:
        if plugin["type"] == "precise-prefix-cache-scorer":
            plugin["parameters"] |= {"kvReplayPortOffset": None, "kvTopic": "kv@"}
    path = workdir / "precise-infsim.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@asynccontextmanager
async def fleet_of(kind: str, servers: int, time_scale: float) -> AsyncIterator[list[str]]:
    """A fresh fleet; yields its servers' host:port."""
    if kind == "infsim":
        # as large a cache as the twin's profile (Llama-3.1-8B on one H100: 28,150 blocks of 16 tokens); the simulator
        # refuses (HTTP 500) a request that does not fit in its free blocks, which --concurrency 8 stays far from
        options = SimOptions(kv_cache_size=TWIN_BLOCKS, max_num_seqs=64, max_model_len=131072)
        async with InferenceSimFleet(servers, find_base_port(servers, offsets=(0, 1000)), options=options) as f:
            yield f.addresses
        return
    fleet = FleetProcess(servers=servers, base_port=find_base_port(servers), time_scale=time_scale)
    await fleet.start()
    try:
        yield [u.removeprefix("http://") for u in fleet.urls]
    finally:
        await fleet.stop()


async def prefix_counters(session: aiohttp.ClientSession, pool: list[str]) -> tuple[float, float]:
    """(hits, queries) summed over the pool's servers, from their /metrics (vLLM's names, with or without _total)."""
    hits = queries = 0.0
    for address in pool:
        async with session.get(f"http://{address}/metrics") as r:
            for name, value in _PREFIX.findall(await r.text()):
                if name == "hits":
                    hits += float(value)
                else:
                    queries += float(value)
    return hits, queries


async def send_all(
    url: str, bodies: list[dict[str, Any]], concurrency: int, progress: Callable[[int, int], None]
) -> tuple[int, list[float]]:
    """Closed loop: (failed, latencies of the answered)."""
    queue = list(enumerate(bodies))[::-1]
    failed, latencies, done = 0, [], 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failed, done
        while queue:
            _, body = queue.pop()
            t0 = time.monotonic()
            async with session.post(url + "/v1/completions", json=body) as r:
                await r.read()
                if r.status == 200:
                    latencies.append(time.monotonic() - t0)
                else:
                    failed += 1
            done += 1
            if done % 50 == 0:
                progress(done, failed)

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failed, latencies


async def run_arm(args: argparse.Namespace, arm: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    def say(text: str) -> None:
        print(f"[{args.fleet}/{arm}] {text}", flush=True)

    async with fleet_of(args.fleet, args.servers, args.time_scale) as pool:
        picker: PickerProcess | None = None
        if arm != "envoy-round-robin":
            config = precise_config_for(args.fleet, args.out) if arm == "picker-precise" else None
            picker = PickerProcess(pool, config=config)
            await picker.start()
        try:
            opts = EnvoyOptions(
                listen_port=free_port(),
                admin_port=free_port(),
                picker_port=picker.port if picker else None,
                picker_readyz_port=picker.metrics_port if picker else None,
                pool=pool,
            )
            async with LocalEnvoy(opts) as envoy, aiohttp.ClientSession() as session:
                say(f"{len(pool)} servers, Envoy on {envoy.url}")
                h0, q0 = await prefix_counters(session, pool)
                t0 = time.monotonic()
                failed, latencies = await send_all(
                    envoy.url, bodies, args.concurrency, lambda d, f: say(f"{d}/{len(bodies)} done, {f} failed")
                )
                wall = time.monotonic() - t0
                h1, q1 = await prefix_counters(session, pool)
        finally:
            if picker is not None:
                await picker.stop()
    hit_ratio = (h1 - h0) / (q1 - q0) if q1 > q0 else 0.0
    mean = sum(latencies) / len(latencies) if latencies else float("nan")
    say(f"hit ratio {hit_ratio:.1%}, {failed} failed, mean latency {mean:.3f} s, {wall:.1f} s")
    return {"arm": arm, "hit_ratio": hit_ratio, "failed": failed, "mean_latency_s": mean, "wall_s": wall}


def bodies_from(trace: list[TraceRequest], max_tokens: int) -> list[dict[str, Any]]:
    return [
        {
            "model": MODEL,
            "prompt": prompt_text(r.hash_ids, r.input_length),
            "max_tokens": max(1, min(r.output_length, max_tokens)),
            "ignore_eos": True,
        }
        for r in trace
    ]


def table(fleet: str, results: list[dict[str, Any]]) -> str:
    base = next((r for r in results if r["arm"] == "envoy-round-robin"), None)
    lines = [
        "| fleet | arm | prefix-cache hit ratio | vs round robin | failed | mean latency | wall |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        ratio = f"{r['hit_ratio'] / base['hit_ratio']:.2f}x" if base and base["hit_ratio"] > 0 else "-"
        lines.append(
            f"| {fleet} | {r['arm']} | {r['hit_ratio']:.1%} | {ratio} | {r['failed']} | "
            f"{r['mean_latency_s']:.3f} s | {r['wall_s']:.1f} s |"
        )
    return "\n".join(lines)


async def _run(args: argparse.Namespace, arms: list[str]) -> int:
    trace = load_trace(args.trace, limit=args.requests)
    bodies = bodies_from(trace, args.max_tokens)
    results = [await run_arm(args, arm, bodies) for arm in arms]
    out = {"fleet": args.fleet, "requests": len(bodies), "argv": sys.argv, "results": results}
    (args.out / f"infsim-crosscheck-{args.fleet}.json").write_text(json.dumps(out, indent=1))
    print(table(args.fleet, results))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.routing.infsim_crosscheck", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--fleet", choices=FLEETS, default="infsim", help="llm-d-inference-sim (default) or our twin")
    p.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    p.add_argument("--requests", type=int, default=300, help="the trace's first N requests (default 300)")
    p.add_argument("--servers", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=16, help="cap on each request's output_length (default 16)")
    p.add_argument("--time-scale", type=float, default=50.0, help="the twin's model seconds per second (default 50)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from {ARMS}")
    p.add_argument("--out", type=Path, default=Path("out/infsim-crosscheck"))
    args = p.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or any(a not in ARMS for a in arms):
        print(f"error: --arms must be a list from {ARMS}", file=sys.stderr)
        return 2
    if not args.trace.exists():
        print(f"error: trace not found: {args.trace}", file=sys.stderr)
        return 2
    if args.requests < 1 or args.servers < 1 or args.concurrency < 1 or args.max_tokens < 1:
        print("error: --requests, --servers, --concurrency and --max-tokens must be >= 1", file=sys.stderr)
        return 2
    if args.fleet == "infsim" and (reason := infsim_missing()) is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_run(args, arms))


if __name__ == "__main__":
    sys.exit(main())
