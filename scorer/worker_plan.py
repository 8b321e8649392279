"""What each worker of `autonomic picker --workers N` is started with, and how soon a dead one is started again.

Why it exists: the supervisor (scorer/workers.py) is an async shell around child processes; the decisions it makes
are pure and tested here without processes. A worker is the ordinary picker command line with a few flags appended
(argparse keeps the last value of a repeated flag, so the user's own flags stay as they were): the shared ext_proc
and health ports (bound with SO_REUSEPORT, `--worker-index`), its private metrics and replica-sync ports on
loopback, and its sibling workers as its replica peers (scorer/replica_sync.py), so that their prefix indexes and
in-flight counts agree as those of active-active replicas do, with a longer batch interval unless one was given.

A worker that dies is started again after a delay that doubles with each death in a row (`base_s`, then 2x, up to
`max_s`), and falls back to `base_s` once a worker has lived `healthy_after_s`: a worker that crashes at start
(a bug, a port taken by an unrelated process) does not spin, one that crashes once a day restarts at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"
# siblings batch what they tell each other for 10 ms rather than a replica's 2 ms: half the batches (each an HTTP
# POST, ~0.5 ms of CPU on the two sides), -7% CPU per decision with 2 workers (BENCHMARKS.md, "Capacity per core");
# in model time 5 and 20 ms gave the same hit ratio (BENCHMARKS.md, "Picker: active-active replicas")
WORKER_BATCH_INTERVAL_S = 0.01


@dataclass(frozen=True)
class WorkerPorts:
    """A worker's private ports on loopback: its /metrics and /readyz (the supervisor reads them) and replica sync."""

    metrics_port: int
    peer_port: int


def worker_argv(
    base_argv: Sequence[str], index: int, port: int, health_port: int, ports: Sequence[WorkerPorts]
) -> list[str]:
    """The `autonomic ...` arguments of worker `index`: the parent's own, then the flags that make it a worker."""
    own = ports[index]
    peers = [f"{LOOPBACK}:{p.peer_port}" for i, p in enumerate(ports) if i != index]
    chosen = any(a == "--peer-batch-interval" or a.startswith("--peer-batch-interval=") for a in base_argv)
    batch = [] if chosen else ["--peer-batch-interval", str(WORKER_BATCH_INTERVAL_S)]  # the user's choice stands
    return [
        *base_argv,
        *batch,
        "--workers",
        "1",
        "--worker-index",
        str(index),
        "--port",
        str(port),
        "--health-port",
        str(health_port),
        "--metrics-port",
        str(own.metrics_port),
        "--peer-port",
        str(own.peer_port),
        "--replica-address",
        LOOPBACK,
        *(["--peers", ",".join(peers)] if peers else []),
    ]


def ready_endpoints(line: str) -> int | None:
    """The `endpoints=N` of a worker's `ready:` line, None if it has none."""
    for field in line.split():
        key, _, value = field.partition("=")
        if key == "endpoints" and value.isdigit():
            return int(value)
    return None


@dataclass(frozen=True)
class RestartBackoff:
    base_s: float = 0.5
    max_s: float = 10.0
    healthy_after_s: float = 30.0

    def next_delay(self, deaths_in_a_row: int, lived_s: float) -> tuple[float, int]:
        """(seconds to wait before starting again, deaths in a row including this one) for a worker that died after
        living `lived_s` with `deaths_in_a_row` deaths before it."""
        run = 1 if lived_s >= self.healthy_after_s else deaths_in_a_row + 1
        return min(self.max_s, self.base_s * 2 ** (run - 1)), run
