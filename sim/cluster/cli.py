"""`autonomic cluster-sim`: the Kubernetes + KubeVirt API twin, VM load and PSI as node-exporter metrics, and a
real Prometheus with the descheduler's recording rules, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from sim.cluster.cluster_shape import ShapeError
from sim.cluster.generator import generate
from sim.cluster.scenario import ScenarioError, default_scenario_path, load_scenario
from sim.cluster.server import serve
from sim.cluster.shape_options import add_shape_arguments, shape_from_args, shaped_scenario, wants_shapes
from sim.cluster.state_view import TelemetryOptions


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster-sim",
        help="run the Kubernetes + KubeVirt API twin",
        description="A Kubernetes API server twin on 127.0.0.1 with KubeVirt's eviction and live-migration "
        "behaviour, VM load from a real trace, node PSI as node-exporter metrics and a real Prometheus with the "
        "descheduler's recording rules. Prints 'kubeconfig: PATH' and 'prometheus: URL' once ready. Without "
        "--scenario or --nodes it loads the shipped default scenario.",
    )
    p.add_argument(
        "--nodes", type=int, default=None, help="generate N worker nodes (8 cores, 32 GiB; see node shapes below)"
    )
    p.add_argument(
        "--vms", type=int, default=None, help="generate M VMs (1-4 vCPU, 2-8 GiB packed unevenly; or u1 flavors)"
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the generated scenario (default 1)")
    add_shape_arguments(p)
    p.add_argument("--scenario", default=None, help="scenario YAML file (see docs/cluster-twin.md)")
    p.add_argument("--port", type=int, default=6443, help="API port on 127.0.0.1 (default 6443, 0 = any free port)")
    p.add_argument("--prometheus-port", type=int, default=None, help="Prometheus port (default: a free one)")
    p.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    p.add_argument("--time-scale", type=float, default=1.0, help="model seconds per real second (default 1)")
    p.add_argument("--kubeconfig", default=None, help="where to write the kubeconfig (default: a temp file)")
    p.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a CA of its own, written beside the kubeconfig (<kubeconfig>-ca.crt) and embedded in "
        "it, and lay out a service-account directory (token, ca.crt, namespace) for in-cluster clients",
    )
    p.add_argument(
        "--serviceaccount-dir",
        default=None,
        help="with --tls: where to write token, ca.crt and namespace (default: serviceaccount/ beside the "
        "kubeconfig; /var/run/secrets/kubernetes.io/serviceaccount for client-go's rest.InClusterConfig)",
    )
    p.add_argument("--scrape-interval", type=float, default=5.0, help="Prometheus scrape interval, s (default 5)")
    p.add_argument(
        "--rate-window", default="1m", help="window of the recording rules' rates (default 1m, as the reference)"
    )
    p.add_argument("--rule-interval", default="30s", help="recording-rule evaluation interval (default 30s)")
    p.add_argument("--exporter-port", type=int, default=None, help="node-exporter port (default: a free one)")
    p.add_argument(
        "--scrape",
        action="append",
        default=[],
        metavar="JOB=HOST:PORT[/PATH]",
        help="also scrape this target (e.g. the controller's metrics, for the cooldown rules); repeatable",
    )


def run(args: argparse.Namespace) -> int:
    from sim.cluster.prometheus import TelemetryError  # numpy, aiohttp client: only when the command runs
    from sim.cluster.prometheus_config import parse_scrape_target

    if args.time_scale <= 0:
        print("error: --time-scale must be > 0", file=sys.stderr)
        return 2
    if args.scenario and (args.nodes is not None or args.vms is not None or wants_shapes(args)):
        print(
            "error: use either --scenario or --nodes/--vms (a scenario's generate: section sets shapes)",
            file=sys.stderr,
        )
        return 2
    try:
        if wants_shapes(args):
            scenario = shaped_scenario(shape_from_args(args))
        elif args.nodes is not None or args.vms is not None:
            scenario = generate(
                args.nodes if args.nodes is not None else 4, args.vms if args.vms is not None else 0, seed=args.seed
            )
        else:
            scenario = load_scenario(args.scenario or default_scenario_path())
    except (ScenarioError, ShapeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.serviceaccount_dir and not args.tls:
        print("error: --serviceaccount-dir needs --tls (in-cluster clients only speak https)", file=sys.stderr)
        return 2
    if args.scrape_interval <= 0:
        print("error: --scrape-interval must be > 0", file=sys.stderr)
        return 2
    try:
        extra = tuple(parse_scrape_target(spec) for spec in args.scrape)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = TelemetryOptions(
        prometheus=not args.no_prometheus,
        prometheus_port=args.prometheus_port,
        time_scale=args.time_scale,
        load=scenario.load,
        scrape_interval_s=args.scrape_interval,
        rate_window=args.rate_window,
        rule_interval=args.rule_interval,
        exporter_port=args.exporter_port,
        extra_scrape_targets=extra,
    )
    try:
        return asyncio.run(
            serve(
                scenario,
                port=args.port,
                time_scale=args.time_scale,
                options=options,
                kubeconfig_path=Path(args.kubeconfig) if args.kubeconfig else None,
                tls=args.tls,
                service_account_dir=Path(args.serviceaccount_dir) if args.serviceaccount_dir else None,
            )
        )
    except (OSError, TelemetryError, ScenarioError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
