"""The picker benchmark's machinery: schedule() cells, the Envoy hop at stated rates, the scraping cost, the report.

Why it exists: `loadtests.bench_picker` (the command) stays light to import; the work is here, reusing
loadtests.bench_schedule (in-process picks), loadtests.bench_extproc (Envoy arms) and loadtests.metrics_stub
(cheap metrics endpoints), and loadtests.bench_report for the output directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from loadtests import bench_extproc, bench_schedule
from loadtests.bench_picker import OPTIONS
from loadtests.bench_report import Table, command_line, fmt, plot_cdf, write_json, write_report
from loadtests.summary import pct
from scorer.config import default_config
from scorer.director import Director
from scorer.scheduler import Scheduler
from scorer.sources.scraper import MetricsScraper, ScrapeResult
from scorer.types import Endpoint
from sim.fleet.process import FleetProcess
from sim.netutil import find_base_port


# ---- 1. schedule() ----------------------------------------------------------------------------------------
def schedule_cells(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    cells: list[dict[str, Any]] = []
    samples: dict[str, list[float]] = {}
    for count in args.endpoints:
        addresses = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:8000" for i in range(count)]
        for tokens in args.tokens:
            rng = random.Random(count * 100_003 + tokens)
            workload = bench_schedule.Workload(tokens, rng)
            ours = bench_schedule.build(None, addresses, 1)
            base = bench_schedule.build(bench_schedule.BASELINE, addresses, 1)
            bench_schedule.warm(ours, workload, 0.5, rng)
            bench_schedule.measure(ours, workload, 20, "warmup")
            bench_schedule.measure(base, workload, 20, "warmup")
            ours_s = bench_schedule.measure(ours, workload, args.picks, "ours")
            base_s = bench_schedule.measure(base, workload, args.picks, "base")
            cell = {
                "endpoints": count,
                "prompt_tokens": tokens,
                "default_p50_ms": pct(ours_s, 50) * 1e3,
                "default_p99_ms": pct(ours_s, 99) * 1e3,
                "baseline_p50_ms": pct(base_s, 50) * 1e3,
                "baseline_p99_ms": pct(base_s, 99) * 1e3,
            }
            cell["p50_ratio"] = cell["default_p50_ms"] / cell["baseline_p50_ms"]
            cell["p99_ratio"] = cell["default_p99_ms"] / cell["baseline_p99_ms"]
            cells.append(cell)
            samples[f"default, {count} endpoints, {tokens} tokens"] = [s * 1e3 for s in ours_s]
            samples[f"random-picker, {count} endpoints, {tokens} tokens"] = [s * 1e3 for s in base_s]
            print(f"[bench picker] schedule(): {count} endpoints, {tokens} tokens: {cell['p50_ratio']:.1f}x p50")
    return cells, samples


# ---- 2. the hop through Envoy -----------------------------------------------------------------------------
async def extproc_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for rate in args.rates:
        ns = argparse.Namespace(
            requests=args.requests,
            warmup=max(10, args.requests // 10),
            concurrency=16,
            rate=rate,
            servers=2,
            time_scale=1000.0,
            max_tokens=2,
            envoy_concurrency=1,
            arms=list(bench_extproc.ARMS),
        )
        results = await bench_extproc.main_async(ns)
        base = results.get("envoy-round-robin", {})
        for arm, r in results.items():
            row: dict[str, Any] = {"rate_rps": rate, "arm": arm}
            if "skipped" in r:
                row["skipped"] = r["skipped"]
            else:
                row.update({k: r[k] for k in ("req_per_s", "p50_ms", "p99_ms", "errors")})
                if "p50_ms" in base:
                    row["added_p50_ms"] = r["p50_ms"] - base["p50_ms"]
                    row["added_p99_ms"] = r["p99_ms"] - base["p99_ms"]
                    row["p50_ratio"] = r["p50_ms"] / base["p50_ms"]
                    row["p99_ratio"] = r["p99_ms"] / base["p99_ms"]
            rows.append(row)
    return rows


# ---- 3. scraping ------------------------------------------------------------------------------------------
async def twin_exposition() -> str:
    """A real twin's /metrics text (one fresh server)."""
    async with FleetProcess(servers=1, base_port=find_base_port(1)) as fleet, aiohttp.ClientSession() as http:
        response = await http.get(fleet.urls[0] + "/metrics")
        return await response.text()


class MetricsStub:
    def __init__(self, ports: int, text_file: Path):
        self.cmd = [sys.executable, "-m", "loadtests.metrics_stub", "--ports", str(ports), "--text", str(text_file)]
        self.proc: asyncio.subprocess.Process | None = None
        self.addresses: list[str] = []

    async def __aenter__(self) -> MetricsStub:
        self.proc = await asyncio.create_subprocess_exec(*self.cmd, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode()
        if not line.startswith("ready: "):
            await self.__aexit__()
            raise RuntimeError(f"metrics stub did not start: {line!r}")
        self.addresses = [f"127.0.0.1:{p}" for p in line.removeprefix("ready: ").strip().split(",")]
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def scrape_cost(endpoints: int, interval_s: float, seconds: float, text_file: Path) -> dict[str, Any]:
    """The scraper's CPU (this process, nothing else runs in it meanwhile) over `seconds` of scraping."""
    async with MetricsStub(endpoints, text_file) as stub:
        director = Director(Scheduler(default_config()), staleness_s=1e9)
        director.set_endpoints([Endpoint(a) for a in stub.addresses])
        results: list[ScrapeResult] = []
        async with MetricsScraper(director, stub.addresses, interval_s=interval_s, on_result=results.append) as s:
            await s.scrape_all()
            task = asyncio.create_task(s.run())
            await asyncio.sleep(interval_s * 2)  # every loop has started
            first, cpu0, wall0 = len(results), time.process_time(), time.monotonic()
            await asyncio.sleep(seconds)
            cpu, wall, window = time.process_time() - cpu0, time.monotonic() - wall0, results[first:]
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    ok = [r for r in window if r.ok]
    target = endpoints / interval_s
    per_scrape_ms = cpu / len(window) * 1e3 if window else float("nan")
    return {
        "endpoints": endpoints,
        "interval_s": interval_s,
        "target_scrapes_per_s": target,
        "scrapes_per_s": len(window) / wall,
        "failed": len(window) - len(ok),
        "cpu_cores": cpu / wall,
        "cpu_ms_per_scrape": per_scrape_ms,
        "projected_cores_at_target": per_scrape_ms * target / 1e3,
        "scrape_p50_ms": pct([r.seconds for r in ok], 50) * 1e3,
        "scrape_p99_ms": pct([r.seconds for r in ok], 99) * 1e3,
    }


async def scrape_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    text_file = args.out / "twin-metrics.txt"
    text_file.write_text(await twin_exposition())
    rows = []
    for n in dict.fromkeys([min(8, args.scrape_endpoints), args.scrape_endpoints]):
        rows.append(await scrape_cost(n, args.scrape_interval, args.scrape_seconds, text_file))
        print(f"[bench picker] scraping {n} endpoints: {rows[-1]['cpu_ms_per_scrape']:.3f} CPU ms per scrape")
    for row in rows:
        row["cpu_per_scrape_ratio"] = row["cpu_ms_per_scrape"] / rows[0]["cpu_ms_per_scrape"]
    return rows


# ---- report -----------------------------------------------------------------------------------------------
def tables(results: dict[str, Any]) -> list[Table]:
    sched = Table(
        "schedule() per decision, in process",
        ["endpoints", "prompt tokens", "default p50 ms", "p99 ms", "random-picker p50 ms", "p99 ms", "ratio p50 / p99"],
    )
    for c in results["schedule"]:
        sched.rows.append(
            [
                str(c["endpoints"]),
                str(c["prompt_tokens"]),
                fmt(c["default_p50_ms"]),
                fmt(c["default_p99_ms"]),
                fmt(c["baseline_p50_ms"]),
                fmt(c["baseline_p99_ms"]),
                f"{fmt(c['p50_ratio'], '.1f')}x / {fmt(c['p99_ratio'], '.1f')}x",
            ]
        )
    sched.notes = ["Baseline: a Director whose only profile is random-picker, same endpoints and prompts, same run."]
    hop = Table(
        "Latency added through Envoy (open loop)",
        ["rate req/s", "arm", "req/s", "p50 ms", "p99 ms", "errors", "added p50 / p99 ms", "ratio p50 / p99"],
    )
    for r in results["extproc"]:
        if "skipped" in r:
            hop.rows.append([fmt(r["rate_rps"], "g"), r["arm"], f"skipped: {r['skipped']}", *["-"] * 5])
            continue
        hop.rows.append(
            [
                fmt(r["rate_rps"], "g"),
                r["arm"],
                fmt(r["req_per_s"], ".0f"),
                fmt(r["p50_ms"], ".2f"),
                fmt(r["p99_ms"], ".2f"),
                str(r["errors"]),
                f"{fmt(r.get('added_p50_ms'), '+.2f')} / {fmt(r.get('added_p99_ms'), '+.2f')}",
                f"{fmt(r.get('p50_ratio'), '.2f')} / {fmt(r.get('p99_ratio'), '.2f')}",
            ]
        )
    hop.notes = [
        "Baseline: envoy-round-robin (no ext_proc), same fleet twin (2 servers at x1000, completions of 2 tokens), "
        "same run. picker-round-robin: the ext_proc shell with a round-robin backend; picker: `autonomic picker`, "
        "default profile, scraping every 0.1 s. Client, twins, Envoy and pickers share this machine's cores.",
    ]
    scrape = Table(
        "Scraping cost",
        [
            "endpoints",
            "interval s",
            "scrapes/s (target)",
            "failed",
            "CPU cores",
            "CPU ms per scrape",
            "ratio to the small pool",
            "cores at target",
            "scrape p50 / p99 ms",
        ],
    )
    for r in results["scrape"]:
        scrape.rows.append(
            [
                str(r["endpoints"]),
                fmt(r["interval_s"], "g"),
                f"{fmt(r['scrapes_per_s'], '.0f')} ({fmt(r['target_scrapes_per_s'], '.0f')})",
                str(r["failed"]),
                fmt(r["cpu_cores"], ".2f"),
                fmt(r["cpu_ms_per_scrape"]),
                fmt(r["cpu_per_scrape_ratio"], ".2f"),
                fmt(r["projected_cores_at_target"], ".2f"),
                f"{fmt(r['scrape_p50_ms'], '.2f')} / {fmt(r['scrape_p99_ms'], '.2f')}",
            ]
        )
    scrape.notes = [
        "The picker's MetricsScraper + Director in this process against loadtests.metrics_stub serving a real twin's "
        "exposition; CPU is this process's over the window. Cores at target: CPU per scrape x endpoints / interval "
        "(when the stub cannot keep up, fewer scrapes than the target happen). The smaller pool is the baseline.",
    ]
    return [sched, hop, scrape]


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    cells, samples = schedule_cells(args)
    results: dict[str, Any] = {"schedule": cells}
    results["extproc"] = await extproc_rows(args)
    results["scrape"] = await scrape_rows(args)
    write_json(args.out / "results.json", results)
    plot = plot_cdf(
        args.out / "schedule_cdf.png", samples, xlabel="Director.pick() latency (ms)", title="schedule() latency CDF"
    )
    command = command_line(getattr(args, "prog", "autonomic bench picker"), args, OPTIONS)
    intro = [f"Command: `{command}`", "", "Every ratio is to a baseline measured in the same run, on this machine."]
    footer = [f"Plot: {plot.name}" if plot else "Plot: not drawn (matplotlib missing)"]
    write_report(args.out, "Picker benchmark", intro, tables(results), footer)
    print(f"[bench picker] wrote report.md, results.json{', ' + plot.name if plot else ''} in {args.out}")
    return results
