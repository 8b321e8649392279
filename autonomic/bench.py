"""`autonomic bench <name>`: the benchmarks, one sub-subcommand each, all writing report.md, plots and results.json.

Why it exists: one entry point for every comparison (issue 7), each living beside its code in `loadtests/`. A
benchmark module provides `add_arguments(parser)`, `run(args, argv) -> int` (argv: the arguments after the
benchmark's name, echoed in its report) and a first docstring line used as help. Register it in `BENCHMARKS`;
modules are imported only when the `bench` parser is built, and should import their heavy dependencies in `run`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# benchmark -> module with add_arguments(parser) and run(args, argv)
BENCHMARKS = {
    "rebalance": "loadtests.rebalance.cli",
    "routing": "loadtests.routing.cli",
    "picker": "loadtests.picker.cli",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and write its report (report.md, plots, results.json)")
    benches = p.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or name).strip().splitlines()[0]
        module.add_arguments(benches.add_parser(name, help=doc, description=doc))


def _own_argv(name: str) -> list[str]:
    """The command line after `bench <name>` (for the report's exact command)."""
    argv = sys.argv[1:]
    for i in range(len(argv) - 1):
        if argv[i] == "bench" and argv[i + 1] == name:
            return argv[i + 2 :]
    return argv


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(BENCHMARKS[args.bench])
    return int(module.run(args, _own_argv(args.bench)) or 0)
