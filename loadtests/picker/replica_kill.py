"""Closed-loop clients through Envoy and two picker replicas; one replica is killed or stopped; count the failures.

Why it exists: the failure window of a picker replica is a property of Envoy's configuration (health checks,
outlier ejection, stream retries) and of the picker's shutdown (how long it stays serving once unready), and each of
them was chosen on this measurement. A fleet twin (2 servers, fast), 2 `autonomic picker` processes sharing what
they route, Envoy with both in its ext_proc cluster; `--clients` closed-loop clients send small completions (each
a new prompt); after `--warmup` seconds replica 0 gets SIGKILL (`--how kill`) or SIGTERM (`--how term`), and the
clients go on for `--after` seconds. Every variant runs in the same invocation, one after another, each on fresh
processes, and the summary table gives the requests and failures of each.

    python -m loadtests.picker.replica_kill --variants retries,no-retries,term-delay,term-no-delay
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from harness.envoy import LocalEnvoy
from harness.netutil import find_base_port, free_port
from harness.picker import PickerProcess
from loadtests.entry import module_main
from scorer.extproc.envoy_config import EnvoyOptions
from sim.fleet.process import FleetProcess
from sim.fleet.profile import load_profile


@dataclass(frozen=True)
class Variant:
    how: str  # kill | term
    retries: int  # Envoy's ext_proc stream retries (picker_stream_retries)
    shutdown_delay_s: float
    buffered_fail_open: bool = False


VARIANTS = {
    "retries": Variant("kill", 2, 0.0),
    "no-retries": Variant("kill", 0, 0.0),
    "buffered-fail-open": Variant("kill", 2, 0.0, buffered_fail_open=True),
    "term-delay": Variant("term", 2, 2.0),
    "term-no-delay": Variant("term", 2, 0.0),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {','.join(VARIANTS)}")
    p.add_argument("--clients", type=int, default=8, help="closed-loop clients (default 8)")
    p.add_argument("--prompt-bytes", type=int, default=2000, help="prompt size (default 2000)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the kill (default 3)")
    p.add_argument("--after", type=float, default=6.0, help="seconds of load after it (default 6)")


async def _one(name: str, v: Variant, args: argparse.Namespace) -> dict[str, object]:
    fleet = FleetProcess(servers=2, base_port=find_base_port(2), time_scale=20)
    await fleet.start()
    pool = [u.removeprefix("http://") for u in fleet.urls]
    extra = ["--shutdown-delay", str(v.shutdown_delay_s)]
    a, b = PickerProcess(pool, extra_args=extra), PickerProcess(pool, extra_args=extra)
    a.peers, b.peers = [b.peer_address], [a.peer_address]
    envoy: LocalEnvoy | None = None
    try:
        await asyncio.gather(a.start(), b.start())
        opts = EnvoyOptions(
            listen_port=free_port(),
            admin_port=free_port(),
            picker_port=a.port,
            picker_readyz_port=a.metrics_port,
            extra_pickers=[(b.port, b.metrics_port)],
            pool=tuple(pool),
            picker_stream_retries=v.retries,
            failure_mode_allow=v.buffered_fail_open,
            body_mode="BUFFERED" if v.buffered_fail_open else "FULL_DUPLEX_STREAMED",
        )
        envoy = LocalEnvoy(opts)
        await envoy.start()
        model = load_profile().model
        outcomes: Counter[str] = Counter()
        stop = asyncio.Event()

        async def client(i: int) -> None:
            n = 0
            async with aiohttp.ClientSession() as http:
                while not stop.is_set():
                    n += 1
                    prompt = f"client {i} request {n} " + "x" * args.prompt_bytes
                    body = {"model": model, "prompt": prompt, "max_tokens": 4}
                    try:
                        async with http.post(f"{envoy.url}/v1/completions", json=body) as r:
                            await r.read()
                            outcomes[str(r.status)] += 1
                    except aiohttp.ClientError as exc:
                        outcomes[type(exc).__name__] += 1

        tasks = [asyncio.create_task(client(i)) for i in range(args.clients)]
        await asyncio.sleep(args.warmup)
        before = sum(outcomes.values())
        t0 = time.monotonic()
        await (a.kill() if v.how == "kill" else a.stop())
        gone_s = time.monotonic() - t0
        await asyncio.sleep(args.after)
        stop.set()
        await asyncio.gather(*tasks)
        total = sum(outcomes.values())
        failed = total - outcomes["200"]
        print(f"  {name}: {total} requests ({before} before), {failed} failed {dict(outcomes)}", flush=True)
        return {"requests": total, "failed": failed, "outcomes": dict(outcomes), "stop_s": round(gone_s, 2)}
    finally:
        if envoy is not None:
            await envoy.stop()
        await asyncio.gather(a.stop(), b.stop())
        await fleet.stop()


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    if unknown := [n for n in names if n not in VARIANTS]:
        print(f"error: --variants: unknown {unknown}", file=sys.stderr)
        return 2
    results = {}
    for name in names:
        print(f"[replica kill] {name}: {VARIANTS[name]}", flush=True)
        results[name] = asyncio.run(_one(name, VARIANTS[name], args))
    print("\n| variant | signal | stream retries | shutdown delay s | mode | requests | failed |")
    print("| --- | --- | ---: | ---: | --- | ---: | ---: |")
    for name in names:
        v, r = VARIANTS[name], results[name]
        mode = "BUFFERED fail-open" if v.buffered_fail_open else "FULL_DUPLEX fail-closed"
        print(f"| {name} | {v.how} | {v.retries} | {v.shutdown_delay_s:g} | {mode} | {r['requests']} | {r['failed']} |")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return module_main("python -m loadtests.picker.replica_kill", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
