"""The chaos campaign's outputs: a line per goal while it runs, the summary table, results.json and report.md.

Why it exists: the figures must be readable at a glance (one row per scenario run, pass/fail per goal) and
reproducible (the exact command first in report.md, every figure in results.json).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtests.chaos.controller import Result

COLUMNS = (
    "scenario",
    "result",
    "duplicates",
    "untrusted actions",
    "skips",
    "untrusted nodes",
    "max in flight",
    "takeover s",
    "acted",
)


def _row(r: Result) -> list[str]:
    f = r.figures
    skips = ", ".join(f"{k} {v}" for k, v in sorted((f.get("skips") or {}).items())) or "-"
    acted = f"after {f['recovered_s']} s" if "recovered_s" in f else (f"{f.get('migrations', 0)} migr.")
    if r.scenario.kind == "degraded":
        acted = f"{f.get('acted_elsewhere', 0)} migr. elsewhere" + (
            f"; {r.scenario.bad_node} after {f['recovered_s']} s" if "recovered_s" in f else ""
        )
    untrusted = ", ".join(f"{n.replace(',', ' ')}" for n in f.get("untrusted_reported", []))
    cycles = sum((f.get("untrusted") or {}).values())
    untrusted = f"{untrusted} x{cycles}" if untrusted else "-"
    return [
        r.scenario.name,
        "PASS" if r.passed else "FAIL",
        str(f.get("duplicates", "?")),
        str(f.get("untrusted_actions", "-")),
        skips,
        untrusted,
        f"{f.get('max_in_flight', '?')} ({f.get('max_in_flight_per_node', '?')}/node)",
        str(f.get("takeover_s", "-")),
        acted,
    ]


def scenario_lines(r: Result) -> list[str]:
    lines = [f"{'ok ' if ok else 'MISS'} {goal}" for goal, ok in r.goals.items()]
    if r.error:
        lines.append(f"ERROR {r.error}")
    return [*lines, f"{'PASS' if r.passed else 'FAIL'} in {r.seconds} s"]


def summary_table(results: Sequence[Result]) -> str:
    rows = [list(COLUMNS), *(_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    missed = [f"{r.scenario.name}: {g}" for r in results for g, ok in r.goals.items() if not ok]
    missed += [f"{r.scenario.name}: {r.error}" for r in results if r.error]
    passed = sum(r.passed for r in results)
    lines.append(
        f"\n{passed}/{len(results)} scenario runs passed" + ("" if not missed else "; missed: " + "; ".join(missed))
    )
    return "\n".join(lines)


def as_json(r: Result) -> dict[str, Any]:
    s = r.scenario
    return {
        "scenario": s.name,
        "what": s.what,
        "kind": s.kind,
        "expect_skip": s.expect_skip,
        "expect_untrusted": s.expect_untrusted,
        "passed": r.passed,
        "goals": r.goals,
        "figures": r.figures,
        "error": r.error,
        "seconds": r.seconds,
    }


def write_report(results: Sequence[Result], out: Path, *, command: str, seconds: float) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = {"command": command, "seconds": round(seconds, 1), "runs": [as_json(r) for r in results]}
    (out / "results.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    md = [f"# Chaos: controller\n\n`{command}` ({seconds / 60:.1f} min)\n"]
    md.append("| " + " | ".join(COLUMNS) + " |")
    md.append("|" + "---|" * len(COLUMNS))
    md += ["| " + " | ".join(_row(r)) + " |" for r in results]
    md.append("\n## Goals per scenario run\n")
    for r in results:
        md.append(f"- **{r.scenario.name}** ({r.scenario.what}): " + "; ".join(scenario_lines(r)))
    (out / "report.md").write_text("\n".join(md) + "\n")
    return [out / "results.json", out / "report.md"]
