"""What the ext_proc hop costs: the same small completions through Envoy with and without the picker.

Why it exists: a Python picker sits on every request. This measures, in one run on one machine, req/s and latency
(p50/p99) of N small completions through Envoy (a) with a plain round-robin cluster, (b) with the ext_proc picker
running the minimal round-robin backend (the protocol's own cost), and (c) with the real `autonomic picker` process
and its shipped default profile, scraping the model servers every 0.1 s (the scheduling core's cost on top), each
against the same fleet twin at a high time scale so the model servers are not the limit. Ratios are to (a). No
thresholds: it reports. Each picker runs in its own process, as deployed.

Two load shapes: closed loop (`--concurrency C` requests always in flight: the highest rate each arm sustains) and
open loop (`--rate R`: requests start every 1/R s whatever the answers, the latency added at a stated rate).
`--body-size 256k` sends long prompts instead (loadtests.picker.long_prompts: twin-tokenizable text, a shared
document and a unique tail per request, built before the clock starts). Each picker arm also reports the picker
processes' CPU seconds per 1,000 requests over the measured requests (/proc, user + system; a supervisor and its
workers summed) and decisions per CPU-second, and every arm Envoy's CPU seconds per 1,000 requests; a second table
puts req/s and decisions per CPU-second against the floor (`picker-round-robin`) and Envoy's own round robin.

    python -m loadtests.picker.envoy_hop --requests 2000 --concurrency 16
    python -m loadtests.picker.envoy_hop --requests 2000 --rate 200
    python -m loadtests.picker.envoy_hop --requests 300 --rate 20 --body-size 256k --arms envoy-round-robin,picker
    python -m loadtests.picker.envoy_hop --requests 3000 --concurrency 16 --repeat 4 \
        --arms envoy-round-robin,picker-round-robin,picker,picker-workers-2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from harness.child import Child
from harness.envoy import LocalEnvoy
from harness.netutil import find_base_port, free_port
from harness.picker import PickerProcess
from loadtests.picker.long_prompts import PromptBodies, parse_size
from loadtests.soak.sampler import children, cpu_seconds
from scorer.extproc.envoy_config import EnvoyOptions
from sim.fleet.process import FleetProcess

ARMS = ("envoy-round-robin", "picker-round-robin", "picker")
# on request (--arms): the real picker with --secure-serving, Envoy dialling it over TLS; the real picker with
# `--workers 2` (a supervisor and 2 workers on one port; Envoy opens several connections: EnvoyOptions.picker_workers)
# `picker-random`: the real picker process with a profile of one random picker and no scorer (what the process costs
# beside its scoring)
# `picker-access-log`: the real picker told of response ends by Envoy's gRPC access log, whatever --response-ends
EXTRA_ARMS = ("picker-tls", "picker-workers-2", "picker-random", "picker-access-log")
RANDOM_PROFILE = """apiVersion: autonomic.dev/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: random-picker
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: random-picker}
"""


class PickerChild:
    """A minimal ext_proc module in its own process: `python -m <command> --endpoints ... --port P`, ready at its
    `ready:` line (the real `autonomic picker` runs as `harness.picker.PickerProcess`)."""

    def __init__(self, command: Sequence[str], endpoints: Sequence[str]):
        self.port = free_port()
        cmd = [sys.executable, "-m", *command, "--endpoints", ",".join(endpoints), "--port", str(self.port)]
        self._child = Child(cmd, ready=r"^ready:")

    async def start(self) -> None:
        await self._child.start()

    async def stop(self) -> None:
        await self._child.stop()

    @property
    def pid(self) -> int | None:
        return self._child.pid


_JSON = {"content-type": "application/json"}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def drive(
    url: str,
    model: str,
    requests: int,
    concurrency: int,
    max_tokens: int,
    rate: float | None = None,
    bodies: Sequence[bytes] = (),
) -> dict[str, Any]:
    """Send `requests` completions, `concurrency` in flight (closed loop) or one every 1/`rate` s (open loop);
    latencies in ms, measured from each request's scheduled start. Request i sends `bodies[i % len(bodies)]` if
    any are given, else a short prompt."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=0 if rate else concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int, started: float) -> None:
            nonlocal errors
            body = {"model": model, "prompt": f"bench {i % 97} hello world", "max_tokens": max_tokens}
            data = bodies[i % len(bodies)] if bodies else json.dumps(body).encode()
            try:
                async with http.post(f"{url}/v1/completions", data=data, headers=_JSON) as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            latencies.append((time.perf_counter() - started) * 1e3)
            errors += not ok

        async def worker() -> None:
            for i in counter:
                await one(i, time.perf_counter())

        async def open_loop(rate: float) -> None:
            tasks = []
            for i in range(requests):
                due = t0 + i / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                tasks.append(asyncio.create_task(one(i, due)))
            await asyncio.gather(*tasks)

        t0 = time.perf_counter()
        if rate:
            await open_loop(rate)
        else:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "requests": requests,
        "errors": errors,
        "req_per_s": requests / wall,
        "wall_s": wall,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
    }


async def run_arm(arm: str, fleet: FleetProcess, model: str, args: argparse.Namespace) -> dict[str, Any]:
    pool = [u.removeprefix("http://") for u in fleet.urls]
    picker: PickerChild | PickerProcess | None = None
    if arm == "picker-round-robin":
        picker = PickerChild(["scorer.extproc.roundrobin"], pool)
    elif arm in ("picker", "picker-access-log"):  # the real `autonomic picker` with its shipped default profile
        picker = PickerProcess(pool)
    elif arm == "picker-random":
        profile = Path(tempfile.mkdtemp(prefix="envoy-hop-")) / "random.yaml"
        profile.write_text(RANDOM_PROFILE)
        picker = PickerProcess(pool, config=profile)
    elif arm == "picker-workers-2":  # the same with 2 worker processes on its port (and their supervisor)
        picker = PickerProcess(pool, extra_args=["--workers", "2"])
    elif arm == "picker-tls":  # the same, ext_proc over TLS (self-signed certificate, as deployed)
        picker = PickerProcess(pool, extra_args=["--secure-serving"])
    opts = EnvoyOptions(
        listen_port=free_port(),
        admin_port=free_port(),
        picker_port=picker.port if picker else None,
        picker_readyz_port=picker.metrics_port if isinstance(picker, PickerProcess) else None,
        pool=pool,
        picker_tls=arm == "picker-tls",
        body_mode=getattr(args, "body_mode", "FULL_DUPLEX_STREAMED"),
        picker_workers=2 if arm == "picker-workers-2" else 1,
        response_ends="access_log" if arm == "picker-access-log" else getattr(args, "response_ends", "ext_proc"),
    )
    envoy = LocalEnvoy(opts, concurrency=args.envoy_concurrency)
    try:
        if picker is not None:
            await picker.start()
        bodies = long_bodies(args, model)
        async with envoy:
            await drive(envoy.url, model, args.warmup, args.concurrency, args.max_tokens, args.rate, bodies)
            idle = await idle_cores(picker.pid) if picker is not None else None
            cpu_before = tree_cpu_seconds(picker.pid) if picker is not None else None
            envoy_before = cpu_seconds(envoy.pid)
            result = await drive(envoy.url, model, args.requests, args.concurrency, args.max_tokens, args.rate, bodies)
            cpu_after = tree_cpu_seconds(picker.pid) if picker is not None else None
            envoy_after = cpu_seconds(envoy.pid)
            if envoy_before is not None and envoy_after is not None:
                result["envoy_cpu_s_per_1000"] = (envoy_after - envoy_before) / args.requests * 1000
            if idle is not None and cpu_before is not None and cpu_after is not None:
                busy = cpu_after - cpu_before
                result["picker_cpu_s_per_1000"] = busy / args.requests * 1000
                # decisions per CPU-second of every picker process (a supervisor and its workers together)
                result["decisions_per_cpu_s"] = args.requests / busy if busy > 0 else float("nan")
                result["picker_idle_cores"] = idle
                # net of what the idle picker burns anyway (its scrapes, health): the requests' own cost
                net = max(0.0, busy - idle * result["wall_s"])
                result["picker_net_cpu_s_per_1000"] = net / args.requests * 1000
            return result
    finally:
        if picker is not None:
            await picker.stop()


def tree_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds of a process and its children (a picker with --workers: the supervisor and its workers)."""
    own = cpu_seconds(pid)
    if pid is None or own is None:
        return own
    return own + sum(cpu_seconds(child) or 0.0 for child in children(pid))


async def idle_cores(pid: int | None, window_s: float = 2.0) -> float | None:
    """The CPU the picker uses with no request in flight (scraping, health), in cores over `window_s`."""
    before = tree_cpu_seconds(pid)
    await asyncio.sleep(window_s)  # a measurement window, not a wait for a condition
    after = tree_cpu_seconds(pid)
    return None if before is None or after is None else (after - before) / window_s


def long_bodies(args: argparse.Namespace, model: str) -> list[bytes]:
    """One body per warm-up and measured request (at most 400, then reused) when `args.body_size` is set."""
    size = getattr(args, "body_size", None)
    if not size:
        return []
    maker = PromptBodies(size, model, max_tokens=args.max_tokens)
    return [maker.body(i) for i in range(min(400, args.requests + args.warmup))]


def _table(results: dict[str, dict[str, Any]]) -> str:
    base = results.get("envoy-round-robin")
    heads = f"{'arm':<20} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'CPU s/1k':>8}"  # net of idle
    lines = [heads + "  vs envoy-round-robin"]
    lines += _table_rows(results, base)
    lines += ["", _capacity_table(results)]
    return "\n".join(lines)


def capacity_ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per arm of one run: req/s against the floor (`picker-round-robin`) and Envoy's own round robin, and decisions
    per CPU-second of the picker processes against the floor's (for Envoy round robin: Envoy's own, since it routes
    and proxies in one process). NaN where a baseline is missing."""
    nan = float("nan")
    floor, envoy = results.get("picker-round-robin", {}), results.get("envoy-round-robin", {})
    out = {}
    for arm, r in results.items():
        if "req_per_s" not in r:
            continue
        per_cpu = r.get("decisions_per_cpu_s")
        if per_cpu is None and r.get("envoy_cpu_s_per_1000"):
            per_cpu = 1000 / r["envoy_cpu_s_per_1000"]
        floor_cpu = floor.get("decisions_per_cpu_s")
        out[arm] = {
            "req_per_s": r["req_per_s"],
            "vs_floor": r["req_per_s"] / floor["req_per_s"] if "req_per_s" in floor else nan,
            "vs_envoy": r["req_per_s"] / envoy["req_per_s"] if "req_per_s" in envoy else nan,
            "decisions_per_cpu_s": per_cpu if per_cpu else nan,
            "cpu_vs_floor": per_cpu / floor_cpu if per_cpu and floor_cpu else nan,
        }
    return out


def median_ratios(runs: Sequence[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """The median over runs of each arm's `capacity_ratios` (each ratio taken within its own run first)."""
    per_run = [capacity_ratios(r) for r in runs]
    arms = list(dict.fromkeys(arm for ratios in per_run for arm in ratios))
    out: dict[str, dict[str, float]] = {}
    for arm in arms:
        rows = [ratios[arm] for ratios in per_run if arm in ratios]
        out[arm] = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    return out


def rotated(arms: Sequence[str], run: int) -> list[str]:
    """The arms of run `run` (0-based), starting `run` arms later: over len(arms) runs each arm comes first once."""
    k = run % len(arms) if arms else 0
    return [*arms[k:], *arms[:k]]


def _capacity_table(results: dict[str, dict[str, Any]]) -> str:
    """Throughput and decisions per CPU-second of the picker processes, against the floor (`picker-round-robin`)
    and Envoy's own round robin (its decisions per CPU-second are Envoy's: it routes and proxies in one process)."""
    lines = [
        f"{'arm':<20} {'req/s':>9} {'vs floor':>8} {'vs envoy':>8} {'picker CPU s/1k':>15} {'dec/CPU-s':>9} "
        f"{'vs floor':>8} {'envoy CPU s/1k':>14}"
    ]
    for arm, c in capacity_ratios(results).items():
        r = results[arm]
        picker_cpu = r.get("picker_cpu_s_per_1000", float("nan"))
        envoy_cpu = r.get("envoy_cpu_s_per_1000", float("nan"))
        lines.append(
            f"{arm:<20} {c['req_per_s']:9.0f} {c['vs_floor']:8.2f} {c['vs_envoy']:8.2f} {picker_cpu:15.2f} "
            f"{c['decisions_per_cpu_s']:9.0f} {c['cpu_vs_floor']:8.2f} {envoy_cpu:14.2f}"
        )
    return "\n".join(lines)


def _median_table(runs: Sequence[dict[str, dict[str, Any]]]) -> str:
    lines = [f"medians of {len(runs)} runs (each ratio within its run; arms in rotated order)"]
    lines.append(f"{'arm':<20} {'req/s':>9} {'vs floor':>8} {'vs envoy':>8} {'dec/CPU-s':>9} {'vs floor':>8}")
    for arm, m in median_ratios(runs).items():
        lines.append(
            f"{arm:<20} {m['req_per_s']:9.0f} {m['vs_floor']:8.2f} {m['vs_envoy']:8.2f} "
            f"{m['decisions_per_cpu_s']:9.0f} {m['cpu_vs_floor']:8.2f}"
        )
    return "\n".join(lines)


def _table_rows(results: dict[str, dict[str, Any]], base: dict[str, Any] | None) -> list[str]:
    lines = []
    for arm, r in results.items():
        if "skipped" in r:
            lines.append(f"{arm:<20} skipped: {r['skipped']}")
            continue
        ratio = ""
        if base and "req_per_s" in base:
            ratio = (
                f"x{r['req_per_s'] / base['req_per_s']:.2f} req/s, x{r['p50_ms'] / base['p50_ms']:.2f} p50,"
                f" x{r['p99_ms'] / base['p99_ms']:.2f} p99"
            )
        cpu = f"{r['picker_net_cpu_s_per_1000']:8.2f}" if "picker_net_cpu_s_per_1000" in r else f"{'-':>8}"
        cells = f"{r['req_per_s']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['errors']:6d} {cpu}"
        lines.append(f"{arm:<20} {cells}  {ratio}")
    return lines


async def main_async(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    fleet = FleetProcess(servers=args.servers, base_port=find_base_port(args.servers), time_scale=args.time_scale)
    results: dict[str, dict[str, Any]] = {}
    async with fleet:
        model = (await fleet.describe())[0]["model"]
        for arm in args.arms:
            try:
                results[arm] = await run_arm(arm, fleet, model, args)
            except (RuntimeError, TimeoutError) as exc:  # e.g. `autonomic picker` not available yet
                results[arm] = {"skipped": str(exc).splitlines()[-1][:160] if str(exc) else type(exc).__name__}
                print(f"{arm}: skipped ({results[arm]['skipped']})", flush=True)
                continue
            print(f"{arm}: {json.dumps({k: round(v, 2) for k, v in results[arm].items()})}", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Cost of the ext_proc picker hop through a real Envoy.")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16, help="closed loop: requests in flight")
    ap.add_argument("--rate", type=float, default=None, help="open loop: requests per second (overrides concurrency)")
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--time-scale", type=float, default=1000.0)
    ap.add_argument("--max-tokens", type=int, default=2)
    ap.add_argument("--envoy-concurrency", type=int, default=1, help="Envoy worker threads")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated from {','.join(ARMS + EXTRA_ARMS)}")
    ap.add_argument("--body-size", type=parse_size, default=None, help="long prompts of this size (e.g. 256k)")
    ap.add_argument(
        "--body-mode",
        choices=("FULL_DUPLEX_STREAMED", "BUFFERED"),
        default="FULL_DUPLEX_STREAMED",
        help="the ext_proc request body mode Envoy uses (BUFFERED: the picker does not stream the body back)",
    )
    ap.add_argument(
        "--response-ends",
        choices=("ext_proc", "access_log"),
        default="ext_proc",
        help="how the pickers learn that a response ended: a second ext_proc stream per request (the observer) or "
        "Envoy's gRPC access log (batched, one stream per Envoy worker)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the arms N times, each run starting one arm later (no arm always first: on a busy machine the "
        "order matters), then print the medians of the within-run ratios",
    )
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    args.arms = [a for a in args.arms.split(",") if a]
    unknown = set(args.arms) - set(ARMS + EXTRA_ARMS)
    if unknown:
        ap.error(f"unknown arms: {sorted(unknown)}")
    shape = f"open loop at {args.rate:g} req/s" if args.rate else f"concurrency {args.concurrency}"
    what = f"bodies of {args.body_size} bytes" if args.body_size else "small prompts"
    header = f"{args.requests} completions ({what}, max_tokens {args.max_tokens}, {args.body_mode}), {shape}, "
    runs = []
    arms = list(args.arms)
    for run in range(args.repeat):
        args.arms = rotated(arms, run)
        runs.append(asyncio.run(main_async(args)))
        print(header + f"{args.servers} twins at x{args.time_scale:g}, Envoy workers {args.envoy_concurrency}")
        print(_table(runs[-1]))
    args.arms = arms
    if args.repeat > 1:
        print(_median_table(runs))
    if args.json:
        with open(args.json, "w") as f:
            out: dict[str, Any] = {"args": vars(args), "results": runs[0]}
            if args.repeat > 1:
                out["runs"] = runs
                out["medians"] = median_ratios(runs)
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
