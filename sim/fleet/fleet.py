"""A fleet of N twin servers in one process, plus a small control API to inject faults.

Why it exists: benchmarks and tests need several independent vLLM-compatible servers on predictable ports.
Server i serves HTTP on base_port+i, publishes KV events on base_port+1000+i and answers replay requests on
base_port+2000+i. The control API (base_port+3000 unless given) lists servers and sets faults:
`GET /servers`, `POST /servers/{i}/fault` with `{"mode": "stop|hang|error|slow|ok", ...}`, and
`POST /servers/{i}/kv_events` with `{"drop": N}` (the next N KV-event batches are lost live, replay keeps them: a
sequence gap for subscribers) or `{"restart": true}` (a new publisher: seq from 0, empty replay buffer),
`GET /servers/{i}/requests` (model-time timings of finished requests, for benchmarks) and `GET /servers/{i}/kv_cache`
(read-only: the blocks its prefix cache holds now, for checking a KV-event consumer against the truth).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from sim.fleet.faults import FaultError, parse_fault
from sim.fleet.profile import EngineProfile
from sim.fleet.server import ModelServer

log = logging.getLogger("autonomic.fleet")

KV_OFFSET, REPLAY_OFFSET, CONTROL_OFFSET = 1000, 2000, 3000


class Fleet:
    def __init__(
        self,
        *,
        servers: int,
        base_port: int,
        profile: EngineProfile,
        time_scale: float = 1.0,
        lora_names: tuple[str, ...] = (),
        kv_events: bool = True,
        control_port: int | None = None,
        host: str = "127.0.0.1",
        request_log: int = 200_000,
    ) -> None:
        if servers < 1:
            raise ValueError("servers must be at least 1")
        if not 1 <= base_port <= 65535 - CONTROL_OFFSET:
            raise ValueError(f"base_port must leave room for offsets up to +{CONTROL_OFFSET}")
        if servers > KV_OFFSET:
            raise ValueError(f"at most {KV_OFFSET} servers")
        if lora_names and profile.max_loras < 1:
            raise ValueError("LoRA adapters need a profile with max_loras >= 1")
        self.host = host
        self.base_port = base_port
        self.control_port = control_port or base_port + CONTROL_OFFSET
        self.servers = [
            ModelServer(
                index=i,
                profile=profile,
                host=host,
                port=base_port + i,
                kv_port=base_port + KV_OFFSET + i if kv_events else None,
                replay_port=base_port + REPLAY_OFFSET + i if kv_events else None,
                time_scale=time_scale,
                lora_names=lora_names,
                request_log=request_log,
            )
            for i in range(servers)
        ]
        self._control: web.AppRunner | None = None

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.control_port}"

    async def start(self) -> None:
        started: list[ModelServer] = []
        try:
            for s in self.servers:
                await s.start()
                started.append(s)
            app = web.Application()
            app.router.add_get("/servers", self._list)
            app.router.add_post("/servers/{i}/fault", self._fault)
            app.router.add_post("/servers/{i}/kv_events", self._kv_events)
            app.router.add_get("/servers/{i}/requests", self._requests)
            app.router.add_get("/servers/{i}/kv_cache", self._kv_cache)
            self._control = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._control.setup()
            await web.TCPSite(self._control, self.host, self.control_port, reuse_address=True).start()
        except BaseException:
            for s in started:
                await s.stop()
            if self._control:
                await self._control.cleanup()
            raise

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers), return_exceptions=True)
        if self._control:
            await self._control.cleanup()

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "index": s.index,
                "url": s.url,
                "kv_events": s.kv_endpoint,
                "kv_replay": f"tcp://{s.host}:{s.replay_port}" if s.replay_port else None,
                "model": s.model_name,
                "fault": s.fault.to_dict(),
                "max_lag_model_s": round(s.max_lag, 4),
            }
            for s in self.servers
        ]

    async def _list(self, _: web.Request) -> web.Response:
        return web.json_response(self.describe())

    def _server(self, request: web.Request) -> ModelServer:
        try:
            return self.servers[int(request.match_info["i"])]
        except (ValueError, IndexError):
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"no server {request.match_info['i']}"}),
                content_type="application/json",
            ) from None

    async def _requests(self, request: web.Request) -> web.Response:
        """Model-time timings of finished requests (twin only); `?clear=1` empties the log after reading."""
        server = self._server(request)
        out = list(server.finished_log)
        if request.query.get("clear") == "1":
            server.finished_log.clear()
        return web.json_response(out)

    async def _kv_cache(self, request: web.Request) -> web.Response:
        """The true prefix-cache contents (twin only): every cached engine block hash with its copy count, and the
        sequence number of the last KV-event batch published. A step's events go out when its tokens are delivered,
        so while requests run the cache may be one step ahead of the events; when the server is idle, a consumer
        that has applied `last_published_seq` must hold exactly `blocks`."""
        server = self._server(request)
        cache = server.engine.cache
        pub = server.publisher
        return web.json_response(
            {
                "block_size": cache.block_size,
                "num_gpu_blocks": cache.num_gpu_blocks,
                "last_published_seq": pub.next_seq - 1 if pub is not None else None,
                "blocks": [[h, n] for h, n in cache.cached_hashes().items()],
            }
        )

    async def _kv_events(self, request: web.Request) -> web.Response:
        """`{"drop": N}`: the server's next N KV-event batches are not sent live (replay still has them), so a
        subscriber sees a sequence gap; `{"restart": true}`: the publisher is closed and opened again (sequence numbers
        from 0, nothing to replay). Answers how many drops are pending and how many batches were dropped so far."""
        server = self._server(request)
        usage = 'body must be {"drop": N} with 0 <= N <= 1000000, or {"restart": true}'
        try:
            body = json.loads(await request.read() or b"null")
        except json.JSONDecodeError as exc:
            return web.json_response({"error": f"invalid JSON: {exc}"}, status=400)
        restart = isinstance(body, dict) and body == {"restart": True}
        drop = body.get("drop") if isinstance(body, dict) and set(body) == {"drop"} else None
        if not restart and (not isinstance(drop, int) or isinstance(drop, bool) or not 0 <= drop <= 1_000_000):
            return web.json_response({"error": usage}, status=400)
        if server.publisher is None:
            return web.json_response({"error": f"server {server.index} publishes no KV events"}, status=409)
        if isinstance(drop, int):
            server.drop_kv_batches = drop
        else:
            await server.restart_publisher()
        assert server.publisher is not None
        pending, dropped = server.drop_kv_batches, server.publisher.dropped
        return web.json_response({"index": server.index, "pending": pending, "dropped": dropped})

    async def _fault(self, request: web.Request) -> web.Response:
        server = self._server(request)
        i = server.index
        try:
            fault = parse_fault(json.loads(await request.read() or b"null"))
        except (FaultError, json.JSONDecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        await server.set_fault(fault)
        return web.json_response({"index": i, "fault": fault.to_dict()})
