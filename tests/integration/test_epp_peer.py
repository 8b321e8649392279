"""The field's reference endpoint picker (GIE EPP v1.5.0) behind our Envoy, in front of a 3-server fleet twin, as the
routing benchmark's `epp-default` arm runs it (loadtests.routing.epp): each server on its own loopback address, the
cluster twin (`autonomic cluster-sim`) serving them as the Pods of an InferencePool, the EPP watching that pool with
its built-in default plugins, Envoy rendered by EnvoyOptions with ext_proc to the EPP and gRPC health on its health
port.

Why it exists: the comparison is only fair if the EPP accepts the twins as it would a real cluster and real vLLM
pods: discovery through the API, metrics scraped, requests answered 200 through Envoy, spread over the servers, and a
repeated prompt sent back to the server that holds its prefix. Skipped without the binary (`make peers`, needs Go).
Everything listens on 127.0.0.x, except the EPP's own listeners (the binary binds ":port").
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.envoy import LocalEnvoy
from harness.netutil import find_loopback_hosts, free_port
from loadtests.routing.epp import POOL, EppArm, missing_reason, wait_until_routed
from scorer.extproc.envoy_config import EnvoyOptions
from sim.fleet.profile import load_profile
from sim.fleet.server import ModelServer

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(missing_reason("epp-default") is not None, reason=str(missing_reason("epp-default"))),
]
TIMEOUT = aiohttp.ClientTimeout(total=60)


@pytest.fixture
async def servers() -> AsyncIterator[list[ModelServer]]:
    """Three twin servers on three loopback addresses, one port: what three pods look like."""
    hosts, port = find_loopback_hosts(3, (0,))
    profile = load_profile(num_gpu_blocks=2048)
    fleet = [ModelServer(index=i, profile=profile, host=h, port=port, time_scale=50.0) for i, h in enumerate(hosts)]
    try:
        for s in fleet:
            await s.start()
        yield fleet
    finally:
        for s in fleet:
            await s.stop()


@pytest.fixture
async def epp_behind_envoy(servers: list[ModelServer], tmp_path: Path) -> AsyncIterator[tuple[str, EppArm]]:
    arm = EppArm("epp-default", [s.host for s in servers], servers[0].http_port, tmp_path)
    await arm.start()
    try:
        opts = EnvoyOptions(
            listen_port=free_port(),
            admin_port=free_port(),
            picker_port=arm.epp.port,
            picker_grpc_health_port=arm.epp.health_port,
            pool=[f"{s.host}:{s.http_port}" for s in servers],
        )
        async with LocalEnvoy(opts, workdir=tmp_path) as envoy:
            await wait_until_routed(envoy.url, servers[0].model_name)
            yield envoy.url, arm
    finally:
        await arm.stop()


def body(model: str, prompt: str) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, "max_tokens": 8, "ignore_eos": True}


def long_prompt(seed: int, words: int = 600) -> str:
    return " ".join(f"w{seed}x{i % 97}y{i}" for i in range(words))


async def complete(session: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> dict[str, Any]:
    async with session.post(f"{url}/v1/completions", json=payload) as r:
        assert r.status == 200, await r.text()
        data: dict[str, Any] = await r.json()
    assert data["usage"]["completion_tokens"] == 8, data
    return data


def served(servers: list[ModelServer]) -> list[int]:
    return [len(s.finished_log) for s in servers]


async def which_server(session: aiohttp.ClientSession, url: str, servers: list[ModelServer], prompt: str) -> int:
    before = served(servers)
    await complete(session, url, body(servers[0].model_name, prompt))
    grew = [i for i, (a, b) in enumerate(zip(before, served(servers), strict=True)) if b > a]
    assert len(grew) == 1, (before, served(servers))
    return grew[0]


async def test_epp_discovers_the_pods_and_reads_the_twins_metrics(epp_behind_envoy: tuple[str, EppArm]):
    """Its datastore holds one endpoint per Pod (named `<pod>-rank-0`). Of the vLLM series its default engine
    config reads (num_requests_waiting, num_requests_running, kv_cache_usage_perc, cache_config_info's block_size and
    num_gpu_blocks, lora_requests_info), the twins lack only `vllm:lora_requests_info`, as vLLM does without LoRA:
    the EPP logs that once per endpoint ("extract failed") and uses the others."""
    _, arm = epp_behind_envoy
    text = await arm.epp.metrics_text()
    for i in range(3):
        assert f'inference_pool_per_pod_queue_size{{model_server_pod="{POOL}-{i}-rank-0",name="{POOL}"}}' in text
    assert arm.epp.log_path is not None
    failures = [json.loads(ln) for ln in arm.epp.log_path.read_text().splitlines() if '"extract failed"' in ln]
    errors = {e for f in failures for e in f["error"].splitlines()}
    assert errors <= {'metric family "vllm:lora_requests_info" not found'}, errors


async def test_requests_through_envoy_and_the_epp_are_answered_and_spread(
    epp_behind_envoy: tuple[str, EppArm], servers: list[ModelServer]
):
    url, _ = epp_behind_envoy
    model = servers[0].model_name
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        before = served(servers)
        prompts = [f"request {i}: " + long_prompt(100 + i, 50) for i in range(12)]
        await asyncio.gather(*(complete(session, url, body(model, p)) for p in prompts))
        after = served(servers)
    per_server = [b - a for a, b in zip(before, after, strict=True)]
    assert sum(per_server) == 12, per_server
    assert sum(1 for n in per_server if n) >= 2, f"unrelated concurrent prompts all went to one server: {per_server}"


async def test_a_repeated_prompt_goes_back_to_the_server_that_cached_it(
    epp_behind_envoy: tuple[str, EppArm], servers: list[ModelServer]
):
    """The prefix-cache scorer (weight 3) remembers where it sent a prompt; the twin confirms the cache hit."""
    url, _ = epp_behind_envoy
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for seed in (7, 8):
            prompt = long_prompt(seed)
            first = await which_server(session, url, servers, prompt)
            for _ in range(3):
                assert await which_server(session, url, servers, prompt) == first
            assert servers[first].finished_log[-1]["cached_tokens"] > 0, servers[first].finished_log[-1]
