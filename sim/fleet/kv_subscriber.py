"""A small consumer of vLLM-format KV-event streams, for tests and benchmarks.

Why this exists: the twin's publisher must be checked end to end over real sockets, and benchmarks need to
watch event streams, with the consumer behaviour real routers have: follow sequence numbers, notice gaps,
and fill them from the replay socket. It speaks the wire format of `kv_wire.py` / `kv_publisher.py` (as
vLLM >= v0.26.0 and llm-d-router's `pkg/kvevents/zmq_subscriber.go` do) and also reads replies of older
vLLM, which carried no topic frame. The production subscriber of the picker lives in scorer/.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from common.kv_event_types import EventBatch
from common.kv_wire import KVWireError, decode_batch, decode_seq, encode_seq, parse_frames


@dataclass(frozen=True, slots=True)
class SequenceGap:
    """Sequence numbers first..last (inclusive) did not arrive live."""

    first: int
    last: int
    recovered: bool
    """True when replay supplied every missing batch; False when some were lost (not buffered any more, or
    no replay endpoint)."""


@dataclass(frozen=True, slots=True)
class ReplayedBatch:
    seq: int
    topic: bytes | None
    """None in replies from vLLM before v0.26.0, which had no topic frame."""
    batch: EventBatch


class KVReplayError(RuntimeError):
    """The replay socket did not answer in time, or answered out of protocol."""


class KVEventSubscriber:
    """Async iterator of (seq, EventBatch) from one publisher, in sequence order, without duplicates.

    `start_seq`: the first sequence number wanted. With a replay endpoint, iteration begins by replaying
    from it (a late joiner catches up this way); without one, it only marks everything before the first
    live batch as a gap. None: start from whatever arrives first.
    `auto_replay`: fill gaps from the replay socket when one is given. Gaps are recorded in `gaps` either way.
    """

    def __init__(
        self,
        endpoint: str,
        replay_endpoint: str | None = None,
        *,
        topic: str = "",
        start_seq: int | None = None,
        auto_replay: bool = True,
        replay_timeout: float = 5.0,
    ) -> None:
        if start_seq is not None and start_seq < 0:
            raise ValueError(f"start_seq must be >= 0, got {start_seq}")
        self.endpoint, self.replay_endpoint = endpoint, replay_endpoint
        self.topic = topic.encode("utf-8")
        self.start_seq = start_seq
        self.auto_replay = auto_replay
        self.replay_timeout = replay_timeout
        self.last_seq: int | None = None
        """The sequence number of the last batch handed out (or queued to be)."""
        self.last_topic: bytes | None = None
        self.gaps: list[SequenceGap] = []
        self.received_live = 0
        self.received_replayed = 0
        self._pending: deque[tuple[int, EventBatch]] = deque()
        self._started = False
        self._ctx = zmq.asyncio.Context.instance()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.SUBSCRIBE, self.topic)
        self._sub.connect(endpoint)

    # ---- replay ---------------------------------------------------------------------------------------

    async def replay(self, start_seq: int) -> list[ReplayedBatch]:
        """Every buffered batch with seq >= start_seq, from one DEALER round trip to the replay socket.

        KVReplayError if the whole reply has not come within `replay_timeout` seconds.
        """
        if self.replay_endpoint is None:
            raise KVReplayError("no replay endpoint configured")
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        out: list[ReplayedBatch] = []
        try:
            dealer.connect(self.replay_endpoint)
            async with asyncio.timeout(self.replay_timeout):
                await dealer.send_multipart((b"", encode_seq(start_seq)))
                while True:
                    parts = await dealer.recv_multipart()
                    if parts and not parts[0]:
                        parts = parts[1:]  # the empty delimiter a ROUTER puts before REQ-style replies
                    if len(parts) == 3:  # vLLM >= v0.26.0: topic, seq, payload
                        topic: bytes | None = parts[0]
                        seq_frame, payload = parts[1], parts[2]
                    elif len(parts) == 2:  # older vLLM: seq, payload
                        topic, (seq_frame, payload) = None, parts
                    else:
                        raise KVReplayError(f"replay reply with {len(parts)} frames")
                    if not payload:  # end marker: seq frame is END_SEQ, payload empty
                        return out
                    seq = decode_seq(seq_frame)
                    out.append(ReplayedBatch(seq, topic, decode_batch(payload)))
        except TimeoutError as e:
            raise KVReplayError(f"replay from seq {start_seq} at {self.replay_endpoint} timed out") from e
        finally:
            dealer.close(linger=0)

    # ---- iteration ------------------------------------------------------------------------------------

    def __aiter__(self) -> KVEventSubscriber:
        return self

    async def __anext__(self) -> tuple[int, EventBatch]:
        return await self.recv()

    async def recv(self) -> tuple[int, EventBatch]:
        """The next batch in sequence order (bound the wait with `asyncio.timeout`)."""
        if not self._started:
            self._started = True
            if self.start_seq is not None and self.replay_endpoint is not None:
                await self._fill(self.start_seq, None)
        while not self._pending:
            await self._receive_live()
        return self._pending.popleft()

    async def _receive_live(self) -> None:
        topic, seq, payload = parse_frames(await self._sub.recv_multipart())
        if seq < 0:
            raise KVWireError("live message carries the replay end marker as its sequence number")
        if self.last_seq is not None and seq <= self.last_seq:
            return  # already handed out (typically through replay)
        expected = self.start_seq if self.last_seq is None else self.last_seq + 1
        if expected is not None and seq > expected:
            await self._fill(expected, seq)
        self._pending.append((seq, decode_batch(payload)))
        self.last_seq, self.last_topic = seq, topic
        self.received_live += 1

    async def _fill(self, first: int, until: int | None) -> None:
        """Queue batches first..until-1 (or first..newest when until is None) from replay; record the gap."""
        got: list[ReplayedBatch] = []
        if self.auto_replay and self.replay_endpoint is not None:
            got = [r for r in await self.replay(first) if r.seq >= first and (until is None or r.seq < until)]
        expected, lost = first, False
        for r in got:
            if r.seq != expected:  # the buffer no longer had the start of the range
                lost = True
            self._pending.append((r.seq, r.batch))
            self.last_seq, self.last_topic, expected = r.seq, r.topic, r.seq + 1
            self.received_replayed += 1
        if until is not None:
            lost = lost or expected != until
            self.gaps.append(SequenceGap(first, until - 1, recovered=not lost))
        elif got and got[0].seq != first:
            self.gaps.append(SequenceGap(first, got[0].seq - 1, recovered=False))

    # ---- shutdown -------------------------------------------------------------------------------------

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._sub.close(linger=0)

    async def __aenter__(self) -> KVEventSubscriber:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
