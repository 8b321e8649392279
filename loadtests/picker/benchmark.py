"""The picker benchmark's machinery: schedule() cells, the Envoy hop at stated rates and body sizes, the scraping
cost, the report.

Why it exists: `loadtests.picker.cli` (the command) stays light to import; the work is here, reusing
loadtests.picker.schedule_latency (in-process picks), loadtests.picker.envoy_hop (Envoy arms) and
loadtests.picker.scrape_cost (the scraper against cheap metrics endpoints), and loadtests.report.writer for the
output directory.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from loadtests.picker import envoy_hop, schedule_latency
from loadtests.picker.cli import OPTIONS
from loadtests.picker.long_prompts import prompt_tokens, size_label
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


# ---- 4. long prompts through Envoy --------------------------------------------------------------------------
BODY_ARMS = ("envoy-round-robin", "picker")


def _hop_args(args: argparse.Namespace, size: int, rate: float | None, concurrency: int) -> argparse.Namespace:
    requests = max(args.body_requests, 4 * concurrency) if rate is None else args.body_requests
    return argparse.Namespace(
        requests=requests,
        warmup=max(10, min(requests // 10, 60)),
        concurrency=concurrency,
        rate=rate,
        servers=2,
        time_scale=1000.0,
        max_tokens=2,
        envoy_concurrency=1,
        arms=list(BODY_ARMS),
        body_size=size,
    )


def _body_row(size: int, shape: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"body_bytes": size, "prompt_tokens": prompt_tokens(size), **shape}
    base, picker = results.get("envoy-round-robin", {}), results.get("picker", {})
    skipped = [f"{arm}: {r['skipped']}" for arm, r in results.items() if "skipped" in r]
    if skipped:
        row["skipped"] = "; ".join(skipped)
        return row
    for prefix, r in (("baseline", base), ("picker", picker)):
        row.update({f"{prefix}_{k}": r[k] for k in ("req_per_s", "p50_ms", "p99_ms", "errors")})
    row["added_p50_ms"] = picker["p50_ms"] - base["p50_ms"]
    row["added_p99_ms"] = picker["p99_ms"] - base["p99_ms"]
    for key in ("picker_cpu_s_per_1000", "picker_net_cpu_s_per_1000", "picker_idle_cores"):
        if key in picker:
            row[key] = picker[key]
    return row


async def body_size_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per body size: open loop at its rate, then (for `closed_sizes`) closed loop at each concurrency."""
    rates = (
        args.body_rates if len(args.body_rates) == len(args.body_sizes) else args.body_rates[:1] * len(args.body_sizes)
    )
    cells: list[tuple[int, dict[str, Any], argparse.Namespace]] = []
    for size, rate in zip(args.body_sizes, rates, strict=True):
        cells.append((size, {"shape": "open", "rate_rps": rate}, _hop_args(args, size, rate, 16)))
    for size in args.closed_sizes if args.body_sizes else []:
        for c in args.body_concurrency:
            cells.append((size, {"shape": "closed", "concurrency": c}, _hop_args(args, size, None, c)))
    rows = []
    for n, (size, shape, ns) in enumerate(cells, 1):
        where = f"rate {shape['rate_rps']:g}" if shape["shape"] == "open" else f"concurrency {shape['concurrency']}"
        print(f"[bench picker] long prompts {n}/{len(cells)}: {size_label(size)} bodies, {where}", flush=True)
        rows.append(_body_row(size, shape, await envoy_hop.main_async(ns)))
        if "added_p50_ms" in rows[-1]:
            r = rows[-1]
            print(
                f"[bench picker]   added p50 {r['added_p50_ms']:+.1f} ms, p99 {r['added_p99_ms']:+.1f} ms", flush=True
            )
    return rows


def plot_body_sizes(path: Path, rows: list[dict[str, Any]]) -> Path | None:
    """Added p50 (and p99) latency against body size, one line per load shape; None without matplotlib or data."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in rows:
        if "added_p50_ms" in r:
            label = f"open loop {r['rate_rps']:g} req/s" if r["shape"] == "open" else f"concurrency {r['concurrency']}"
            series.setdefault(label, []).append((r["body_bytes"], r["added_p50_ms"], r["added_p99_ms"]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, points in series.items():
        points.sort()
        xs = [p[0] / 1024 for p in points]
        line = ax.plot(xs, [p[1] for p in points], marker="o", label=f"{label}: p50")[0]
        ax.plot(xs, [p[2] for p in points], marker="x", linestyle="--", color=line.get_color(), label=f"{label}: p99")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("request body (KiB)")
    ax.set_ylabel("added latency over Envoy round robin (ms)")
    ax.set_title("Latency the picker adds with long prompts (same run, same twins)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    for r in results["extproc"]["by_rate"]:
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
    tables_out = [sched, hop, scrape]
    if results["extproc"]["by_body_size"]:
        tables_out.append(body_table(results["extproc"]["by_body_size"]))
    return tables_out


def body_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(
        "Long prompts through Envoy",
        [
            "body",
            "~tokens",
            "load",
            "Envoy RR p50 / p99 ms",
            "picker p50 / p99 ms",
            "added p50 / p99 ms",
            "req/s RR / picker",
            "errors",
            "picker CPU s / 1000",
        ],
    )
    for r in rows:
        load = f"{fmt(r['rate_rps'], 'g')} req/s" if r["shape"] == "open" else f"{r['concurrency']} in flight"
        head = [size_label(r["body_bytes"]), str(r["prompt_tokens"]), load]
        if "skipped" in r:
            table.rows.append([*head, f"skipped: {r['skipped']}", *["-"] * 5])
            continue
        table.rows.append(
            [
                *head,
                f"{fmt(r['baseline_p50_ms'], '.1f')} / {fmt(r['baseline_p99_ms'], '.1f')}",
                f"{fmt(r['picker_p50_ms'], '.1f')} / {fmt(r['picker_p99_ms'], '.1f')}",
                f"{fmt(r['added_p50_ms'], '+.1f')} / {fmt(r['added_p99_ms'], '+.1f')}",
                f"{fmt(r['baseline_req_per_s'], '.0f')} / {fmt(r['picker_req_per_s'], '.0f')}",
                f"{r['baseline_errors']} / {r['picker_errors']}",
                f"{fmt(r.get('picker_net_cpu_s_per_1000'), '.2f')} ({fmt(r.get('picker_cpu_s_per_1000'), '.2f')})",
            ]
        )
    table.notes = [
        "Baseline: Envoy round robin (no ext_proc) in front of the same 2 fleet twins (x1000), same bodies, same run; "
        "picker: `autonomic picker`, default profile. Bodies: twin-tokenizable completions prompts, 7/8 one shared "
        "document, the rest unique (loadtests.picker.long_prompts). CPU: the picker process's user + system "
        "seconds per 1,000 measured requests, net of what it burns idle (scrapes every 0.1 s, health); gross in "
        "parentheses. Shared 2-core machine: client, twins, Envoy and picker compete for the same cores.",
    ]
    return table


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    cells, samples = schedule_cells(args)
    results: dict[str, Any] = {"schedule": cells}
    results["extproc"] = {"by_rate": await extproc_rows(args), "by_body_size": await body_size_rows(args)}
    results["scrape"] = await scrape_rows(args)
    write_json(args.out / "results.json", results)
    plot = plot_cdf(
        args.out / "schedule_cdf.png", samples, xlabel="Director.pick() latency (ms)", title="schedule() latency CDF"
    )
    command = command_line(getattr(args, "prog", "autonomic bench picker"), args, OPTIONS)
    intro = [f"Command: `{command}`", "", "Every ratio is to a baseline measured in the same run, on this machine."]
    footer = [f"Plot: {plot.name}" if plot else "Plot: not drawn (matplotlib missing)"]
    body_plot = plot_body_sizes(args.out / "long_prompts.png", results["extproc"]["by_body_size"])
    if body_plot:
        footer.append(f"Plot: {body_plot.name} (latency added with long prompts)")
    write_report(args.out, "Picker benchmark", intro, tables(results), footer)
    print(f"[bench picker] wrote report.md, results.json and the plots in {args.out}")
    return results
