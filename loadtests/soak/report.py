"""The soak's figures: growth per process after the warm-up, the summary table, report.md, results.json, a plot."""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import median
from typing import Any

from loadtests.report.writer import Table, command_line, fmt, write_json, write_report

GOAL_PCT = 10.0  # RSS and open fds (besides live TCP connections) may grow at most this much after the warm-up
# open fds are judged without the live TCP connections (loadtests/soak/sampler.py): keep-alive pools follow the
# client's concurrency, which rises whenever the machine slows; the raw count and the connections are reported
JUDGED = ("rss_mb", "held_fds")
MEASURES = ("rss_mb", "fds", "held_fds", "connections", "threads")
NOT_JUDGED = {  # sampled and reported, not held to the goal
    "soak driver": "n/a (the load generator)",
    "prometheus": "n/a (third party: its TSDB head grows until the 2-hour compaction)",
}


SETTLE = 3  # samples: "warm" is the median of the first SETTLE after the warm-up, "end" of the last SETTLE


def growth(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, dict[str, Any]]:
    """Per process and measure: warm (median of the first SETTLE samples at or after the warm-up), end (median of
    the last SETTLE), the peak, growth in %. Medians, so that an fd open at one sampling instant (a file being read,
    a connection being made) is not taken for growth; a leak grows in every sample."""
    warm = [s for s in samples if s["t_s"] >= warmup_s - 1e-6] or samples[-1:]
    out: dict[str, dict[str, Any]] = {}
    for name in samples[0]["processes"]:
        series = [s["processes"].get(name) for s in warm]
        if any(x is None for x in series):
            out[name] = {"gone": True}
            continue
        out[name] = {}
        for measure in MEASURES:
            if any(measure not in x for x in series):  # results written before the measure existed
                continue
            values = [x[measure] for x in series]
            start, end, peak = median(values[:SETTLE]), median(values[-SETTLE:]), max(values)
            out[name][measure] = {
                "warm": start,
                "end": end,
                "peak": peak,
                "growth_pct": 100.0 * (end - start) / start if start else 0.0,
                "peak_pct": 100.0 * (peak - start) / start if start else 0.0,
            }
    return out


def goals_met(grown: dict[str, dict[str, Any]]) -> bool:
    return all(
        not g.get("gone") and all(g[m]["growth_pct"] <= GOAL_PCT for m in JUDGED)
        for name, g in grown.items()
        if name not in NOT_JUDGED
    )


def write(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    from loadtests.soak.cli import OPTIONS

    samples, warmup_s = result["samples"], result["warmup_s"]
    grown = growth(samples, warmup_s)
    ok = goals_met(grown)
    args.out.mkdir(parents=True, exist_ok=True)
    command = command_line(getattr(args, "prog", "autonomic soak"), args, OPTIONS)
    headers = ["process", "RSS MB warm -> end (peak)", "RSS growth", "fds besides connections warm -> end (peak)"]
    headers += ["growth", "all fds warm -> end", "live TCP connections warm -> end", "threads warm -> end"]
    headers += ["goal (<= 10% RSS, fds besides connections)"]
    rows = []
    for name, g in grown.items():
        if g.get("gone"):
            rows.append([name, "exited during the soak", *["-"] * (len(headers) - 3), "FAILED"])
            continue
        r, h, f, c, t = g["rss_mb"], g["held_fds"], g["fds"], g["connections"], g["threads"]
        met = all(g[m]["growth_pct"] <= GOAL_PCT for m in JUDGED)
        rows.append(
            [
                name,
                f"{r['warm']:.1f} -> {r['end']:.1f} ({r['peak']:.1f})",
                f"{r['growth_pct']:+.1f}%",
                f"{h['warm']:g} -> {h['end']:g} ({h['peak']:g})",
                f"{h['growth_pct']:+.1f}%",
                f"{f['warm']:g} -> {f['end']:g} ({f['growth_pct']:+.0f}%)",
                f"{c['warm']:g} -> {c['end']:g}",
                f"{t['warm']:g} -> {t['end']:g}",
                NOT_JUDGED.get(name, "met" if met else "NOT MET"),
            ]
        )
    last = samples[-1]
    first_warm = next((s for s in samples if s["t_s"] >= warmup_s - 1e-6), last)
    gauges = Table("Picker and controller gauges (warm -> end)", ["gauge", "warm", "end"])
    for key in ("in_flight", "active_streams", "asyncio_tasks", "precise_index_blocks"):
        gauges.rows.append([f"picker {key}", fmt(first_warm["picker"][key], "g"), fmt(last["picker"][key], "g")])
    for key in ("cycles", "migrations"):
        gauges.rows.append(
            [f"controller {key}", fmt(first_warm["controller"][key], "g"), fmt(last["controller"][key], "g")]
        )
    load = last["load"]
    intro = [
        f"`{command}`",
        "",
        f"{last['t_s'] / 60:.1f} minutes, {len(samples)} samples; growth from the first sample after the "
        f"{warmup_s / 60:g}-minute warm-up to the last. Requests sent {load['sent']}, failed {load['failed']}. "
        f"Goals (RSS and open fds besides live TCP connections grow <= {GOAL_PCT:g}% for every service and twin; "
        "live connections follow the client's concurrency and are reported with the raw fd count; Prometheus and "
        f"the load generator are reported, not judged): {'met' if ok else 'NOT MET'}.",
    ]
    table = Table("Growth per process", headers, rows)
    plot = _plot(args.out / "soak.png", samples, warmup_s)
    footer = [f"![RSS and fds over time]({plot.name})"] if plot else []
    write_report(args.out, "Soak", intro, [table, gauges], footer)
    summary = {"command": command, "goals_met": ok, "growth": grown, "load": load, "samples": samples}
    write_json(args.out / "results.json", summary)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(f"requests sent {load['sent']}, failed {load['failed']}; goals {'met' if ok else 'NOT MET'}")
    print(f"report: {args.out / 'report.md'}")
    return summary


def _plot(path: Path, samples: list[dict[str, Any]], warmup_s: float) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax_rss, ax_fds) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    minutes = [s["t_s"] / 60 for s in samples]
    for name in samples[0]["processes"]:
        stats = [s["processes"].get(name) for s in samples]
        ax_rss.plot(minutes, [x["rss_mb"] if x else float("nan") for x in stats], label=name, marker=".")
        (line,) = ax_fds.plot(minutes, [x.get("held_fds", x["fds"]) if x else float("nan") for x in stats], marker=".")
        all_fds = [x["fds"] if x else float("nan") for x in stats]
        ax_fds.plot(minutes, all_fds, color=line.get_color(), linestyle=":", linewidth=1)
    for ax, label in ((ax_rss, "RSS (MB)"), (ax_fds, "fds besides connections\n(dotted: all fds)")):
        ax.axvline(warmup_s / 60, color="grey", linestyle="--", linewidth=1)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    ax_rss.set_yscale("log")
    ax_rss.legend(fontsize=7, ncol=2)
    ax_fds.set_xlabel("minutes (dashed: end of warm-up)")
    ax_rss.set_title("soak: resident memory and open file descriptors per process", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
