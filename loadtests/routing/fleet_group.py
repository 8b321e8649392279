"""A fleet of N model-server twins, each in its own process, seen as one fleet (for the routing benchmark).

Why it exists: `autonomic fleet --servers N` serves N servers from one Python process, so when that process is short
of CPU every server's HTTP side (`/metrics`, `/health`, streams) stalls at once; a router that scrapes metrics with a
timeout then loses all its endpoints together, which a real fleet (one vLLM per GPU, each with its own API-server
process) does not do. Here server i is `autonomic fleet --servers 1` on its own base port, keeping the fleet's port
convention (HTTP on P, KV events on P+1000, replay on P+2000), and the group answers what `FleetProcess` answers:
`urls`, `kv_endpoints`, `describe()`, `request_logs()`.

`distinct_hosts=True` puts server i on its own loopback address (127.0.0.x, all on one base port) instead of its own
port: the shape Kubernetes discovery sees (one IP per pod, one target port), for a router that finds the servers as
Pods through the cluster twin (the EPP arm, loadtests.routing.epp).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from harness.netutil import find_base_port, find_loopback_hosts
from sim.fleet.process import FleetProcess, FleetStartError

_OFFSETS = (0, 1000, 2000, 3000)


def _disjoint_bases(n: int) -> list[int]:
    bases: list[int] = []
    taken: set[int] = set()
    while len(bases) < n:
        base = find_base_port(1)
        ports = {base + o for o in _OFFSETS}
        if ports & taken:
            continue
        taken |= ports
        bases.append(base)
    return bases


_PORT_TAKEN = "address already in use"


class FleetGroup:
    """`start` picks free ports, but another process can bind one before the server does (other benchmarks share the
    machine): a start that failed on a port already in use is retried on fresh ports, up to `start_attempts` times."""

    def __init__(
        self,
        servers: int,
        time_scale: float,
        *,
        distinct_hosts: bool = False,
        start_attempts: int = 3,
        choose_bases: Callable[[int], list[int]] = _disjoint_bases,
    ):
        if servers < 1:
            raise ValueError(f"servers must be >= 1, got {servers}")
        if start_attempts < 1:
            raise ValueError(f"start_attempts must be >= 1, got {start_attempts}")
        self.servers = servers
        self.time_scale = time_scale
        self.distinct_hosts = distinct_hosts
        self.start_attempts = start_attempts
        self.choose_bases = choose_bases
        self.members: list[FleetProcess] = []
        self.port_retries = 0

    @property
    def urls(self) -> list[str]:
        return [m.urls[0] for m in self.members]

    @property
    def kv_endpoints(self) -> list[str]:
        return [m.kv_endpoints[0] for m in self.members]

    @property
    def hosts(self) -> list[str]:
        return [m.urls[0].removeprefix("http://").rpartition(":")[0] for m in self.members]

    @property
    def port(self) -> int:
        """The HTTP port every server shares (distinct_hosts only)."""
        if not self.distinct_hosts:
            raise ValueError("the servers share a port only with distinct_hosts=True")
        return self.members[0].base_port

    async def start(self) -> None:
        for attempt in range(1, self.start_attempts + 1):
            try:
                await self._start_once()
                return
            except FleetStartError as exc:
                if _PORT_TAKEN not in str(exc) or attempt == self.start_attempts:
                    raise
                self.port_retries += 1

    async def _start_once(self) -> None:
        if self.distinct_hosts:
            hosts, base = find_loopback_hosts(self.servers, _OFFSETS)
            self.members = [
                FleetProcess(servers=1, base_port=base, time_scale=self.time_scale, extra_args=["--host", h])
                for h in hosts
            ]
        else:
            self.members = [
                FleetProcess(servers=1, base_port=b, time_scale=self.time_scale)
                for b in self.choose_bases(self.servers)
            ]
        results = await asyncio.gather(*(m.start() for m in self.members), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await self.stop()
            raise failed[0]

    async def stop(self) -> None:
        await asyncio.gather(*(m.stop() for m in self.members))

    async def describe(self) -> list[dict[str, Any]]:
        return [d for m in self.members for d in await m.describe()]

    async def request_logs(self) -> dict[int, list[dict[str, Any]]]:
        return {i: (await m.request_logs())[0] for i, m in enumerate(self.members)}

    async def __aenter__(self) -> FleetGroup:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
