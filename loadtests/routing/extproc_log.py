"""Where the router's time goes, as Envoy saw it: per-phase waits of every ext_proc stream, from Envoy's access log.

Why it exists: "router overhead" (client TTFT minus the model server's own TTFT) says how much the hop costs, not
where. Envoy records per request how long each ext_proc phase waited for the picker (`ExtProcLoggingInfo`, written
by `EnvoyOptions.extproc_log_path` as JSON lines). In FULL_DUPLEX_STREAMED mode the request headers' answer is held
until the whole body has arrived and the decision is made, so `request_header_latency_us` is the request path's
wait; the response headers and every response body chunk then wait for the picker again, and the first chunk of
a streamed answer is the first token. Every Envoy-fronted arm (also Envoy's own load balancers, without ext_proc)
also logs `routed_us`: from the request's first byte at Envoy to Envoy sending it upstream, the whole routing
decision as the request lived it, including the picker's inbound hop, which `request_header_latency_us` also covers
but which the picker's own timers cannot see.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median
from typing import Any

PHASES = {  # figure -> how to read it from one request's ext_proc fields (microseconds)
    "request_wait_ms": lambda e: e.get("request_header_latency_us"),
    "response_headers_wait_ms": lambda e: e.get("response_header_latency_us"),
    "response_chunk_wait_ms": lambda e: (
        e["response_body_total_latency_us"] / e["response_body_call_count"]
        if e.get("response_body_call_count")
        else None
    ),
}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The successful requests' lines of an Envoy JSON access log (other lines are skipped)."""
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and str(row.get("status")) == "200":
            rows.append(row)
    return rows


def read_entries(path: Path) -> list[dict[str, Any]]:
    """The `ext_proc` objects of the successful requests that had an ext_proc stream."""
    return _ext_proc(read_rows(path))


def _ext_proc(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row["ext_proc"] for row in rows if isinstance(row.get("ext_proc"), dict)]


def phase_summary(path: Path) -> dict[str, float | int | None]:
    """p50 per phase in ms over the successful requests, their count, the p50 response chunks per request, and the
    p50 time to being routed (`routed_ms`, every successful request, with or without an ext_proc stream)."""
    rows = read_rows(path)
    entries = _ext_proc(rows)
    routed = [row["routed_us"] / 1e3 for row in rows if isinstance(row.get("routed_us"), int | float)]
    out: dict[str, float | int | None] = {"requests": len(entries), "routed_ms": median(routed) if routed else None}
    for name, read in PHASES.items():
        values = [v / 1e3 for v in (read(e) for e in entries) if isinstance(v, int | float)]
        out[name] = median(values) if values else None
    chunks = [e["response_body_call_count"] for e in entries if isinstance(e.get("response_body_call_count"), int)]
    out["response_chunks"] = median(chunks) if chunks else None
    return out
