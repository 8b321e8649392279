"""Publishes a fleet twin server's KV-cache events over ZMQ the way vLLM's `ZmqEventPublisher` does.

Why this exists: a KV-aware router (llm-d's precise prefix-cache scorer, vllm-router's kv_aware policy, our
picker) learns what each server has cached from these events. For the twin to stand in for real vLLM
servers, the sockets, frames, sequence numbers and replay protocol must be the ones vLLM uses, not just the
payloads (those are `kv_wire.py`'s job).

vLLM's publisher (vllm-project/vllm `vllm/distributed/kv_events.py`, class `ZmqEventPublisher`; replay
topic frame from PR #45177, in v0.26.0) and what this one keeps or changes:

* A PUB socket with high-water mark `hwm` (default 100_000; `set_hwm`, both directions). Each batch goes out
  as `[topic, seq (8 bytes big-endian), payload]`, seq from `itertools.count()`: 0, 1, 2, ... per publisher.
  vLLM fills in `data_parallel_rank` when a batch has none; so do we (default rank 0).
* The last `buffer_steps` (default 10_000) `(seq, payload)` pairs are kept for replay.
* An optional ROUTER socket serves replay. A request is `[identity, b"", start_seq (8 bytes big-endian)]`
  (anything with another frame count is ignored without a reply). The reply is one message
  `[identity, b"", topic, seq, payload]` per buffered batch with seq >= start_seq, oldest first, then
  `[identity, b"", b"", END_SEQ, b""]` with END_SEQ = -1 as 8 signed big-endian bytes. A client uses a
  DEALER (a REQ socket would take only the first reply) and sends `[b"", start_seq]`.
* vLLM runs all this on a thread fed by a queue. Here it runs on the asyncio loop of the aiohttp process:
  `publish()` encodes and sends with NOBLOCK (a PUB send never waits: past the HWM ZMQ drops the message,
  which subscribers see as a sequence gap) and a task serves replay, so nothing blocks the loop.
* vLLM binds when the endpoint has a wildcard ("*", "::") or is ipc/inproc, else connects. The twin binds
  the address it is given (127.0.0.1 in tests); `connect=True` gives the "central" mode where the
  subscriber binds and every server connects to it. vLLM offsets ports by the DP rank; the twin's endpoints
  are explicit, so it does not.
* Differences that do not show on the wire: replay sends use ROUTER_MANDATORY with a timeout per message, so
  a slow replay client is waited for (vLLM's ROUTER silently drops past its default HWM of 1000) and a dead
  one is given up on; a batch whose live send fails still enters the replay buffer, so replay can repair the
  gap; `publish(..., drop_live=True)` drops one live message on purpose (fault injection for gap tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from dataclasses import replace
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from common.kv_event_types import EventBatch
from common.kv_wire import END_SEQ, EventFormat, encode_batch, encode_seq

log = logging.getLogger(__name__)

_REPLAY_YIELD_EVERY = 256
"""Replay hands the loop back to other tasks after this many messages."""


class KVEventPublisher:
    """PUB socket for KV-event batches plus an optional ROUTER socket that replays recent ones.

    Must be created inside a running asyncio loop (it starts the replay and connection-monitor tasks).
    """

    END_SEQ = END_SEQ

    def __init__(
        self,
        endpoint: str,
        replay_endpoint: str | None = None,
        topic: str = "",
        buffer_steps: int = 10_000,
        *,
        hwm: int = 100_000,
        data_parallel_rank: int = 0,
        event_format: EventFormat = "map",
        connect: bool = False,
        replay_send_timeout: float = 5.0,
    ) -> None:
        if not endpoint:
            raise ValueError("KVEventPublisher needs an endpoint, e.g. tcp://127.0.0.1:5557")
        if buffer_steps < 0:
            raise ValueError(f"buffer_steps must be >= 0, got {buffer_steps}")
        loop = asyncio.get_running_loop()  # RuntimeError outside a loop: the tasks below need one
        self.endpoint, self.replay_endpoint = endpoint, replay_endpoint
        self.topic = topic.encode("utf-8")
        self.event_format: EventFormat = event_format
        self.data_parallel_rank = data_parallel_rank
        self.replay_send_timeout = replay_send_timeout
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self._next_seq = 0
        self._closed = False
        self.dropped = 0
        """Batches that did not go out live (send failed, or dropped on purpose); replay still has them."""
        self.replays_served = 0
        self._peers = 0
        self._peers_changed = asyncio.Event()

        ctx = zmq.asyncio.Context.instance()
        self._pub = ctx.socket(zmq.PUB)
        self._pub.set_hwm(hwm)
        self._pub.setsockopt(zmq.LINGER, 0)
        # The sync view of the same socket: a PUB send with NOBLOCK completes at once, no future needed.
        self._pub_sync: zmq.Socket[Any] = zmq.Socket.shadow(self._pub.underlying)
        self._monitor = self._pub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        self._router: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._connected = connect
        try:
            if connect:
                self._pub.connect(endpoint)
            else:
                self._pub.bind(endpoint)
                # The address actually bound: "tcp://127.0.0.1:*" asks ZMQ for a free port.
                self.endpoint = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
            if replay_endpoint is not None:
                self._router = ctx.socket(zmq.ROUTER)
                self._router.setsockopt(zmq.LINGER, 0)
                self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
                self._router.set_hwm(hwm)
                self._router.bind(replay_endpoint)
                self.replay_endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError:
            self._close_sockets()
            raise
        self._tasks.append(loop.create_task(self._watch_peers(), name=f"kv-pub-monitor {endpoint}"))
        if self._router is not None:
            self._tasks.append(loop.create_task(self._serve_replay(), name=f"kv-pub-replay {replay_endpoint}"))

    # ---- publishing -----------------------------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        """The sequence number the next published batch gets."""
        return self._next_seq

    @property
    def buffered(self) -> int:
        """How many batches the replay buffer holds."""
        return len(self._buffer)

    def publish(self, batch: EventBatch, *, drop_live: bool = False) -> int:
        """Encode and send one batch; return its sequence number. Never blocks.

        `drop_live=True` assigns a sequence number and buffers the batch for replay but does not send it,
        as if the message were lost on the way: subscribers see a gap.
        """
        if self._closed:
            raise RuntimeError("KVEventPublisher is closed")
        if batch.data_parallel_rank is None:
            batch = replace(batch, data_parallel_rank=self.data_parallel_rank)
        payload = encode_batch(batch, event_format=self.event_format)
        seq = self._next_seq
        self._next_seq += 1
        self._buffer.append((seq, payload))
        if drop_live:
            self.dropped += 1
            return seq
        try:
            self._pub_sync.send_multipart((self.topic, encode_seq(seq), payload), flags=zmq.NOBLOCK)
        except zmq.ZMQError as e:
            self.dropped += 1
            log.warning("KV event batch seq=%d not sent live (%s); it stays available for replay", seq, e)
        return seq

    # ---- connections ----------------------------------------------------------------------------------

    @property
    def peers(self) -> int:
        """Connected peers (subscribers, or the collector in connect mode) that completed the handshake."""
        return self._peers

    async def wait_for_peers(self, n: int = 1) -> None:
        """Wait until at least `n` peers have connected (bound it with `asyncio.timeout`).

        A SUB that has connected may still lose the first messages while its subscription is in flight
        (ZMQ's "slow joiner"); a subscriber that must see everything asks for replay from seq 0.
        """
        while self._peers < n:
            self._peers_changed.clear()
            await self._peers_changed.wait()

    async def _watch_peers(self) -> None:
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._peers += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._peers = max(0, self._peers - 1)
            self._peers_changed.set()

    # ---- replay ---------------------------------------------------------------------------------------

    async def _serve_replay(self) -> None:
        assert self._router is not None
        while True:
            request = await self._router.recv_multipart()
            if len(request) != 3:
                log.warning("ignoring replay request with %d frames (want identity, empty, start_seq)", len(request))
                continue
            identity, _, start = request
            if len(start) != 8:
                log.warning("ignoring replay request whose start_seq frame is %d bytes, not 8", len(start))
                continue
            try:
                await self._replay_to(identity, int.from_bytes(start, "big"))
            except (TimeoutError, zmq.ZMQError) as e:
                log.warning("replay to a client abandoned: %s", e)

    async def _replay_to(self, identity: bytes, start_seq: int) -> None:
        assert self._router is not None
        # Snapshot first: publish() may append (and evict) while this coroutine waits on a send.
        wanted = [(seq, payload) for seq, payload in self._buffer if seq >= start_seq]
        for i, (seq, payload) in enumerate(wanted, 1):
            await self._send_replay((identity, b"", self.topic, encode_seq(seq), payload))
            if i % _REPLAY_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        await self._send_replay((identity, b"", b"", END_SEQ, b""))
        self.replays_served += 1

    async def _send_replay(self, parts: tuple[bytes, ...]) -> None:
        assert self._router is not None
        async with asyncio.timeout(self.replay_send_timeout):
            await self._router.send_multipart(parts)

    # ---- shutdown -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the tasks and close the sockets at once (linger 0). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        self._close_sockets()

    async def aclose(self) -> None:
        """close(), then wait for the tasks to finish and for the bound ports to be free again.

        ZMQ closes sockets on its I/O thread, after `close()` returns: a publisher started on the same ports at once
        (a server restart) could find them still bound (EADDRINUSE, seen under CPU load). So this waits, up to
        `RELEASE_TIMEOUT_S`, until each bound TCP port can be bound again."""
        self.close()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        bound = [self.replay_endpoint] if self._router is not None else []
        if not self._connected:
            bound.append(self.endpoint)
        deadline = time.monotonic() + RELEASE_TIMEOUT_S
        for endpoint in bound:
            while True:
                if _tcp_port_free(endpoint) or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.01)

    def _close_sockets(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._pub.disable_monitor()
        self._monitor.close(linger=0)
        self._pub.close(linger=0)
        if self._router is not None:
            self._router.close(linger=0)

    async def __aenter__(self) -> KVEventPublisher:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


RELEASE_TIMEOUT_S = 5.0


def _tcp_port_free(endpoint: str | None) -> bool:
    """True when `tcp://host:port` can be bound now (as ZMQ binds: SO_REUSEADDR); other transports count as free."""
    if not endpoint or not endpoint.startswith("tcp://"):
        return True
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]") or "127.0.0.1", int(port)))
        except (OSError, ValueError):
            return False
    return True
