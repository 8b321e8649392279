"""Run the fleet twin as a child process (`autonomic fleet`), for demos and benchmarks.

The twin is CPU-bound Python; in the same event loop as a load generator (or a picker) it would compete for one core
and fall behind the wall clock. In its own process it gets a core of its own, and what the client measures is what
crosses a real socket. Tests that need to reach into servers keep using the in-process `Fleet`. The process itself
(ready line, output drained, TERM then KILL) is harness.child's.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from harness.child import Child, ChildError

_SERVER = re.compile(r"^server (\d+): (\S+)\s+kv-events: (\S+)")
_CONTROL = re.compile(r"^control: (\S+)")


class FleetStartError(RuntimeError):
    pass


@dataclass
class FleetProcess:
    servers: int
    base_port: int
    time_scale: float = 1.0
    profile: str | None = None
    num_gpu_blocks: int | None = None
    extra_args: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    kv_endpoints: list[str] = field(default_factory=list)
    control_url: str = ""
    _child: Child | None = None

    async def start(self, timeout_s: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "autonomic", "fleet", "--servers", str(self.servers)]
        cmd += ["--base-port", str(self.base_port), "--time-scale", str(self.time_scale)]
        if self.profile:
            cmd += ["--profile", self.profile]
        if self.num_gpu_blocks:
            cmd += ["--num-gpu-blocks", str(self.num_gpu_blocks)]
        cmd += self.extra_args
        env = dict(os.environ, AUTONOMIC_LOG_LEVEL=os.environ.get("AUTONOMIC_LOG_LEVEL", "warning"))
        self.urls, self.kv_endpoints, self.control_url = [], [], ""
        self._child = Child(cmd, name="autonomic fleet", env=env, ready=r"^ready:", on_line=self._read_banner)
        try:
            await self._child.start(timeout_s)
        except ChildError as exc:
            raise FleetStartError(str(exc)) from exc

    @property
    def pid(self) -> int | None:
        """The fleet process' id while it runs (for /proc sampling)."""
        return self._child.pid if self._child is not None else None

    def _read_banner(self, line: str) -> None:
        if self._child is not None and self._child.ready_match is not None:
            return  # the banner ends at the ready line
        if m := _SERVER.match(line):
            self.urls.append(m.group(2))
            self.kv_endpoints.append(m.group(3))
        elif m := _CONTROL.match(line):
            self.control_url = m.group(1)

    async def stop(self) -> None:
        if self._child is not None:
            await self._child.stop()

    async def describe(self) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.control_url}/servers") as r:
            result: list[dict[str, Any]] = await r.json()
            return result

    async def request_logs(self) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        async with aiohttp.ClientSession() as s:
            for i in range(self.servers):
                async with s.get(f"{self.control_url}/servers/{i}/requests") as r:
                    out[i] = await r.json()
        return out

    async def __aenter__(self) -> FleetProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
