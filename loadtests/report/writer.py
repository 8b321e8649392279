"""Writes a benchmark's output directory: report.md (markdown tables), results.json and a CDF plot (PNG).

Why it exists: every `autonomic bench ...` command leaves the same kind of directory, so anyone can read the
report, diff `results.json` between runs and look at the plot; one writer keeps them alike. Figures that are not
numbers (a router that could not run) are reported as text, never as a silent zero.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", "| " + " | ".join(self.headers) + " |"]
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines += ["", *self.notes]
        return "\n".join(lines)


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`; NaN when there are none (a table shows it as '-')."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def fmt(value: float | int | None, spec: str = ".3f", suffix: str = "") -> str:
    """A number for a table cell; NaN and None become '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{spec}}{suffix}"


def command_line(prog: str, args: argparse.Namespace, options: Sequence[str]) -> str:
    """The command that repeats this run: every option given explicitly, from the parsed arguments (so defaults
    that change later do not change what a report says it ran); lists are written comma-separated."""
    parts = [prog]
    for dest in options:
        value = getattr(args, dest)
        text = (
            ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, list) else value
        )
        text = f"{text:g}" if isinstance(text, float) else str(text)
        parts += [f"--{dest.replace('_', '-')}", shlex.quote(text)]
    return " ".join(parts)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n")
    return path


def plot_cdf(path: Path, series: Mapping[str, Sequence[float]], *, xlabel: str, title: str) -> Path | None:
    """One empirical CDF per series on a log x axis; None when matplotlib is missing or nothing is positive."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = 0
    for name, values in series.items():
        v = sorted(x for x in values if x > 0 and math.isfinite(x))
        if v:
            ax.plot(v, [(i + 1) / len(v) for i in range(len(v))], label=name)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of requests")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out: Path, title: str, intro: Sequence[str], tables: Sequence[Table], footer: Sequence[str]) -> Path:
    parts = [f"# {title}", "", *intro, ""]
    for table in tables:
        parts += [table.markdown(), ""]
    parts += list(footer)
    path = out / "report.md"
    path.write_text("\n".join(parts).rstrip() + "\n")
    return path
