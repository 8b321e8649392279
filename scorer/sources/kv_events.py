"""Follows every endpoint's KV-cache events (vLLM's ZMQ publisher) into the precise prefix index.

Why it exists: the precise-prefix-cache-scorer is only as good as its mirror of each server's cache, and that
mirror needs every batch of every server, once and in order, even across lost messages and restarts. This is the
I/O shell around `scorer.kv_sequence` (what to do with a sequence number) and `scorer.precise_index` (what an
event changes); frames and payloads are decoded by `common.kv_wire`, which reads every layout vLLM has shipped
(docs/kv-events.md).

Per endpoint, one task:
1. a SUB socket connects to `tcp://<host>:<port + portOffset>` (the fleet twin's convention; vLLM's
   `--kv-events-config` endpoint), subscribed to `topic` (a prefix; "" takes everything);
2. catch-up: one replay round trip from seq 0 on `tcp://<host>:<port + replayPortOffset>`, so a picker that starts
   after the server still learns what it cached (as far as the server's replay buffer reaches back);
3. then live batches, each judged by `SequenceTracker`: applied, skipped as a duplicate of a replayed one, or a gap:
   replay from the first missing seq (a DEALER sends `[b"", start_seq]`; replies `[b"", topic, seq, payload]`,
   ended by an empty payload; vLLM before v0.26.0 sent no topic frame, also read). When the replay does not start
   exactly at the missing seq, or there is no replay socket, the endpoint's entries are cleared and rebuilt from
   what remains (a restart is handled the same way, from seq 0).

An endpoint counts as "synced" (the scorer trusts its entries instead of the approximate index) once the catch-up
replay answered or its first live batch was applied. A malformed message or event is logged, counted and skipped;
nothing else is lost. `set_endpoints` follows the pool: new endpoints get a task, departed ones are stopped and
forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from common.kv_wire import KVWireError, decode_batch, decode_seq, encode_seq, parse_frames
from scorer.kv_sequence import RESTART, SKIP, Gap, SequenceTracker
from scorer.precise_index import EventError, PreciseIndex

log = logging.getLogger("autonomic.picker.kv_events")


class KVReplayError(RuntimeError):
    """The replay socket did not answer in time, or answered out of protocol."""


@dataclass(frozen=True)
class KVEventsOptions:
    port_offset: int = 1000  # KV events on the endpoint's port + this (the fleet twin's convention)
    replay_port_offset: int | None = 2000  # replay (ROUTER) on port + this; None: no replay, gaps clear the endpoint
    topic: str = ""  # subscription prefix ("kv@" for llm-d-style topics; "" takes every topic)
    replay_timeout_s: float = 5.0


def event_endpoints(address: str, opts: KVEventsOptions) -> tuple[str, str | None]:
    """The ZMQ endpoints of a model server `host:port`: (events, replay or None)."""
    host, _, port_text = address.rpartition(":")
    port = int(port_text)

    def at(offset: int) -> str:
        target = port + offset
        if not 0 < target < 65536:
            raise ValueError(f"{address}: port {port} + offset {offset} is not a valid port")
        return f"tcp://{host}:{target}"

    replay = at(opts.replay_port_offset) if opts.replay_port_offset is not None else None
    return at(opts.port_offset), replay


@dataclass
class EndpointSync:
    """What following one endpoint's events has done so far (for logs, metrics and tests)."""

    events: str
    replay: str | None
    synced: bool = False
    applied_seq: int | None = None
    batches: int = 0
    replayed: int = 0
    gaps: int = 0
    gaps_repaired: int = 0
    resyncs: int = 0  # entries cleared and rebuilt (gap not repairable, or publisher restart)
    restarts: int = 0
    bad_messages: int = 0
    applied: asyncio.Event = field(default_factory=asyncio.Event)  # set after each applied batch


Replayed = tuple[int, bytes]  # (seq, payload)
_YIELD_EVERY = 64  # a long replay hands the loop back to the scrapes and ext_proc streams this often


class _Connections:
    """Reads a SUB socket's monitor without waiting: has its connection come back since the last call?"""

    def __init__(self, monitor: zmq.Socket[Any]):
        self.monitor = monitor
        self.connects = 0
        self.seen = 1  # the first connection is not a reconnection

    def reconnected(self) -> bool:
        while True:
            try:
                event = parse_monitor_message(self.monitor.recv_multipart(flags=zmq.NOBLOCK))
            except zmq.Again:
                break
            if event["event"] == zmq.EVENT_CONNECTED:
                self.connects += 1
        if self.connects > self.seen:
            self.seen = self.connects
            return True
        return False


class KVEventsSource:
    """`await source.run()` follows `addresses` (and later `set_endpoints`) until cancelled."""

    def __init__(
        self,
        index: PreciseIndex,
        addresses: Iterable[str],
        opts: KVEventsOptions | None = None,
        *,
        on_batch: Callable[[str, int], None] | None = None,
    ):
        self.index = index
        self.opts = opts or KVEventsOptions()
        self.on_batch = on_batch
        self.status: dict[str, EndpointSync] = {}
        self._wanted: list[str] = list(dict.fromkeys(addresses))
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False
        self._ctx = zmq.asyncio.Context.instance()
        self._reconcile()

    # ---- membership --------------------------------------------------------------------------------------
    def set_endpoints(self, addresses: Iterable[str]) -> None:
        """Follow exactly these endpoints: start the new ones, stop and forget the departed ones."""
        self._wanted = list(dict.fromkeys(addresses))
        self._reconcile()

    def synced(self, address: str) -> bool:
        status = self.status.get(address)
        return status is not None and status.synced

    async def run(self) -> None:
        self._running = True
        try:
            self._reconcile()
            await asyncio.Event().wait()
        finally:
            self._running = False
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._tasks.clear()

    def _reconcile(self) -> None:
        """Register the wanted endpoints (status, index entry) and, while running, start or stop their tasks."""
        wanted = set(self._wanted)
        for address in [a for a in self.status if a not in wanted]:
            task = self._tasks.pop(address, None)
            if task is not None:
                task.cancel()
            del self.status[address]
            self.index.remove_endpoint(address)
        for address in self._wanted:
            if address not in self.status:
                try:
                    events, replay = event_endpoints(address, self.opts)
                except ValueError as exc:
                    log.error("no KV events for endpoint", extra={"endpoint": address, "error": str(exc)})
                    continue
                self.status[address] = EndpointSync(events, replay)
                self.index.add_endpoint(address)
            if self._running and address not in self._tasks:
                self._tasks[address] = asyncio.create_task(self._follow(address), name=f"kv-events {address}")

    # ---- one endpoint ------------------------------------------------------------------------------------
    async def _follow(self, address: str) -> None:
        status = self.status[address]
        tracker = SequenceTracker()
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, self.opts.topic.encode())
        monitor = sub.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        connections = _Connections(zmq.Socket.shadow(monitor.underlying))
        try:
            sub.connect(status.events)
            if status.replay is not None and await self._catch_up(address, tracker, 0, None):
                self._applied(address, tracker.applied)
            while True:
                await asyncio.sleep(0)  # a ready message completes the await without yielding: let others run
                parts = await sub.recv_multipart()
                try:
                    _topic, seq, payload = parse_frames(parts)
                except KVWireError as exc:
                    self._bad(address, "frames", exc)
                    continue
                if connections.reconnected():
                    tracker.reconnected()
                action = tracker.on_live(seq)
                if action == RESTART:
                    log.warning("KV event publisher restarted; resynchronising", extra={"endpoint": address})
                    status.restarts += 1
                    status.resyncs += 1
                    self.index.clear(address)
                    tracker.reset()
                    action = tracker.on_live(seq)
                if action == SKIP:
                    continue
                if isinstance(action, Gap):
                    if status.replay is None and tracker.applied is None:
                        tracker.applied_through(seq - 1)  # joined late, nothing to ask: start from here
                    else:
                        status.gaps += 1
                        await self._catch_up(address, tracker, action.first, seq)
                        if tracker.applied is not None and tracker.applied >= seq:
                            self._applied(address, tracker.applied)
                            continue  # the replay already carried this batch
                self._apply(address, seq, payload)
                tracker.applied_through(seq)
                self._applied(address, seq)
        except asyncio.CancelledError:
            raise
        except Exception:  # one endpoint's stream must never take the picker down
            log.exception("KV event stream failed; the endpoint falls back to approximate scoring")
            status.synced = False
            self.index.set_synced(address, False)
        finally:
            with contextlib.suppress(zmq.ZMQError):
                sub.disable_monitor()
            monitor.close(linger=0)
            sub.close(linger=0)

    async def _catch_up(self, address: str, tracker: SequenceTracker, first: int, until: int | None) -> bool:
        """Replay from `first`; repair the gap first..until-1 exactly, or clear and rebuild from what remains.

        `until=None` is the start-up catch-up (everything still buffered). Returns whether the replay answered.
        """
        status = self.status[address]
        got: list[Replayed] = []
        answered = False
        if status.replay is not None:
            try:
                got = [r for r in await self.replay(status.replay, first) if r[0] >= first]
                answered = True
            except (KVReplayError, zmq.ZMQError) as exc:
                log.warning("KV event replay failed", extra={"endpoint": address, "from_seq": first, "error": str(exc)})
        contiguous = all(b[0] == a[0] + 1 for a, b in itertools.pairwise(got))
        exact = bool(got) and got[0][0] == first and contiguous
        if until is not None:
            if exact and got[-1][0] >= until - 1:
                status.gaps_repaired += 1
            else:
                log.warning(
                    "KV event gap not repairable; clearing the endpoint's entries",
                    extra={"endpoint": address, "missing": [first, until - 1], "replayed": len(got)},
                )
                status.resyncs += 1
                self.index.clear(address)
        for i, (seq, payload) in enumerate(got, 1):
            self._apply(address, seq, payload)
            tracker.applied_through(seq)
            status.replayed += 1
            if i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        if until is not None and (tracker.applied is None or tracker.applied < until - 1):
            tracker.applied_through(until - 1)  # what is missing is gone: go on from the live batch
        return answered

    def _apply(self, address: str, seq: int, payload: bytes) -> None:
        try:
            batch = decode_batch(payload)
        except KVWireError as exc:
            self._bad(address, f"payload of seq {seq}", exc)
            return
        for event in batch.events:
            try:
                self.index.apply(address, event)
            except EventError as exc:
                self._bad(address, f"event in seq {seq}", exc)
        self.status[address].batches += 1
        if self.on_batch is not None:
            self.on_batch(address, seq)

    def _applied(self, address: str, seq: int | None) -> None:
        status = self.status[address]
        status.synced = True
        status.applied_seq = seq
        self.index.set_synced(address, True)
        status.applied.set()

    def _bad(self, address: str, what: str, exc: Exception) -> None:
        self.status[address].bad_messages += 1
        log.warning("malformed KV event message skipped", extra={"endpoint": address, "what": what, "error": str(exc)})

    # ---- replay ------------------------------------------------------------------------------------------
    async def replay(self, endpoint: str, start_seq: int) -> list[Replayed]:
        """Every batch the publisher still buffers from `start_seq` on, oldest first (one DEALER round trip)."""
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        out: list[Replayed] = []
        try:
            dealer.connect(endpoint)
            async with asyncio.timeout(self.opts.replay_timeout_s):
                await dealer.send_multipart((b"", encode_seq(start_seq)))
                while True:
                    parts: list[Any] = await dealer.recv_multipart()
                    if parts and not parts[0]:
                        parts = parts[1:]
                    if len(parts) == 3:
                        seq_frame, payload = parts[1], parts[2]
                    elif len(parts) == 2:  # vLLM before v0.26.0: no topic frame
                        seq_frame, payload = parts
                    else:
                        raise KVReplayError(f"replay reply with {len(parts)} frames")
                    if not payload:
                        return out
                    if len(out) % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                    try:
                        out.append((decode_seq(seq_frame), payload))
                    except KVWireError as exc:
                        raise KVReplayError(f"replay reply: {exc}") from None
        except TimeoutError:
            raise KVReplayError(f"no complete replay from {endpoint} within {self.opts.replay_timeout_s:g} s") from None
        finally:
            dealer.close(linger=0)
