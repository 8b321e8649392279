"""Fuzz target, short form: the real grpc.aio servicer (`serve_extproc`) over a real loopback channel.

One picker (round-robin backend with an async preparation step, the picker's stream-metrics interceptor, a 4 KiB
body limit) runs on its own event loop in a thread for the whole module; each case plays one stream on it: the
messages of `extproc_messages.STREAMS`, some replaced by bytes that do not decode, written while a reader takes the
answers, then half-closed, or cancelled after any number of writes. Invariants:

- the call ends OK (CANCELLED when the client cancelled it): never INTERNAL, UNKNOWN or any other status;
- the answers are those of the pure `Exchange` fed the same messages (a 400 for a message that does not decode),
  so every ImmediateResponse is a 4xx (or 503/429 when no endpoint may take the request), never a 5xx;
- nothing is logged at error level by any logger, gRPC's included;
- every pick is reported back exactly once and no stream stays open (cancelled ones included);
- afterwards the picker still routes a well-formed request.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc_messages import ADDRESSES, STREAMS
from fuzz_support import counted, describe, error_logs
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_extproc_exchange import CLIENT_STATUSES

from scorer.extproc import protocol as p
from scorer.extproc.exchange import Exchange
from scorer.extproc.roundrobin import RoundRobinBackend
from scorer.extproc.server import ExtProcHandle, serve_extproc
from scorer.framework import Usage
from scorer.metrics import PickerMetrics
from scorer.observed import ExtProcStreamMetrics
from scorer.types import LLMRequest, SchedulingResult

METHOD = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
LIMIT = 4096  # the server's message cap is this + 1 MiB: every message drawn here stays under it
T = TypeVar("T")
GARBAGE = st.sampled_from([b"\x12\x07\n\x05", b"\x12\x07\n\x05\n\x03\n\x01\xff", b"\xff\xff\xff", b"\x08"]) | st.binary(
    min_size=1, max_size=16
)


class CountingBackend(RoundRobinBackend):
    """Round robin that counts picks and completions (from the server's thread) and prepares asynchronously."""

    preparers = True

    def __init__(self) -> None:
        super().__init__(ADDRESSES)
        self.lock = threading.Lock()
        self.picked = 0
        self.completed = 0  # reports of picked requests
        self.unreported: set[str] = set()

    async def prepare(self, request: LLMRequest) -> None:
        await asyncio.sleep(0)

    def pick(self, request: LLMRequest, subset=None) -> SchedulingResult:
        result = super().pick(request, subset)
        with self.lock:
            self.picked += 1
            self.unreported.add(request.request_id)
        return result

    def response_complete(self, request_id: str, served: str | None, status: int, usage: Usage | None) -> None:
        with self.lock:  # an observer stream may report an id nobody picked for: the Director ignores those too
            if request_id in self.unreported:
                self.unreported.discard(request_id)
                self.completed += 1
        super().response_complete(request_id, served, status, usage)


class Picker:
    """The picker on a private event loop in a thread; `run` plays a coroutine there and waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-picker", daemon=True)
        self.thread.start()
        self.backend = CountingBackend()
        self.metrics = PickerMetrics()
        self.handle: ExtProcHandle = self.run(self._start)
        self.channel: grpc.aio.Channel = self.run(self._channel)

    async def _start(self) -> ExtProcHandle:
        return await serve_extproc(
            self.backend, port=0, stream_hooks=ExtProcStreamMetrics(self.metrics), max_body_bytes=LIMIT
        )

    async def _channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.handle.port}")

    def run(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)

    def stop(self) -> None:
        async def stop() -> None:
            await self.channel.close()
            await self.handle.stop(0)

        self.run(stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def open_streams(self) -> float:
        return self.metrics.active_streams._value.get()


@pytest.fixture(scope="module")
def picker() -> Iterator[Picker]:
    running = Picker()
    try:
        yield running
    finally:
        running.stop()


async def play(channel: grpc.aio.Channel, raw: list[bytes], cancel_at: int | None):
    """Write the messages while reading the answers; half-close, or cancel after `cancel_at` writes."""
    call = channel.stream_stream(
        METHOD, request_serializer=lambda b: b, response_deserializer=pb.ProcessingResponse.FromString
    )()
    answers: list[pb.ProcessingResponse] = []

    async def read() -> None:
        async for answer in call:
            answers.append(answer)

    reader = asyncio.create_task(read())
    try:
        for i, message in enumerate(raw):
            if i == cancel_at:
                break
            await call.write(message)
        if cancel_at is not None and cancel_at <= len(raw):
            call.cancel()
        else:
            await call.done_writing()
        await reader
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        pass
    finally:
        reader.cancel()
    return answers, await call.code()


def expected(raw: list[bytes]) -> list[tuple[str, int]]:
    """What the pure Exchange answers to the same bytes, as (kind, immediate status) pairs."""
    ex = Exchange(RoundRobinBackend(ADDRESSES), max_body_bytes=LIMIT)
    out: list[pb.ProcessingResponse] = []
    for data in raw:
        try:
            message = pb.ProcessingRequest.FromString(data)
        except DecodeError as exc:
            out += ex.malformed(str(exc))
        else:
            out += ex.handle(message)
        if ex.closed:
            break
    return summary(out)


def _marked(data: bytes) -> bool:
    """Whether this message marks its routing stream as reported by a separate response observer."""
    try:
        return p.response_observed_elsewhere(pb.ProcessingRequest.FromString(data))
    except DecodeError:
        return False


def summary(answers: list[pb.ProcessingResponse]) -> list[tuple[str, int]]:
    return [(str(a.WhichOneof("response")), a.immediate_response.status.code) for a in answers]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


@st.composite
def raw_streams(draw: st.DrawFn) -> list[bytes]:
    raw = [m.SerializeToString() for m in draw(STREAMS)]
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.integers(0, 3)) == 0:
            raw.insert(draw(st.integers(0, len(raw))), draw(GARBAGE))
    return raw


ROUTE = pb.ProcessingRequest(
    request_headers=pb.HttpHeaders(
        headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=":path", raw_value=b"/v1/models")]),
        end_of_stream=True,
    )
).SerializeToString()


@given(raw=raw_streams(), cancel_at=st.none() | st.none() | st.integers(0, 12))
@counted
def test_servicer_ends_every_stream_with_a_valid_answer(picker: Picker, raw: list[bytes], cancel_at: int | None):
    with error_logs() as errors:
        answers, code = picker.run(lambda: play(picker.channel, raw, cancel_at))
        cancelled = cancel_at is not None and cancel_at <= len(raw)
        if cancelled:
            assert code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.OK), code
        else:
            assert code == grpc.StatusCode.OK, code
            assert summary(answers) == expected(raw)
        for kind, status in summary(answers):
            assert kind != "immediate_response" or status in CLIENT_STATUSES, status
        backend = picker.backend
        if any(_marked(data) for data in raw):  # the report is its response observer's, which this stream lacks
            with backend.lock:
                backend.completed, backend.unreported = backend.picked, set()
        wait_for(lambda: backend.completed == backend.picked, "every pick reported back")
        wait_for(lambda: picker.open_streams() == 0, "no stream left open")
        routed, code = picker.run(lambda: play(picker.channel, [ROUTE], None))
        assert code == grpc.StatusCode.OK and summary(routed) == [("request_headers", 0)]
    assert not errors, describe(errors)
