"""The gRPC shell of the endpoint picker: Envoy's ExternalProcessor service, served with health on one grpclib server.

Why it exists: Envoy opens one `Process` stream per HTTP request; this module reads that stream, lets an
`Exchange` (pure state machine) decide the answers and writes them back in order. The server
(`scorer.extproc.grpcserver`, grpclib on the picker's own event loop) also serves `grpc.health.v1.Health`
(`scorer.extproc.health`) — on the main port, so Envoy's gRPC health check can use it, and optionally on a separate
plaintext port (GIE serves health on 9003) — Envoy's gRPC access log (`scorer.extproc.response_log`) and the services
the caller adds (the Picker API). A small task keeps the readiness statuses current. With `tls` the main port serves
TLS (`scorer.extproc.tls`); the health-only port stays plaintext for the kubelet's gRPC probes.

Each message is read undecoded (`grpcserver.receive`, which refuses one over max_body_bytes + 1 MiB with
RESOURCE_EXHAUSTED before reading it) and decoded here, so a message that is not a ProcessingRequest is answered 400
(`Exchange.malformed`) while the stream is still read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf.message import DecodeError
from grpclib.const import Cardinality, Handler
from grpclib.exceptions import GRPCError
from grpclib.server import Stream
from h2.exceptions import StreamClosedError

from scorer.extproc.exchange import MAX_BODY_BYTES, Exchange, Out, PickBackend
from scorer.extproc.grpcserver import GrpcServer, Servable, receive
from scorer.extproc.health import EXTPROC_SERVICE, LIVENESS, READINESS, HealthState
from scorer.extproc.protocol import BodyMode, immediate_response
from scorer.extproc.response_log import ResponseLogServicer
from scorer.extproc.tls import CertSource, server_context

__all__ = [
    "EXTPROC_SERVICE",
    "LIVENESS",
    "READINESS",
    "ExtProcHandle",
    "ExtProcServicer",
    "StreamHooks",
    "serve_extproc",
]

log = logging.getLogger("autonomic.extproc")

PROCESS = f"/{EXTPROC_SERVICE}/Process"
DRAIN_S = 1.0  # after an ImmediateResponse, how long the client may take to end its side of the stream
MESSAGE_SLACK = 1 << 20  # what a ProcessingRequest carries besides its body (headers, metadata, attributes)


class StreamHooks(Protocol):
    """Told of every ext_proc stream (opened, closed) and of each ImmediateResponse sent on one, by status.

    Called inline by the servicer: cheaper than a wrapper around every stream (measured in BENCHMARKS.md,
    "Capacity per core").
    """

    def opened(self) -> None: ...

    def closed(self) -> None: ...

    def immediate(self, status: int) -> None: ...


class ExtProcServicer:
    """One `Exchange` per stream. `request_mode`/`response_mode` apply when Envoy does not announce its modes.

    One message may carry a whole buffered body (BUFFERED mode): up to max_body_bytes it reaches the Exchange, which
    answers 413 beyond it; a message over max_body_bytes + MESSAGE_SLACK ends the stream with RESOURCE_EXHAUSTED
    unread. After an ImmediateResponse the stream is read to its end (at most `drain_s` seconds) before the call ends.
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
    ):
        self.backend = backend
        self.hooks = hooks
        self.request_mode: BodyMode = request_mode
        self.response_mode: BodyMode = response_mode
        self.max_body_bytes = max_body_bytes
        self.max_message = max_body_bytes + MESSAGE_SLACK
        self.drain_s = drain_s
        prepare = getattr(backend, "prepare", None)  # optional async step before a decision (tokenize)
        if not getattr(backend, "preparers", True):  # nothing to prepare: no parse ahead, no body copy
            prepare = None
        self.prepare = prepare

    def __mapping__(self) -> dict[str, Handler]:
        return {PROCESS: Handler(self.process, Cardinality.STREAM_STREAM, pb.ProcessingRequest, pb.ProcessingResponse)}

    async def process(self, stream: Stream[Any, Any]) -> None:
        exchange = Exchange(
            self.backend,
            request_mode=self.request_mode,
            response_mode=self.response_mode,
            max_body_bytes=self.max_body_bytes,
        )
        answered = False  # an ImmediateResponse ended the exchange: what the client still sends is read and dropped
        hooks = self.hooks
        if hooks is not None:
            hooks.opened()
        try:
            while not exchange.closed:
                data = await receive(stream, self.max_message)  # RESOURCE_EXHAUSTED over the limit: ends the call
                if data is None:
                    return
                try:
                    answers = await self._answers(exchange, data)
                except Exception:  # one odd stream must not take anything else down
                    log.exception("ext_proc stream failed", extra={"request_id": exchange.request_id})
                    if exchange.targets or exchange.closed:  # answered already: end the call
                        return
                    # still unanswered: do not leave the client hanging
                    answers = [immediate_response(500, "the endpoint picker failed", reason="picker_error")]
                    exchange.rejected, exchange.closed = 500, True
                for answer in answers:
                    await stream.send_message(answer)
            answered = True
        except StreamClosedError:  # the client reset the stream while an answer was going out
            return
        except GRPCError as exc:  # a message over the limit: the call ends with that status
            log.warning("ext_proc stream refused", extra={"request_id": exchange.request_id, "error": exc.message})
            raise
        finally:
            exchange.finish()  # stream end, client cancel or error: the backend hears about the request once
            if hooks is not None:
                if exchange.rejected:
                    hooks.immediate(exchange.rejected)
                hooks.closed()
        if answered:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain(stream), self.drain_s)

    async def _answers(self, exchange: Exchange, data: bytes) -> Out:
        try:
            req = pb.ProcessingRequest.FromString(data)
        except DecodeError as exc:  # not a ProcessingRequest: the client's fault
            return exchange.malformed(str(exc))
        if self.prepare is not None and (pending := exchange.pending_request(req)) is not None:
            await self.prepare(pending)
        return exchange.handle(req)

    async def _drain(self, stream: Stream[Any, Any]) -> None:
        """Read (and drop) until the client ends its side of the stream.

        Returning while the client still writes ends the call under its pending writes. Envoy half-closes and resets
        the stream as soon as it has an ImmediateResponse, so this ends at once with Envoy; a client that neither
        writes nor half-closes gets the end of the call after `drain_s`.
        """
        with contextlib.suppress(Exception):  # too large, or the stream is broken: nothing more will be read
            while await receive(stream, self.max_message) is not None:
                pass


@dataclass
class ExtProcHandle:
    """A running picker: its bound ports and how to stop it."""

    server: GrpcServer
    port: int
    health_server: GrpcServer | None
    health_port: int | None
    health: HealthState
    task: asyncio.Task[None]

    async def not_serving(self) -> None:
        """Every health service NOT_SERVING for good (shutting down), while streams are still served."""
        await self.health.servicer.enter_graceful_shutdown()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def stop(self, grace: float | None = 1.0) -> None:
        """NOT_SERVING, no new streams (GOAWAY), open ones get `grace` seconds to end, then cancelled; ports closed."""
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
    services: Sequence[Servable] = (),
    tls: CertSource | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    stream_hooks: StreamHooks | None = None,
    reuse_port: bool = False,
) -> ExtProcHandle:
    """Start the picker on `host:port` (0 picks a free port) with health on it and, if given, on `health_port`.

    `services` add more grpclib services (objects with `__mapping__`) to the same server. `tls`: serve the main port
    over TLS with that certificate source (the health-only port stays plaintext). A request body over
    `max_body_bytes` is answered 413. `stream_hooks` are told of every ext_proc stream. `reuse_port`: bind both ports
    with SO_REUSEPORT, for the sibling workers of one `autonomic picker --workers N` (scorer/workers.py); off, a
    port another process holds is an error (OSError) rather than shared traffic.
    """
    state = HealthState(backend, interval=health_interval)
    await state.update()
    servicer = ExtProcServicer(
        backend,
        request_mode=request_mode,
        response_mode=response_mode,
        max_body_bytes=max_body_bytes,
        hooks=stream_hooks,
    )
    # response ends from Envoy's gRPC access log, if configured
    server = GrpcServer([servicer, ResponseLogServicer(backend), state.servicer, *services])
    bound = await server.start(host, port, tls=server_context(tls) if tls else None, reuse_port=reuse_port)
    health_server, health_bound = None, None
    if health_port is not None:
        health_server = GrpcServer([state.servicer])
        try:
            health_bound = await health_server.start(host, health_port, reuse_port=reuse_port)
        except BaseException:
            await server.stop(0)
            raise
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
    return ExtProcHandle(server, bound, health_server, health_bound, state, task)
