"""Figures of one routing run, from the client's records and the twins' model-time request logs.

Why it exists: the demo and the routing benchmark report the same figures for every router, computed the same
way: prefix-cache hit ratio (tokens the servers reported cached over prompt tokens), TTFT and e2e in model time
(what the twins measured, free of proxy overhead and CPU lag), client-side TTFT, throughput, preemptions and how
evenly the requests spread.
"""

from __future__ import annotations

from typing import Any

from loadtests.report.writer import pct
from loadtests.routing.replay import ReplayRecord


def summarize(
    records: list[ReplayRecord],
    logs: dict[int, list[dict[str, Any]]],
    *,
    time_scale: float,
    wall_s: float,
) -> dict[str, Any]:
    ok = [r for r in records if r.ok]
    entries = [e for es in logs.values() for e in es]
    prompt = sum(r.prompt_tokens for r in ok)
    cached = sum(r.cached_tokens for r in ok)
    ttft_model = [e["ttft"] for e in entries]
    e2e_model = [e["e2e"] for e in entries]
    span = (max(e["arrival"] + e["e2e"] for e in entries) - min(e["arrival"] for e in entries)) if entries else 0.0
    per_server = {i: len(es) for i, es in sorted(logs.items())}
    counts = list(per_server.values())
    client_ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    return {
        "requests": len(records),
        "ok": len(ok),
        "failed": len(records) - len(ok),
        "errors": sorted({(r.error or f"HTTP {r.status}")[:160] for r in records if not r.ok})[:5],
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "hit_ratio": cached / prompt if prompt else 0.0,
        "ttft_model_p50_s": pct(ttft_model, 50),
        "ttft_model_p90_s": pct(ttft_model, 90),
        "ttft_model_p99_s": pct(ttft_model, 99),
        "e2e_model_p50_s": pct(e2e_model, 50),
        "e2e_model_p90_s": pct(e2e_model, 90),
        "ttft_client_p50_s": pct(client_ttft, 50),
        "ttft_client_p90_s": pct(client_ttft, 90),
        "output_tokens_per_s_model": sum(e["output_tokens"] for e in entries) / span if span else 0.0,
        "preemptions": sum(e["preemptions"] for e in entries),
        "per_server_requests": per_server,
        "load_imbalance": (max(counts) / (sum(counts) / len(counts))) if counts and sum(counts) else float("nan"),
        "time_scale": time_scale,
        "wall_s": wall_s,
        "ttft_model_s": sorted(ttft_model),
    }
