"""`autonomic picker`: run the endpoint picker; `autonomic picker explain`: ask a running one why.

Why it exists: the command-line contract of the picker (flags, exit codes, the `ready:` line that the demo and the
benchmarks wait for) lives here, apart from the process wiring (`scorer.service`) and the explain client
(`scorer.explain_cli`). `explain` is an optional sub-action, so `autonomic picker --endpoints ...` keeps working:
picker flags go before it, explain flags after it.

Exit codes: 0 after a graceful shutdown (SIGTERM/SIGINT), 2 for a bad config, endpoint list or flag (the message
names the path of every problem), 1 when a port cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from scorer import explain_cli
from scorer.byte_size import format_byte_size, parse_byte_size
from scorer.extproc.body_budget import MAX_BODY_BYTES, MAX_BUFFERED_BODY_BYTES

if TYPE_CHECKING:
    from scorer.extproc.tls import CertSource
    from scorer.service import PickerOptions
    from scorer.sources.inferencepool import PoolRef

DEFAULTS = {"port": 9002, "health_port": 9003, "metrics_port": 9090}


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0..65535 (0: any free port), got {value}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative number of seconds, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _body_budget(text: str) -> int:
    try:
        value = parse_byte_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < MAX_BODY_BYTES:
        raise argparse.ArgumentTypeError(
            f"must hold at least one body at the picker's limit ({format_byte_size(MAX_BODY_BYTES)}), got {text}"
        )
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "picker",
        help="run the inference endpoint picker (Envoy ext_proc, GIE protocol)",
        description="Serve Envoy's ext_proc and the autonomic.picker.v1.Picker API on --port, gRPC health on "
        "--health-port, Prometheus metrics (/metrics, /healthz, /readyz) on --metrics-port; scrape every endpoint's "
        "vLLM /metrics every --scrape-interval. Prints 'ready: ext_proc=HOST:PORT health=... metrics=...' once "
        "serving. 'autonomic picker explain --help' explains a decision of a running picker.",
    )
    p.add_argument("--config", type=Path, help="EndpointPickerConfig YAML (default: the shipped default profile)")
    p.add_argument("--endpoints", default="", help="comma-separated HOST:PORT of the model servers")
    p.add_argument("--endpoints-file", type=Path, help="YAML file: endpoints: [HOST:PORT | {address, name, labels}]")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=DEFAULTS["port"], help="ext_proc + Picker API (default 9002)")
    p.add_argument("--health-port", type=_port, default=DEFAULTS["health_port"], help="gRPC health (default 9003)")
    p.add_argument("--metrics-port", type=_port, default=DEFAULTS["metrics_port"], help="Prometheus (default 9090)")
    p.add_argument("--scrape-interval", type=_positive, default=0.1, help="seconds between scrapes (default 0.1)")
    p.add_argument("--scrape-timeout", type=_positive, default=1.0, help="per-scrape timeout in seconds (default 1)")
    p.add_argument(
        "--staleness", type=_positive, default=2.0, help="metrics older than this take an endpoint out (default 2)"
    )
    p.add_argument(
        "--eject-after-errors",
        type=_non_negative_int,
        default=5,
        help="consecutive 5xx responses that take an endpoint out for --ejection-seconds (0: never; default 5)",
    )
    p.add_argument(
        "--ejection-seconds", type=_positive, default=5.0, help="how long an ejected endpoint stays out (default 5)"
    )
    p.add_argument(
        "--drain-seconds", type=_non_negative, default=5.0, help="grace for open streams at shutdown (default 5)"
    )
    p.add_argument(
        "--shutdown-delay",
        type=_non_negative,
        default=0.0,
        help="on SIGTERM, report not ready this long before refusing new streams, so the gateway's health check "
        "moves traffic to the other replicas first (default 0; the deploy uses 3 with 2 replicas)",
    )
    p.add_argument(
        "--max-buffered-body-bytes",
        type=_body_budget,
        default=MAX_BUFFERED_BODY_BYTES,
        metavar="SIZE",
        help="request-body bytes all ext_proc streams may hold at once; a body past it is shed with 429 "
        "(Kubernetes notation: 256Mi, 1Gi; default 256Mi, per worker process)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="picker processes sharing --port and --health-port (SO_REUSEPORT), supervised by this one: restarted "
        "if they die, one /metrics for all on --metrics-port (docs/picker.md, 'Workers'; default 1: no supervisor)",
    )
    p.add_argument("--worker-index", type=_non_negative_int, default=None, help=argparse.SUPPRESS)  # set by --workers
    replicas = p.add_argument_group("active-active replicas (docs/picker-envoy.md, 'Several replicas')")
    replicas.add_argument(
        "--peers",
        default="",
        help="comma-separated HOST:PORT of the peer replicas' --peer-port; a DNS name (headless Service) stands for "
        "every address behind it, this replica's own left out",
    )
    replicas.add_argument("--peer-port", type=_port, default=9004, help="serve the peers here (default 9004)")
    replicas.add_argument(
        "--replica-address", help="this replica's address as the peers resolve it (default --host; the pod IP)"
    )
    replicas.add_argument(
        "--peer-batch-interval",
        type=_positive,
        default=0.002,
        help="seconds between a decision and the batch that tells the peers (default 0.002; --workers: 0.01)",
    )
    tls = p.add_argument_group("TLS on --port (ext_proc + Picker API); the health port stays plaintext")
    tls.add_argument(
        "--secure-serving", action="store_true", help="serve TLS; self-signed at start without --tls-cert (as GIE)"
    )
    tls.add_argument("--tls-cert", type=Path, help="PEM certificate (implies --secure-serving; reloaded on change)")
    tls.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    pool = p.add_argument_group("InferencePool discovery (instead of --endpoints; docs/picker.md)")
    pool.add_argument("--pool", help="follow this InferencePool's ready pods (inference.networking.k8s.io/v1)")
    pool.add_argument("--pool-namespace", default="default", help="the pool's namespace (default 'default')")
    pool.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: the in-cluster service account)")
    pool.add_argument("--no-dra", action="store_true", help="do not read DRA claims/slices for device hints")
    actions = p.add_subparsers(dest="picker_action", metavar="[explain]", title="actions")
    explain_cli.add_parser(actions)


def run(args: argparse.Namespace) -> int:
    if args.picker_action == "explain":
        return explain_cli.run(args)
    from scorer.config import ConfigError, default_config, load_config
    from scorer.extproc.tls import TLSError
    from scorer.sources.endpoints import EndpointsError, load_endpoints_file, parse_endpoint_list

    try:
        config = load_config(args.config) if args.config else default_config()
    except ConfigError as exc:
        return _fail(f"--config {args.config or '(default)'}: {exc}", 2)
    try:
        endpoints = parse_endpoint_list(args.endpoints) if args.endpoints.strip() else []
        if args.endpoints_file:
            endpoints += load_endpoints_file(args.endpoints_file)
    except EndpointsError as exc:
        return _fail(str(exc), 2)
    pool_ref = None
    if args.pool:
        if endpoints:
            return _fail("--pool and --endpoints/--endpoints-file exclude each other", 2)
        try:
            pool_ref = _pool_ref(args)
        except ValueError as exc:
            return _fail(str(exc), 2)
    elif not endpoints:
        return _fail("no endpoints: give --endpoints HOST:PORT,..., --endpoints-file FILE or --pool NAME", 2)
    duplicates = sorted({e.address for e in endpoints if sum(x.address == e.address for x in endpoints) > 1})
    if duplicates:
        return _fail(f"endpoints listed twice (--endpoints and --endpoints-file): {', '.join(duplicates)}", 2)
    try:
        tls = _tls(args)
    except (TLSError, ValueError) as exc:
        return _fail(str(exc), 2)
    peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    bad = [x for x in peers if not _is_host_port(x)]
    if bad:
        return _fail(f"--peers: not HOST:PORT: {', '.join(bad)}", 2)
    if args.workers > 1:
        if peers:
            return _fail("--workers > 1 and --peers: not supported yet (the workers are each other's peers)", 2)
        return _run_workers(args)
    if args.worker_index is not None:
        _become_worker(args.worker_index)
    from scorer.service import PickerOptions, StartupError

    opts = PickerOptions(
        reuse_port=args.worker_index is not None,
        private_host="127.0.0.1" if args.worker_index is not None else None,
        peers=peers,
        peer_port=args.peer_port,
        replica_address=args.replica_address,
        peer_batch_interval_s=args.peer_batch_interval,
        shutdown_delay_s=args.shutdown_delay,
        pool=pool_ref,
        tls=tls,
        config=config,
        endpoints=endpoints,
        host=args.host,
        port=args.port,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        scrape_interval_s=args.scrape_interval,
        scrape_timeout_s=args.scrape_timeout,
        staleness_s=args.staleness,
        drain_s=args.drain_seconds,
        eject_after_errors=args.eject_after_errors,
        ejection_s=args.ejection_seconds,
        max_buffered_body_bytes=args.max_buffered_body_bytes,
    )
    try:
        asyncio.run(_serve(opts))
    except StartupError as exc:
        return _fail(f"cannot serve: {exc}", 1)
    return 0


def _run_workers(args: argparse.Namespace) -> int:
    """The supervisor of `--workers N` (scorer/workers.py): the flags were checked above, each worker checks its own."""
    from scorer.workers import StartupError, WorkersOptions, run_workers

    opts = WorkersOptions(
        workers=args.workers,
        argv=list(getattr(args, "argv", None) or sys.argv[1:]),
        host=args.host,
        port=args.port,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        shutdown_delay_s=args.shutdown_delay,
        drain_s=args.drain_seconds,
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_workers(opts, stop, lambda line: print(line, flush=True))

    try:
        asyncio.run(serve())
    except StartupError as exc:
        return _fail(f"cannot serve: {exc}", 1)
    return 0


def _become_worker(index: int) -> None:
    """A worker's log lines carry its index, and it gets SIGTERM if its supervisor dies (Linux: PR_SET_PDEATHSIG),
    so no worker outlives a supervisor that was killed."""
    import ctypes
    import logging

    class _Tag(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.worker = index
            return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(_Tag())
    try:
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's SIGTERM is the only way out
        pass


def _is_host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host.strip("[]")) and port.isdigit() and 0 < int(port) < 65536


def _tls(args: argparse.Namespace) -> CertSource | None:
    """The certificate source of --secure-serving / --tls-cert / --tls-key; raises with the flag at fault."""
    from scorer.extproc.tls import CertSource, TLSError, self_signed

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_cert is not None:
        try:
            return CertSource.from_files(args.tls_cert, args.tls_key)
        except TLSError as exc:
            raise TLSError(f"--tls-cert/--tls-key: {exc}") from None
    if not args.secure_serving:
        return None
    hosts = ["localhost", socket.gethostname(), "127.0.0.1"]
    if args.host not in ("0.0.0.0", "::", ""):
        hosts.append(args.host)
    return CertSource(self_signed(hosts, datetime.now(UTC)))


def _pool_ref(args: argparse.Namespace) -> PoolRef:
    """The pool to follow and an API client from --kubeconfig (or in-cluster); raises ValueError naming the flag."""
    from kubernetes.config.config_exception import ConfigException

    from scorer.sources.inferencepool import PoolRef, kube_api_client

    try:
        api = kube_api_client(args.kubeconfig)
    except (ConfigException, OSError) as exc:
        where = f"--kubeconfig {args.kubeconfig}" if args.kubeconfig else "in-cluster config (no --kubeconfig)"
        raise ValueError(f"{where}: {exc}") from None
    return PoolRef(api, args.pool_namespace, args.pool, dra=not args.no_dra)


async def _serve(opts: PickerOptions) -> None:
    from scorer.service import run_picker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_picker(opts, stop, lambda running: print(running.ready_line(), flush=True))


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code
