"""The picker chaos campaign's summary table (printed), report.md and results.json in --out."""

from __future__ import annotations

import argparse
from typing import Any

from loadtests.report.writer import Table, command_line, fmt, write_json, write_report

HEADERS = [
    "scenario",
    "sent",
    "failed (before/during/after)",
    "answered to failures",
    "taken out",
    "last pick to victim",
    "victim picked again",
    "errors until",
    "p99 ms before/during",
    "recovered",
]


def _s(x: float | None) -> str:
    return fmt(x, ".2f", " s")


def row(r: dict[str, Any]) -> list[str]:
    by = r["failed_by_phase"]
    answers = "; ".join(f"{n}x {a}" for a, n in r["answers"].items()) or "-"
    p99 = r["p99_ms"]
    return [
        r["scenario"],
        str(r["sent"]),
        f"{r['failed']} ({by['before']}/{by['during']}/{by['after']})",
        answers,
        _s(r["taken_out_s"]),
        _s(r["last_pick_during_fault_s"]),
        _s(r["victim_picked_again_s"]),
        f"+{r['errors_until_s']:.2f} s",
        f"{fmt(p99['before'], '.0f')}/{fmt(p99['during'], '.0f')}",
        "yes" if r["recovered"] else "NO",
    ]


def write(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    from loadtests.chaos.picker import OPTIONS

    args.out.mkdir(parents=True, exist_ok=True)
    prog = getattr(args, "prog", "python -m loadtests.chaos.picker")
    command = command_line(prog, args, OPTIONS)
    table = Table("Scenarios", HEADERS, [row(r) for r in results])
    table.notes = [
        "taken out / last pick to victim: seconds after the fault began; victim picked again / errors until: seconds "
        "after it ended. '-' = never (e.g. a replica answering 500 is never taken out: its /metrics still answer).",
        "",
        "| scenario | picker counters during the run |",
        "|---|---|",
        *(
            f"| {r['scenario']} | "
            + ", ".join(f"{k} {v:g}" for k, v in r["picker"].items() if isinstance(v, int | float) and v)
            + " |"
            for r in results
        ),
    ]
    intro = [
        f"`{command}`",
        "",
        f"Open loop at {args.rate:g} req/s through Envoy + `autonomic picker` (precise profile) to "
        f"{args.servers} fleet twins at time scale {args.time_scale:g}; fault {args.fault_seconds:g} s after a "
        f"{args.baseline_seconds:g} s baseline; a fresh stack per scenario.",
    ]
    write_report(args.out, "Chaos: picker", intro, [table], [])
    write_json(args.out / "results.json", {"command": command, "scenarios": results})
    widths = [max(len(h), *(len(row(r)[i]) for r in results)) for i, h in enumerate(HEADERS)]
    keep = [0, 1, 2, 4, 5, 6, 7, 8, 9]  # the answers column is in report.md (too wide for a terminal)
    print("  ".join(HEADERS[i].ljust(widths[i]) for i in keep))
    for r in results:
        cells = row(r)
        print("  ".join(cells[i].ljust(widths[i]) for i in keep))
    print(f"report: {args.out / 'report.md'}")
