"""CPU per ext_proc decision as the request body grows, in process: the shell's own work, without Envoy or sockets.

Why it exists: with long prompts the picker's cost per request is dominated by what it does with the body (decode
each chunk message, hold the chunks, parse the JSON, hash the prompt, re-emit the chunks), not by the scheduling
maths. Through the real Envoy that cost is buried in the noise of a shared 2-core machine; here it is counted
alone, as CPU seconds of this process per 1,000 decisions, for each body size:

- every message of one exchange is decoded from its wire bytes (`ProcessingRequest.FromString`, what grpc does)
  and every answer encoded (`SerializeToString`), around the same `ExtProcServicer` steps (`Exchange.handle`,
  `finish`), so protobuf copies count;
- the body arrives as Envoy 1.40 sent it from a loopback client here: the whole body in one request_body message,
  then an empty one with end_of_stream (`--chunk N` splits it into N-byte messages instead), then a response;
- backends, same messages, same run: `round-robin` (scorer.extproc.roundrobin, what the protocol alone costs:
  the baseline), `director` (the Director with the shipped default profile and its prefix index) and, on request
  (`--backends`), `observed` (the same Director wrapped as `autonomic picker` runs it: `ObservedDirector` and its
  decision metrics, with the stream hooks called as the servicer calls them);
- bodies are those of the Envoy hop (loadtests.picker.long_prompts: twin text, 7/8 one shared document, the rest
  unique), so a prompt shares most of its blocks with the previous one, as a shared system prompt or document does.

    python -m loadtests.picker.body_cost --sizes 4k,94k,220k,256k,512k --decisions 200
    python -m loadtests.picker.body_cost --sizes 100 --decisions 5000 --backends round-robin,director,observed
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from loadtests.picker.long_prompts import PromptBodies, parse_sizes, size_label
from scorer.config import ConfigError, PickerConfig, default_config, load_config
from scorer.director import Director
from scorer.extproc.exchange import Exchange, PickBackend
from scorer.extproc.roundrobin import RoundRobinBackend
from scorer.extproc.server import StreamHooks
from scorer.metrics import PickerMetrics
from scorer.observed import ExtProcStreamMetrics, ObservedDirector
from scorer.scheduler import Scheduler
from scorer.types import Endpoint, EndpointMetrics

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
ENDPOINTS = ("127.0.0.1:8001", "127.0.0.1:8002")
_FULL_DUPLEX = 4  # ProcessingMode.FULL_DUPLEX_STREAMED


def request_messages(body: bytes, request_id: str, chunk: int) -> list[bytes]:
    """The wire bytes Envoy sends for one request (FULL_DUPLEX_STREAMED) and its small non-streaming response."""
    headers = {":path": "/v1/completions", ":method": "POST", "x-request-id": request_id}
    headers |= {"content-type": "application/json", "content-length": str(len(body))}
    values = [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]
    head = pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=values))
    first = pb.ProcessingRequest(request_headers=head)
    first.protocol_config.request_body_mode = _FULL_DUPLEX
    first.protocol_config.response_body_mode = _FULL_DUPLEX
    out = [first.SerializeToString()]
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body, b""]
    for n, piece in enumerate(pieces):
        msg = pb.ProcessingRequest(request_body=pb.HttpBody(body=piece, end_of_stream=n == len(pieces) - 1))
        out.append(msg.SerializeToString())
    response_head = pb.HttpHeaders(
        headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=":status", raw_value=b"200")])
    )
    out.append(pb.ProcessingRequest(response_headers=response_head).SerializeToString())
    usage = b'{"choices":[{"text":"ok"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}'
    out.append(pb.ProcessingRequest(response_body=pb.HttpBody(body=usage, end_of_stream=True)).SerializeToString())
    return out


def exchange_once(backend: PickBackend, messages: Sequence[bytes], hooks: StreamHooks | None = None) -> int:
    """Run one stream the way ExtProcServicer does (decode, parse ahead, handle, encode); returns answer bytes."""
    exchange = Exchange(backend)
    if hooks is not None:
        hooks.opened()
    parse_ahead = getattr(backend, "prepare", None) is not None and getattr(backend, "preparers", True)
    sent = 0
    try:
        for raw in messages:
            req = pb.ProcessingRequest.FromString(raw)
            if parse_ahead:  # as ExtProcServicer: only for a backend that prepares requests
                exchange.pending_request(req)
            for answer in exchange.handle(req):
                sent += len(answer.SerializeToString())
    finally:
        exchange.finish()
        if hooks is not None:
            if exchange.rejected:
                hooks.immediate(exchange.rejected)
            hooks.closed()
    return sent


def director_backend(seed: int = 7, config: PickerConfig | None = None) -> Director:
    director = Director(Scheduler(config or default_config()), rng=random.Random(seed), staleness_s=1e9)
    director.set_endpoints([Endpoint(a) for a in ENDPOINTS])
    for a in ENDPOINTS:
        director.update_metrics(a, EndpointMetrics(waiting=0, running=4, kv_usage=0.3))
    return director


@dataclass
class Cell:
    size: int
    backend: str
    decisions: int
    cpu_s: float
    answer_bytes: int

    def row(self) -> dict[str, Any]:
        return {
            "body_bytes": self.size,
            "backend": self.backend,
            "decisions": self.decisions,
            "cpu_s_per_1000": self.cpu_s / self.decisions * 1000,
            "answer_bytes_per_decision": self.answer_bytes // self.decisions,
        }


BACKENDS = ("round-robin", "director", "observed")


def measure(
    size: int,
    backend_name: str,
    decisions: int,
    chunk: int,
    shared: float,
    warmup: int = 20,
    config: PickerConfig | None = None,
) -> Cell:
    backend: PickBackend = RoundRobinBackend(list(ENDPOINTS))
    hooks: StreamHooks | None = None
    if backend_name == "director":
        backend = director_backend(config=config)
    elif backend_name == "observed":
        metrics = PickerMetrics()
        backend, hooks = ObservedDirector(director_backend(config=config), metrics), ExtProcStreamMetrics(metrics)
    bodies = PromptBodies(size, MODEL, shared=shared)
    streams = [request_messages(bodies.body(i), f"r{i}", chunk) for i in range(decisions + warmup)]
    for messages in streams[:warmup]:
        exchange_once(backend, messages, hooks)
    sent = 0
    started = time.process_time()
    for messages in streams[warmup:]:
        sent += exchange_once(backend, messages, hooks)
    return Cell(size, backend_name, decisions, time.process_time() - started, sent)


def run(
    sizes: Sequence[int],
    decisions: int,
    chunk: int,
    repeats: int,
    shared: float,
    backends: Sequence[str] = ("round-robin", "director"),
    config: PickerConfig | None = None,
) -> list[dict[str, Any]]:
    """Median CPU of `repeats` alternating measurements per (size, backend); progress on stdout."""
    rows: list[dict[str, Any]] = []
    for size in sizes:
        names = ["round-robin", *(b for b in backends if b != "round-robin")]  # the baseline first, always
        per: dict[str, list[Cell]] = {name: [] for name in names}
        for r in range(repeats):
            for name in per:
                per[name].append(measure(size, name, decisions, chunk, shared, config=config))
                cpu = per[name][-1].cpu_s / decisions * 1000
                print(f"[body cost] {size_label(size)} {name} {r + 1}/{repeats}: {cpu:.2f} CPU s / 1000", flush=True)
        medians = []
        for cells in per.values():
            cells.sort(key=lambda c: c.cpu_s)
            medians.append(cells[len(cells) // 2].row())
        for row in medians[1:]:  # the first is round robin
            row["ratio_to_round_robin"] = row["cpu_s_per_1000"] / medians[0]["cpu_s_per_1000"]
        rows += medians
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'body':>6} {'backend':<12} {'CPU s / 1000 decisions':>23} {'x round-robin':>14}"]
    for r in rows:
        ratio = f"{r['ratio_to_round_robin']:.2f}" if "ratio_to_round_robin" in r else "1"
        lines.append(f"{size_label(r['body_bytes']):>6} {r['backend']:<12} {r['cpu_s_per_1000']:23.2f} {ratio:>14}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtests.picker.body_cost", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4k,94k,220k,256k,512k", help="body sizes, e.g. 4k,256k (default %(default)s)")
    ap.add_argument("--decisions", type=int, default=200, help="measured decisions per cell (default %(default)s)")
    ap.add_argument("--chunk", type=int, default=0, help="bytes per request_body message (0: as Envoy sent them)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs, median kept (%(default)s)")
    ap.add_argument("--shared", type=float, default=7 / 8, help="share of each prompt that is a shared document")
    ap.add_argument("--backends", default="round-robin,director", help=f"comma-separated from {','.join(BACKENDS)}")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--config", type=Path, default=None, help="the Director's profile (default: the shipped default)")
    args = ap.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    if set(backends) - set(BACKENDS):
        ap.error(f"--backends: unknown {sorted(set(backends) - set(BACKENDS))}")
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        ap.error(f"--sizes: {exc}")
    if args.decisions < 10 or args.chunk < 0 or args.repeats < 1 or not sizes or not 0 <= args.shared < 1:
        ap.error("--decisions >= 10, --chunk >= 0, --repeats >= 1, 0 <= --shared < 1 and at least one size")
    profile = None
    if args.config is not None:
        try:
            profile = load_config(args.config)
        except (ConfigError, OSError) as exc:
            ap.error(f"--config: {exc}")
    rows = run(sizes, args.decisions, args.chunk, args.repeats, args.shared, backends, profile)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
