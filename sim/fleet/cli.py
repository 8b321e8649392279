"""`autonomic fleet`: run N vLLM-compatible twin servers until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys

from sim.fleet.fleet import CONTROL_OFFSET, KV_OFFSET, REPLAY_OFFSET, Fleet
from sim.fleet.profile import ProfileError, load_profile


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fleet",
        help="run a fleet of vLLM-compatible twin servers",
        description="N independent vLLM-compatible servers in one process. Server i serves HTTP on "
        f"HOST:P+i, publishes KV events on tcp://HOST:P+{KV_OFFSET}+i (replay on "
        f"P+{REPLAY_OFFSET}+i); a control API on P+{CONTROL_OFFSET} injects faults. HOST is 127.0.0.1 by default.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="loopback address to serve on (default 127.0.0.1); another 127.0.0.x gives the fleet an address of its "
        "own, as a pod has (the routing benchmark's EPP arm finds each server as a Pod with its own IP)",
    )
    p.add_argument("--servers", type=int, default=4, help="number of servers (default 4)")
    p.add_argument("--base-port", type=int, default=8100, help="HTTP port of server 0 (default 8100)")
    p.add_argument("--profile", default=None, help="engine profile YAML (default: the shipped Llama-3.1-8B/H100)")
    p.add_argument(
        "--time-scale", type=float, default=1.0, help="model seconds per real second (10 = ten times faster)"
    )
    p.add_argument("--num-gpu-blocks", type=int, default=None, help="override the profile's KV-cache size")
    p.add_argument("--lora", action="append", default=[], metavar="NAME", help="serve a LoRA adapter (repeatable)")
    p.add_argument("--no-kv-events", action="store_true", help="do not publish KV-cache events")
    p.add_argument(
        "--request-log",
        type=int,
        default=200_000,
        help="finished requests kept per server for GET /servers/{i}/requests (~1 KB each; default 200000)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.profile, num_gpu_blocks=args.num_gpu_blocks)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.servers < 1 or args.time_scale <= 0 or args.request_log < 1:
        print("error: --servers and --request-log must be >= 1 and --time-scale > 0", file=sys.stderr)
        return 2
    try:
        if not ipaddress.IPv4Address(args.host).is_loopback:
            raise ValueError
    except ValueError:
        print(f"error: --host must be an IPv4 loopback address (127.0.0.0/8), got {args.host!r}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(args, profile))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _serve(args: argparse.Namespace, profile: object) -> int:
    fleet = Fleet(
        servers=args.servers,
        base_port=args.base_port,
        profile=profile,  # type: ignore[arg-type]
        time_scale=args.time_scale,
        lora_names=tuple(args.lora),
        kv_events=not args.no_kv_events,
        request_log=args.request_log,
        host=args.host,
    )
    await fleet.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for d in fleet.describe():
        print(
            f"server {d['index']}: {d['url']}  kv-events: {d['kv_events']}  replay: {d['kv_replay']}  "
            f"model: {d['model']}",
            flush=True,
        )
    print(f"control: {fleet.control_url}", flush=True)
    print(f"ready: {len(fleet.servers)} servers, time scale {args.time_scale}", flush=True)
    await stop.wait()
    await fleet.stop()
    return 0
