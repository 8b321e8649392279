"""What a rebalancing comparison prints and writes: the side-by-side table, results.json, report.md, the plot.

Why it exists: the demo and `autonomic bench rebalance` show the same figures the same way; each figure comes
with its ratio to the baseline measured in the same run (no-op for pressure, descheduler-compatible, the operator's
main profile with KubevirtMigrationAware, for the migration counts, when they ran); the report lists what each arm
ran. `results.json` holds exactly the schema of issue 7:

    {"milp_lower_bound": n or null,
     "policies": {NAME: {"node_minutes_over": f, "peak_pressure": f, "p95_pressure": f, "migrations": n,
                         "failed_migrations": n, "pingpong_vms": n, "gib_moved": f}}}

and `runs.json` everything else (settings, the cluster's node shapes, flavors and memory fill, each move with its
model times, the pressure series, the VMs pending at each arm's start and end).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from loadtests.rebalance.figures import ratio

SCHEMA_KEYS = (
    "node_minutes_over",
    "peak_pressure",
    "p95_pressure",
    "migrations",
    "failed_migrations",
    "pingpong_vms",
    "gib_moved",
)
PRESSURE_BASELINE, MOVES_BASELINE = "no-op", "descheduler-compatible"
# key -> (label, format, baseline the ratio is taken to)
ROWS: dict[str, tuple[str, str, str]] = {
    "node_minutes_over": ("node-minutes over threshold", "{:.1f}", PRESSURE_BASELINE),
    "peak_pressure": ("peak CPU PSI", "{:.2f}", PRESSURE_BASELINE),
    "p95_pressure": ("p95 CPU PSI, hottest node", "{:.2f}", PRESSURE_BASELINE),
    "migrations": ("migrations (succeeded)", "{:d}", MOVES_BASELINE),
    "pingpong_vms": ("VMs moved more than once", "{:d}", MOVES_BASELINE),
    "failed_migrations": ("failed migrations", "{:d}", MOVES_BASELINE),
    "gib_moved": ("GiB moved", "{:.0f}", MOVES_BASELINE),
    "evictions_per_vm_day": ("evictions per VM per day (after the 1st hour)", "{:.3f}", MOVES_BASELINE),
    "cooldown_violations": ("moves within the VM's cooldown", "{:d}", MOVES_BASELINE),
}


def results_json(comparison: dict[str, Any]) -> dict[str, Any]:
    """The issue's schema, and nothing else."""
    return {
        "milp_lower_bound": comparison.get("milp_lower_bound"),
        "policies": {
            name: {k: r[k] for k in SCHEMA_KEYS} for name, r in comparison["policies"].items() if not r.get("errors")
        },
    }


def _cell(key: str, results: dict[str, dict[str, Any]], name: str) -> str:
    _, fmt, base_name = ROWS[key]
    value = results[name].get(key)
    if value is None:
        return "n/a"
    text = fmt.format(int(value) if fmt == "{:d}" else value)
    base = results.get(base_name)
    if base is not None and base.get(key) is None:
        base = None
    no_op_moves = name == PRESSURE_BASELINE and base_name == MOVES_BASELINE  # moves nothing by definition
    if base is not None and name != base_name and not no_op_moves:
        r = ratio(float(value), float(base[key]))
        text += f" ({r:.2f}x)" if r is not None else ""
    return text


def bound_text(comparison: dict[str, Any]) -> str:
    """The MILP bound as a cell: the number when exact, ">= n (how)" when only a lower bound was proven."""
    bound, kind = comparison.get("milp_lower_bound"), comparison.get("milp_bound_kind", "exact")
    if bound is None:
        return "n/a"
    return str(bound) if kind == "exact" else f">= {bound} ({kind})"


def table_rows(comparison: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    results = comparison["policies"]
    names = list(results)
    rows = [(label, [_cell(key, results, n) for n in names]) for key, (label, _, _) in ROWS.items()]
    rows.append(("fewest moves possible (MILP)", [bound_text(comparison)] * len(names)))
    rows.append(("VMs pending at the end", [str(results[n].get("pending_vms", "n/a")) for n in names]))
    rows.append(("wall seconds", [f"{results[n]['wall_s']:.0f}" if "wall_s" in results[n] else "n/a" for n in names]))
    return names, rows


def cluster_text(cluster: dict[str, Any] | None) -> str:
    """One line: node shapes, VM flavors, memory fill (cluster_shape.describe)."""
    if not cluster:
        return "n/a"
    shapes = ", ".join(f"{n} x {shape}" for shape, n in cluster["node_shapes"].items())
    flavors = ", ".join(f"{n} {name}" for name, n in cluster["flavors"].items())
    fill = cluster.get("memory_fill")
    fill_text = "n/a" if fill is None else f"{100 * fill:.1f}% of allocatable memory requested"
    return f"{shapes}; {cluster['vms']} VMs ({flavors}); {fill_text}; {cluster['unplaced_vms']} VMs without a node"


def text_table(comparison: dict[str, Any], title: str) -> str:
    names, rows = table_rows(comparison)
    w0 = max(len(k) for k, _ in rows)
    widths = [max(len(n), *(len(v[i]) for _, v in rows)) for i, n in enumerate(names)]
    lines = [
        f"=== {title} ===",
        "  " + " " * w0 + "  " + "  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True)),
    ]
    for k, vals in rows:
        lines.append("  " + k.ljust(w0) + "  " + "  ".join(v.rjust(w) for v, w in zip(vals, widths, strict=True)))
    lines.append(f"  (ratios: pressure to {PRESSURE_BASELINE}, migrations to {MOVES_BASELINE}, measured in this run)")
    for name, r in comparison["policies"].items():
        for e in r.get("errors", []):
            lines.append(f"  {name} error: {e}")
    for name, why in (comparison.get("skipped") or {}).items():
        lines.append(f"  {name} skipped: {why}")
    return "\n".join(lines)


def markdown_table(comparison: dict[str, Any]) -> str:
    names, rows = table_rows(comparison)
    out = ["| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    out += ["| " + k + " | " + " | ".join(v) + " |" for k, v in rows]
    return "\n".join(out)


def plot(comparison: dict[str, Any], path: Path, threshold: float, title: str) -> Path | None:
    """Per policy over model time: the hottest node's CPU PSI (top) and the migrations completed so far (bottom):
    relief against what it cost. (The descheduler score is sampled too, in runs.json, but its highest value is
    pinned at 1 whenever any node deviates, so it says little in a plot.)"""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for name, r in comparison["policies"].items():
        series = r.get("series") or {}
        minutes = series.get("model_minutes") or []
        if not minutes:
            continue
        grid = np.array(list(series["cpu_psi"].values()), dtype=float)
        if not grid.size:
            continue
        hottest = np.where(np.isnan(grid), -np.inf, grid).max(axis=0)
        (line,) = top.plot(minutes, np.where(np.isfinite(hottest), hottest, np.nan), label=name)
        ended = sorted(
            m["ended_min"] for m in r.get("moves", []) if m["phase"] == "Succeeded" and m.get("ended_min") is not None
        )
        xs = [0.0, *ended, minutes[-1]]
        ys = [0, *range(1, len(ended) + 1), len(ended)]
        bottom.step(xs, ys, where="post", color=line.get_color(), label=name)
    top.axhline(threshold, color="black", ls="--", lw=0.8, label=f"threshold {threshold:g}")
    top.set_ylim(bottom=0)
    top.set_ylabel("CPU PSI some, hottest node")
    bottom.set_ylabel("migrations completed")
    bottom.set_xlabel("model minutes since the controller started")
    top.set_title(title, fontsize=9)
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    top.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def moves_markdown(comparison: dict[str, Any]) -> str:
    lines = []
    for name, r in comparison["policies"].items():
        moves = r.get("moves") or []
        lines.append(f"**{name}**: {len(moves)} migration object(s)")
        for m in moves:
            when = f"model minute {m['started_min']:.2f}" if m.get("started_min") is not None else "not started"
            why = f" ({m['why'][0]})" if m.get("why") else ""
            lines.append(f"- {m['vmi']}: {m['source'] or '?'} -> {m['target'] or '?'}, {m['phase']}, {when}{why}")
        lines.append("")
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """NaN (no sample) as null, so that the files are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_report(
    comparison: dict[str, Any],
    out: Path,
    *,
    command: str,
    settings: dict[str, Any],
    scenario: str,
    cluster: dict[str, Any] | None = None,
) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    threshold = float(settings["threshold"])
    paths = {"results": out / "results.json", "runs": out / "runs.json", "report": out / "report.md"}
    paths["results"].write_text(json.dumps(json_safe(results_json(comparison)), indent=2, allow_nan=False) + "\n")
    runs = {"settings": settings, "scenario": scenario, "cluster": cluster, **comparison}
    paths["runs"].write_text(json.dumps(json_safe(runs), allow_nan=False) + "\n")
    png = plot(comparison, out / "pressure.png", threshold, f"Rebalancing: {scenario}")
    if png is not None:
        paths["plot"] = png
    bound = comparison.get("milp_lower_bound")
    lines = [
        "# Rebalancing benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Scenario: {scenario}. Each policy ran on a fresh cluster twin with a real Prometheus, "
        f"{settings['duration_s'] / 60:g} model minutes from model second {settings['warmup_s']:g} (or as soon "
        "after as the scores were in Prometheus; each arm's start is in runs.json), "
        f"time scale {settings['time_scale']:g}x, one controller cycle every {settings['interval_s']:g} model s. "
        f"A node is over when its CPU PSI some exceeds {threshold:g}.",
        "",
        f"Cluster: {cluster_text(cluster)}.",
        "",
        markdown_table(comparison),
        "",
        "Ratios in parentheses: pressure figures to `no-op`, migration figures to `descheduler-compatible` (the "
        "descheduler's profile as the operator's main branch generates it), both measured in this run.",
        "",
        "Arms:",
        "",
        *(f"- **{name}**: {r.get('controller', '?')}" for name, r in comparison["policies"].items()),
        *(f"- **{name}**: skipped, {why}" for name, why in (comparison.get("skipped") or {}).items()),
        "",
        "Fewest moves possible (MILP, `loadtests/rebalance/bound.py`): "
        + (
            f"{bound_text(comparison)} move(s): no placement of the VMs' demands at the start brings every node under "
            "the threshold with fewer (a lower bound: it ignores selectors, taints and time; 'time-limited' is what "
            "the solver had proven when its time ran out, 'LP relaxation' the relaxed optimum rounded up, for "
            "instances too large for the exact search)."
            if bound is not None
            else "not computed (no feasible placement, or nothing proven within the solver's time limit)."
        ),
        "",
    ]
    if png is not None:
        lines += ["![pressure over time](pressure.png)", ""]
    lines += ["## Migrations", "", moves_markdown(comparison)]
    errors = [f"- {n}: {e}" for n, r in comparison["policies"].items() for e in r.get("errors", [])]
    if errors:
        lines += ["## Errors", "", *errors, ""]
    paths["report"].write_text("\n".join(lines))
    return paths
