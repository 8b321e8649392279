"""The picker benchmark's machinery: schedule() cells, the Envoy hop at stated rates, the scraping cost, the report.

Why it exists: `loadtests.picker.cli` (the command) stays light to import; the work is here, reusing
loadtests.picker.schedule_latency (in-process picks), loadtests.picker.envoy_hop (Envoy arms) and
loadtests.picker.scrape_cost (the scraper against cheap metrics endpoints), and loadtests.report.writer for the
output directory.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

from loadtests.picker import envoy_hop, schedule_latency
from loadtests.picker.cli import OPTIONS
from loadtests.picker.scrape_cost import scrape_rows
from loadtests.report.writer import Table, command_line, fmt, pct, plot_cdf, write_json, write_report


# ---- 1. schedule() ----------------------------------------------------------------------------------------
def schedule_cells(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    cells: list[dict[str, Any]] = []
    samples: dict[str, list[float]] = {}
    for count in args.endpoints:
        addresses = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:8000" for i in range(count)]
        for tokens in args.tokens:
            rng = random.Random(count * 100_003 + tokens)
            workload = schedule_latency.Workload(tokens, rng)
            ours = schedule_latency.build(None, addresses, 1)
            base = schedule_latency.build(schedule_latency.BASELINE, addresses, 1)
            schedule_latency.warm(ours, workload, 0.5, rng)
            schedule_latency.measure(ours, workload, 20, "warmup")
            schedule_latency.measure(base, workload, 20, "warmup")
            ours_s = schedule_latency.measure(ours, workload, args.picks, "ours")
            base_s = schedule_latency.measure(base, workload, args.picks, "base")
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
            arms=list(envoy_hop.ARMS),
        )
        results = await envoy_hop.main_async(ns)
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
        "The picker's MetricsScraper + Director in this process against loadtests.picker.metrics_stub serving a real "
        "twin's exposition; CPU is this process's over the window. Cores at target: CPU per scrape x endpoints / "
        "interval (when the stub cannot keep up, fewer scrapes than the target happen). The smaller pool is the "
        "baseline.",
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
