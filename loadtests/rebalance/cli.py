"""Rebalancing benchmark: no-op, descheduler-compatible and psi-relief on identical fresh cluster twins.

Why it exists: users choose a rebalancer on evidence (../shared/docs/benchmarks.md). One command runs each policy in
turn on a fresh cluster twin with a real Prometheus (`loadtests/rebalance/run.py`), over the same model time and
load trace, and reports node-minutes over the pressure threshold, peak and p95 pressure, migrations, failed
migrations, VMs moved more than once and GiB moved, beside the exact lower bound on moves
(`loadtests/rebalance/bound.py`). `descheduler-compatible` is the descheduler's profile as the operator's main
branch generates it (evictionLimits.node 2, KubevirtMigrationAware); `descheduler-compatible-ga`, the 4.21 GA one,
and `descheduler`, the real binary with the operator's 4.21 GA policy (`make descheduler`; skipped, saying why,
when not built), run when named (`loadtests/rebalance/arms.py`).

Cluster: the twin's default scenario (a hotspot on worker-0), or with `--nodes N --vms M` a generated one
(`sim/cluster/generator.py`: 8-core nodes, VMs packed unevenly), or with node shapes (`--node-cpus`,
`--node-memory-gib`, `--memory-fill`; `sim/cluster/cluster_shape.py`) a production-like one: u1 flavors, the memory
fill reached, every VM placed; `--hot-nodes` (default 1) of a generated cluster's most-subscribed nodes get their
VMs' CPU demand multiplied by `--hot-factor`, since trace load alone rarely contends. Or `--scenario FILE` (its
`generate:` section makes a mix of node shapes). `--vm-trace FILE` replaces
the VM load trace (same columns as the shared one). Times are model seconds; `--time-scale` model seconds pass per
wall second (the rate windows stay 3 wall seconds, 1 model minute at the default 20x).

    autonomic bench rebalance [--nodes N [--vms M] [--node-cpus C --node-memory-gib G --memory-fill F]
        | --scenario FILE] [--vm-trace FILE] [--duration 900]
        [--time-scale 20] [--interval 60] [--threshold 0.3] [--policies no-op,descheduler-compatible,psi-relief]
        [--out out/bench-rebalance]      (--policies also takes descheduler-compatible-ga, descheduler)

Output in --out: report.md, pressure.png, results.json (schema of issue 7) and runs.json (settings, the cluster's
node shapes, flavors and memory fill, every migration with its model times, the pressure series, pending VMs).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtests.rebalance.arms import ARMS, DEFAULT_ARMS
from sim.cluster.shape_options import add_shape_arguments, wants_shapes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, help="generate a cluster of N nodes (with --vms)")
    p.add_argument("--vms", type=int, help="generate M VMs packed unevenly over the nodes (with --nodes)")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated cluster and of trace assignment")
    add_shape_arguments(p)
    p.add_argument(
        "--hot-nodes", type=int, help="multiply the CPU demand on the N most-subscribed nodes (generated: 1)"
    )
    p.add_argument("--hot-factor", type=float, default=3.0, help="the CPU demand factor of --hot-nodes (3)")
    p.add_argument("--scenario", type=Path, help="a cluster twin scenario file (default: the twin's default)")
    p.add_argument(
        "--vm-trace", type=Path, help="VM load trace (CSV, optionally .gz; columns vm,minute,cpu_pct,mem_pct)"
    )
    p.add_argument("--duration", type=float, default=900.0, help="model seconds each policy runs (default 900)")
    p.add_argument("--time-scale", type=float, default=20.0, help="model seconds per wall second (default 20)")
    p.add_argument("--interval", type=float, default=60.0, help="model seconds between controller cycles (default 60)")
    p.add_argument("--warmup", type=float, default=240.0, help="model second at which the controller starts")
    p.add_argument("--threshold", type=float, default=0.30, help="CPU PSI some above which a node is over (0.3)")
    p.add_argument(
        "--policies",
        default=",".join(DEFAULT_ARMS),
        help=f"comma-separated, from {','.join(ARMS)} (default: %(default)s)",
    )
    p.add_argument(
        "--engine",
        choices=("live", "model"),
        default="live",
        help="live: real Prometheus and the API twin on the wall clock (default); model: the same models and "
        "controller code in discrete model time, in one process (days of load in minutes)",
    )
    p.add_argument(
        "--model-step", type=float, default=20.0, help="--engine model: model seconds between load samples (20)"
    )
    p.add_argument(
        "--jobs", type=int, default=1, help="--engine model: arms run in up to N processes at once (default 1)"
    )
    p.add_argument("--out", type=Path, default=Path("out/bench-rebalance"), help="output directory")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="autonomic bench rebalance", description=__doc__.splitlines()[0])
    add_arguments(p)
    return p.parse_args(argv)


def validate(args: argparse.Namespace) -> list[str]:
    """The policies to run; raises ValueError naming the bad option."""
    policies = [s.strip() for s in args.policies.split(",") if s.strip()]
    unknown = [p for p in policies if p not in ARMS]
    if unknown or not policies:
        raise ValueError(f"--policies: unknown {unknown}; choose from {','.join(ARMS)}")
    if len(set(policies)) != len(policies):
        raise ValueError(f"--policies: {args.policies!r} names a policy twice")
    shaped = wants_shapes(args)
    if shaped and args.nodes is None:
        raise ValueError("--node-cpus, --node-memory-gib and --memory-fill need --nodes")
    if not shaped and (args.nodes is None) != (args.vms is None):
        raise ValueError("--nodes and --vms go together (or give --memory-fill)")
    if args.nodes is not None and args.scenario is not None:
        raise ValueError("--scenario and --nodes/--vms are exclusive")
    if args.nodes is not None and (args.nodes < 2 or (args.vms is not None and args.vms < 1)):
        raise ValueError(f"--nodes must be >= 2 and --vms >= 1, got {args.nodes} and {args.vms}")
    for opt in ("duration", "time_scale", "interval"):
        if not getattr(args, opt) > 0:
            raise ValueError(f"--{opt.replace('_', '-')} must be > 0, got {getattr(args, opt)}")
    if args.hot_nodes is not None and args.hot_nodes < 0:
        raise ValueError(f"--hot-nodes must be >= 0, got {args.hot_nodes}")
    if not args.hot_factor > 0:
        raise ValueError(f"--hot-factor must be > 0, got {args.hot_factor}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if not 0 < args.threshold < 1:
        raise ValueError(f"--threshold must be in (0, 1), got {args.threshold}")
    if args.jobs < 1 or (args.jobs > 1 and args.engine != "model"):
        raise ValueError(f"--jobs must be >= 1, and above 1 only with --engine model, got {args.jobs}")
    if not 0 < args.model_step <= 60:
        raise ValueError(f"--model-step must be in (0, 60] (the queries' 1 m window), got {args.model_step}")
    for opt in ("scenario", "vm_trace"):
        path = getattr(args, opt)
        if path is not None and not path.is_file():
            raise ValueError(f"--{opt.replace('_', '-')}: no such file {path}")
    return policies


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    from loadtests.rebalance.report import cluster_text, text_table, write_report
    from loadtests.rebalance.run import (
        RunSettings,
        default_scenario,
        run_policies,
        run_policies_parallel,
        with_hotspots,
        with_trace,
    )
    from sim.cluster.cluster_shape import ShapeError, describe
    from sim.cluster.generator import generate
    from sim.cluster.prometheus import TelemetryError
    from sim.cluster.scenario import ScenarioError, load_scenario
    from sim.cluster.shape_options import shape_from_args, shaped_scenario
    from sim.cluster.vm_trace import TraceError, load_vm_trace

    try:
        policies = validate(args)
        if wants_shapes(args):
            scenario = shaped_scenario(shape_from_args(args))
            name = f"{args.nodes} nodes, {len(scenario.vms)} VMs (u1 flavors, memory fill)"
        elif args.nodes is not None:
            scenario, name = generate(args.nodes, args.vms, seed=args.seed), f"{args.nodes} nodes, {args.vms} VMs"
        elif args.scenario is not None:
            scenario, name = load_scenario(args.scenario), str(args.scenario)
        else:
            scenario, name = default_scenario(), "default scenario (hotspot on worker-0)"
        if args.vm_trace is not None:
            load_vm_trace(str(args.vm_trace))  # a bad trace is an option error, found before anything starts
        scenario = with_trace(scenario, args.vm_trace)
        hot_nodes = args.hot_nodes if args.hot_nodes is not None else (1 if args.nodes is not None else 0)
        if hot_nodes:
            scenario = with_hotspots(scenario, hot_nodes, args.hot_factor)
            name += f", CPU demand x{args.hot_factor:g} on the {hot_nodes} most-subscribed node(s)"
        if args.nodes is None and args.seed != 1:
            scenario = scenario.model_copy(update={"load": scenario.load.model_copy(update={"seed": args.seed})})
        settings = RunSettings(
            time_scale=args.time_scale,
            duration_s=args.duration,
            interval_s=args.interval,
            warmup_s=args.warmup,
            threshold=args.threshold,
        )
        settings.check()
    except (ValueError, ScenarioError, ShapeError, TraceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cluster = describe(scenario.nodes, scenario.vms)
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["autonomic bench rebalance", *(shlex.quote(a) for a in argv)])
    print(f"[bench rebalance] cluster: {cluster_text(cluster)}", flush=True)
    run_one = None
    if args.engine == "model":
        from functools import partial

        from loadtests.rebalance.model_engine import ModelSettings, run_policy_model

        run_one = partial(run_policy_model, model=ModelSettings(step_s=args.model_step))
    try:
        if run_one is not None and args.jobs > 1:
            comparison = run_policies_parallel(scenario, policies, settings, run_one, args.jobs, print_progress)
        else:
            comparison = run_policies(scenario, policies, settings, print_progress, run_one)
    except (TelemetryError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    title = f"rebalancing: {name}, {settings.duration_s / 60:g} model min per policy, {args.engine} engine"
    print("\n" + text_table(comparison, title))
    paths = write_report(
        comparison,
        args.out,
        command=command,
        settings={**dataclasses.asdict(settings), "engine": args.engine},
        scenario=name,
        cluster=cluster,
    )
    print(f"[bench rebalance] wrote {', '.join(str(p) for p in paths.values())}")
    return 1 if any(r.get("errors") for r in comparison["policies"].values()) else 0


def print_progress(message: str) -> None:
    """Progress lines (a module function: arms in other processes print with it too)."""
    print(f"[bench rebalance] {message}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
