"""`autonomic picker explain`: ask a running picker how it would route a prompt, and print it as a table.

Why it exists: "why did this request go there?" is the first question about a router. This client sends the
prompt to the picker's `Explain` call (same parsing and the same scheduling cycle as a real request, no side
effect) and prints endpoints x scorers with the weights, each candidate's load, what the filters removed, which pool
members were not candidates and why, the choice and its reason. `render` is pure, so the layout is unit-tested.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proto.autonomic.picker.v1 import picker_pb2 as pb

DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"  # the fleet twin's default model


def add_parser(actions: argparse._SubParsersAction) -> None:
    e = actions.add_parser(
        "explain",
        help="show how a running picker would route a prompt (scores by plugin, filters, choice, reason)",
        description="Calls autonomic.picker.v1.Picker/Explain on a running picker. Nothing is changed: no load is "
        "charged and nothing is learned.",
    )
    e.add_argument("--prompt-file", type=Path, required=True, help="file with the prompt text ('-' = stdin)")
    e.add_argument("--target", default="127.0.0.1:9002", help="the picker's gRPC address (default 127.0.0.1:9002)")
    e.add_argument("--model", default=DEFAULT_MODEL, help=f"model of the request (default {DEFAULT_MODEL})")
    e.add_argument("--chat", action="store_true", help="send the prompt as one user message to /v1/chat/completions")
    e.add_argument("--header", action="append", default=[], metavar="NAME=VALUE", help="request header (repeatable)")
    e.add_argument("--subset", default=None, help="comma-separated subset hint (ip:port or ip)")
    e.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the picker (default 5)")
    e.add_argument("--json", action="store_true", help="print the raw ExplainResponse as JSON")
    e.add_argument("--tls-ca", type=Path, default=None, help="dial over TLS, verifying with this CA file")
    e.add_argument(
        "--tls-insecure",
        action="store_true",
        help="dial over TLS trusting the certificate the picker presents (its self-signed one)",
    )
    e.add_argument("--tls-server-name", default=None, help="name to check the certificate against")


def build_request(args: argparse.Namespace, prompt: str) -> pb.PickRequest:
    from proto.autonomic.picker.v1 import picker_pb2 as pb

    if args.chat:
        path, doc = "/v1/chat/completions", {"model": args.model, "messages": [{"role": "user", "content": prompt}]}
    else:
        path, doc = "/v1/completions", {"model": args.model, "prompt": prompt}
    headers = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--header must be NAME=VALUE, got {item!r}")
        headers[name.strip().lower()] = value
    request = pb.PickRequest(path=path, headers=headers, body=json.dumps(doc).encode())
    if args.subset is not None:
        request.subset.endpoints.extend(e.strip() for e in args.subset.split(",") if e.strip())
        request.subset.SetInParent()  # present even when empty (an empty hint means "no endpoint")
    return request


def run(args: argparse.Namespace) -> int:
    import asyncio

    import grpc
    from google.protobuf.json_format import MessageToDict

    from scorer.extproc.tls import TLSError

    try:
        prompt = sys.stdin.read() if str(args.prompt_file) == "-" else args.prompt_file.read_text(encoding="utf-8")
        request = build_request(args, prompt)
    except (OSError, UnicodeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        answer = asyncio.run(_explain(args.target, request, deadline_s=args.timeout, tls=_tls(args)))
    except TLSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except grpc.aio.AioRpcError as exc:
        print(f"error: explain on {args.target} failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(MessageToDict(answer, preserving_proto_field_name=True), indent=2))
    else:
        print(render(answer, args.target))
    return 0


def _tls(args: argparse.Namespace) -> tuple[Any, list[tuple[str, str]]] | None:
    if args.tls_ca is None and not args.tls_insecure:
        return None
    from scorer.extproc.tls import client_credentials

    return client_credentials(args.target, args.tls_ca, args.tls_insecure, args.tls_server_name)


async def _explain(
    target: str, request: pb.PickRequest, *, deadline_s: float, tls: tuple[Any, list[tuple[str, str]]] | None = None
) -> pb.ExplainResponse:
    import grpc

    from proto.autonomic.picker.v1 import picker_pb2_grpc as pb_grpc

    channel_of = grpc.aio.insecure_channel(target) if tls is None else grpc.aio.secure_channel(target, *tls)
    async with channel_of as channel:
        answer: pb.ExplainResponse = await pb_grpc.PickerStub(channel).Explain(request, timeout=deadline_s)
        return answer


def render(answer: pb.ExplainResponse, target: str = "") -> str:
    """The explanation as text: a summary, then endpoints x scorers, then filters, exclusions and plugin times."""
    where = f"picker {target}, " if target else ""
    lines = [f"{where}profile {answer.profile or '-'}, prompt ~{answer.prompt_tokens:,} tokens (estimated)"]
    if answer.error:
        lines.append(f"choice: none ({'shed' if answer.shed else 'no endpoint'}): {answer.error}")
    else:
        fallbacks = ", ".join(answer.targets[1:]) or "none"
        lines.append(f"choice: {answer.targets[0]} (fallbacks: {fallbacks})")
        lines.append(f"reason: {answer.reason}")
    lines += [f"{key}: {value}" for key, value in sorted(answer.notes.items())]
    if answer.endpoints:
        lines += ["", *_score_table(answer)]
    if answer.filters:
        lines += ["", "filtered out:"]
        lines += [f"  {f.filter}: {', '.join(f.removed)}" for f in answer.filters]
    if answer.unavailable:
        lines += ["", "not candidates:"]
        lines += [f"  {u.endpoint}  {u.why}" for u in answer.unavailable]
    if answer.plugin_seconds:
        spent = ", ".join(f"{k} {v * 1e3:.3f}" for k, v in sorted(answer.plugin_seconds.items(), key=lambda kv: -kv[1]))
        lines += ["", f"plugin time (ms): {spent}"]
    return "\n".join(lines)


def _score_table(answer: pb.ExplainResponse) -> list[str]:
    scorers = [s.name for s in answer.scorers]
    header = ["", "endpoint", "total", *scorers, "waiting", "running", "kv", "in-flight"]
    weights = ["", "weight", "", *(f"x{s.weight:g}" for s in answer.scorers), "", "", "", ""]
    chosen = answer.targets[0] if answer.targets else ""
    rows: list[list[str]] = [header, weights]
    for e in answer.endpoints:
        mark = "*" if e.endpoint == chosen else ("+" if e.endpoint in answer.targets else "")
        scores = [f"{e.scores[s]:.3f}" if s in e.scores else "-" for s in scorers]
        load = [str(e.load.waiting), str(e.load.running), f"{e.load.kv_usage:.2f}", str(e.load.in_flight)]
        rows.append([mark, e.endpoint, f"{e.total:.3f}", *scores, *load])
    return [*_align(rows), "(* chosen, + fallback; scores are unweighted, in [0, 1]; total = sum of weight x score)"]


def _align(rows: Sequence[Sequence[Any]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
    return out
