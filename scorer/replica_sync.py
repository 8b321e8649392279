"""Keeps active-active picker replicas in agreement: each tells its peers what it routed and which responses ended.

Why it exists: Envoy spreads ext_proc streams over every healthy picker replica, so one replica sees only part of the
decisions, and the end of a request it routed may be reported to another (the observer stream is balanced on its
own). Without sharing, each replica's approximate prefix index knows only its own share of the traffic and its
in-flight counts miss the others' load. The Director publishes every local decision (`Routed`: endpoint, tokens,
prompt block hashes) and every response end (`Ended`) here; they are batched per peer (at most `max_batch` events,
sent `interval_s` after the first is queued) and POSTed as one JSON body (scorer/replica_wire.py) to the peer's
`/v1/replica/events`; a peer applies them in order (`Director.peer_routed` / `peer_ended`).

Bounded and lossy by design: a peer's queue holds at most `queue_limit` events (the oldest are dropped and counted);
a batch that fails (the peer is down or restarting) is dropped and the peer skipped for `retry_after_s`. What is lost
costs hit ratio (an index that missed a decision) or a charge that waits for the in-flight TTL, never a request.
Peers are `host:port` entries; a DNS name (a headless Service) is resolved every `resolve_every_s` to every address
behind it, and this replica's own address (`self_address`) is left out.

Warm start: a replica that starts while its peers run (a rollout restarts replicas one by one; a crashed worker of
`--workers N` is restarted) would otherwise decide with an empty prefix index until the traffic has taught it again,
sending conversations away from the servers that hold their prefixes. So it first asks its peers, in turn, for
`GET /v1/replica/snapshot` (every prefix plugin's per-endpoint blocks, least recently used first;
scorer/replica_wire.py) and restores the first answer (`warm_start`); the events its peers send from then on keep
it current. No peer answering (the first replica of a pool) is not an error: it starts empty, as before.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from scorer.director import Director
from scorer.replica_wire import (
    Event,
    ReplicaWireError,
    Routed,
    decode_batch,
    decode_snapshot,
    encode_batch,
    encode_snapshot,
)

log = logging.getLogger("autonomic.picker")

EVENTS_PATH = "/v1/replica/events"
SNAPSHOT_PATH = "/v1/replica/snapshot"
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass
class _Peer:
    address: str  # ip:port
    queue: deque[Event] = field(default_factory=deque)
    skip_until: float = 0.0


class ReplicaSync:
    def __init__(
        self,
        director: Director,
        peers: Sequence[str],
        self_address: str,
        registry: CollectorRegistry,
        *,
        interval_s: float = 0.002,  # short: decisions made within the delay do not see each other (replica_sim)
        max_batch: int = 512,
        queue_limit: int = 20_000,
        timeout_s: float = 2.0,
        retry_after_s: float = 1.0,
        resolve_every_s: float = 5.0,
    ):
        self.director = director
        self.peer_specs = list(peers)
        self.self_address = self_address
        self.interval_s, self.max_batch, self.queue_limit = interval_s, max_batch, queue_limit
        self.timeout_s, self.retry_after_s, self.resolve_every_s = timeout_s, retry_after_s, resolve_every_s
        self._peers: dict[str, _Peer] = {}
        self._pending = asyncio.Event()
        self.events = Counter(
            "autonomic_picker_replica_events",
            "Events exchanged with peer picker replicas (sent, received, dropped: queue full or batch failed).",
            ["direction"],
            registry=registry,
        )
        self.batches = Counter(
            "autonomic_picker_replica_batches",
            "Batches sent to peer replicas by outcome (ok, failed), and received ones refused (rejected).",
            ["outcome"],
            registry=registry,
        )
        self.restored = Counter(
            "autonomic_picker_replica_snapshot_blocks",
            "Prefix-index blocks restored from a peer replica's snapshot at start.",
            registry=registry,
        )
        self.peer_count = Gauge(
            "autonomic_picker_replica_peers", "Peer picker replicas this one sends to.", registry=registry
        )
        director.on_routed = self.publish
        director.on_ended = self.publish

    # ---- out ---------------------------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        """Queue one event for every peer (called by the Director, on the event loop's thread)."""
        for peer in self._peers.values():
            if len(peer.queue) >= self.queue_limit:
                peer.queue.popleft()
                self.events.labels("dropped").inc()
            peer.queue.append(event)
        if self._peers:
            self._pending.set()

    async def run(self) -> None:
        """Resolve the peers and send their batches until cancelled."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as http:
            resolving = asyncio.create_task(self._resolve_loop(), name="replica peers")
            try:
                while True:
                    await self._pending.wait()
                    await asyncio.sleep(self.interval_s)  # let a batch gather
                    self._pending.clear()
                    await asyncio.gather(*(self._send(http, p) for p in list(self._peers.values())))
                    if any(p.queue and p.skip_until <= time.monotonic() for p in self._peers.values()):
                        self._pending.set()
            finally:
                resolving.cancel()

    async def _send(self, http: aiohttp.ClientSession, peer: _Peer) -> None:
        now = time.monotonic()
        if not peer.queue or now < peer.skip_until:
            return
        batch = [peer.queue.popleft() for _ in range(min(self.max_batch, len(peer.queue)))]
        body = encode_batch(self.self_address, batch)
        try:
            async with http.post(f"http://{peer.address}{EVENTS_PATH}", data=body) as resp:
                if resp.status >= 300:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.batches.labels("failed").inc()
            self.events.labels("dropped").inc(len(batch))
            peer.skip_until = time.monotonic() + self.retry_after_s
            log.info("replica peer unreachable", extra={"peer": peer.address, "error": str(exc) or type(exc).__name__})
            return
        self.batches.labels("ok").inc()
        self.events.labels("sent").inc(len(batch))

    async def _resolve_loop(self) -> None:
        while True:
            await self.resolve()
            await asyncio.sleep(self.resolve_every_s)

    async def resolve(self) -> None:
        """The peers now: every address behind each `host:port` entry, this replica's own left out."""
        loop = asyncio.get_running_loop()
        found: set[str] = set()
        for spec in self.peer_specs:
            host, _, port = spec.rpartition(":")
            try:
                infos = await loop.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
            except OSError as exc:
                log.info("replica peer name not resolved", extra={"peer": spec, "error": str(exc)})
                continue
            for info in infos:
                ip, bound = str(info[4][0]), int(info[4][1])
                found.add(f"[{ip}]:{bound}" if ":" in ip else f"{ip}:{bound}")
        found.discard(self.self_address)
        for gone in set(self._peers) - found:
            del self._peers[gone]
        for new in found - set(self._peers):
            self._peers[new] = _Peer(new)
            log.info("replica peer added", extra={"peer": new})
        self.peer_count.set(len(self._peers))

    async def warm_start(self, timeout_s: float = 10.0) -> str | None:
        """Restore the first answering peer's snapshot (at start, after `resolve`); returns that peer, or None.
        `timeout_s` bounds the whole attempt, however many peers hang."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            for peer in list(self._peers):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    async with http.get(
                        f"http://{peer}{SNAPSHOT_PATH}", timeout=aiohttp.ClientTimeout(total=left)
                    ) as resp:
                        if resp.status != 200:
                            raise ReplicaWireError(f"HTTP {resp.status}")
                        snapshot = decode_snapshot(await _read_bounded(resp, MAX_BODY_BYTES))
                except (aiohttp.ClientError, TimeoutError, OSError, ReplicaWireError) as exc:
                    log.info(
                        "replica snapshot unavailable", extra={"peer": peer, "error": str(exc) or type(exc).__name__}
                    )
                    continue
                blocks = self.director.restore(snapshot.plugins)
                self.restored.inc(blocks)
                log.info("replica warm start", extra={"peer": peer, "blocks": blocks})
                return peer
        return None

    # ---- in ----------------------------------------------------------------------------------------------
    async def snapshot(self, request: web.Request) -> web.Response:
        """This replica's prefix indexes, for a peer that starts (`warm_start`)."""
        body = encode_snapshot(self.self_address, self.director.snapshot())
        return web.Response(body=body, content_type="application/json")

    async def receive(self, request: web.Request) -> web.Response:
        try:
            batch = decode_batch(await request.read())
        except ReplicaWireError as exc:
            self.batches.labels("rejected").inc()
            log.info("replica batch rejected", extra={"peer": request.remote, "error": str(exc)})
            return web.json_response({"error": str(exc)}, status=400)
        if batch.replica == self.self_address:
            return web.Response(status=204)
        for event in batch.events:
            if isinstance(event, Routed):
                self.director.peer_routed(event)
            else:
                self.director.peer_ended(event)
        self.events.labels("received").inc(len(batch.events))
        return web.Response(status=204)

    async def serve(self, host: str, port: int) -> tuple[web.AppRunner, int]:
        """The peers' endpoints (`POST /v1/replica/events`, `GET /v1/replica/snapshot`) on host:port (0: any free
        port); returns the bound port."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(EVENTS_PATH, self.receive)
        app.router.add_get(SNAPSHOT_PATH, self.snapshot)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner, int(runner.addresses[0][1]) if runner.addresses else port


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, refused past `limit` bytes (a peer is trusted with the index, not with the process's memory)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > limit:
            raise ReplicaWireError(f"snapshot over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
