"""One vLLM-compatible server of the fleet twin: the aiohttp shell around the pure engine.

Why it exists: routers talk HTTP to model servers, scrape `/metrics` and subscribe to KV events. This shell
serves vLLM's OpenAI API over the engine, runs the engine loop in model time (`time_scale` model seconds per
real second, so traces replay faster than real time), publishes the engine's KV events over ZMQ and keeps
vLLM's metrics. Handlers never block the loop; every bad request gets vLLM's error object.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

import zmq
from aiohttp import web

from common.kv_event_types import EventBatch
from sim.fleet import openai_api as oa
from sim.fleet.engine import Engine, EngineRequest, StepResult
from sim.fleet.faults import Fault
from sim.fleet.kv_publisher import KVEventPublisher
from sim.fleet.metrics import CONTENT_TYPE, ServerMetrics
from sim.fleet.profile import EngineProfile
from sim.fleet.tokenizer import generate_token_ids, get_tokenizer

log = logging.getLogger("autonomic.fleet")
_MAX_BUSY_S = 0.01  # longest the engine loop runs without yielding to the HTTP handlers when it lags

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _Stream:
    """Tokens of one engine request on their way to the HTTP handler."""

    req: EngineRequest
    queue: asyncio.Queue[list[int] | None] = field(default_factory=asyncio.Queue)


class ModelServer:
    def __init__(
        self,
        *,
        index: int,
        profile: EngineProfile,
        port: int,
        host: str = "127.0.0.1",
        kv_port: int | None = None,
        replay_port: int | None = None,
        time_scale: float = 1.0,
        lora_names: tuple[str, ...] = (),
        served_model_name: str | None = None,
        request_log: int = 200_000,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.index = index
        self.profile = profile
        self.host, self.http_port = host, port
        self.kv_port, self.replay_port = kv_port, replay_port
        self.time_scale = time_scale
        self.model_name = served_model_name or profile.model
        self.lora_names = list(lora_names)
        self.engine = Engine(profile)
        self.tokenizer = get_tokenizer()
        self.metrics = ServerMetrics(
            model_name=self.model_name,
            cache_config={
                "block_size": str(profile.block_size),
                "num_gpu_blocks": str(profile.num_gpu_blocks),
                "enable_prefix_caching": "True",
                "cache_dtype": "auto",
                "gpu_memory_utilization": "0.9",
            },
            max_lora=profile.max_loras,
            max_model_len=profile.max_model_len,
        )
        self.fault = Fault()
        self.publisher: KVEventPublisher | None = None
        self.drop_kv_batches = 0  # fault injection: the next N KV-event batches are lost live (replay keeps them)
        self._streams: dict[str, _Stream] = {}
        self._wake = asyncio.Event()
        self._t0 = time.monotonic()
        self.max_lag = 0.0  # model seconds the GPU timeline has trailed the wall clock at most
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._engine_task: asyncio.Task[None] | None = None
        self._unhang = asyncio.Event()
        self._seq = 0
        # model-time record of finished requests, read by benchmarks through the fleet control API
        # finished requests' timings for GET /servers/{i}/requests (~1 KB each: 200 MB per server when full)
        self.finished_log: deque[dict[str, Any]] = deque(maxlen=request_log)

    # ---- lifecycle -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def kv_endpoint(self) -> str | None:
        return f"tcp://{self.host}:{self.kv_port}" if self.kv_port else None

    def model_now(self) -> float:
        return (time.monotonic() - self._t0) * self.time_scale

    async def start(self) -> None:
        if self.kv_port:
            replay = f"tcp://{self.host}:{self.replay_port}" if self.replay_port else None
            self.publisher = KVEventPublisher(self.kv_endpoint or "", replay_endpoint=replay)
        app = web.Application(middlewares=[self._fault_middleware], client_max_size=64 * 1024 * 1024)
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await self._listen()
        self._engine_task = asyncio.create_task(self._engine_loop(), name=f"engine-{self.index}")

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.http_port, reuse_address=True)
        await self._site.start()

    async def stop(self) -> None:
        if self._engine_task:
            self._engine_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._engine_task
        self._unhang.set()
        for rid in list(self._streams):
            self._abort(rid)
        if self._runner:
            await self._runner.cleanup()
        if self.publisher:
            self.publisher.close()

    async def restart_publisher(self) -> None:
        """Close the KV-event publisher and open a new one on the same ports (fault injection): its sequence numbers
        start at 0 again and its replay buffer is empty, as after a vLLM restart (the engine's cache is kept). Events
        of the steps taken while the ports are rebound are lost, as a restarting server's would be."""
        old, self.publisher = self.publisher, None  # the engine loop publishes nothing while there is none
        if old is None:
            raise RuntimeError(f"server {self.index} publishes no KV events")
        await old.aclose()  # the engine loop keeps stepping meanwhile: it must never see the closed one
        replay = f"tcp://{self.host}:{self.replay_port}" if self.replay_port else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while True:  # ZMQ releases the old sockets' ports in its I/O thread, a moment after close()
            try:
                self.publisher = KVEventPublisher(self.kv_endpoint or "", replay_endpoint=replay)
                break
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or loop.time() > deadline:
                    self.publisher = None
                    raise
                await asyncio.sleep(0.02)
        log.info("KV-event publisher restarted", extra={"server": self.index})

    async def set_fault(self, fault: Fault) -> None:
        """Apply a fault mode (see faults.py); `stop` closes the listener, anything else reopens it."""
        previous, self.fault = self.fault, fault
        self.engine.slowdown = fault.factor if fault.mode == "slow" else 1.0
        if fault.mode != "hang":
            self._unhang.set()
        else:
            self._unhang.clear()
        if fault.mode == "stop" and previous.mode != "stop" and self._site is not None:
            await self._site.stop()
            self._site = None
            for rid in list(self._streams):
                self._abort(rid)
            assert self._runner is not None and self._runner.server is not None
            for connection in self._runner.server.connections:  # idle keep-alive ones too, as a crash closes them
                connection.force_close()
        elif fault.mode != "stop" and self._site is None:
            await self._listen()
        log.info("fault set", extra={"server": self.index, "fault": fault.to_dict()})

    # ---- engine loop -----------------------------------------------------------------------------------
    async def _engine_loop(self) -> None:
        """Steps the engine on its own GPU timeline, paced to the wall clock.

        A step starts when the previous one ended (or when the oldest waiting request arrived, if the engine was
        idle), never "now": when this process is short of CPU the timeline falls behind the wall clock and catches
        up later, so model-time latencies stay those of the modelled GPU rather than of this machine's load.
        The lag (wall minus GPU timeline) is tracked in `max_lag` and the fleet's `/servers`.
        """
        gpu_free_at = 0.0
        last_yield = time.monotonic()
        while True:
            if not self.engine.has_work():
                self._wake.clear()
                await self._wake.wait()
                last_yield = time.monotonic()
            start = self.engine.next_start(gpu_free_at)
            res = self.engine.step(start)
            if res.duration <= 0:
                gpu_free_at = max(start, self.model_now())  # nothing could run: the GPU idled until now
                await asyncio.sleep(0.001)
                continue
            gpu_free_at = start + res.duration
            delay = gpu_free_at / self.time_scale - (time.monotonic() - self._t0)
            if delay > 0:
                await asyncio.sleep(delay)
                last_yield = time.monotonic()
                self._deliver(res)
                continue
            # behind the wall clock: deliver at once and yield only every few ms, so that the tokens of several
            # steps pile up and go out merged in one SSE chunk, as vLLM's output collector does under load
            self.max_lag = max(self.max_lag, -delay * self.time_scale)
            self._deliver(res)
            if time.monotonic() - last_yield > _MAX_BUSY_S:
                await asyncio.sleep(0)
                last_yield = time.monotonic()

    def _deliver(self, res: StepResult) -> None:
        for rid, toks in res.new_tokens.items():
            stream = self._streams.get(rid)
            if stream is not None:
                stream.queue.put_nowait(toks)
        for req in res.finished:
            stream = self._streams.pop(req.request_id, None)
            if stream is not None:
                stream.queue.put_nowait(None)
            self._observe_finished(req)
        m = self.metrics
        m.set_queue(len(self.engine.running), len(self.engine.waiting))
        m.set_kv_usage(self.engine.kv_usage())
        if res.prefix_queries:
            m.add_prefix_cache(res.prefix_queries, res.prefix_hits)
        if res.preempted:
            m.add_preemptions(res.preempted)
        m.add_iteration_tokens(res.num_scheduled_tokens)
        m.add_step_tokens(res.first_token_prompt_tokens, sum(len(t) for t in res.new_tokens.values()))
        running, waiting = self.engine.lora_sets()
        if self.profile.max_loras:
            m.set_lora(running, waiting, time.time())
        if res.events and self.publisher is not None:
            drop = self.drop_kv_batches > 0
            self.drop_kv_batches -= drop
            self.publisher.publish(EventBatch(ts=time.time(), events=res.events), drop_live=drop)

    def _observe_finished(self, req: EngineRequest) -> None:
        assert req.finished is not None and req.first_token is not None and req.first_scheduled is not None
        times = req.token_times
        self.finished_log.append(
            {
                "request_id": req.request_id,
                "arrival": req.arrival,
                "ttft": req.first_token - req.arrival,
                "e2e": req.finished - req.arrival,
                "queue": req.first_scheduled - req.arrival,
                "prefill": req.first_token - req.first_scheduled,
                "prompt_tokens": req.num_prompt_tokens,
                "cached_tokens": req.cached_prompt_tokens,
                "output_tokens": req.num_output_tokens,
                "preemptions": req.preemptions,
                "finish_reason": req.finish_reason,
            }
        )
        self.metrics.observe_finished(
            ttft_s=req.first_token - req.arrival,
            e2e_s=req.finished - req.arrival,
            queue_s=req.first_scheduled - req.arrival,
            prefill_s=req.first_token - req.first_scheduled,
            decode_s=req.finished - req.first_token,
            itl_s=[b - a for a, b in itertools.pairwise(times)],
            prompt_tokens=req.num_prompt_tokens,
            generation_tokens=req.num_output_tokens,
            cached_tokens=req.cached_prompt_tokens,
            finish_reason=req.finish_reason or "length",
        )

    def _abort(self, rid: str) -> None:
        req = self.engine.abort(rid, self.model_now())
        stream = self._streams.pop(rid, None)
        if stream is not None:
            stream.queue.put_nowait(None)
        if req is not None:
            self.metrics.observe_aborted()

    # ---- request intake --------------------------------------------------------------------------------
    def check_model(self, model: str | None) -> str | None:
        """Returns the LoRA adapter a request targets (None for the base model); 404 for unknown models."""
        if model is None or model == self.model_name:
            return None
        if model in self.lora_names:
            return model
        raise oa.ApiError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")

    def submit(self, prompt_ids: list[int], params: oa.GenerationParams, lora: str | None, n: int) -> _Stream:
        """Validate lengths and enqueue one engine request; returns the stream its tokens arrive on."""
        err = oa.context_error(self.profile.max_model_len, len(prompt_ids), params.max_tokens)
        if err is not None:
            raise err
        if len(prompt_ids) > self.engine.max_prompt_tokens():
            raise oa.bad_request(
                f"prompt of {len(prompt_ids)} tokens does not fit in the KV cache "
                f"({self.engine.max_prompt_tokens()} tokens)",
                "prompt",
            )
        limit = self.profile.max_model_len - len(prompt_ids)
        max_tokens = limit if params.max_tokens is None else min(params.max_tokens, limit)
        seed = _seed(prompt_ids, n)
        natural = 32 + seed % 481  # where the "model" would emit EOS: 32..512 tokens
        if params.ignore_eos or natural >= max_tokens:
            length, stop = max_tokens, False
        else:
            length, stop = max(natural, params.min_tokens), True
        length = max(1, min(length, max_tokens) if max_tokens else 1)
        self._seq += 1
        rid = f"{params.request_id or 'req'}-{self.index}-{self._seq}"
        req = EngineRequest(
            rid,
            prompt_ids,
            generate_token_ids(seed, length),
            self.model_now(),
            lora_name=lora,
            stop_on_plan_end=stop,
        )
        try:
            self.engine.add_request(req)
        except ValueError as exc:
            raise oa.bad_request(str(exc), "prompt") from exc
        stream = _Stream(req)
        self._streams[rid] = stream
        self._wake.set()
        return stream

    # ---- HTTP --------------------------------------------------------------------------------------------
    def _add_routes(self, app: web.Application) -> None:
        from sim.fleet import compat, http_api  # late import: they use this class

        http_api.add_routes(app, self)
        compat.add_compat_routes(app, self)

    @web.middleware
    async def _fault_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        mode = self.fault.mode
        if mode == "hang":
            await self._unhang.wait()
        elif mode == "error" and request.path != "/metrics":
            err = oa.ApiError(self.fault.status, "injected fault: server error", "InternalServerError")
            return web.json_response(err.body(), status=err.status)
        try:
            return await handler(request)
        except oa.ApiError as err:
            return web.json_response(err.body(), status=err.status)

    def metrics_response(self, names: Sequence[str] = (), accept_encoding: str = "") -> web.Response:
        """`/metrics` as vLLM serves it (prometheus_client's exposition app): the series named by `?name[]=` only,
        when some are, and gzip-compressed (at gzip's default level) when the client accepts gzip."""
        body = self.metrics.render(names)
        headers = {"Content-Type": CONTENT_TYPE}
        if any(coding.split(";")[0].strip().lower() == "gzip" for coding in accept_encoding.split(",")):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)


def _seed(prompt_ids: list[int], n: int) -> int:
    h = blake2b(json.dumps([len(prompt_ids), prompt_ids[-64:], n]).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def json_body_error(exc: Exception) -> oa.ApiError:
    return oa.bad_request(f"Invalid JSON body: {exc}")


def loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise json_body_error(exc) from exc
