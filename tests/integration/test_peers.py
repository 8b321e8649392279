"""The real peer routers (smg, sglang-router, vllm-router) in front of a 3-server twin fleet.

Why it exists: the routing benchmark compares our picker with these peers, which is only fair if each peer
accepts the twin as it would real engines: registration probes answered, requests with the `model` field
proxied, and (for vllm-router) routing on token ids from the twin's render endpoints. Each peer runs from its
own virtual environment (`make peers`); without it these tests skip. Everything listens on 127.0.0.1, and each
peer runs in its own process group, killed in `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.netutil import find_base_port, free_port
from loadtests.routing.peers import PEERS
from sim.fleet.fleet import KV_OFFSET, Fleet
from sim.fleet.profile import load_profile

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[2]
SMG_BIN = REPO / ".venv-peers" / "smg" / "bin" / "smg"
SGLANG_BIN = REPO / ".venv-peers" / "sglang" / "bin" / "smg"
VLLM_BIN = REPO / ".venv-peers" / "vllm" / "bin" / "vllm-router"
READY_TIMEOUT_S = 60.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60)

needs_sglang = pytest.mark.skipif(
    not SGLANG_BIN.exists(), reason=f"sglang-router not installed ({SGLANG_BIN} missing): run `make peers`"
)
needs_smg = pytest.mark.skipif(not SMG_BIN.exists(), reason=f"smg not installed ({SMG_BIN} missing): run `make peers`")
needs_vllm = pytest.mark.skipif(
    not VLLM_BIN.exists(), reason=f"vllm-router not installed ({VLLM_BIN} missing): run `make peers`"
)

_PROMPT_TOKENS = re.compile(r"^vllm:prompt_tokens_total(?:\{[^}]*\})?\s+(\S+)$", re.MULTILINE)


@pytest.fixture
async def fleet3() -> AsyncIterator[Fleet]:
    fleet = Fleet(servers=3, base_port=find_base_port(3), profile=load_profile(num_gpu_blocks=2048), time_scale=50.0)
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


def sglang_cmd(port: int, workers: list[str], policy: str = "cache_aware") -> list[str]:
    return [
        str(SGLANG_BIN),
        "launch",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--prometheus-host",
        "127.0.0.1",
        "--prometheus-port",
        str(free_port()),
        "--policy",
        policy,
        "--worker-urls",
        *workers,
    ]


def smg_cmd(port: int, workers: list[str], arm: str, extra: list[str] | None = None) -> list[str]:
    """smg 1.13 with the flags of benchmark arm `arm` (loadtests/routing/peers.py), so the test runs what we measure."""
    spec = PEERS[arm]
    cmd = [str(SMG_BIN), "launch", "--host", "127.0.0.1", "--port", str(port), "--prometheus-host", "127.0.0.1"]
    cmd += ["--prometheus-port", str(free_port()), "--policy", spec.policy, *spec.flags, *(extra or [])]
    return [*cmd, "--worker-urls", *workers]


def vllm_cmd(port: int, workers: list[str], policy: str = "cache_aware", extra: list[str] | None = None) -> list[str]:
    return [
        str(VLLM_BIN),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--prometheus-host",
        "127.0.0.1",
        "--prometheus-port",
        str(free_port()),
        "--policy",
        policy,
        "--worker-urls",
        *workers,
        *(extra or []),
    ]


@contextlib.asynccontextmanager
async def peer(cmd: list[str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run a peer in its own process group; SIGTERM the group on exit, SIGKILL if it lingers."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=out, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
        )
        try:
            yield proc
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    await asyncio.wait_for(proc.wait(), timeout=10)
                    break
                except TimeoutError:
                    continue


def completion_body(model: str, prompt: str, max_tokens: int = 8) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True}


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def wait_ready(
    session: aiohttp.ClientSession, url: str, model: str, proc: asyncio.subprocess.Process, log: Path
) -> None:
    """Until the peer proxies one completion (it may answer /health before its workers are registered)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            pytest.fail(f"peer exited with {proc.returncode}:\n{_tail(log)}")
        try:
            async with session.post(f"{url}/v1/completions", json=completion_body(model, "ready check")) as r:
                if r.status == 200:
                    return
                last = f"{r.status} {await r.text()}"
        except aiohttp.ClientError as exc:
            last = repr(exc)
        await asyncio.sleep(0.5)
    pytest.fail(f"peer not ready after {READY_TIMEOUT_S}s (last: {last}):\n{_tail(log)}")


async def prompt_tokens(session: aiohttp.ClientSession, worker: str) -> float:
    async with session.get(f"{worker}/metrics") as r:
        text = await r.text()
    return sum(float(v) for v in _PROMPT_TOKENS.findall(text))


async def per_worker_tokens(session: aiohttp.ClientSession, workers: list[str]) -> list[float]:
    return list(await asyncio.gather(*(prompt_tokens(session, w) for w in workers)))


async def complete(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(f"{url}/v1/completions", json=body) as r:
        text = await r.text()
        assert r.status == 200, text
    data: dict[str, Any] = await r.json()
    assert data["usage"]["prompt_tokens"] > 0 and data["usage"]["completion_tokens"] > 0, data
    return data


def long_prompt(seed: int, words: int = 600) -> str:
    """Distinct long prompts: a long shared body per seed, so a repeat is a full prefix-cache hit."""
    return " ".join(f"w{seed}x{i % 97}y{i}" for i in range(words))


async def which_worker(session: aiohttp.ClientSession, url: str, workers: list[str], body: dict[str, Any]) -> int:
    before = await per_worker_tokens(session, workers)
    await complete(session, url, body)
    after = await per_worker_tokens(session, workers)
    grew = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if b > a]
    assert len(grew) == 1, f"one worker should have served the request: before {before}, after {after}"
    return grew[0]


async def exercise(url: str, fleet: Fleet) -> None:
    """Concurrent completions all succeed and reach the workers; a repeated long prompt sticks to one worker."""
    model, workers = fleet.servers[0].model_name, fleet.urls
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        before = await per_worker_tokens(session, workers)
        bodies = [completion_body(model, f"request {i}: " + long_prompt(100 + i, 50)) for i in range(12)]
        results = await asyncio.gather(*(complete(session, url, b) for b in bodies))
        sent = sum(r["usage"]["prompt_tokens"] for r in results)
        after = await per_worker_tokens(session, workers)
        assert sum(after) - sum(before) >= sent, (before, after, sent)

        body = completion_body(model, long_prompt(7))
        first = await which_worker(session, url, workers, body)
        for _ in range(3):
            assert await which_worker(session, url, workers, body) == first


async def _run(cmd: list[str], fleet: Fleet, port: int, tmp_path: Path, name: str) -> None:
    log = tmp_path / f"{name}.log"
    url = f"http://127.0.0.1:{port}"
    async with peer(cmd, log) as proc, aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        await wait_ready(session, url, fleet.servers[0].model_name, proc, log)
        await exercise(url, fleet)


@needs_sglang
async def test_sglang_router_cache_aware(fleet3: Fleet, tmp_path: Path) -> None:
    port = free_port()
    await _run(sglang_cmd(port, fleet3.urls), fleet3, port, tmp_path, "sglang")


@needs_sglang
async def test_sglang_router_rejects_requests_without_model(fleet3: Fleet, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "sglang.log"
    url = f"http://127.0.0.1:{port}"
    async with peer(sglang_cmd(port, fleet3.urls), log) as proc, aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as s:
        await wait_ready(s, url, fleet3.servers[0].model_name, proc, log)
        async with s.post(f"{url}/v1/completions", json={"prompt": "no model", "max_tokens": 4}) as r:
            assert r.status == 422


@needs_smg
@pytest.mark.parametrize("arm", ["smg-cache-aware", "smg-prefix-hash"])
async def test_smg(arm: str, fleet3: Fleet, tmp_path: Path) -> None:
    """smg 1.13.0 with each benchmark arm's flags: concurrent requests all answered, a repeated long prompt kept on
    the worker that served it first (cache_aware: its character tree; prefix_hash: the prompt's first 4,096
    characters on its hash ring)."""
    port = free_port()
    await _run(smg_cmd(port, fleet3.urls, arm), fleet3, port, tmp_path, arm)


async def smg_json(session: aiohttp.ClientSession, url: str, path: str) -> dict[str, Any]:
    async with session.get(f"{url}{path}") as r:
        assert r.status == 200, await r.text()
        data: dict[str, Any] = await r.json()
    return data


@needs_smg
async def test_smg_registers_the_twin_as_vllm_and_reads_its_load(fleet3: Fleet, tmp_path: Path) -> None:
    """smg classifies a worker by `/v1/models` (`owned_by: vllm`), asks `/v1/loads` (404 on vLLM, as on the twin)
    and then reads the load from vLLM's `/metrics` gauges: a request held running on server 0 shows in its
    `/get_loads`. Without `vllm:kv_cache_usage_perc` it would report no load at all."""
    port = free_port()
    log = tmp_path / "smg-load.log"
    url = f"http://127.0.0.1:{port}"
    model, workers = fleet3.servers[0].model_name, fleet3.urls
    cmd = smg_cmd(port, workers, "smg-cache-aware", ["--load-monitor-interval", "1"])
    async with peer(cmd, log) as proc, aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        await wait_ready(session, url, model, proc, log)
        registered = {w["url"]: w for w in (await smg_json(session, url, "/workers"))["workers"]}
        assert set(registered) == set(workers), registered
        for w in registered.values():
            assert (w["runtime_type"], w["connection_mode"], w["model_id"]) == ("vllm", "http", model), w
            assert w["models"][0]["context_length"] == fleet3.servers[0].profile.max_model_len, w
        async with session.post(f"{fleet3.control_url}/servers/0/fault", json={"mode": "slow", "factor": 200}) as r:
            assert r.status == 200
        body = completion_body(model, long_prompt(3), max_tokens=4000)
        held = asyncio.create_task(complete(session, workers[0], body))  # straight to server 0, kept running
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                loads = {x["worker"]: x for x in (await smg_json(session, url, "/get_loads"))["loads"]}
                if loads.get(workers[0], {}).get("num_running_reqs", 0) >= 1:  # a worker polled late is absent
                    break
                assert time.monotonic() < deadline, f"smg never saw server 0 busy: {loads}\n{_tail(log)}"
                await asyncio.sleep(0.2)
            assert loads[workers[0]]["token_usage"] > 0.0, loads
            assert all(loads.get(w, {}).get("num_running_reqs", 0) == 0 for w in workers[1:]), loads
        finally:
            held.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await held


@needs_vllm
async def test_vllm_router_cache_aware(fleet3: Fleet, tmp_path: Path) -> None:
    port = free_port()
    await _run(vllm_cmd(port, fleet3.urls), fleet3, port, tmp_path, "vllm")


def kv_aware_args(fleet: Fleet) -> list[str]:
    """Static KV event sources: server i publishes on P+1000+i; one model identity and block size."""
    args = ["--kv-event-model", fleet.servers[0].model_name]
    args += ["--kv-event-block-size", str(fleet.servers[0].profile.block_size)]
    for i, url in enumerate(fleet.urls):
        args += ["--kv-event-source", f"{url}=tcp://127.0.0.1:{fleet.base_port + KV_OFFSET + i}"]
    return args


@needs_vllm
async def test_vllm_router_kv_aware(fleet3: Fleet, tmp_path: Path) -> None:
    port = free_port()
    await _run(vllm_cmd(port, fleet3.urls, "kv_aware", kv_aware_args(fleet3)), fleet3, port, tmp_path, "vllm-kv")


@needs_vllm
async def test_vllm_router_kv_aware_follows_engine_cache(fleet3: Fleet, tmp_path: Path) -> None:
    """Prompts cached on servers 2 and 1 behind the router's back are routed there: events and hashes agree.

    The fleet must be fresh: a block already cached publishes no new BlockStored, so a router that subscribes
    late learns it only through the replay endpoint (`--kv-event-replay-source`).
    """
    port = free_port()
    log = tmp_path / "vllm-kv.log"
    url = f"http://127.0.0.1:{port}"
    model, workers = fleet3.servers[0].model_name, fleet3.urls
    cmd = vllm_cmd(port, workers, "kv_aware", kv_aware_args(fleet3))
    async with peer(cmd, log) as proc, aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        await wait_ready(session, url, model, proc, log)
        for seed, target in ((11, 2), (12, 1)):
            body = completion_body(model, long_prompt(seed))
            await complete(session, workers[target], body)  # straight to the server: only its KV events tell
            await asyncio.sleep(1.0)  # KV events reach the router's subscriber asynchronously
            assert await which_worker(session, url, workers, body) == target, _tail(log)
