"""`grpc.health.v1.Health` (Check and Watch) on the picker's grpclib server, and the loop that keeps it current.

Why it exists: the picker serves health as GIE's EPP does — `liveness` (SERVING while the process runs), `readiness`
and `envoy.service.ext_proc.v3.ExternalProcessor` (SERVING iff the backend is ready), "" (the server) — on the
ext_proc port, for Envoy's gRPC health check, and on a plaintext port for the kubelet. The semantics are those of
grpcio-health-checking's servicer, which the grpc.aio server used: an unknown service is NOT_FOUND to Check and
SERVICE_UNKNOWN to Watch, Watch sends each change, and `enter_graceful_shutdown` makes everything NOT_SERVING for
good. The messages are grpcio-health-checking's (`grpc_health.v1.health_pb2`), the same types as the clients'.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from grpc_health.v1 import health_pb2
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from scorer.extproc.exchange import PickBackend
from scorer.extproc.grpcserver import receive_one

log = logging.getLogger("autonomic.extproc")

EXTPROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
LIVENESS, READINESS = "liveness", "readiness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

Request, Response = health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse


class HealthServicer:
    """The statuses by service name and the Health service that answers them."""

    def __init__(self) -> None:
        self.statuses: dict[str, int] = {"": SERVING}
        self.shutting_down = False
        self._changed = asyncio.Condition()

    async def set(self, service: str, status: int) -> None:
        if self.shutting_down:
            return
        await self._set(service, status)

    async def _set(self, service: str, status: int) -> None:
        if self.statuses.get(service) == status:
            return
        async with self._changed:
            self.statuses[service] = status
            self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING from now on; later `set`s are ignored."""
        if self.shutting_down:
            return
        self.shutting_down = True
        for service in list(self.statuses):
            await self._set(service, NOT_SERVING)

    async def check(self, stream: Stream[Any, Any]) -> None:
        request = await receive_one(stream, Request)
        status = self.statuses.get(request.service)
        if status is None:
            raise GRPCError(Status.NOT_FOUND, f"unknown service {request.service!r}")
        await stream.send_message(Response(status=status))

    async def watch(self, stream: Stream[Any, Any]) -> None:
        request = await receive_one(stream, Request)
        while True:
            last = self.statuses.get(request.service, _UNKNOWN)
            await stream.send_message(Response(status=last))
            async with self._changed:  # not held while sending: a slow watcher must not hold up `set`
                while self.statuses.get(request.service, _UNKNOWN) == last:
                    await self._changed.wait()

    def __mapping__(self) -> dict[str, Handler]:
        return {
            "/grpc.health.v1.Health/Check": Handler(self.check, Cardinality.UNARY_UNARY, Request, Response),
            "/grpc.health.v1.Health/Watch": Handler(self.watch, Cardinality.UNARY_STREAM, Request, Response),
        }


@dataclass
class HealthState:
    """The health servicer and the loop that mirrors `backend.ready()` into it."""

    backend: PickBackend
    interval: float = 0.5
    servicer: HealthServicer = field(default_factory=HealthServicer)

    async def update(self) -> None:
        try:
            ready = bool(self.backend.ready())
        except Exception:
            log.exception("backend.ready() failed")
            ready = False
        status = SERVING if ready else NOT_SERVING
        await self.servicer.set(LIVENESS, SERVING)
        await self.servicer.set(READINESS, status)
        await self.servicer.set(EXTPROC_SERVICE, status)

    async def run(self) -> None:
        while True:
            await self.update()
            await asyncio.sleep(self.interval)
