"""The twin through real clients: the openai package, raw aiohttp SSE, Prometheus's text parser, faults."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest
import zmq
import zmq.asyncio
from prometheus_client.parser import text_string_to_metric_families

from harness.netutil import find_base_port
from sim.fleet.fleet import Fleet
from sim.fleet.profile import load_profile
from sim.fleet.synth import prompt_text

SHARED = prompt_text([11, 12, 13], 3 * 512)  # 1,536 tokens shared by the requests below


def client(fleet: Fleet, i: int = 0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fleet.urls[i] + "/v1", api_key="none", max_retries=0)


async def metrics(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    out: dict[str, Any] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(m: dict[str, Any], name: str) -> float:
    return sum(v for _, v in m[name])


async def test_openai_client_streams_and_reads_usage_with_cached_tokens(fleet2: Fleet) -> None:
    c = client(fleet2)
    model = fleet2.servers[0].model_name
    first = await c.completions.create(model=model, prompt=SHARED + " first question", max_tokens=5)
    assert first.usage is not None and first.usage.completion_tokens == 5
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    stream = await c.completions.create(
        model=model,
        prompt=SHARED + " second question",
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts, usage = [], None
    async for chunk in stream:
        texts += [ch.text for ch in chunk.choices]
        usage = chunk.usage or usage
    assert usage is not None and usage.completion_tokens == 7
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 3 * 512  # the shared blocks were served from cache
    assert "".join(texts).strip()


async def test_chat_completion_stream_shape_and_done_marker(fleet2: Fleet) -> None:
    body = {
        "model": fleet2.servers[0].model_name,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with aiohttp.ClientSession() as s, s.post(fleet2.urls[0] + "/v1/chat/completions", json=body) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        raw = (await r.read()).decode()
    events = [e[len("data: ") :] for e in raw.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


async def test_non_streaming_chat_with_openai_client(fleet2: Fleet) -> None:
    c = client(fleet2, 1)
    resp = await c.chat.completions.create(
        model=fleet2.servers[1].model_name, messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 3


@pytest.mark.parametrize(
    ("path", "payload", "status", "err_type"),
    [
        ("/v1/completions", b"{not json", 400, "BadRequestError"),
        ("/v1/completions", {"model": "no-such-model", "prompt": "x"}, 404, "NotFoundError"),
        ("/v1/completions", {"prompt": "x", "max_tokens": -1}, 400, "BadRequestError"),
        ("/v1/completions", {"max_tokens": 3}, 400, "BadRequestError"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 200_000}, 400, "BadRequestError"),
        ("/v1/chat/completions", {"messages": []}, 400, "BadRequestError"),
        ("/v1/chat/completions", {"messages": [{"content": "no role"}]}, 400, "BadRequestError"),
        ("/detokenize", {"tokens": ["a"]}, 400, "BadRequestError"),
        (  # vLLM refuses both in ChatCompletionRequest and TokenizeChatRequest alike
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "continue_final_message": True},
            400,
            "BadRequestError",
        ),
        (
            "/tokenize",
            {"messages": [{"role": "user", "content": "x"}], "continue_final_message": True},
            400,
            "BadRequestError",
        ),
        ("/tokenize", {"messages": [], "add_generation_prompt": "no"}, 400, "BadRequestError"),
    ],
)
async def test_errors_are_vllm_error_objects(
    fleet2: Fleet, path: str, payload: Any, status: int, err_type: str
) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with (
        aiohttp.ClientSession() as s,
        s.post(fleet2.urls[0] + path, data=data, headers={"Content-Type": "application/json"}) as r,
    ):
        assert r.status == status
        body = await r.json()
    assert body["error"]["type"] == err_type
    assert body["error"]["code"] == status
    assert body["error"]["message"]


async def test_prompt_over_max_model_len_is_refused(fleet2: Fleet) -> None:
    srv = fleet2.servers[0]
    too_long = list(range(300, 300 + srv.engine.max_prompt_tokens() + 1))
    async with (
        aiohttp.ClientSession() as s,
        s.post(srv.url + "/v1/completions", json={"prompt": too_long, "max_tokens": 1}) as r,
    ):
        assert r.status == 400
        assert "prompt" in (await r.json())["error"]["message"]


async def test_tokenize_detokenize_models_health(fleet2: Fleet) -> None:
    url = fleet2.urls[0]
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/tokenize", json={"prompt": SHARED}) as r:
            tok = await r.json()
        assert tok["count"] == 3 * 512 == len(tok["tokens"])
        async with s.post(url + "/detokenize", json={"tokens": tok["tokens"]}) as r:
            assert (await r.json())["prompt"] == SHARED
        async with s.get(url + "/v1/models") as r:
            ids = [m["id"] for m in (await r.json())["data"]]
        assert ids == [fleet2.servers[0].model_name, "sql-adapter"]
        async with s.get(url + "/health") as r:
            assert r.status == 200


async def test_metrics_parse_and_count(fleet2: Fleet) -> None:
    c = client(fleet2)
    model = fleet2.servers[0].model_name
    await asyncio.gather(*(c.completions.create(model=model, prompt=SHARED + f" q{i}", max_tokens=4) for i in range(3)))
    m = await metrics(fleet2.urls[0])
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "vllm:cache_config_info",
        "vllm:time_to_first_token_seconds_count",
        "vllm:e2e_request_latency_seconds_bucket",
    ):
        assert name in m, name
    assert value(m, "vllm:generation_tokens_total") == 12
    assert value(m, "vllm:prompt_tokens_total") > 3 * 1536
    assert value(m, "vllm:prefix_cache_hits_total") >= 2 * 1536  # the 2nd and 3rd hit the shared prefix
    assert value(m, "vllm:time_to_first_token_seconds_count") == 3
    labels = m["vllm:cache_config_info"][0][0]
    assert labels["block_size"] == "16" and labels["num_gpu_blocks"] == "512"


@pytest.mark.parametrize(
    ("query", "encoding", "families", "gzipped"),
    [
        ("", "", None, False),  # everything, as it is
        ("?name[]=vllm:num_requests_waiting", "", {"vllm:num_requests_waiting"}, False),
        (
            "?name[]=vllm:prompt_tokens_total&name[]=vllm:cache_config_info",
            "identity",
            {"vllm:prompt_tokens", "vllm:cache_config_info"},  # a counter's family is named without _total
            False,
        ),
        ("?name[]=vllm:no_such_series", "", set(), False),
        ("", "deflate, gzip;q=0.5", None, True),  # gzip when the client takes it, as prometheus_client's app does
        ("?name[]=vllm:num_requests_running", "GZIP", {"vllm:num_requests_running"}, True),
    ],
)
async def test_metrics_names_and_encoding_as_vllm_s_exposition_app(
    fleet2: Fleet, query: str, encoding: str, families: set[str] | None, gzipped: bool
) -> None:
    import gzip

    headers = {"Accept-Encoding": encoding}
    url = fleet2.urls[0] + "/metrics" + query
    async with aiohttp.ClientSession(auto_decompress=False) as s, s.get(url, headers=headers) as r:
        assert r.status == 200
        raw = await r.read()
        assert (r.headers.get("Content-Encoding") == "gzip") == gzipped
    text = (gzip.decompress(raw) if gzipped else raw).decode()
    found = {f.name for f in text_string_to_metric_families(text)}
    if families is None:
        assert len(found) > 20 and "vllm:num_requests_waiting" in found
    else:
        assert found == families


async def test_lora_adapter_served_and_reported(fleet2: Fleet) -> None:
    c = client(fleet2)
    resp = await c.completions.create(model="sql-adapter", prompt="select", max_tokens=2)
    assert resp.model == "sql-adapter"
    m = await metrics(fleet2.urls[0])
    assert "vllm:lora_requests_info" in m


async def _fault(fleet: Fleet, i: int, body: dict[str, Any]) -> int:
    async with aiohttp.ClientSession() as s, s.post(f"{fleet.control_url}/servers/{i}/fault", json=body) as r:
        return r.status


async def test_fault_error_then_recover(fleet2: Fleet) -> None:
    assert await _fault(fleet2, 0, {"mode": "error", "status": 503}) == 200
    async with aiohttp.ClientSession() as s:
        async with s.get(fleet2.urls[0] + "/health") as r:
            assert r.status == 503
        async with s.get(fleet2.urls[1] + "/health") as r:
            assert r.status == 200  # the other server is unaffected
        assert await _fault(fleet2, 0, {"mode": "ok"}) == 200
        async with s.get(fleet2.urls[0] + "/health") as r:
            assert r.status == 200


async def test_fault_stop_refuses_connections_then_restarts(fleet2: Fleet) -> None:
    assert await _fault(fleet2, 1, {"mode": "stop"}) == 200
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with s.get(fleet2.urls[1] + "/health"):
                pass
        assert await _fault(fleet2, 1, {"mode": "ok"}) == 200
        async with s.get(fleet2.urls[1] + "/health") as r:
            assert r.status == 200


async def test_fault_hang_times_out_then_releases(fleet2: Fleet) -> None:
    assert await _fault(fleet2, 0, {"mode": "hang"}) == 200
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as s:
        with pytest.raises(asyncio.TimeoutError):
            async with s.get(fleet2.urls[0] + "/health"):
                pass
    assert await _fault(fleet2, 0, {"mode": "ok"}) == 200


async def test_kv_event_drops_leave_a_gap_and_a_restart_counts_from_0(fleet2: Fleet) -> None:
    server = fleet2.servers[0]
    assert server.publisher is not None
    async with aiohttp.ClientSession() as s:
        for bad in ({"drop": -1}, {"drop": "2"}, {"drop": 1, "x": 1}, [1]):
            async with s.post(f"{fleet2.control_url}/servers/0/kv_events", json=bad) as r:
                assert r.status == 400, bad
        async with s.post(f"{fleet2.control_url}/servers/0/kv_events", json={"drop": 2}) as r:
            assert r.status == 200 and await r.json() == {"index": 0, "pending": 2, "dropped": 0}
    before = server.publisher.next_seq
    c = client(fleet2)
    for i in range(3):  # each new prompt stores blocks: at least one batch each
        await c.completions.create(model=server.model_name, prompt=prompt_text([950 + i], 256), max_tokens=2)
    assert server.publisher.dropped == 2 and server.drop_kv_batches == 0
    assert server.publisher.next_seq - before >= 3  # the dropped batches kept their sequence numbers
    old = server.publisher
    ctx = zmq.asyncio.Context.instance()
    sub = ctx.socket(zmq.SUB)  # a connected subscriber keeps the port busy a moment after the close
    sub.connect(server.kv_endpoint or "")
    await old.wait_for_peers(1)
    async with aiohttp.ClientSession() as s:
        for bad in ({"restart": False}, {"restart": True, "drop": 1}):
            async with s.post(f"{fleet2.control_url}/servers/0/kv_events", json=bad) as r:
                assert r.status == 400, bad
        async with s.post(f"{fleet2.control_url}/servers/0/kv_events", json={"restart": True}) as r:
            assert r.status == 200 and (await r.json())["dropped"] == 0
    assert server.publisher is not old and server.publisher.next_seq == 0  # a new publisher counts from 0
    await c.completions.create(model=server.model_name, prompt=prompt_text([960], 256), max_tokens=2)
    assert server.publisher.next_seq >= 1  # and the server publishes through it
    sub.close(linger=0)


async def test_a_publisher_restart_during_generation_leaves_the_engine_serving() -> None:
    """The engine keeps stepping (and storing blocks) while the publisher's ports are rebound: it must never publish
    through the closed publisher (that raised in the engine loop, which died: every request then hung)."""
    profile = load_profile(num_gpu_blocks=4096)
    fleet = Fleet(servers=1, base_port=find_base_port(1), profile=profile, time_scale=20.0)
    await fleet.start()
    server = fleet.servers[0]
    sub = zmq.asyncio.Context.instance().socket(zmq.SUB)  # keeps the old port busy a moment: the rebind retries
    try:
        assert server.publisher is not None
        sub.connect(server.kv_endpoint or "")
        await server.publisher.wait_for_peers(1)
        c = client(fleet)
        body = {"min_tokens": 400}
        generating = [  # decoding stores a block every 16 tokens: events all through the restart
            asyncio.create_task(
                c.completions.create(model=server.model_name, prompt=f"long {i}", max_tokens=400, extra_body=body)
            )
            for i in range(4)
        ]
        while not server.engine.running:  # noqa: ASYNC110 - the engine offers no event to wait on
            await asyncio.sleep(0.005)
        for _ in range(3):
            async with (
                aiohttp.ClientSession() as s,
                s.post(f"{fleet.control_url}/servers/0/kv_events", json={"restart": True}) as r,
            ):
                assert r.status == 200
        done = await asyncio.wait_for(asyncio.gather(*generating), 30)
        assert all(d.usage is not None and d.usage.completion_tokens == 400 for d in done)
        await asyncio.wait_for(c.completions.create(model=server.model_name, prompt="after", max_tokens=2), 10)
    finally:
        sub.close(linger=0)
        await fleet.stop()


@pytest.mark.parametrize(
    "body", [{"mode": "explode"}, {"mode": "slow"}, {"mode": "error", "status": 200}, {"mode": "ok", "x": 1}]
)
async def test_bad_fault_requests_are_refused(fleet2: Fleet, body: dict[str, Any]) -> None:
    assert await _fault(fleet2, 0, body) == 400


async def test_slow_fault_raises_model_time_latency(fleet2: Fleet) -> None:
    c = client(fleet2)
    model = fleet2.servers[0].model_name

    async def prefill_of(prompt: str) -> float:
        await c.completions.create(model=model, prompt=prompt, max_tokens=2)
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{fleet2.control_url}/servers/0/requests?clear=1") as r,
        ):
            return float((await r.json())[-1]["prefill"])  # model time, free of event-loop jitter

    normal = await prefill_of(prompt_text([901], 512))
    assert await _fault(fleet2, 0, {"mode": "slow", "factor": 4}) == 200
    slow = await prefill_of(prompt_text([902], 512))
    assert slow == pytest.approx(normal * 4, rel=0.05)


async def test_the_request_log_keeps_only_the_last_n_requests() -> None:
    """The benchmark request log is bounded (`--request-log`): a long-running twin does not grow with it forever."""
    profile = load_profile(num_gpu_blocks=512)
    fleet = Fleet(servers=1, base_port=find_base_port(1), profile=profile, time_scale=1000.0, request_log=2)
    await fleet.start()
    try:
        c = client(fleet)
        for i in range(3):
            body = {"request_id": f"log-{i}"}
            await c.completions.create(
                model=fleet.servers[0].model_name, prompt=f"log {i}", max_tokens=2, extra_body=body
            )
        async with aiohttp.ClientSession() as s, s.get(f"{fleet.control_url}/servers/0/requests") as r:
            kept = [e["request_id"] for e in await r.json()]
        assert len(kept) == 2 and kept[0].startswith("log-1") and kept[1].startswith("log-2")
    finally:
        await fleet.stop()
