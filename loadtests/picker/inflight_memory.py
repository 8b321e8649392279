"""What the picker holds per request in flight: resident memory per outstanding response, by request kind.

Why it exists: between its decision and the end of the response (seconds to minutes for a long answer) the picker
keeps each request in its in-flight table, for the charge it releases and the response hooks it tells. If that
entry holds the prompt, memory grows with in-flight requests times prompt length, a product no budget bounds: 100
endpoints with 32 long-context requests each at 100k tokens are 3,200 prompts of ~400 KB (a chat's parsed messages
and a token-id prompt's ids weigh more). The prefix index has its budget (`loadtests.picker.index_memory`); this
measures the other side.

Two child processes per kind, each the shipped default profile through a `Director` (`index_memory.build`), fed
the same requests, parsed from real JSON bodies by the picker's own parser (`scorer.request_parser`), each
distinct, picked as the picker does (`pick(defer_learning=True)`, `learn_pending()`): one keeps every response
outstanding, the other (the baseline) ends each response right after its pick. Both then read their resident set
size (VmRSS) against the one before the stream. The difference between them, per request, is what an outstanding
response costs; the prefix index and the hash memo grow alike in both. glibc's mmap threshold is fixed as
`autonomic picker` fixes it.

    python -m loadtests.picker.inflight_memory [--endpoints 100] [--tokens 100000] [--in-flight 1000]
        [--kinds completions,chat,token-ids] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
from typing import Any

from loadtests.picker.index_memory import MB, MODEL, build, rss_bytes
from scorer.allocator import return_large_frees_to_os
from scorer.request_parser import parse_request

KINDS = ("completions", "chat", "token-ids")
_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions", "token-ids": "/v1/completions"}


def body(kind: str, tokens: int, rng: random.Random) -> bytes:
    """A distinct request body of about `tokens` tokens (4 characters per token of text)."""
    if kind == "token-ids":
        doc: dict[str, Any] = {"prompt": [rng.randrange(1000, 128_000) for _ in range(tokens)]}
    else:
        text = rng.randbytes(tokens * 2).hex()  # 4 characters per token, no shared prefix
        if kind == "chat":
            half = len(text) // 2
            messages = [
                {"role": "system", "content": text[:half]},
                {"role": "user", "content": text[half:]},
            ]
            doc = {"messages": messages}
        else:
            doc = {"prompt": text}
    return json.dumps({"model": MODEL, "max_tokens": 16, **doc}).encode()


def child(args: argparse.Namespace) -> None:
    """One arm: pick every request (ending each response at once with `--end-at-once`), print the RSS growth."""
    return_large_frees_to_os()  # as `autonomic picker` does at start
    director = build(args.endpoints, 512 * MB, args.seed)
    rng = random.Random(args.seed)
    body_bytes = 0
    gc.collect()
    before = rss_bytes()
    for i in range(args.in_flight):
        raw = body(args.kind, args.tokens, rng)
        body_bytes += len(raw)
        request = parse_request(_PATHS[args.kind], {}, raw, f"r{i}")
        director.pick(request, defer_learning=True)
        director.learn_pending()
        if args.end_at_once:
            director.response_complete(request.request_id, None, 200, None)
        del request, raw  # only the picker's own references remain
    gc.collect()
    line = {"body_bytes_mean": body_bytes / args.in_flight, "rss_growth_bytes": rss_bytes() - before}
    print(json.dumps(line), flush=True)


def run_arm(args: argparse.Namespace, kind: str, end_at_once: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "loadtests.picker.inflight_memory", "--child", "--kind", kind]
    cmd += ["--endpoints", str(args.endpoints), "--tokens", str(args.tokens), "--in-flight", str(args.in_flight)]
    cmd += ["--seed", str(args.seed)] + (["--end-at-once"] if end_at_once else [])
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
    line: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    what = "each ended at once" if end_at_once else "all outstanding"
    print(f"  {kind:>11}, {what:>18}: RSS +{line['rss_growth_bytes'] / MB:.1f} MB", flush=True)
    return line


def run_kind(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """Both arms of one kind, and the cost per outstanding response."""
    held, ended = run_arm(args, kind, False), run_arm(args, kind, True)
    return {
        "kind": kind,
        "in_flight": args.in_flight,
        "body_bytes_mean": held["body_bytes_mean"],
        "held_growth_bytes": held["rss_growth_bytes"],
        "ended_growth_bytes": ended["rss_growth_bytes"],
        "bytes_per_request": (held["rss_growth_bytes"] - ended["rss_growth_bytes"]) / args.in_flight,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=100_000, help="prompt length (~4 characters per token)")
    parser.add_argument("--in-flight", type=int, default=1000, help="responses outstanding at the measurement")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated from " + ",".join(KINDS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="completions", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--end-at-once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds or args.endpoints < 1 or args.tokens < 1 or args.in_flight < 1:
        parser.error(f"--kinds from {','.join(KINDS)} (got {bad or 'none'}); --endpoints, --tokens, --in-flight >= 1")
    if args.child:
        child(args)
        return
    print(
        f"in-flight memory: {args.endpoints} endpoints, {args.tokens:,}-token distinct prompts, "
        f"{args.in_flight} responses outstanding, one child process per kind",
        flush=True,
    )
    lines = [run_kind(args, k) for k in kinds]
    print("\nRSS growth over the stream; baseline: the same requests with each response ended at once")
    print("| kind | body KB | in flight | RSS growth, all outstanding MB | baseline MB | KB per response outstanding |")
    print("|---|---:|---:|---:|---:|---:|")
    for line in lines:
        print(
            f"| {line['kind']} | {line['body_bytes_mean'] / 1024:.0f} | {line['in_flight']} | "
            f"{line['held_growth_bytes'] / MB:.1f} | {line['ended_growth_bytes'] / MB:.1f} | "
            f"{line['bytes_per_request'] / 1024:.1f} |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"args": vars(args), "kinds": lines}, out, indent=1)


if __name__ == "__main__":
    main()
