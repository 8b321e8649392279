"""The picker's grpclib server as unmodified grpcio clients see it: the message limit, a malformed message, many
streams on one connection, the graceful stop and the health Watch (scorer/extproc/grpcserver.py, health.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ResponseReceived, TrailersReceived
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, RstStreamFrame
from waiting import until

from scorer.extproc.roundrobin import RoundRobinBackend
from scorer.extproc.server import EXTPROC_SERVICE, MESSAGE_SLACK, PROCESS, ExtProcHandle, serve_extproc

A = "10.0.0.1:8000"
BODY = json.dumps({"model": "m", "prompt": "hi"}).encode()
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class CountingHooks:
    """StreamHooks: how many ext_proc streams are open on the server now."""

    def __init__(self) -> None:
        self.open = 0
        self.immediate_statuses: list[int] = []

    def opened(self) -> None:
        self.open += 1

    def closed(self) -> None:
        self.open -= 1

    def immediate(self, status: int) -> None:
        self.immediate_statuses.append(status)


async def until_true(condition: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return condition()

    await until(check, what)


def headers(rid: str, *, eos: bool = False, observer: bool = False) -> pb.ProcessingRequest:
    hs = {":path": "/v1/completions", ":method": "POST", "x-request-id": rid}
    return pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(
            headers=base_pb2.HeaderMap(
                headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in hs.items()]
            ),
            end_of_stream=eos,
        ),
        observability_mode=observer,
    )


def body(data: bytes = BODY) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=data, end_of_stream=True))


def raw_call(channel: grpc.aio.Channel) -> grpc.aio.StreamStreamCall:
    return channel.stream_stream(
        PROCESS, request_serializer=lambda b: b, response_deserializer=pb.ProcessingResponse.FromString
    )()


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
async def picker() -> AsyncIterator[tuple[ExtProcHandle, RoundRobinBackend, CountingHooks]]:
    backend, hooks = RoundRobinBackend([A]), CountingHooks()
    handle = await serve_extproc(backend, port=0, max_body_bytes=4096, stream_hooks=hooks, health_interval=0.05)
    try:
        yield handle, backend, hooks
    finally:
        await handle.stop(0)


async def test_a_message_over_the_limit_ends_the_stream_resource_exhausted(picker):
    """The limit is max_body_bytes + MESSAGE_SLACK, checked on the message's length prefix (grpcio's
    max_receive_message_length did the same); a body under it but over max_body_bytes is answered 413."""
    handle, backend, hooks = picker
    async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        call = pb_grpc.ExternalProcessorStub(channel).Process()
        await call.write(headers("large"))
        await call.write(body(b"x" * (4096 + 10)))
        await call.done_writing()
        assert [a.immediate_response.status.code async for a in call] == [413]
        assert await call.code() == grpc.StatusCode.OK

        call = pb_grpc.ExternalProcessorStub(channel).Process()
        await call.write(headers("too large"))
        with pytest.raises(grpc.aio.AioRpcError):
            await call.write(body(b"x" * (4096 + MESSAGE_SLACK + 1)))
            await call.done_writing()
            await call.read()
        assert await call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        call = pb_grpc.ExternalProcessorStub(channel).Process()  # the connection is still good for the next stream
        await call.write(headers("after", eos=True))
        assert (await call.read()).WhichOneof("response") == "request_headers"
        await call.done_writing()
    await until_true(lambda: hooks.open == 0, "every stream closed on the server")
    assert [rid for rid, _ in backend.picks] == ["after"]


async def test_a_malformed_message_is_answered_400_and_the_stream_is_still_read(picker):
    handle, backend, _ = picker
    async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        call = raw_call(channel)
        await call.write(headers("m").SerializeToString())
        await call.write(b"\x12\x07\n\x05")  # truncated
        (answer,) = [await call.read()]
        assert answer.immediate_response.status.code == 400
        for _ in range(5):  # the client may still be sending: read and dropped, the call ends OK
            await call.write(body().SerializeToString())
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        # on an observer stream a malformed message is dropped and what follows is still handled
        call = raw_call(channel)
        await call.write(headers("o", observer=True).SerializeToString())
        await call.write(b"\xff\xff\xff")
        status = base_pb2.HeaderValue(key=":status", raw_value=b"200")
        response = pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=[status])))
        await call.write(response.SerializeToString())
        await call.done_writing()
        assert [a async for a in call] == []
        assert await call.code() == grpc.StatusCode.OK
    assert not backend.picks
    await until_true(lambda: backend.completion("o") is not None, "the observer's report")
    assert backend.completion("o").status == 200  # type: ignore[union-attr]


async def test_many_streams_stay_open_at_once_on_one_connection(picker):
    """Envoy keeps two streams per request on one connection (the observer's as long as the response): far more
    than h2's default limit of 100, which would have queued the rest in the client."""
    handle, backend, hooks = picker
    count = 300
    async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        calls = [pb_grpc.ExternalProcessorStub(channel).Process() for _ in range(count)]
        for i, call in enumerate(calls):
            await call.write(headers(f"s{i}"))  # FULL_DUPLEX: no answer before the body, the stream stays open
        await until_true(lambda: hooks.open == count, f"{count} streams open at once")
        for call in calls:
            await call.write(body())
        for call in calls:
            assert (await call.read()).WhichOneof("response") == "request_headers"
            await call.done_writing()
    assert len(backend.picks) == count


async def test_stop_lets_open_streams_finish_and_refuses_new_ones():
    backend, hooks = RoundRobinBackend([A]), CountingHooks()
    handle = await serve_extproc(backend, port=0, stream_hooks=hooks)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        call = pb_grpc.ExternalProcessorStub(channel).Process()
        await call.write(headers("open"))
        await until_true(lambda: hooks.open == 1, "the stream open on the server")
        stopping = asyncio.create_task(handle.stop(30))
        await until_true(lambda: not listening(handle.port), "the port closed")
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Check(health_pb2.HealthCheckRequest(service=EXTPROC_SERVICE), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        await call.write(body())  # the open stream carries on
        await call.done_writing()
        kinds = [answer.WhichOneof("response") async for answer in call]
        assert kinds == ["request_headers", "request_body"]
        assert await call.code() == grpc.StatusCode.OK
        async with asyncio.timeout(10):  # well before the 30 s grace: nothing is left open
            await stopping
    assert backend.completion("open") is not None


async def test_stop_cancels_what_is_still_open_after_the_grace():
    backend, hooks = RoundRobinBackend([A]), CountingHooks()
    handle = await serve_extproc(backend, port=0, stream_hooks=hooks)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        call = pb_grpc.ExternalProcessorStub(channel).Process()
        await call.write(headers("stuck"))
        await call.write(body())
        assert (await call.read()).WhichOneof("response") == "request_headers"  # picked; the response never comes
        async with asyncio.timeout(10):
            await handle.stop(0.2)
        assert hooks.open == 0
        assert await call.code() != grpc.StatusCode.OK
    assert backend.completion("stuck") is not None  # cancelled, still reported once


async def test_health_watch_follows_readiness_and_the_shutdown():
    backend = RoundRobinBackend([A])
    handle = await serve_extproc(backend, port=0, health_interval=0.02)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=EXTPROC_SERVICE))
            unknown = stub.Watch(health_pb2.HealthCheckRequest(service="nope"))
            assert (await unknown.read()).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            unknown.cancel()
            assert (await watch.read()).status == SERVING
            backend.is_ready = False
            assert (await watch.read()).status == NOT_SERVING
            backend.is_ready = True
            assert (await watch.read()).status == SERVING
            await handle.not_serving()
            assert (await watch.read()).status == NOT_SERVING
            backend.is_ready = True
            check = await stub.Check(health_pb2.HealthCheckRequest(service="liveness"))
            assert check.status == NOT_SERVING  # for good: readiness no longer updates it
            watch.cancel()
    finally:
        await handle.stop(0)


async def test_a_stream_that_ends_inside_a_message_is_internal_and_logs_no_error(picker, caplog):
    """A client that half-closes in the middle of a message (no grpcio client does: raw HTTP/2 here)."""
    handle, _, hooks = picker
    reader, writer = await asyncio.open_connection("127.0.0.1", handle.port)
    client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    client.initiate_connection()
    grpc_headers = [(":method", "POST"), (":scheme", "http"), (":path", PROCESS), (":authority", "picker")]
    client.send_headers(1, [*grpc_headers, ("content-type", "application/grpc"), ("te", "trailers")])
    client.send_data(1, struct.pack(">?I", False, 100) + b"\x12" * 10, end_stream=True)  # 10 of 100 bytes
    writer.write(client.data_to_send())
    trailers: dict[str, str] = {}
    try:
        async with asyncio.timeout(10):
            while not trailers:
                data = await reader.read(65536)
                assert data, "connection closed before the trailers"
                for event in client.receive_data(data):
                    if isinstance(event, TrailersReceived | ResponseReceived) and event.stream_ended:
                        trailers = dict(event.headers)  # type: ignore[arg-type]
                writer.write(client.data_to_send())
    finally:
        writer.close()
    assert trailers["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0])
    await until_true(lambda: hooks.open == 0, "the stream closed on the server")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def _frames(reader: asyncio.StreamReader) -> AsyncIterator[Frame]:
    """The server's HTTP/2 frames, parsed without HPACK (the raw client only looks at types, flags and ids)."""
    while True:
        frame, length = Frame.parse_frame_header(memoryview(await reader.readexactly(9)))
        frame.parse_body(memoryview(await reader.readexactly(length)))
        yield frame


async def test_a_stream_opened_after_the_goaway_is_refused_and_the_open_one_finishes():
    """Raw HTTP/2: stream 3 leaves the client before the GOAWAY arrives; the server refuses it (REFUSED_STREAM, safe
    to retry elsewhere) while stream 1, open before the stop, is answered to its end."""
    backend, hooks = RoundRobinBackend([A]), CountingHooks()
    handle = await serve_extproc(backend, port=0, stream_hooks=hooks)
    reader, writer = await asyncio.open_connection("127.0.0.1", handle.port)
    client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    client.initiate_connection()
    request = [(":method", "POST"), (":scheme", "http"), (":path", PROCESS), (":authority", "picker")]
    request += [("content-type", "application/grpc"), ("te", "trailers")]

    def message(m: pb.ProcessingRequest) -> bytes:
        data = m.SerializeToString()
        return struct.pack(">?I", False, len(data)) + data

    client.send_headers(1, request)
    client.send_data(1, message(headers("before")))
    writer.write(client.data_to_send())
    try:
        await until_true(lambda: hooks.open == 1, "stream 1 open on the server")
        stopping = asyncio.create_task(handle.stop(30))
        await until_true(lambda: not listening(handle.port), "the port closed (the GOAWAY is written with it)")
        client.send_headers(3, request)
        writer.write(client.data_to_send())
        frames = _frames(reader)
        seen: dict[str, int] = {}
        async with asyncio.timeout(10):
            async for frame in frames:
                if isinstance(frame, GoAwayFrame):
                    seen["goaway"] = frame.last_stream_id
                elif isinstance(frame, RstStreamFrame) and frame.stream_id == 3:
                    seen["refused"] = frame.error_code
                if len(seen) == 2:
                    break
        assert seen == {"goaway": 1, "refused": ErrorCodes.REFUSED_STREAM}
        client.send_data(1, message(body()), end_stream=True)
        writer.write(client.data_to_send())
        async with asyncio.timeout(10):
            async for frame in frames:
                if frame.stream_id == 1 and isinstance(frame, HeadersFrame) and "END_STREAM" in frame.flags:
                    break  # the trailers: the call ended
        async with asyncio.timeout(10):
            await stopping  # nothing left open: well before the grace
    finally:
        writer.close()
        await handle.stop(0)
    assert [rid for rid, _ in backend.picks] == ["before"]
