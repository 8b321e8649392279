"""`autonomic picker` as a child process on loopback, started as a user would start it, for tests, demo and bench.

Why it exists: the demo, the routing and picker benchmarks and the picker's process tests all run the real picker
process (its CLI flags, its `ready:` line, its ports) in front of a fleet twin; this is the one place that knows its
command line. Each instance takes four free ports (ext_proc + Picker API, gRPC health, /metrics, replica peers);
`peers` (other instances' `peer_address`) makes it an active-active replica that shares its decisions with them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.child import Child, ChildWrapper
from harness.netutil import free_ports


class PickerProcess(ChildWrapper):
    """`autonomic picker` as a child process; ready once it prints its `ready:` line."""

    def __init__(
        self,
        endpoints: list[str],
        config: Path | None = None,
        scrape_interval_s: float | None = None,
        extra_args: Sequence[str] = (),  # e.g. --secure-serving
    ):
        self.endpoints = endpoints
        self.extra_args = list(extra_args)
        self.config = config
        self.scrape_interval_s = scrape_interval_s
        self.port, self.health_port, self.metrics_port, self.peer_port = free_ports(4)
        self.peers: list[str] = []  # set before start(): the other replicas' peer_address
        self._child: Child | None = None

    @property
    def peer_address(self) -> str:
        return f"127.0.0.1:{self.peer_port}"

    @property
    def ready_line(self) -> str:
        """The `ready: ext_proc=... health=... metrics=...` line it printed."""
        if self._child is None or self._child.ready_match is None:
            raise RuntimeError("the picker is not ready")
        return self._child.ready_match.string

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start it; raises ChildError (a RuntimeError) with its last output if it exits or is not ready in time."""
        cmd = [sys.executable, "-m", "autonomic", "picker", "--endpoints", ",".join(self.endpoints)]
        cmd += ["--port", str(self.port), "--health-port", str(self.health_port)]
        cmd += ["--metrics-port", str(self.metrics_port)]
        if self.config:
            cmd += ["--config", str(self.config)]
        if self.scrape_interval_s:
            cmd += ["--scrape-interval", str(self.scrape_interval_s)]
        if self.peers:
            cmd += ["--peers", ",".join(self.peers), "--peer-port", str(self.peer_port)]
        cmd += self.extra_args
        env = dict(os.environ, AUTONOMIC_LOG_LEVEL=os.environ.get("AUTONOMIC_LOG_LEVEL", "warning"))
        self._child = Child(cmd, name="autonomic picker", env=env, ready=r"^ready:")
        await self._child.start(timeout_s)

    async def metrics_text(self) -> str:
        import aiohttp

        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as r:
            return await r.text()
