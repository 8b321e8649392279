"""Picker replicas in model time: does routing through N active-active replicas keep one picker's hit ratio?

Why it exists: the routing benchmark (real processes, Envoy, wall time) answers that question with ±10% noise between
identical runs on the shared 2-core machine; this answers it deterministically, with the product's own code paths.
The in-process loop (loadtests.routing.in_process) drives `ReplicaFront` instead of one Director: each arrival goes
to a replica chosen at random (Envoy's RANDOM balancing of the routing stream), each response end is reported to a
replica chosen at random on its own (the observer stream, balanced independently), and with sharing on, what a
replica publishes (`Director.on_routed` / `on_ended`) reaches its peers `sync_delay_s` of model time later
(`Director.peer_routed` / `peer_ended`: what scorer/replica_sync.py does over HTTP). Every replica scrapes every
engine. Modes: `single` (one Director, the baseline), `x2` (2 replicas, shared), `x2-instant` (the same with no
delivery delay), `x2-unshared` (2, nothing shared), `single-jitter` (one picker, each arrival later by a random
0 to one sync delay of model time: how much a perturbation of that size alone moves the hit ratio of this trace),
`x2-rollout-cold` and `x2-rollout-warm` (2 shared replicas restarted one after the other, at a third and at two thirds
of the run, as a rollout does: the new replica starts empty, or restores its peer's snapshot first, as
scorer/replica_sync.py's warm start does; its in-flight charges are lost either way).

    python -m loadtests.routing.replica_sim --minutes 5 --compress 4 --seeds 1,2,3
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence

from scorer.config import PickerConfig, default_config
from scorer.director import Director
from scorer.framework import Usage
from scorer.replica_wire import Ended, Routed
from scorer.scheduler import Scheduler
from scorer.types import Endpoint, EndpointMetrics, LLMRequest, SchedulingResult

# mode -> (replicas, shared, sync delay: None = --sync-delay); x2-instant: no delivery delay, equal to one picker
# when every piece of routing state is shared (the check that nothing is missing)
MODES: dict[str, tuple[int, bool, float | None]] = {
    "single": (1, False, None),
    "x2": (2, True, None),
    "x2-instant": (2, True, 0.0),
    "x2-unshared": (2, False, None),
    "single-jitter": (1, False, None),  # one picker, each arrival later by up to one sync delay: the control
    "x2-rollout-cold": (2, True, None),
    "x2-rollout-warm": (2, True, None),
}
ROLLOUTS = {"x2-rollout-cold": False, "x2-rollout-warm": True}  # mode -> the new replica restores a snapshot


class ReplicaFront:
    """N Directors as one front: random replica per decision and per reported end; delayed peer delivery."""

    def __init__(
        self,
        config: PickerConfig,
        replicas: int,
        clock: Callable[[], float],
        seed: int,
        shared: bool = True,
        sync_delay_s: float = 0.02,
        restarts: Sequence[float] = (),
        warm: bool = False,
    ):
        self.clock = clock
        self.rng = random.Random(seed)
        self.sync_delay_s = sync_delay_s
        self.config, self.seed, self.shared, self.warm = config, seed, shared, warm
        self.directors = [self._director(i, i) for i in range(replicas)]
        self._mail: deque[tuple[float, int, Routed | Ended]] = deque()  # in time order: the delay is constant
        self._restarts = deque(sorted(restarts))  # model times: replica k % n is replaced at the k-th
        self._restarted = 0
        self._endpoints: list[Endpoint] = []
        self._metrics: dict[str, tuple[EndpointMetrics | None, str | None]] = {}
        self.restored_blocks = 0

    def _director(self, slot: int, generation: int) -> Director:
        director = Director(Scheduler(self.config), clock=self.clock, rng=random.Random(self.seed * 100 + generation))
        if self.shared:
            director.on_routed = director.on_ended = self._sender(slot)
        return director

    def _roll(self) -> None:
        """Replace the next replica when its restart is due: empty, or (warm) with its peer's snapshot."""
        while self._restarts and self._restarts[0] <= self.clock():
            self._restarts.popleft()
            slot = self._restarted % len(self.directors)
            self._restarted += 1
            new = self._director(slot, len(self.directors) + self._restarted)
            new.set_endpoints(self._endpoints)
            for address, (metrics, error) in self._metrics.items():
                new.update_metrics(address, metrics, error)
            if self.warm and len(self.directors) > 1:
                peer = self.directors[(slot + 1) % len(self.directors)]
                self.restored_blocks += new.restore(peer.snapshot())
            self.directors[slot] = new

    def _sender(self, source: int) -> Callable[[Routed | Ended], None]:
        def post(event: Routed | Ended) -> None:
            at = self.clock() + self.sync_delay_s
            self._mail.extend((at, j, event) for j in range(len(self.directors)) if j != source)

        return post

    def _deliver(self) -> None:
        self._roll()
        now = self.clock()
        while self._mail and self._mail[0][0] <= now:
            _, target, event = self._mail.popleft()
            if isinstance(event, Routed):
                self.directors[target].peer_routed(event)
            else:
                self.directors[target].peer_ended(event)

    def set_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints = list(endpoints)
        for director in self.directors:
            director.set_endpoints(endpoints)

    def update_metrics(self, address: str, metrics: EndpointMetrics | None, error: str | None = None) -> None:
        self._deliver()
        self._metrics[address] = (metrics, error)
        for director in self.directors:
            director.update_metrics(address, metrics, error)

    def pick(self, request: LLMRequest, subset: Sequence[str] | None = None) -> SchedulingResult:
        self._deliver()
        return self.rng.choice(self.directors).pick(request, subset)

    def response_complete(self, request_id: str, served: str | None, status: int, usage: Usage | None) -> None:
        self._deliver()
        self.rng.choice(self.directors).response_complete(request_id, served, status, usage)


def main(argv: Sequence[str] | None = None) -> int:
    from loadtests.routing.in_process import TRACE, RunStats, simulate_with
    from sim.fleet.trace import load_trace

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="trace minutes to replay (default 5)")
    p.add_argument("--compress", type=float, default=4.0, help="time compression of the trace (default 4)")
    p.add_argument("--servers", type=int, default=8)
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (replica choice, tie breaks)")
    p.add_argument("--sync-delay", type=float, default=0.02, help="model seconds before a peer sees an event")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {','.join(MODES)}")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := [m for m in modes if m not in MODES]:
        print(f"error: --modes: unknown {unknown}", file=sys.stderr)
        return 2
    trace = load_trace(TRACE, max_seconds=args.minutes * 60)
    config = default_config()
    print(f"[replica sim] {len(trace)} requests, {args.minutes:g} min x{args.compress:g}, {args.servers} servers")
    results: dict[tuple[str, int], RunStats] = {}
    for seed in seeds:
        for mode in modes:
            replicas, shared, delay = MODES[mode]
            delay_s = args.sync_delay if delay is None else delay

            span = args.minutes * 60 / args.compress  # model seconds of arrivals
            restarts = (span / 3, 2 * span / 3) if mode in ROLLOUTS else ()

            def front(
                clock: Callable[[], float],
                n: int = replicas,
                s: bool = shared,
                sd: int = seed,
                d: float = delay_s,
                r: tuple[float, ...] = restarts,
                w: bool = ROLLOUTS.get(mode, False),
            ) -> ReplicaFront:
                return ReplicaFront(config, n, clock, sd, shared=s, sync_delay_s=d, restarts=r, warm=w)

            t0 = time.monotonic()
            run_trace = trace
            if mode == "single-jitter":
                jitter = random.Random(seed)
                top = args.sync_delay * args.compress  # trace seconds
                run_trace = [dataclasses.replace(r, timestamp_s=r.timestamp_s + jitter.uniform(0, top)) for r in trace]
            stats = simulate_with(mode, config, run_trace, args.servers, args.compress, seed, front)
            results[(mode, seed)] = stats
            print(f"[replica sim] seed {seed} {mode}: hit {stats.hit_ratio:.4f} ({time.monotonic() - t0:.0f} s)")
    print("\n| mode | hit ratio per seed | median | median of ratios to single | TTFT p50 s | TTFT p90 s | done |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for mode in modes:
        runs = [results[(mode, s)] for s in seeds]
        hits = [r.hit_ratio for r in runs]
        ratios = [r.hit_ratio / results[("single", s)].hit_ratio for r, s in zip(runs, seeds, strict=True)]
        ratio = f"{statistics.median(ratios):.3f}" if "single" in modes else "-"
        p50 = statistics.median(statistics.median(r.ttft) for r in runs)
        p90 = statistics.median(statistics.quantiles(r.ttft, n=10)[8] for r in runs)
        print(
            f"| {mode} | {' / '.join(f'{h:.4f}' for h in hits)} | {statistics.median(hits):.4f} | {ratio} "
            f"| {p50:.3f} | {p90:.3f} | {sum(len(r.ttft) for r in runs)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
