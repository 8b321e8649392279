"""The picker's gRPC surface driven directly by a gRPC client: ext_proc streams as Envoy would send them (including
ones Envoy cannot easily be made to send) and the health service."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from waiting import until

from harness.netutil import free_port
from scorer.extproc import protocol as p
from scorer.extproc.roundrobin import RoundRobinBackend
from scorer.extproc.server import EXTPROC_SERVICE, ExtProcHandle, serve_extproc
from scorer.types import SchedulingResult

A, B = "10.0.0.1:8000", "10.0.0.2:8000"
BODY = json.dumps({"model": "m", "prompt": "hi"}).encode()


@pytest.fixture
async def picker() -> AsyncIterator[tuple[ExtProcHandle, RoundRobinBackend]]:
    backend = RoundRobinBackend([A, B])
    handle = await serve_extproc(backend, port=0, health_port=free_port(), health_interval=0.05)
    try:
        yield handle, backend
    finally:
        await handle.stop(0)


def headers(rid: str, *, eos: bool = False, subset: object = None) -> pb.ProcessingRequest:
    hs = {":path": "/v1/completions", ":method": "POST", "x-request-id": rid}
    req = pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(
            headers=base_pb2.HeaderMap(
                headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in hs.items()]
            ),
            end_of_stream=eos,
        )
    )
    if subset is not None:
        s = struct_pb2.Struct()
        s.update({p.SUBSET_KEY: subset})
        req.metadata_context.filter_metadata[p.SUBSET_NAMESPACE].CopyFrom(s)
    return req


def body(data: bytes = BODY, eos: bool = True) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=data, end_of_stream=eos))


async def exchange(port: int, messages: list[pb.ProcessingRequest], expect: int) -> list[pb.ProcessingResponse]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = pb_grpc.ExternalProcessorStub(channel).Process()
        for m in messages:
            await call.write(m)
        out = [await call.read() for _ in range(expect)]
        await call.done_writing()
        return out


async def whole_stream(
    port: int, messages: list[pb.ProcessingRequest]
) -> tuple[list[pb.ProcessingResponse], grpc.StatusCode]:
    """Write every message, half-close, read every answer: the answers and the call's final status."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = pb_grpc.ExternalProcessorStub(channel).Process()
        out: list[pb.ProcessingResponse] = []
        try:
            for m in messages:
                await call.write(m)
            await call.done_writing()
            out = [answer async for answer in call]
        except grpc.aio.AioRpcError:
            pass
        return out, await call.code()


def destination(resp: pb.ProcessingResponse) -> str:
    (h,) = [h for h in resp.request_headers.response.header_mutation.set_headers if h.header.key == p.DESTINATION_KEY]
    return h.header.raw_value.decode()


@pytest.mark.parametrize(("subset", "target"), [([B], B), (f"{B}, 10.9.9.9:1", B), (["10.0.0.1"], A)])
async def test_subset_hint_restricts_the_pick(picker, subset, target):
    handle, _ = picker
    for i in range(3):
        out = await exchange(handle.port, [headers(f"s{i}", subset=subset), body()], expect=2)
        assert destination(out[0]) == target


@pytest.mark.parametrize("subset", [[], "", ["10.9.9.9:8000"]])
async def test_empty_or_ineligible_subset_is_503(picker, subset):
    handle, backend = picker
    (out,) = await exchange(handle.port, [headers("e", subset=subset), body()], expect=1)
    assert out.immediate_response.status.code == 503
    assert json.loads(out.immediate_response.body)["error"]["code"] == 503
    assert not backend.picks


async def test_request_without_body_is_routed_at_once(picker):
    handle, backend = picker
    (out,) = await exchange(handle.port, [headers("g", eos=True)], expect=1)
    assert destination(out) in (A, B)
    await asyncio.sleep(0.05)
    assert backend.completion("g") is not None  # the stream ended: reported (status 0: no response seen)


async def test_client_cancel_reports_completion_once(picker):
    handle, backend = picker
    async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        call = pb_grpc.ExternalProcessorStub(channel).Process()
        await call.write(headers("c"))
        await call.write(body())
        await call.read()
        await call.read()
        resp_headers = pb.ProcessingRequest(
            response_headers=pb.HttpHeaders(
                headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=":status", raw_value=b"200")])
            )
        )
        await call.write(resp_headers)
        await call.read()
        call.cancel()
    for _ in range(50):
        if backend.completion("c") is not None:
            break
        await asyncio.sleep(0.02)
    done = [c for c in backend.completions if c.request_id == "c"]
    assert len(done) == 1 and done[0].status == 200 and done[0].usage is None


async def test_odd_streams_do_not_break_the_server(picker):
    handle, _ = picker
    odd = [
        [pb.ProcessingRequest()],  # nothing set
        [pb.ProcessingRequest(response_body=pb.HttpBody(body=b"x", end_of_stream=True))],  # response first
        [pb.ProcessingRequest(request_trailers=pb.HttpTrailers())],
    ]
    expects = [0, 1, 1]
    for messages, n in zip(odd, expects, strict=True):
        await exchange(handle.port, messages, expect=n)
    out = await exchange(handle.port, [headers("ok"), body(b'{"model": "m", "prompt": "x"}'), body(b"dup")], expect=2)
    assert destination(out[0]) in (A, B)


async def test_messages_after_an_immediate_response_do_not_fail_the_call(picker):
    """Envoy may have sent more of the body when the answer comes (e.g. a 503 at the headers in STREAMED mode);
    ending the call under the client's writes made a gRPC client report status INTERNAL."""
    handle, backend = picker
    late = [body(b"more", eos=False)] * 20
    for first in ([headers("bad"), body(b"{not json")], [headers("none", eos=True, subset=[])]):
        out, code = await whole_stream(handle.port, [*first, *late])
        assert code == grpc.StatusCode.OK
        assert [o.immediate_response.status.code for o in out] in ([400], [503])
    assert not backend.picks


@pytest.mark.parametrize(
    "raw",
    [
        b"\x12\x07\n\x05",  # truncated
        b"\x12\x07\n\x05\n\x03\n\x01\xff",  # a header key (a proto3 string) that is not UTF-8
    ],
)
async def test_a_message_that_does_not_decode_is_the_clients_fault(picker, raw, caplog):
    caplog.set_level(logging.INFO, logger="autonomic.extproc")
    handle, backend = picker
    async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        call = channel.stream_stream(
            "/envoy.service.ext_proc.v3.ExternalProcessor/Process",
            request_serializer=lambda b: b,
            response_deserializer=pb.ProcessingResponse.FromString,
        )()
        for message in (headers("m").SerializeToString(), raw, body().SerializeToString()):
            await call.write(message)
        await call.done_writing()
        out = [answer async for answer in call]
        assert await call.code() == grpc.StatusCode.OK
    assert [o.immediate_response.status.code for o in out] == [400]
    assert b"malformed ext_proc message" in out[0].immediate_response.body
    assert not backend.picks
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "autonomic.extproc"][-1:] == [
        ("INFO", "request rejected")
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_body_up_to_the_limit_may_come_in_one_message():
    """BUFFERED mode sends the whole body in one message: over gRPC's default 4 MiB cap it failed the stream with
    RESOURCE_EXHAUSTED, while the same body in chunks was routed; the picker's own limit decides now (413 beyond)."""
    backend = RoundRobinBackend([A])
    handle = await serve_extproc(backend, port=0, max_body_bytes=6 << 20)
    try:
        big = json.dumps({"model": "m", "prompt": "x" * (5 << 20)}).encode()
        for data, status in ((big, 0), (big + b" " * (1 << 20), 413)):
            out, code = await whole_stream(handle.port, [headers("big"), body(data)])
            assert code == grpc.StatusCode.OK
            assert out[0].immediate_response.status.code == status
            if not status:
                assert destination(out[0]) == A
    finally:
        await handle.stop(0)


async def test_bodies_buffered_at_once_are_bounded_and_the_one_past_the_budget_is_shed_429():
    """Two streams each hold an unfinished body; a third whose chunk would take the sum past the budget is answered
    429 at once, the first two are still routed, and their bytes are given back for the next request."""
    backend = RoundRobinBackend([A])
    handle = await serve_extproc(backend, port=0, max_body_bytes=64 << 10, max_buffered_body_bytes=100 << 10)
    chunk = json.dumps({"model": "m", "prompt": "x" * (40 << 10)}).encode()
    head, tail = chunk[: 40 << 10], chunk[40 << 10 :]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = pb_grpc.ExternalProcessorStub(channel)
            held = [stub.Process(), stub.Process()]
            for i, call in enumerate(held):
                await call.write(headers(f"held-{i}"))
                await call.write(body(head, eos=False))

            async def both_held() -> bool:
                return handle.budget.held >= 80 << 10

            await until(both_held, "the picker holds both first chunks")
            out, code = await whole_stream(handle.port, [headers("shed"), body(head, eos=False), body(tail)])
            assert code == grpc.StatusCode.OK and out[0].immediate_response.status.code == 429
            for call in held:
                await call.write(body(tail))
                assert destination(await call.read()) == A  # routed: the budget only sheds, never fails a body
                await call.done_writing()
        out, code = await whole_stream(handle.port, [headers("after"), body(head, eos=False), body(tail)])
        assert code == grpc.StatusCode.OK and destination(out[0]) == A  # their bytes were given back
        assert handle.budget.held == 0 and handle.budget.refused == 1
    finally:
        await handle.stop(0)


async def test_health_services(picker):
    handle, backend = picker
    for port in (handle.port, handle.health_port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("liveness", "readiness", EXTPROC_SERVICE):
                got = await stub.Check(health_pb2.HealthCheckRequest(service=service))
                assert got.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Check(health_pb2.HealthCheckRequest(service="nope"))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    backend.is_ready = False
    await asyncio.sleep(0.2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.health_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        status = {
            s: (await stub.Check(health_pb2.HealthCheckRequest(service=s))).status
            for s in ("liveness", "readiness", EXTPROC_SERVICE)
        }
    assert status == {
        "liveness": health_pb2.HealthCheckResponse.SERVING,
        "readiness": health_pb2.HealthCheckResponse.NOT_SERVING,
        EXTPROC_SERVICE: health_pb2.HealthCheckResponse.NOT_SERVING,
    }


class _NoTargets:
    """A broken backend: its decision has no target (a bug the shell must survive)."""

    def ready(self) -> bool:
        return True

    def pick(self, request, subset=None) -> SchedulingResult:
        return SchedulingResult(targets=(), reason="bug")

    def response_complete(self, request_id, served, status, usage) -> None:
        pass


async def test_a_failing_stream_is_answered_500():
    handle = await serve_extproc(_NoTargets(), port=0)
    try:
        (out,) = await exchange(handle.port, [headers("bug"), body()], expect=1)
        assert out.immediate_response.status.code == 500
    finally:
        await handle.stop(0)
