"""Open-loop replay of a request trace against an OpenAI-compatible endpoint, in time order.

Why it exists: the demo and the routing benchmarks must send the same requests at the same (compressed)
times to whatever sits in front of the fleet: a server chosen round robin, a peer router, or Envoy with our
picker. Each request is a streaming completion with the trace's exact prompt structure (synthesized text)
and output length (`max_tokens` + `ignore_eos`); the client records TTFT at the first SSE chunk with text and
the usage the server reports.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from sim.fleet.synth import prompt_text
from sim.fleet.trace import TraceRequest


@dataclass
class ReplayRecord:
    index: int
    request_id: str
    target: str
    status: int = 0
    error: str | None = None
    sent_at: float = 0.0  # real seconds since replay start
    ttft_s: float | None = None  # real seconds, client side
    e2e_s: float | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


ProgressFn = Callable[[int, int, int], None]  # sent, done, failed


async def replay(
    trace: list[TraceRequest],
    choose_target: Callable[[int], str],
    *,
    model: str,
    time_scale: float,
    id_prefix: str = "replay",
    timeout_s: float = 600.0,
    progress: ProgressFn | None = None,
    progress_every_s: float = 2.0,
) -> list[ReplayRecord]:
    """Send trace[i] to choose_target(i) + /v1/completions at trace time / time_scale; wait for all."""
    if not trace:
        return []
    t0 = trace[0].timestamp_s
    records = [ReplayRecord(index=i, request_id=f"{id_prefix}-{i}", target=choose_target(i)) for i in range(len(trace))]
    done = failed = sent = 0
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.monotonic()

        async def one(i: int) -> None:
            nonlocal done, failed
            rec, req = records[i], trace[i]
            delay = (req.timestamp_s - t0) / time_scale - (time.monotonic() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            await _send(session, rec, req, model, start)
            done += 1
            failed += 0 if rec.ok else 1

        async def report() -> None:
            while True:
                await asyncio.sleep(progress_every_s)
                if progress:
                    progress(sent, done, failed)

        tasks = []
        reporter = asyncio.create_task(report())
        for i in range(len(trace)):
            # create tasks just in time so thousands of sleeping tasks do not pile up
            wait = (trace[i].timestamp_s - t0) / time_scale - (time.monotonic() - start) - 0.05
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(i)))
            sent += 1
        await asyncio.gather(*tasks)
        reporter.cancel()
        if progress:
            progress(sent, done, failed)
    return records


async def _send(session: aiohttp.ClientSession, rec: ReplayRecord, req: TraceRequest, model: str, start: float) -> None:
    body = {
        "model": model,
        "prompt": prompt_text(req.hash_ids, req.input_length),
        "max_tokens": max(1, req.output_length),
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        "request_id": rec.request_id,
    }
    sent = time.monotonic()
    rec.sent_at = sent - start
    try:
        async with session.post(rec.target + "/v1/completions", json=body) as resp:
            rec.status = resp.status
            if resp.status != 200:
                rec.error = (await resp.text())[:300]
                return
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if rec.ttft_s is None and any(c.get("text") for c in chunk.get("choices", [])):
                    rec.ttft_s = time.monotonic() - sent
                usage = chunk.get("usage")
                if usage:
                    rec.prompt_tokens = usage.get("prompt_tokens", 0)
                    rec.output_tokens = usage.get("completion_tokens", 0) or 0
                    details = usage.get("prompt_tokens_details") or {}
                    rec.cached_tokens = details.get("cached_tokens") or 0
            rec.e2e_s = time.monotonic() - sent
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
