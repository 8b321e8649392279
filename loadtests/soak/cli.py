"""`autonomic soak`: the routing stack and the controller under steady load for N minutes; reports resource growth.

Why it exists (issue 16, reliability campaign): a leak shows only with time. This runs Envoy + `autonomic picker`
(precise profile) + the fleet twin under steady open-loop load and, at the same time, `autonomic controller` on the
cluster twin with its real Prometheus, samples every process' RSS, open fds (split into live TCP connections and the
rest) and threads (plus the picker's in-flight, stream, asyncio-task and index gauges and the controller's cycles)
every `--sample-seconds`, and reports growth after the warm-up against the goal (<= 10% for RSS and for the fds
besides live connections, which follow the client's concurrency; loadtests/soak/sampler.py). Writes report.md,
results.json and soak.png in --out; exits 0 when the goals are met, 1 when not, 2 on bad options.

    autonomic soak --minutes 30 --out out/soak
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtests.entry import module_main

HELP = "run the picker and the controller under steady load for minutes and report resource growth"
OPTIONS = (
    "minutes",
    "warmup_minutes",
    "sample_seconds",
    "rate",
    "servers",
    "time_scale",
    "num_gpu_blocks",
    "nodes",
    "vms",
    "cluster_time_scale",
    "out",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=30.0, help="length of the soak (default 30)")
    p.add_argument("--warmup-minutes", type=float, default=5.0, help="excluded from the growth (default 5)")
    p.add_argument("--sample-seconds", type=float, default=60.0, help="seconds between samples (default 60)")
    p.add_argument("--rate", type=float, default=20.0, help="open-loop requests per second (default 20)")
    p.add_argument("--servers", type=int, default=3, help="fleet twin servers (default 3)")
    p.add_argument("--time-scale", type=float, default=20.0, help="the fleet twin's time scale (default 20)")
    p.add_argument(
        "--num-gpu-blocks",
        type=int,
        default=2048,
        help="the fleet twins' KV-cache blocks (default 2048: full within the warm-up, so the caches and the "
        "picker's index of them reach their steady size before growth is judged; the profile's 28150 take ~35 min)",
    )
    p.add_argument("--nodes", type=int, default=6, help="cluster twin nodes (default 6)")
    p.add_argument("--vms", type=int, default=24, help="cluster twin VMs (default 24)")
    p.add_argument("--cluster-time-scale", type=float, default=10.0, help="the cluster twin's time scale (default 10)")
    p.add_argument("--out", type=Path, default=Path("out/soak"), help="output directory")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soak", help=HELP, description=HELP)
    add_arguments(p)


def validate(args: argparse.Namespace) -> None:
    if args.minutes <= 0 or not 0 <= args.warmup_minutes < args.minutes:
        raise ValueError("--minutes must be > 0 and --warmup-minutes in [0, minutes)")
    if args.sample_seconds <= 0 or args.sample_seconds > args.minutes * 60:
        raise ValueError("--sample-seconds must be > 0 and at most the soak's length")
    if (
        min(args.rate, args.time_scale, args.cluster_time_scale) <= 0
        or args.servers < 1
        or args.nodes < 2
        or args.num_gpu_blocks < 64
    ):
        raise ValueError("--rate and the time scales must be > 0, --servers >= 1, --nodes >= 2, --num-gpu-blocks >= 64")


def run(args: argparse.Namespace) -> int:
    try:
        validate(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from loadtests.soak.report import write
    from loadtests.soak.run import soak

    summary = write(args, asyncio.run(soak(args)))
    return 0 if summary["goals_met"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    return module_main("python -m loadtests.soak.cli", HELP, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
