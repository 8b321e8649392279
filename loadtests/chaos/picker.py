"""Chaos for the picker: break a replica, its scrapes, its KV events or the picker's CPU under steady load, and measure.

Why it exists (issue 16, reliability campaign): the unit and integration tests show each failure rule once; this
shows what clients see when the real processes fail under load, and how fast routing heals. Steady open-loop load
(small completions, `--rate` req/s) goes through a real Envoy and `autonomic picker` (precise-prefix profile: KV events
and /tokenize) to a time-scaled fleet twin in its own process. Each scenario runs on a fresh stack: a baseline, the
fault for `--fault-seconds`, then the fault is lifted and the run waits (up to `--recover-seconds`) until the victim
receives traffic again (KV scenarios: its KV events are followed again) and no request has failed for
`--quiet-seconds`.

Scenarios (`--scenarios`, comma-separated; default all):
- `replica-stop`: server 1 closes its listener (fault `stop`, connections refused), then comes back (`ok`);
- `replica-hang`: server 1 accepts requests and /metrics scrapes and never answers (fault `hang`): scrapes time out;
- `replica-error`: server 1 answers its API with 500 while /metrics still answers (a wedged vLLM);
- `kv-gap`: server 0 drops `--kv-drops` live KV-event batches per second (the picker must see gaps and replay them);
- `kv-restart`: server 0's KV-event publisher restarts (sequence numbers from 0, nothing to replay) at the start;
- `picker-cpu`: the picker's threads pinned to CPU 0 with `--hogs` busy loops on the same core.

Per scenario: requests sent and failed (before / during / after the fault) and what they were answered, the time to
take the dead replica out (its `endpoint_ready` gauge drops), the time from the end of the fault until the victim
receives traffic again and until the last failure, p99 latency during the fault. Writes results.json and report.md
in `--out`.

    python -m loadtests.chaos.picker --out out/chaos-picker
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.entry import module_main

SCENARIOS = ("replica-stop", "replica-hang", "replica-error", "kv-gap", "kv-restart", "picker-cpu")
OPTIONS = (
    "scenarios",
    "servers",
    "rate",
    "time_scale",
    "baseline_seconds",
    "fault_seconds",
    "recover_seconds",
    "quiet_seconds",
    "kv_drops",
    "hogs",
    "out",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated from {','.join(SCENARIOS)}")
    p.add_argument("--servers", type=int, default=3, help="fleet twin servers (default 3)")
    p.add_argument("--rate", type=float, default=20.0, help="open-loop requests per second (default 20)")
    p.add_argument("--time-scale", type=float, default=20.0, help="the twin's model seconds per second (default 20)")
    p.add_argument("--baseline-seconds", type=float, default=5.0, help="load before the fault (default 5)")
    p.add_argument("--fault-seconds", type=float, default=10.0, help="how long the fault lasts (default 10)")
    p.add_argument("--recover-seconds", type=float, default=20.0, help="longest wait for recovery (default 20)")
    p.add_argument("--quiet-seconds", type=float, default=2.0, help="recovered: no failure for this long (default 2)")
    p.add_argument("--kv-drops", type=int, default=3, help="kv-gap: live batches dropped per second (default 3)")
    p.add_argument("--hogs", type=int, default=3, help="picker-cpu: busy loops on the picker's core (default 3)")
    p.add_argument("--out", type=Path, default=Path("out/chaos-picker"), help="output directory")


def validate(args: argparse.Namespace) -> list[str]:
    names = [s for s in str(args.scenarios).split(",") if s]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown or not names:
        raise ValueError(f"--scenarios: unknown {unknown} (choose from {','.join(SCENARIOS)})")
    if args.servers < 2:
        raise ValueError("--servers: at least 2 (one to break, one to take the traffic)")
    if min(args.rate, args.time_scale, args.fault_seconds, args.recover_seconds, args.quiet_seconds) <= 0:
        raise ValueError("--rate, --time-scale and the durations must be > 0")
    if args.baseline_seconds < 0 or args.kv_drops < 1 or args.hogs < 1:
        raise ValueError("--baseline-seconds >= 0, --kv-drops >= 1, --hogs >= 1")
    return names


@dataclass
class Fault:
    """What a scenario does to the stack: `inject` at the fault's start, `heal` at its end; `victim` is the server
    whose traffic is watched (None: the picker itself); `back` says what recovery means besides no failures for
    `--quiet-seconds`: the victim is picked again (`traffic`), its KV events are followed again (`synced`)."""

    what: str
    victim: int | None
    inject: Callable[[Any], Awaitable[None]]
    heal: Callable[[Any], Awaitable[None]]
    back: str = "traffic"


@dataclass
class Hogs:
    """Busy loops pinned to one CPU, and the picker's threads moved there; undone by `release`."""

    cpu: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    saved: dict[int, set[int]] = field(default_factory=dict)

    def starve(self, pid: int, hogs: int) -> None:
        for tid in (int(t) for t in os.listdir(f"/proc/{pid}/task")):  # every thread: gRPC's pollers too
            with contextlib.suppress(OSError):
                self.saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {self.cpu})
        for _ in range(hogs):
            cmd = ["taskset", "-c", str(self.cpu), sys.executable, "-c", "while True: pass"]
            self.procs.append(subprocess.Popen(cmd))

    def release(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs.clear()
        for tid, cpus in self.saved.items():
            with contextlib.suppress(OSError):  # a thread may have ended meanwhile
                os.sched_setaffinity(tid, cpus)
        self.saved.clear()


def faults(args: argparse.Namespace) -> dict[str, Fault]:
    from loadtests.chaos.picker_stack import RoutingStack

    hogs = Hogs()

    def fault(i: int, body: dict[str, Any]) -> Callable[[RoutingStack], Awaitable[None]]:
        async def apply(stack: RoutingStack) -> None:
            await stack.control(f"/servers/{i}/fault", body)

        return apply

    async def starve(stack: RoutingStack) -> None:
        assert stack.picker is not None and stack.picker.pid is not None
        hogs.starve(stack.picker.pid, args.hogs)

    async def unstarve(_: RoutingStack) -> None:
        hogs.release()

    async def drop_kv(stack: RoutingStack) -> None:
        await stack.control("/servers/0/kv_events", {"drop": args.kv_drops})

    async def restart_kv(stack: RoutingStack) -> None:
        await stack.control("/servers/0/kv_events", {"restart": True})

    async def nothing(_: RoutingStack) -> None:
        return None

    ok = fault(1, {"mode": "ok"})
    return {
        "replica-stop": Fault("server 1 stops listening (refused), then restarts", 1, fault(1, {"mode": "stop"}), ok),
        "replica-hang": Fault("server 1 answers nothing, /metrics included", 1, fault(1, {"mode": "hang"}), ok),
        "replica-error": Fault("server 1 answers 500, /metrics still 200", 1, fault(1, {"mode": "error"}), ok),
        "kv-gap": Fault(
            f"server 0 drops {args.kv_drops} live KV-event batches per second", 0, drop_kv, nothing, "synced"
        ),
        "kv-restart": Fault("server 0's KV-event publisher restarts (seq from 0)", 0, restart_kv, nothing, "synced"),
        "picker-cpu": Fault(f"picker pinned to CPU 0 with {args.hogs} busy loops", None, starve, unstarve, ""),
    }


def run(args: argparse.Namespace) -> int:
    """Run the campaign; 0 when every scenario recovered, 1 when one did not, 2 on bad options."""
    try:
        names = validate(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from loadtests.chaos.picker_report import write

    results = asyncio.run(campaign(args, names))
    write(args, results)
    return 0 if all(r["recovered"] for r in results) else 1


async def campaign(args: argparse.Namespace, names: Sequence[str]) -> list[dict[str, Any]]:
    from loadtests.chaos.picker_stack import RoutingStack, StackOptions

    table = faults(args)
    results = []
    for name in names:
        print(f"== {name}: {table[name].what}", flush=True)
        stack = RoutingStack(StackOptions(servers=args.servers, time_scale=args.time_scale))
        async with stack:
            result = await run_scenario(stack, name, table[name], args)
        results.append(result)
        print(f"   {summary_line(result)}", flush=True)
    return results


async def run_scenario(stack: Any, name: str, fault: Fault, args: argparse.Namespace) -> dict[str, Any]:
    from loadtests.chaos.picker_stack import OpenLoopLoad, PickerPoller, value

    load = OpenLoopLoad(stack.url, stack.model, args.rate)
    poller = PickerPoller(stack.metrics_url, load.t0, interval_s=0.1)
    stop = asyncio.Event()
    running = [asyncio.create_task(load.run(stop)), asyncio.create_task(poller.run(stop))]
    victim = stack.addresses[fault.victim] if fault.victim is not None else None
    try:
        await _wait(lambda: _victim_picks(poller, victim) > 0 and len(load.outcomes) > 0, 30, "traffic before fault")
        await asyncio.sleep(max(0.0, args.baseline_seconds - load.now()))
        fault_start = load.now()
        await fault.inject(stack)
        end_at = fault_start + args.fault_seconds
        while (left := end_at - load.now()) > 0:  # repeated faults (KV drops) once a second
            await asyncio.sleep(min(1.0, left))
            if name == "kv-gap" and load.now() < end_at - 0.5:
                await fault.inject(stack)
        fault_end = load.now()
        await fault.heal(stack)
        picks_at_end = _victim_picks(poller, victim)

        def recovered() -> bool:
            if fault.back == "traffic":
                back = _victim_picks(poller, victim) > picks_at_end
            elif fault.back == "synced":
                back = value(poller.latest(), "autonomic_picker_kv_events_synced", endpoint=victim or "") == 1
            else:
                back = True
            quiet_since = max(fault_end, _last_failure_end(load.outcomes))
            return back and load.now() - quiet_since >= args.quiet_seconds and load.in_flight < args.rate * 2

        ok = await _wait(recovered, args.recover_seconds, None)
    finally:
        if name == "picker-cpu":
            await fault.heal(stack)  # the busy loops never outlive the scenario
        stop.set()
        await asyncio.gather(*running)
    return figures(name, fault, victim, load.outcomes, poller.polls, fault_start, fault_end, ok)


async def _wait(done: Callable[[], bool], timeout_s: float, what: str | None) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not done():
        if loop.time() > deadline:
            if what is not None:
                raise TimeoutError(f"no {what} within {timeout_s:g} s")
            return False
        await asyncio.sleep(0.05)
    return True


def _victim_picks(poller: Any, victim: str | None) -> float:
    from loadtests.chaos.picker_stack import value

    samples = poller.latest()
    if victim is None:
        return value(samples, "autonomic_picker_picks_total")
    return value(samples, "autonomic_picker_picks_total", endpoint=victim)


def _last_failure_end(outcomes: Sequence[Any]) -> float:
    return max((o.start + o.seconds for o in outcomes if not o.ok), default=0.0)


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures(
    name: str,
    fault: Fault,
    victim: str | None,
    outcomes: Sequence[Any],
    polls: Sequence[tuple[float, Any]],
    fault_start: float,
    fault_end: float,
    recovered: bool,
) -> dict[str, Any]:
    from loadtests.chaos.picker_stack import value

    phases = {
        "before": [o for o in outcomes if o.start < fault_start],
        "during": [o for o in outcomes if fault_start <= o.start < fault_end],
        "after": [o for o in outcomes if o.start >= fault_end],
    }
    taken_out = picked_again = None
    last_pick_during = None
    previous = None
    for t, samples in polls:
        picks = value(samples, "autonomic_picker_picks_total", endpoint=victim) if victim else None
        ready = value(samples, "autonomic_picker_endpoint_ready", endpoint=victim) if victim else None
        if taken_out is None and t >= fault_start and ready == 0:
            taken_out = t - fault_start
        if previous is not None and picks is not None and picks > previous:
            if fault_start <= t <= fault_end:
                last_pick_during = t - fault_start
            if t > fault_end and picked_again is None:
                picked_again = t - fault_end
        previous = picks
    first, last = (polls[0][1], polls[-1][1]) if polls else ({}, {})

    def delta(series: str, **labels: str) -> float:
        return value(last, series, **labels) - value(first, series, **labels)

    failed = [o for o in outcomes if not o.ok]
    last_failure = _last_failure_end(outcomes)
    result: dict[str, Any] = {
        "scenario": name,
        "fault": fault.what,
        "victim": victim,
        "fault_seconds": round(fault_end - fault_start, 2),
        "sent": len(outcomes),
        "failed": len(failed),
        "failed_by_phase": {k: sum(not o.ok for o in v) for k, v in phases.items()},
        "sent_by_phase": {k: len(v) for k, v in phases.items()},
        "answers": dict(Counter(o.answer for o in failed).most_common()),
        "taken_out_s": taken_out,
        "last_pick_during_fault_s": last_pick_during,
        "victim_picked_again_s": picked_again,
        "errors_until_s": round(max(0.0, last_failure - fault_end), 2) if failed else 0.0,
        "p99_ms": {k: _ms(_p([o.seconds for o in v if o.ok], 0.99)) for k, v in phases.items()},
        "recovered": recovered,
        "picker": {
            "scrapes_timeout": delta("autonomic_picker_scrapes_total", endpoint=victim or "", result="timeout"),
            "scrapes_connect": delta("autonomic_picker_scrapes_total", endpoint=victim or "", result="connect"),
            "stale_fallback_decisions": delta("autonomic_picker_stale_fallback_decisions_total"),
            "immediate_responses": delta("autonomic_picker_extproc_immediate_responses_total"),
            "ejections": delta("autonomic_picker_endpoint_ejections_total", endpoint=victim or ""),
            "kv_gaps": delta("autonomic_picker_kv_events_gaps_total"),
            "kv_gaps_repaired": delta("autonomic_picker_kv_events_gaps_repaired_total"),
            "kv_resyncs": delta("autonomic_picker_kv_events_resyncs_total"),
            "kv_synced_at_end": value(last, "autonomic_picker_kv_events_synced"),
            "polls": len(polls),
        },
    }
    return result


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1e3, 1) if seconds is not None else None


def summary_line(r: dict[str, Any]) -> str:
    def s(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}s"

    return (
        f"sent {r['sent']} failed {r['failed']} (during {r['failed_by_phase']['during']}, after "
        f"{r['failed_by_phase']['after']}); out {s(r['taken_out_s'])}; back {s(r['victim_picked_again_s'])}; "
        f"errors until +{r['errors_until_s']:.2f}s; recovered {r['recovered']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return module_main("python -m loadtests.chaos.picker", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
