"""`autonomic controller`: the PSI rebalancer as a process, until SIGINT/SIGTERM.

Flags override the config file (`--policy`, `--dry-run`); every configuration error is printed with its path and
the exit status is 2. Start-up problems (no cluster access, a port taken, caches that never sync) exit 1. Once the
caches are synced and the HTTP server listens, a `ready:` line is printed on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from common.kube_watch import read_json
from controller.clock import Clock, ScaledClock, WallClock
from controller.config import ConfigError, ControllerConfig, parse_config
from controller.service import ControllerOptions, RunningController, StartupError, kube_client, run_controller
from controller.sources.objects import timestamp


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "controller",
        help="run the PSI rebalancer (live-migrates KubeVirt VMs off pressured nodes)",
        description="Reads node pressure from Prometheus and cluster state from the Kubernetes API, and relieves "
        "pressured nodes by live-migrating KubeVirt VMs, with the descheduler-compatible or the psi-relief policy. "
        "See docs/controller.md.",
    )
    p.add_argument("--kubeconfig", type=Path, default=None, help="default: in-cluster, else $KUBECONFIG")
    p.add_argument("--prometheus-url", required=True, help="e.g. https://prometheus-k8s.openshift-monitoring:9091")
    p.add_argument("--prometheus-token-file", type=Path, default=None, help="bearer token, re-read every cycle")
    p.add_argument("--prometheus-insecure-skip-verify", action="store_true", help="do not verify Prometheus' TLS")
    p.add_argument("--config", type=Path, default=None, help="ControllerConfig YAML (docs/controller-policies.md)")
    p.add_argument("--policy", choices=["descheduler-compatible", "psi-relief"], default=None, help="overrides")
    p.add_argument("--dry-run", action="store_true", help="record and report every action, write nothing")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between cycles (default 60)")
    p.add_argument(
        "--min-interval", type=float, default=5.0, help="seconds between cycles woken by cluster events (default 5)"
    )
    p.add_argument(
        "--wake-on-events",
        choices=["auto", "yes", "no"],
        default="auto",
        help="run a cycle early when a migration ends or a node changes (auto: psi-relief only)",
    )
    p.add_argument("--metrics-host", default="0.0.0.0", help="address of /metrics, /healthz, /readyz")
    p.add_argument("--metrics-port", type=int, default=8080, help="0: any free port (default 8080)")
    p.add_argument("--no-leader-election", action="store_true", help="act without holding the Lease")
    p.add_argument("--lease-namespace", default="default")
    p.add_argument("--lease-name", default="autonomic-controller")
    p.add_argument("--identity", default=None, help="holder identity (default: hostname_pid_random)")
    # Shorter than client-go's 15/10/2: a standby takes over a crashed leader after the lease duration plus up to
    # two retry periods (about 10-14 s here; 16-18 s measured with 15 s, RELIABILITY.md "Chaos: controller").
    p.add_argument("--lease-duration", type=float, default=10.0, help="default 10 s")
    p.add_argument("--renew-deadline", type=float, default=7.0, help="default 7 s")
    p.add_argument("--retry-period", type=float, default=2.0, help="default 2 s")
    p.add_argument(
        "--twin-clock",
        action="store_true",
        help="follow the cluster twin's model clock (its /_twin/state), for a twin run with --time-scale",
    )


def load(args: argparse.Namespace) -> ControllerConfig:
    """The config file with the flags applied; raises ConfigError with every problem, each with its path."""
    data: Any = {}
    where = ""
    if args.config is not None:
        where = f"{args.config}: "
        try:
            data = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError([f"{args.config}: {exc.strerror or exc}"]) from None
        except yaml.YAMLError as exc:
            raise ConfigError([f"{args.config}: yaml: {exc}".replace("\n", " ")]) from None
        if not isinstance(data, dict):
            raise ConfigError([f"{args.config}: document: must be a mapping"])
    if args.policy:
        data["policy"] = args.policy
    if args.dry_run:
        data["dryRun"] = True
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError([where + e for e in exc.errors]) from None


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load(args)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"error: {error}", file=sys.stderr)
        return 2
    problems = [
        f"--{name}: must be > 0"
        for name, value in (("interval", args.interval), ("min-interval", args.min_interval))
        if value <= 0
    ]
    if not args.retry_period < args.renew_deadline < args.lease_duration:
        problems.append("--retry-period < --renew-deadline < --lease-duration is required")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 2
    try:
        clock = twin_clock(args.kubeconfig) if args.twin_clock else WallClock()
        opts = ControllerOptions(
            config=cfg,
            prometheus_url=args.prometheus_url,
            kubeconfig=args.kubeconfig,
            interval_s=args.interval,
            min_interval_s=args.min_interval,
            wake_on_events={"auto": None, "yes": True, "no": False}[args.wake_on_events],
            host=args.metrics_host,
            metrics_port=args.metrics_port,
            leader_election=not args.no_leader_election,
            lease_namespace=args.lease_namespace,
            lease_name=args.lease_name,
            identity=args.identity,
            lease_duration_s=args.lease_duration,
            renew_deadline_s=args.renew_deadline,
            retry_s=args.retry_period,
            prometheus_token_file=args.prometheus_token_file,
            prometheus_verify_tls=not args.prometheus_insecure_skip_verify,
            clock=clock,
        )
        return asyncio.run(_serve(opts))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _serve(opts: ControllerOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def ready(running: RunningController) -> None:
        print(running.ready_line(), flush=True)

    await run_controller(opts, stop, on_ready=ready)
    return 0


def _tls(api: client.ApiClient) -> ssl.SSLContext | None:
    """The kubeconfig's trust for the twin's admin endpoint (`cluster-sim --tls`); None over plain http."""
    cfg = api.configuration
    if not cfg.host.startswith("https://"):
        return None
    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if not cfg.verify_ssl:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def twin_clock(kubeconfig: Path | None, timeout_s: float = 60.0) -> Clock:
    """The twin's model clock: `wallTime` of its /_twin/state (older twins: namespace `default`'s creationTimestamp
    plus the model time), running at its time scale. The API is read too (namespace `default`). A transient
    answer (5xx, 429: an API under load, or a fault storm) is retried for up to `timeout_s`, as the caches'
    first sync is; anything else fails at once."""
    api = kube_client(kubeconfig)
    deadline, pause = time.monotonic() + timeout_s, 0.2
    try:
        while True:
            try:
                host = api.configuration.host.rstrip("/")
                with urllib.request.urlopen(f"{host}/_twin/state", timeout=10, context=_tls(api)) as resp:
                    state = json.loads(resp.read())
                read_at = time.monotonic()
                namespace: Any = client.CoreV1Api(api).read_namespace("default", _preload_content=False)
                created = timestamp(read_json(namespace)["metadata"].get("creationTimestamp"))
                break
            except ApiException as exc:
                if not (exc.status == 429 or (exc.status or 0) >= 500) or time.monotonic() + pause > deadline:
                    raise StartupError(f"--twin-clock: cannot read the twin's clock: {exc}") from None
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
            except Exception as exc:
                raise StartupError(f"--twin-clock: cannot read the twin's clock: {exc}") from None
    finally:
        api.close()
    if state.get("wallTime") is not None:  # the instant the twin stamps objects with, when it says so
        return ScaledClock(float(state["timeScale"]), float(state["wallTime"]), read_at)
    if created is None:
        raise StartupError("--twin-clock: namespace default has no creationTimestamp")
    return ScaledClock(float(state["timeScale"]), created + float(state["modelTime"]), read_at)
