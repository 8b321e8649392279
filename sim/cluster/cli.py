"""`autonomic cluster-sim`: the Kubernetes + KubeVirt API twin (and, with part 2, PSI metrics and Prometheus)
until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from sim.cluster.generator import generate
from sim.cluster.scenario import ScenarioError, default_scenario_path, load_scenario
from sim.cluster.server import serve
from sim.cluster.state_view import TelemetryOptions


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster-sim",
        help="run the Kubernetes + KubeVirt API twin",
        description="A Kubernetes API server twin on 127.0.0.1 with KubeVirt's eviction and live-migration "
        "behaviour. Prints 'kubeconfig: PATH' and 'prometheus: URL' once ready. Without --scenario or "
        "--nodes it loads the shipped default scenario.",
    )
    p.add_argument("--nodes", type=int, default=None, help="generate N worker nodes (8 cores, 32 GiB)")
    p.add_argument("--vms", type=int, default=None, help="generate M VMs (1-4 vCPU, 2-8 GiB) packed unevenly")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated scenario (default 1)")
    p.add_argument("--scenario", default=None, help="scenario YAML file (see docs/cluster-twin.md)")
    p.add_argument("--port", type=int, default=6443, help="API port on 127.0.0.1 (default 6443, 0 = any free port)")
    p.add_argument("--prometheus-port", type=int, default=None, help="Prometheus port (default: a free one)")
    p.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    p.add_argument("--time-scale", type=float, default=1.0, help="model seconds per real second (default 1)")
    p.add_argument("--kubeconfig", default=None, help="where to write the kubeconfig (default: a temp file)")


def run(args: argparse.Namespace) -> int:
    if args.time_scale <= 0:
        print("error: --time-scale must be > 0", file=sys.stderr)
        return 2
    if args.scenario and (args.nodes is not None or args.vms is not None):
        print("error: use either --scenario or --nodes/--vms", file=sys.stderr)
        return 2
    try:
        if args.nodes is not None or args.vms is not None:
            scenario = generate(
                args.nodes if args.nodes is not None else 4, args.vms if args.vms is not None else 0, seed=args.seed
            )
        else:
            scenario = load_scenario(args.scenario or default_scenario_path())
    except (ScenarioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = TelemetryOptions(
        prometheus=not args.no_prometheus, prometheus_port=args.prometheus_port, time_scale=args.time_scale
    )
    try:
        return asyncio.run(
            serve(
                scenario,
                port=args.port,
                time_scale=args.time_scale,
                options=options,
                kubeconfig_path=Path(args.kubeconfig) if args.kubeconfig else None,
            )
        )
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
