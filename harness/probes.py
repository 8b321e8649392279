"""Readiness probes for `Child(ready=...)`: async callables that return True once the child serves.

Why it exists: many children have no ready line (Envoy, Prometheus, the peer routers), so the harness asks them, as
a load balancer would. A probe returns True when ready; False or an exception means not yet, and the last reason
(raise `NotReady("why")` to give one) is quoted if the wait times out. `poll` asks until then, and stops asking as
soon as the child exits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

Probe = Callable[[], Awaitable[bool]]


class NotReady(Exception):
    """What a probe raises to say why the child is not ready yet."""


def http_ready(url: str, *, timeout_s: float = 2.0) -> Probe:
    """Ready once GET `url` answers 200 (Envoy's admin /ready, Prometheus' /-/ready, a /health)."""

    async def probe() -> bool:
        import aiohttp  # here: importing the harness stays cheap

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http, http.get(url) as r:
            if r.status == 200:
                return True
            raise NotReady(f"GET {url}: HTTP {r.status} {(await r.text())[:200]!r}")

    return probe


def grpc_health_ready(target: str, service: str = "", *, timeout_s: float = 2.0) -> Probe:
    """Ready once the gRPC health service at `target` (host:port, plaintext) answers SERVING for `service`."""

    async def probe() -> bool:
        import grpc  # here: importing the harness stays cheap
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        async with grpc.aio.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            got = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        if got.status == health_pb2.HealthCheckResponse.SERVING:
            return True
        raise NotReady(
            f"gRPC health of {service!r} at {target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(got.status)}"
        )

    return probe


async def poll(probe: Probe, exited: asyncio.Event, timeout_s: float, interval_s: float) -> str | None:
    """Ask `probe` every `interval_s` until it says ready (None), `exited` is set (None: the caller checks), or
    `timeout_s` has passed: then the last reason it was not ready."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no answer yet"
    gone = asyncio.ensure_future(exited.wait())
    try:
        while not exited.is_set() and (remaining := deadline - loop.time()) > 0:
            attempt = asyncio.ensure_future(probe())
            await asyncio.wait({attempt, gone}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if not attempt.done():  # the child exited, or time ran out, while the probe was waiting
                attempt.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await attempt
                continue
            try:
                if attempt.result():
                    return None
                last = "answered not ready"
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            await asyncio.wait({gone}, timeout=min(interval_s, max(0.0, deadline - loop.time())))
        return None if exited.is_set() else f"last probe: {last}"
    finally:
        gone.cancel()
