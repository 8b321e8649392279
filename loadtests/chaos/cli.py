"""`autonomic chaos controller`: the controller under faults on the cluster twin and real Prometheus, judged.

Why it exists: issue 16 (reliability campaign). Each scenario (loadtests/chaos/scenarios.py) runs on a fresh twin
with the real `autonomic controller` as child process(es) (loadtests/chaos/controller.py); a summary table is
printed per scenario with pass/fail against each goal, `results.json` and `report.md` go to --out, and the exit
status is 1 when a goal is missed (2 for bad options).

    autonomic chaos controller [--scenarios all|fast|NAME,...] [--repeat N] [--out out/chaos-controller]

`autonomic chaos picker` runs the picker's campaign (loadtests/chaos/picker.py, also `python -m`).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loadtests.chaos.controller import Result
    from loadtests.chaos.scenarios import Scenario

HELP = "run a chaos campaign against a service on the twins and judge it (report.md, results.json)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chaos", help=HELP, description=HELP)
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    add_arguments(targets.add_parser("controller", help=__doc__.splitlines()[0], description=__doc__.splitlines()[0]))
    from loadtests.chaos import picker  # light: its machinery is imported when it runs

    first = (picker.__doc__ or "picker").splitlines()[0]
    picker.add_arguments(targets.add_parser("picker", help=first, description=first))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenarios", default="all", help="all, fast, or comma-separated names (default all)")
    p.add_argument("--repeat", type=int, default=1, help="run each scenario N times (default 1)")
    p.add_argument("--out", type=Path, default=Path("out/chaos-controller"), help="output directory")


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    if getattr(args, "target", "controller") == "picker":
        from loadtests.chaos import picker

        return picker.run(args)
    from loadtests.chaos.report import summary_table, write_report
    from loadtests.chaos.scenarios import by_name

    try:
        scenarios = by_name(args.scenarios)
        if args.repeat < 1:
            raise ValueError(f"--repeat must be >= 1, got {args.repeat}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["chaos", "controller"]:
        argv = argv[2:]
    command = " ".join(["autonomic chaos controller", *(shlex.quote(a) for a in argv)])
    started = time.monotonic()
    results = asyncio.run(run_campaign(scenarios, args.repeat, args.out))
    print("\n" + summary_table(results))
    paths = write_report(results, args.out, command=command, seconds=time.monotonic() - started)
    print(f"[chaos controller] wrote {', '.join(str(p) for p in paths)}")
    return 0 if all(r.passed for r in results) else 1


async def run_campaign(scenarios: Sequence[Scenario], repeat: int, out: Path) -> list[Result]:
    from loadtests.chaos.controller import run_scenario
    from loadtests.chaos.report import scenario_lines

    results = []
    runs = [s for s in scenarios for _ in range(repeat)]
    for i, scenario in enumerate(runs, 1):
        print(f"[chaos controller] {i}/{len(runs)} {scenario.name}: {scenario.what}", flush=True)
        result = await run_scenario(scenario, out, lambda m: print(f"[chaos controller]   {m}", flush=True))
        results.append(result)
        for line in scenario_lines(result):
            print(f"[chaos controller]   {line}", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="autonomic chaos controller", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
