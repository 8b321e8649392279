"""A round-robin picker over a fixed list of endpoints: the minimal backend behind the ext_proc shell.

Why it exists: it plays the role of GIE's "lightweight EPP" (round robin, honours the subset hint). Tests use it
to exercise the shell and Envoy without the scheduling core, and benchmarks use it as the baseline that isolates
what the ext_proc protocol itself costs from what real scoring costs. It records every completion it is told
about, so tests can check what reached `response_complete`.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from scorer.framework import Usage
from scorer.types import Endpoint, EndpointState, LLMRequest, NoEndpointError, SchedulingResult


@dataclass(frozen=True)
class Completion:
    request_id: str
    served: str | None
    status: int
    usage: Usage | None


def in_subset(address: str, subset: Sequence[str]) -> bool:
    """`ip:port` entries match exactly; a bare IP matches every port of that host (GIE matches by IP only)."""
    host = address.rpartition(":")[0]
    return any(entry in (address, host) for entry in subset)


class RoundRobinBackend:
    """Satisfies `PickBackend`. `fallbacks` extra endpoints follow the primary; priority < 0 is shed if asked."""

    def __init__(self, addresses: Sequence[str], *, fallbacks: int = 0, shed_sheddable: bool = False):
        self._states = {a: EndpointState(Endpoint(a)) for a in addresses}
        self.fallbacks = fallbacks
        self.shed_sheddable = shed_sheddable
        self.is_ready = True
        self.completions: deque[Completion] = deque(maxlen=100_000)
        self.picks: deque[tuple[str, tuple[str, ...]]] = deque(maxlen=100_000)  # (request_id, targets)
        self._counter = itertools.count()
        self._lock = threading.Lock()

    @property
    def addresses(self) -> list[str]:
        return list(self._states)

    def set_addresses(self, addresses: Sequence[str]) -> None:
        self._states = {a: self._states.get(a) or EndpointState(Endpoint(a)) for a in addresses}

    def ready(self) -> bool:
        """Like GIE's readiness: the picker is set up (it may still have no endpoint to offer)."""
        return self.is_ready

    def pick(self, request: LLMRequest, subset: Sequence[str] | None = None) -> SchedulingResult:
        if not self._states:
            raise NoEndpointError("no ready endpoint")
        if self.shed_sheddable and request.priority < 0:
            raise NoEndpointError("sheddable request dropped", shed=True)
        candidates = list(self._states) if subset is None else [a for a in self._states if in_subset(a, subset)]
        if not candidates:
            raise NoEndpointError(f"no endpoint in the subset {list(subset or [])}")
        with self._lock:
            start = next(self._counter) % len(candidates)
        count = min(len(candidates), 1 + self.fallbacks)
        chosen = [candidates[(start + k) % len(candidates)] for k in range(count)]
        for address in chosen[:1]:
            self._states[address].in_flight += 1
        self.picks.append((request.request_id, tuple(chosen)))
        return SchedulingResult(
            targets=tuple(self._states[a] for a in chosen),
            reason=f"round robin: slot {start} of {len(candidates)} candidates",
            profile="round-robin",
        )

    def response_complete(self, request_id: str, served: str | None, status: int, usage: Usage | None) -> None:
        self.completions.append(Completion(request_id, served, status, usage))
        state = self._states.get(served or "")
        if state is not None and state.in_flight > 0:
            state.in_flight -= 1

    def completion(self, request_id: str) -> Completion | None:
        """The recorded completion of one request, if any (tests)."""
        return next((c for c in self.completions if c.request_id == request_id), None)


async def _serve(addresses: Sequence[str], host: str, port: int, health_port: int | None, fallbacks: int) -> None:
    import asyncio
    import signal

    from scorer.extproc.server import serve_extproc

    handle = await serve_extproc(RoundRobinBackend(addresses, fallbacks=fallbacks), host, port, health_port)
    print(f"ready: {host}:{handle.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await handle.stop(1.0)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m scorer.extproc.roundrobin --endpoints ip:port,... --port P`: the minimal picker as a process."""
    import argparse
    import asyncio

    ap = argparse.ArgumentParser(description="Round-robin ext_proc endpoint picker (baseline for benchmarks).")
    ap.add_argument("--endpoints", required=True, help="comma-separated ip:port of the model servers")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9002)
    ap.add_argument("--health-port", type=int, default=None)
    ap.add_argument("--fallbacks", type=int, default=0)
    a = ap.parse_args(argv)
    endpoints = [e for e in a.endpoints.split(",") if e]
    asyncio.run(_serve(endpoints, a.host, a.port, a.health_port, a.fallbacks))


if __name__ == "__main__":
    main()
