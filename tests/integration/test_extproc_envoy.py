"""The picker behind the REAL Envoy binary, in front of fleet twins: routing, subset, errors, bodies, usage, modes.

Every test starts its own picker + Envoy on free loopback ports (see envoy_fixture.py); failure modes are in
test_extproc_failures.py. The twins run at 1000x, so a completion of a few tokens takes milliseconds.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import aiohttp
import pytest
from envoy_fixture import (
    EchoUpstream,
    Stack,
    completion_body,
    completion_of,
    fleet_addresses,
    new_request_id,
    picker_and_envoy,
    post_completion,
    served_by,
)
from google.protobuf import struct_pb2

from scorer.extproc.protocol import SUBSET_KEY
from scorer.extproc.roundrobin import RoundRobinBackend
from sim.fleet.fleet import Fleet
from sim.fleet.synth import prompt_text


async def test_requests_land_on_the_picked_endpoint(fleet2: Fleet, rr_envoy: Stack):
    backend = rr_envoy.backend
    assert isinstance(backend, RoundRobinBackend)
    addresses = fleet_addresses(fleet2)
    for i in range(4):
        rid = new_request_id()
        status, raw = await post_completion(
            rr_envoy.url, completion_body(fleet2, f"hello {i}", rid), {"x-request-id": rid}
        )
        assert status == 200, raw
        (picked,) = next(t for r, t in backend.picks if r == rid)
        assert await served_by(fleet2, rid) == [addresses.index(picked)]
        done = await completion_of(backend, rid)
        assert done is not None and (done.served, done.status) == (picked, 200)
        assert done.usage is None  # the response body does not pass through the picker (observe_response_body)
    assert {t for _, t in backend.picks} == {(a,) for a in addresses}  # round robin used both


async def test_the_response_ends_for_the_picker_when_it_ends_for_the_client(fleet2: Fleet, rr_envoy: Stack):
    """With the response body kept away from the picker, its stream still ends with the HTTP stream, so in-flight
    counts are released at the end of the answer, not at its first byte (the decode phase still counts)."""
    backend = rr_envoy.backend
    assert isinstance(backend, RoundRobinBackend)
    rid = new_request_id()
    body = completion_body(fleet2, "a long answer", rid, stream=True, max_tokens=200, min_tokens=200)

    async def slow(factor: float) -> None:  # every engine step `factor` times longer, on both servers
        for i in range(len(fleet2.servers)):
            fault = {"mode": "slow", "factor": factor} if factor > 1 else {"mode": "ok"}
            async with http.post(f"{fleet2.control_url}/servers/{i}/fault", json=fault) as resp:
                assert resp.status == 200

    async with aiohttp.ClientSession() as http:
        await slow(1000)  # model time = wall time: ~10 ms a token
        async with http.post(f"{rr_envoy.url}/v1/completions", json=body, headers={"x-request-id": rid}) as r:
            assert r.status == 200
            assert (await r.content.readline()).startswith(b"data:")  # the first token is out
            await slow(1e5)  # a second a token: the answer cannot end while the picker is asked
            assert backend.completion(rid) is None  # still in flight for the picker
            await slow(1)
            rest = await r.content.read()
    assert rest.rstrip().endswith(b"data: [DONE]")
    done = await completion_of(backend, rid)  # Envoy ends the observer's stream with the HTTP stream
    assert done is not None and done.status == 200 and done.usage is None


async def test_fallback_list_is_retried_in_order(fleet2: Fleet):
    addresses = fleet_addresses(fleet2)
    backend = RoundRobinBackend(addresses, fallbacks=1)
    async with picker_and_envoy(backend, addresses) as stack, aiohttp.ClientSession() as http:
        async with http.post(f"{fleet2.control_url}/servers/0/fault", json={"mode": "stop"}) as r:
            assert r.status == 200
        rid = new_request_id()
        status, raw = await post_completion(
            stack.url, completion_body(fleet2, "fallback please", rid), {"x-request-id": rid}
        )
        assert status == 200, raw
        assert next(t for r, t in backend.picks if r == rid) == (addresses[0], addresses[1])
        assert await served_by(fleet2, rid) == [1]
        done = await completion_of(backend, rid)
        assert done is not None and done.served == addresses[1]  # Envoy reported the endpoint that answered


async def test_subset_hint_through_envoy_metadata(fleet2: Fleet):
    addresses = fleet_addresses(fleet2)
    backend = RoundRobinBackend(addresses)
    listed = struct_pb2.Value(list_value=struct_pb2.ListValue(values=[struct_pb2.Value(string_value=addresses[1])]))
    as_list = base64.b64encode(listed.SerializeToString()).decode()
    async with picker_and_envoy(backend, addresses, subset_from_header=True) as stack:
        for headers in ({SUBSET_KEY: addresses[1]}, {SUBSET_KEY + "-pb": as_list}):
            for _ in range(2):
                rid = new_request_id()
                status, raw = await post_completion(stack.url, completion_body(fleet2, "subset", rid), headers)
                assert status == 200, raw
                assert await served_by(fleet2, rid) == [1]
        status, raw = await post_completion(
            stack.url, completion_body(fleet2, "subset", new_request_id()), {SUBSET_KEY: "10.1.2.3:8000"}
        )
        assert status == 503
        assert json.loads(raw)["error"]["code"] == 503
        empty = base64.b64encode(struct_pb2.Value(list_value=struct_pb2.ListValue()).SerializeToString()).decode()
        status, _ = await post_completion(
            stack.url, completion_body(fleet2, "subset", new_request_id()), {SUBSET_KEY + "-pb": empty}
        )
        assert status == 503


async def test_invalid_body_is_an_openai_400(rr_envoy: Stack):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{rr_envoy.url}/v1/chat/completions", data=b'{"model": "m"}') as r:
            assert r.status == 400
            assert r.headers["content-type"] == "application/json"
            err = (await r.json())["error"]
        assert err["type"] == "BadRequestError" and err["code"] == 400 and "'messages'" in err["message"]
        async with http.post(f"{rr_envoy.url}/v1/completions", data=b"\x00garbage") as r:
            assert r.status == 400


async def test_no_ready_endpoint_is_503_and_shed_is_429(fleet2: Fleet, rr_envoy: Stack):
    backend = rr_envoy.backend
    assert isinstance(backend, RoundRobinBackend)
    backend.shed_sheddable = True
    status, raw = await post_completion(
        rr_envoy.url, completion_body(fleet2, "x", new_request_id()), {"x-autonomic-priority": "-1"}
    )
    assert (status, json.loads(raw)["error"]["type"]) == (429, "RateLimitError")
    backend.set_addresses([])
    status, raw = await post_completion(rr_envoy.url, completion_body(fleet2, "x", new_request_id()))
    assert (status, json.loads(raw)["error"]["message"]) == (503, "no ready endpoint")


def _sse_events(raw: bytes) -> tuple[str, list[str | None], dict[str, Any] | None, bool]:
    """(generated text, finish reasons, final usage, ended with [DONE]) of an SSE completion stream."""
    text, reasons, usage = [], [], None
    lines = [ln for ln in raw.split(b"\n") if ln.startswith(b"data: ")]
    for line in lines[:-1]:
        event = json.loads(line[6:])
        for choice in event["choices"]:
            text.append(choice["text"])
            reasons.append(choice["finish_reason"])
        usage = event.get("usage") or usage
    return "".join(text), [r for r in reasons if r], usage, lines[-1] == b"data: [DONE]"


async def test_streaming_passes_through(fleet2: Fleet, rr_envoy: Stack):
    """Same prompt, same twin, directly and through Envoy + picker: the same tokens and the same ending.

    (How the twin groups tokens into SSE events depends on timing, so events are compared by content; raw byte
    identity through the full-duplex path is checked by the echo test below.)
    """
    prompt = prompt_text([11, 12], 40)
    opts = {"stream": True, "stream_options": {"include_usage": True}, "max_tokens": 24}
    async with aiohttp.ClientSession() as http:
        for i, base in enumerate(fleet2.urls):
            rid = new_request_id()
            async with http.post(f"{base}/v1/completions", json=completion_body(fleet2, prompt, "direct", **opts)) as r:
                direct = _sse_events(await r.read())
            async with http.post(
                f"{rr_envoy.url}/v1/completions", json=completion_body(fleet2, prompt, rid, **opts)
            ) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                via = _sse_events(b"".join([c async for c in r.content.iter_any()]))
            assert await served_by(fleet2, rid) == [i]  # round robin: the same twin as the direct request
            assert via[0] == direct[0] and len(via[0]) > 0
            assert via[1] == direct[1] == ["length"]
            assert via[3] and direct[3]
            assert via[2] is not None and direct[2] is not None
            assert via[2]["completion_tokens"] == direct[2]["completion_tokens"] == 24


async def test_large_bodies_pass_byte_exact_both_ways(echo_upstream: EchoUpstream):
    backend = RoundRobinBackend([echo_upstream.address])
    prompt = "".join(chr(0x41 + (i * 7919) % 58) for i in range(1_000_000))
    body = json.dumps({"model": "m", "prompt": prompt}).encode()
    async with (
        picker_and_envoy(backend, [echo_upstream.address]) as stack,
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/v1/completions", data=body) as r,
    ):
        assert r.status == 200
        echoed = await r.read()
        assert r.headers["x-body-sha256"] == hashlib.sha256(body).hexdigest()
    assert echoed == body
    # Envoy 1.40 drops content-length in FULL_DUPLEX_STREAMED (chunked upstream) whatever the picker sets; what
    # must never happen is a stale length
    assert echo_upstream.received[-1]["content_length"] in (None, str(len(body)))


@pytest.mark.parametrize("body_mode", ["FULL_DUPLEX_STREAMED", "BUFFERED"])
async def test_usage_with_cached_tokens_reaches_the_backend(fleet2: Fleet, body_mode: str):
    """With `observe_response_body` the response passes through the picker, which reads its token usage."""
    addresses = fleet_addresses(fleet2)
    backend = RoundRobinBackend(addresses)
    prompt = prompt_text([21, 22, 23], 64)  # 4 blocks of 16 tokens: a repeat hits the prefix cache
    seen = []
    async with picker_and_envoy(backend, addresses, observe_response_body=True, body_mode=body_mode) as stack:
        for stream in (False, False, True, True):  # round robin: requests 1,3 go to one server, 2,4 to the other
            rid = new_request_id()
            extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
            status, _ = await post_completion(
                stack.url, completion_body(fleet2, prompt, rid, **extra), {"x-request-id": rid}
            )
            assert status == 200
            done = await completion_of(backend, rid)
            assert done is not None and done.usage is not None
            seen.append(done.usage)
    assert [u.cached_tokens for u in seen] == [0, 0, 48, 48]
    assert all(u.prompt_tokens == 64 for u in seen)


async def test_buffered_mode(fleet2: Fleet):
    addresses = fleet_addresses(fleet2)
    backend = RoundRobinBackend(addresses, fallbacks=1)
    async with picker_and_envoy(backend, addresses, body_mode="BUFFERED") as stack:
        for i in range(2):
            rid = new_request_id()
            status, raw = await post_completion(
                stack.url, completion_body(fleet2, f"buffered {i}", rid), {"x-request-id": rid}
            )
            assert status == 200, raw
            picked = next(t for r, t in backend.picks if r == rid)
            assert await served_by(fleet2, rid) == [addresses.index(picked[0])]
            done = await completion_of(backend, rid)
            assert done is not None and done.status == 200 and done.served == picked[0]
        status, _ = await post_completion(stack.url, {"model": 1})
        assert status == 400


async def test_original_dst_routing(fleet2: Fleet):
    """GIE's test setup: one address in the header (ORIGINAL_DST cannot parse a fallback list)."""
    addresses = fleet_addresses(fleet2)
    backend = RoundRobinBackend(addresses)
    async with picker_and_envoy(backend, addresses, routing="original_dst") as stack:
        for _ in range(2):
            rid = new_request_id()
            status, raw = await post_completion(stack.url, completion_body(fleet2, "odst", rid), {"x-request-id": rid})
            assert status == 200, raw
            (picked,) = next(t for r, t in backend.picks if r == rid)
            assert await served_by(fleet2, rid) == [addresses.index(picked)]
            done = await completion_of(backend, rid)
            assert done is not None and done.served == picked
