"""The gRPC shell of the endpoint picker: Envoy's ExternalProcessor service and the gRPC health service.

Why it exists: Envoy opens one `Process` stream per HTTP request; this module reads that stream, lets an
`Exchange` (pure state machine) decide the answers and writes them back in order. It also serves
`grpc.health.v1.Health` as GIE's EPP does — `liveness` (SERVING while the process runs), `readiness` and
`envoy.service.ext_proc.v3.ExternalProcessor` (SERVING iff the backend is ready) — on the main port (so Envoy's
gRPC health check can use it) and optionally on a separate port (GIE serves health on 9003). A small task keeps
the readiness statuses current. With `tls` the main port serves TLS (`scorer.extproc.tls`); the health-only port
stays plaintext for the kubelet's gRPC probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from scorer.extproc.body_budget import MAX_BODY_BYTES, MAX_BUFFERED_BODY_BYTES, BodyBudget
from scorer.extproc.exchange import Exchange, PickBackend
from scorer.extproc.protocol import BodyMode, immediate_response
from scorer.extproc.response_log import ResponseLogServicer
from scorer.extproc.tls import CertSource, server_credentials

log = logging.getLogger("autonomic.extproc")

EXTPROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
LIVENESS, READINESS = "liveness", "readiness"
# grpcio binds with SO_REUSEPORT by default: a second picker on a taken port would start and share its traffic
_NO_PORT_SHARING = (("grpc.so_reuseport", 0),)
DRAIN_S = 1.0  # after an ImmediateResponse, how long the client may take to end its side of the stream
_MESSAGE_SLACK = 1 << 20  # what a ProcessingRequest carries besides its body (headers, metadata, attributes)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class StreamHooks(Protocol):
    """Told of every ext_proc stream (opened, closed) and of each ImmediateResponse sent on one, by status.

    Called inline by the servicer: cheaper than a gRPC interceptor, which wraps every stream in another async
    generator and runs a coroutine per call (measured in BENCHMARKS.md, "Capacity per core").
    """

    def opened(self) -> None: ...

    def closed(self) -> None: ...

    def immediate(self, status: int) -> None: ...


class ExtProcServicer(pb_grpc.ExternalProcessorServicer):
    """One `Exchange` per stream. `request_mode`/`response_mode` apply when Envoy does not announce its modes.

    After an ImmediateResponse the stream is read to its end (at most `drain_s` seconds) before the call ends.
    """

    def __init__(
        self,
        backend: PickBackend,
        *,
        request_mode: BodyMode = "FULL_DUPLEX_STREAMED",
        response_mode: BodyMode = "FULL_DUPLEX_STREAMED",
        max_body_bytes: int = MAX_BODY_BYTES,
        drain_s: float = DRAIN_S,
        hooks: StreamHooks | None = None,
        budget: BodyBudget | None = None,
    ):
        self.backend = backend
        self.budget = budget if budget is not None else BodyBudget()
        self.hooks = hooks
        self.request_mode: BodyMode = request_mode
        self.response_mode: BodyMode = response_mode
        self.max_body_bytes = max_body_bytes
        self.drain_s = drain_s

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProcessingResponse]:
        exchange = Exchange(
            self.backend,
            request_mode=self.request_mode,
            response_mode=self.response_mode,
            max_body_bytes=self.max_body_bytes,
            budget=self.budget,
        )
        prepare = getattr(self.backend, "prepare", None)  # optional async step before a decision (tokenize)
        if not getattr(self.backend, "preparers", True):  # nothing to prepare: no parse ahead, no body copy
            prepare = None
        answered = False  # an ImmediateResponse ended the exchange: what the client still sends is read and dropped
        hooks = self.hooks
        if hooks is not None:
            hooks.opened()
        try:
            while not exchange.closed:
                try:
                    req = await context.read()  # not the iterator: a message that fails to decode would end it
                except DecodeError as exc:  # not a ProcessingRequest: the client's fault
                    for answer in exchange.malformed(str(exc)):
                        yield answer
                    continue
                if req is grpc.aio.EOF:
                    return
                if prepare is not None and (pending := exchange.pending_request(req)) is not None:
                    await prepare(pending)
                for answer in exchange.handle(req):
                    yield answer
            answered = True
        except Exception:  # one odd stream must not take anything else down
            log.exception("ext_proc stream failed", extra={"request_id": exchange.request_id})
            if not exchange.targets and not exchange.closed:  # still unanswered: do not leave the client hanging
                yield immediate_response(500, "the endpoint picker failed", reason="picker_error")
                exchange.rejected = 500
                answered = True
        finally:
            exchange.finish()  # stream end, client cancel or error: the backend hears about the request once
            exchange.release_body()  # a body cut off mid-way gives its bytes back to the budget
            if hooks is not None:
                if exchange.rejected:
                    hooks.immediate(exchange.rejected)
                hooks.closed()
        if answered:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_drain(context), self.drain_s)


async def _drain(context: grpc.aio.ServicerContext) -> None:
    """Read until the client ends its side of the stream.

    Returning while the client still writes ends the call under its pending writes, which a gRPC client reports as
    status INTERNAL. Envoy half-closes and resets the stream as soon as it has an ImmediateResponse, so this ends
    at once with Envoy; a client that neither writes nor half-closes gets the end of the call after `drain_s`.
    """
    while True:
        try:
            if await context.read() is grpc.aio.EOF:
                return
        except DecodeError:  # a malformed message: dropped like the others
            continue
        except Exception:  # the stream is broken: nothing more will come
            return


@dataclass
class HealthState:
    """The health servicer and the loop that mirrors `backend.ready()` into it."""

    backend: PickBackend
    interval: float = 0.5
    servicer: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)

    async def update(self) -> None:
        try:
            ready = bool(self.backend.ready())
        except Exception:
            log.exception("backend.ready() failed")
            ready = False
        status = _SERVING if ready else _NOT_SERVING
        await self.servicer.set(LIVENESS, _SERVING)
        await self.servicer.set(READINESS, status)
        await self.servicer.set(EXTPROC_SERVICE, status)

    async def run(self) -> None:
        while True:
            await self.update()
            await asyncio.sleep(self.interval)


@dataclass
class ExtProcHandle:
    """A running picker: its bound ports and how to stop it."""

    server: grpc.aio.Server
    port: int
    health_server: grpc.aio.Server | None
    health_port: int | None
    health: HealthState
    task: asyncio.Task[None]
    budget: BodyBudget  # the request-body bytes all streams hold

    async def not_serving(self) -> None:
        """Every health service NOT_SERVING for good (shutting down), while streams are still served."""
        await self.health.servicer.enter_graceful_shutdown()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.not_serving()
        servers = [self.server] + ([self.health_server] if self.health_server else [])
        await asyncio.gather(*(s.stop(grace) for s in servers))


async def serve_extproc(
    backend: PickBackend,
    host: str = "127.0.0.1",
    port: int = 0,
    health_port: int | None = None,
    *,
    request_mode: BodyMode = "FULL_DUPLEX_STREAMED",
    response_mode: BodyMode = "FULL_DUPLEX_STREAMED",
    health_interval: float = 0.5,
    services: Sequence[Callable[[grpc.aio.Server], None]] = (),
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    tls: CertSource | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    stream_hooks: StreamHooks | None = None,
    reuse_port: bool = False,
    max_buffered_body_bytes: int = MAX_BUFFERED_BODY_BYTES,
) -> ExtProcHandle:
    """Start the picker on `host:port` (0 picks a free port) with health on it and, if given, on `health_port`.

    `services` add more gRPC services to the same server (each is called with it, e.g. a generated
    `add_XServicer_to_server` bound to its servicer); `interceptors` wrap every call on that server. `tls`: serve
    the main port over TLS with that certificate source (the health-only port stays plaintext). A request body over
    `max_body_bytes` is answered 413, and one that would take the bodies all streams hold past
    `max_buffered_body_bytes` is shed with 429 (scorer/extproc/body_budget.py). `stream_hooks` are told of every
    ext_proc stream. `reuse_port`: bind both ports with SO_REUSEPORT, for the sibling workers of one `autonomic
    picker --workers N` (scorer/workers.py); off, a port another process holds is an error rather than shared
    traffic.
    """
    state = HealthState(backend, interval=health_interval)
    await state.update()
    # one message may carry a whole buffered body (BUFFERED mode): up to the body limit it reaches the Exchange, which
    # answers 413 beyond it, rather than gRPC's default 4 MiB cap failing the stream with RESOURCE_EXHAUSTED
    max_message = ("grpc.max_receive_message_length", max_body_bytes + _MESSAGE_SLACK)
    sharing = (("grpc.so_reuseport", 1),) if reuse_port else _NO_PORT_SHARING
    server = grpc.aio.server(interceptors=list(interceptors) or None, options=[*sharing, max_message])
    budget = BodyBudget(max_buffered_body_bytes)
    servicer = ExtProcServicer(
        backend,
        request_mode=request_mode,
        response_mode=response_mode,
        max_body_bytes=max_body_bytes,
        hooks=stream_hooks,
        budget=budget,
    )
    pb_grpc.add_ExternalProcessorServicer_to_server(servicer, server)
    ResponseLogServicer(backend).add_to_server(server)  # response ends from Envoy's gRPC access log, if configured
    health_pb2_grpc.add_HealthServicer_to_server(state.servicer, server)
    for add_service in services:
        add_service(server)
    address = f"{host}:{port}"
    bound = (
        server.add_insecure_port(address) if tls is None else server.add_secure_port(address, server_credentials(tls))
    )
    health_server, health_bound = None, None
    if health_port is not None:
        health_server = grpc.aio.server(options=sharing)
        health_pb2_grpc.add_HealthServicer_to_server(state.servicer, health_server)
        health_bound = health_server.add_insecure_port(f"{host}:{health_port}")
    await server.start()
    if health_server is not None:
        await health_server.start()
    task = asyncio.create_task(state.run(), name="extproc-health")
    log.info(
        "ext_proc picker serving",
        extra={
            "address": f"{host}:{bound}",
            "health_port": health_bound,
            "request_mode": request_mode,
            "response_mode": response_mode,
            "tls": tls.current.origin if tls else "off",
        },
    )
    return ExtProcHandle(server, bound, health_server, health_bound, state, task, budget)
