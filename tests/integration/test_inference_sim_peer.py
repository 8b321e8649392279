"""Our picker (precise profile) behind real Envoy, in front of three llm-d-inference-sim servers instead of our twin.

Why it exists: the cross-check of the two twins (docs/peers.md, "Cross-check: llm-d-inference-sim"). If the picker
works only against our own twin, the twin and the picker may share a misreading of vLLM. Here llm-d's simulator
(another team's reading of the same engine) serves: the picker must scrape its /metrics, tokenize with its /tokenize,
follow its KV events (relayed: harness.inference_sim says why) and route requests that it answers. Skipped without
the binary (`make peers`). The simulators listen on every interface (no host flag); everything else on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from envoy_fixture import picker_options

from harness.envoy import LocalEnvoy
from harness.inference_sim import MODEL, InferenceSimFleet, SimOptions, missing_reason
from harness.netutil import find_base_port
from harness.picker import PickerProcess

pytestmark = [pytest.mark.peers, pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))]
PRECISE_CONFIG = Path(__file__).parents[2] / "scorer" / "precise-config.yaml"
TIMEOUT = aiohttp.ClientTimeout(total=60)
WAIT = 30.0
SERVED = re.compile(r"^vllm:request_success_total\{[^}]*\} (\S+)$", re.MULTILINE)


def precise_config(path: Path) -> Path:
    """The shipped precise profile, for a publisher without a replay socket and with llm-d's `kv@...` topics."""
    doc = yaml.safe_load(PRECISE_CONFIG.read_text())
    for plugin in doc["plugins"]:
        if plugin["type"] == "precise-prefix-cache-scorer":
            plugin["parameters"] |= {"kvReplayPortOffset": None, "kvTopic": "kv@"}
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[str, InferenceSimFleet, PickerProcess]]:
    options = SimOptions(kv_cache_size=512, max_num_seqs=4, time_to_first_token_ms=20, inter_token_latency_ms=2)
    sims = InferenceSimFleet(3, find_base_port(3, offsets=(0, 1000)), options=options)
    async with sims:
        picker = PickerProcess(sims.addresses, config=precise_config(tmp_path / "picker.yaml"), scrape_interval_s=0.2)
        async with picker:
            opts = picker_options(picker, sims.addresses)
            async with LocalEnvoy(opts, workdir=tmp_path) as envoy:
                yield envoy.url, sims, picker


def series(text: str, name: str) -> dict[str, float]:
    """endpoint -> value of one per-endpoint family of the picker's /metrics."""
    pattern = re.compile(rf'^{re.escape(name)}\{{[^}}]*endpoint="([^"]+)"[^}}]*\}} (\S+)$', re.MULTILINE)
    return {ep: float(v) for ep, v in pattern.findall(text)}


async def served(session: aiohttp.ClientSession, sims: InferenceSimFleet) -> list[float]:
    """Requests each simulator has finished (its vllm:request_success_total over finish reasons)."""
    out = []
    for s in sims.servers:
        async with session.get(s.url + "/metrics") as r:
            out.append(sum(float(v) for v in SERVED.findall(await r.text())))
    return out


async def until(picker: PickerProcess, check: Any) -> str:
    """The picker's /metrics once `check(text)` holds (bounded wait, polling)."""
    async with asyncio.timeout(WAIT):
        while not check(text := await picker.metrics_text()):  # noqa: ASYNC110 (another process's state, polled)
            await asyncio.sleep(0.1)
    return text


def ok_scrapes(text: str) -> dict[str, float]:
    pattern = re.compile(r'^autonomic_picker_scrapes_total\{endpoint="([^"]+)",result="ok"\} (\S+)$', re.MULTILINE)
    return {ep: float(v) for ep, v in pattern.findall(text)}


async def settled(picker: PickerProcess) -> None:
    """Until the picker has seen the last request end and has scraped every server since (two scrapes: the first
    may have started before): a repeated prompt is then scored on the servers' idle state, not on a running request
    that a scrape caught, which can outweigh a short cached prefix."""
    first = ok_scrapes(await picker.metrics_text())
    assert len(first) == 3, first
    await until(
        picker,
        lambda t: (
            set(series(t, "autonomic_picker_endpoint_in_flight").values()) <= {0.0}
            and all(ok_scrapes(t).get(ep, 0) >= n + 2 for ep, n in first.items())
        ),
    )


def diagnostics(text: str) -> list[str]:
    """The picker's tokenize, KV-event and precise-index series (what to read when routing went wrong)."""
    wanted = ("tokenize", "precise", "kv_events", "in_flight")
    return [ln for ln in text.splitlines() if any(w in ln for w in wanted) and "_bucket" not in ln and ln[0] != "#"]


def long_prompt(seed: int, words: int = 400) -> str:
    return " ".join(f"w{seed}x{i % 97}y{i}" for i in range(words))


async def test_the_picker_reads_the_simulators_metrics(stack: tuple[str, InferenceSimFleet, PickerProcess]) -> None:
    """vllm:num_requests_waiting/running, kv_cache_usage_perc, cache_config_info parse: every endpoint a candidate."""
    _, sims, picker = stack
    text = await until(picker, lambda t: set(series(t, "autonomic_picker_endpoint_ready").values()) == {1.0})
    assert set(series(text, "autonomic_picker_endpoint_ready")) == set(sims.addresses)
    failed = re.findall(r'^autonomic_picker_scrapes_total\{[^}]*result="(?!ok)[^"]*"[^}]*\} [1-9]', text, re.MULTILINE)
    assert not failed, failed


async def request(session: aiohttp.ClientSession, url: str, i: int) -> None:
    """One of four shapes (completion/chat x plain/streamed); checks the answer as a client would."""
    chat, stream = bool(i % 2), bool(i // 2 % 2)
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 8, "ignore_eos": True, "stream": stream}
    text = f"request {i}: " + long_prompt(i, 40)
    body |= {"messages": [{"role": "user", "content": text}]} if chat else {"prompt": text}
    if stream:
        body["stream_options"] = {"include_usage": True}
    path = "/v1/chat/completions" if chat else "/v1/completions"
    async with session.post(url + path, json=body) as r:
        assert r.status == 200, await r.text()
        raw = await r.text()
    if not stream:
        assert json.loads(raw)["usage"]["completion_tokens"] == 8, raw
        return
    events = [ln.removeprefix("data: ") for ln in raw.split("\n") if ln.startswith("data: ")]
    assert events[-1] == "[DONE]", raw
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 8, raw


async def test_requests_through_envoy_are_answered_and_spread(
    stack: tuple[str, InferenceSimFleet, PickerProcess],
) -> None:
    url, sims, _ = stack
    n, limit = 200, asyncio.Semaphore(12)

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        async with limit:
            await request(session, url, i)

    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        before = await served(session, sims)
        await asyncio.gather(*(one(session, i) for i in range(n)))
        after = await served(session, sims)
    per_server = [b - a for a, b in zip(before, after, strict=True)]
    assert sum(per_server) == n, per_server
    assert sum(1 for c in per_server if c) >= 2, f"unrelated concurrent requests all went to one server: {per_server}"


async def test_kv_events_feed_the_precise_index_and_route_a_repeated_prompt(
    stack: tuple[str, InferenceSimFleet, PickerProcess],
) -> None:
    """A prompt sent straight to server 1 is known to the picker only through server 1's KV events (array format,
    `parent_block_hash` 0 for no parent, seq from 1); the same prompt through Envoy then goes to server 1, which
    answers it from its cache."""
    url, sims, picker = stack
    target = sims.servers[1]
    prompt = long_prompt(7)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        body = {"model": MODEL, "prompt": prompt, "max_tokens": 4, "ignore_eos": True}
        async with session.post(target.url + "/v1/completions", json=body) as r:
            assert r.status == 200, await r.text()
        addr = f"127.0.0.1:{target.port}"
        text = await until(picker, lambda t: series(t, "autonomic_picker_precise_index_blocks").get(addr, 0) >= 20)
        assert set(series(text, "autonomic_picker_kv_events_bad_messages").values()) <= {0.0}
        for _ in range(3):
            await settled(picker)
            before = await served(session, sims)
            async with session.post(url + "/v1/completions", json=body) as r:
                assert r.status == 200, await r.text()
                usage = (await r.json())["usage"]
            grew = [i for i, (a, b) in enumerate(zip(before, await served(session, sims), strict=True)) if b > a]
            if grew != [1]:
                raise AssertionError(f"served by {grew}, not [1]; picker: {diagnostics(await picker.metrics_text())}")
            assert usage["prompt_tokens_details"]["cached_tokens"] >= 16 * 20, usage
    text = await picker.metrics_text()
    assert series(text, "autonomic_picker_kv_events_synced")[addr] == 1.0
