"""How much memory the prefix index takes under a long stream of distinct long prompts, against its budget.

Why it exists: issue 15 asks that the prefix index stay within a configured budget at 100 endpoints and
100k-token prompts (llm-d's indexer ran out of memory: llm-d-kv-cache #1158). Each arm is a fresh child process
running the shipped default profile through a `Director`, the budget (`maxIndexBytes`) being the only difference;
one arm has no budget (null: only the per-endpoint LRU capacity bounds the index), the baseline the others are
compared to in the same run. Every prompt is distinct (random text, no shared prefix: the worst case, every block a
new entry), picked and learnt from as the picker process does (`pick(defer_learning=True)`, `learn_pending()`), its
response completed `--in-flight` picks later (one per endpoint by default, so that load spreads the prompts over the
pool as it would under traffic; with none in flight, one endpoint would win every tie-free decision). At each
checkpoint the child reports its resident set size (VmRSS), its growth over the RSS measured before the stream, the
in-flight requests' prompts (held by the in-flight table, not the index), and the index's own accounting
(`PrefixIndex.stats()`). "Index RSS" is the growth less those prompts: the index, and the allocator fragmentation its
churn leaves. It also times one full garbage collection (`gc.collect()`), whose pause grows with every container the
collector must visit.

    python -m loadtests.picker.index_memory [--endpoints 100] [--tokens 100000] [--prompts 1500]
        [--budgets 512Mi,128Mi,32Mi,none] [--every 250]

Output: one progress line per checkpoint, then a table per checkpoint and arm, and a summary table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import deque
from importlib import resources
from typing import Any

import yaml

from loadtests.soak.sampler import read_proc
from scorer.allocator import return_large_frees_to_os
from scorer.byte_size import format_byte_size, parse_byte_size
from scorer.config import DEFAULT_CONFIG_RESOURCE, parse_config
from scorer.director import Director
from scorer.plugins.scorers.prefix_cache import PrefixCacheScorer
from scorer.prefix_index import ENTRY_BYTES
from scorer.scheduler import Scheduler
from scorer.types import Endpoint, EndpointMetrics, LLMRequest

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
CHARS_PER_TOKEN = 4
MB = 2**20


def _budget(text: str) -> int | None:
    return None if text.lower() in ("none", "null") else parse_byte_size(text)


def build(endpoints: int, budget: int | None, seed: int) -> Director:
    """A Director on the shipped default profile with `maxIndexBytes` set to `budget`."""
    document = yaml.safe_load(resources.files("scorer").joinpath(DEFAULT_CONFIG_RESOURCE).read_text(encoding="utf-8"))
    for plugin in document["plugins"]:
        if plugin["type"] == "prefix-cache-scorer":
            plugin.setdefault("parameters", {})["maxIndexBytes"] = budget
    director = Director(Scheduler(parse_config(document)), rng=random.Random(seed), staleness_s=1e9)
    addresses = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:8000" for i in range(endpoints)]
    director.set_endpoints([Endpoint(a) for a in addresses])
    rng = random.Random(seed)
    for a in addresses:
        director.update_metrics(a, EndpointMetrics(waiting=rng.randrange(4), running=rng.randrange(32)))
    return director


def rss_bytes() -> int:
    stat = read_proc(os.getpid())
    assert stat is not None, "cannot read /proc/self/status"
    return int(stat.rss_mb * MB)


def child(args: argparse.Namespace) -> None:
    """One arm: stream the prompts, print a JSON line at every checkpoint."""
    budget = _budget(args.budget)
    if args.malloc == "picker":
        return_large_frees_to_os()  # as `autonomic picker` does at start
    director = build(args.endpoints, budget, args.seed)
    plugin = next(p for p in director.scheduler.plugins.values() if isinstance(p, PrefixCacheScorer))
    rng = random.Random(args.seed)
    chars = args.tokens * CHARS_PER_TOKEN
    gc.collect()
    base = rss_bytes()
    picks: list[float] = []
    learns: list[float] = []
    clock = time.thread_time  # CPU time: on a shared machine, the wall clock's tail is other tenants' preemptions
    outstanding: deque[LLMRequest] = deque()
    for i in range(1, args.prompts + 1):
        request = LLMRequest(f"p{i}", MODEL, prompt=rng.randbytes(chars // 2).hex())  # distinct: no shared prefix
        start = clock()
        director.pick(request, defer_learning=True)
        answered = clock()
        director.learn_pending()
        picks.append(answered - start)
        learns.append(clock() - answered)
        outstanding.append(request)
        if len(outstanding) > in_flight(args):
            director.response_complete(outstanding.popleft().request_id, None, 200, None)
        if i % args.every == 0 or i == args.prompts:
            stats = plugin.index.stats()
            rss = rss_bytes()
            started = time.thread_time()  # CPU time: a shared machine's preemptions stay out of it
            gc.collect()  # a full collection's pause: the index's tables hold only ints, so it should not grow
            gc_ms = (time.thread_time() - started) * 1e3
            line = {
                "prompts": i,
                "entries": stats.entries,
                "max_entries": stats.max_entries,
                "hashes": stats.hashes,
                "estimated_bytes": stats.estimated_bytes,
                "container_bytes": stats.container_bytes,
                "evicted_capacity": stats.evicted_capacity,
                "evicted_budget": stats.evicted_budget,
                "rss_bytes": rss,
                "rss_growth_bytes": rss - base,
                "in_flight_prompt_bytes": sum(len(r.prompt) for r in outstanding),  # held by the in-flight table
                "endpoints_used": sum(1 for a in plugin.index.addresses() if plugin.index.blocks(a)),
                "full_gc_ms": gc_ms,
                "pick_ms": _percentiles(picks),
                "learn_ms": _percentiles(learns),
            }
            print(json.dumps(line), flush=True)
            picks, learns = [], []


def _percentiles(samples: list[float]) -> list[float]:
    """p50, p99 and max, in ms."""
    if len(samples) < 2:
        return [samples[0] * 1e3] * 3 if samples else [0.0, 0.0, 0.0]
    return [statistics.median(samples) * 1e3, statistics.quantiles(samples, n=100)[98] * 1e3, max(samples) * 1e3]


def in_flight(args: argparse.Namespace) -> int:
    return args.endpoints if args.in_flight is None else args.in_flight


def run_arm(args: argparse.Namespace, budget: str) -> list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "loadtests.picker.index_memory", "--child", "--budget", budget]
    cmd += ["--endpoints", str(args.endpoints), "--tokens", str(args.tokens), "--prompts", str(args.prompts)]
    cmd += ["--every", str(args.every), "--seed", str(args.seed), "--in-flight", str(in_flight(args))]
    cmd += ["--malloc", args.malloc]
    lines: list[dict[str, Any]] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = json.loads(raw)
            lines.append(line)
            print(
                f"  budget {budget:>6}: {line['prompts']:>5} prompts, {line['entries']:>9,} entries, "
                f"index ~{line['estimated_bytes'] / MB:7.1f} MB, RSS +{line['rss_growth_bytes'] / MB:7.1f} MB, "
                f"{line['endpoints_used']} endpoints hold blocks",
                flush=True,
            )
    if proc.returncode:
        raise SystemExit(f"arm {budget} failed with exit code {proc.returncode}")
    return lines


def _ratio(value: float, to: float | None) -> str:
    return f"{value / to:.2f}" if to else "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=100_000, help="prompt length (~4 characters per token)")
    parser.add_argument("--prompts", type=int, default=1500, help="distinct prompts streamed per arm")
    parser.add_argument("--budgets", default="512Mi,128Mi,32Mi,none", help="maxIndexBytes per arm; none: no budget")
    parser.add_argument("--every", type=int, default=250, help="prompts between checkpoints")
    parser.add_argument("--in-flight", type=int, default=None, help="responses outstanding (default: --endpoints)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--malloc",
        choices=["picker", "default"],
        default="picker",
        help="picker: glibc's mmap threshold fixed as `autonomic picker` fixes it (scorer.allocator); default: as is",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--budget", default="none", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    for b in budgets:
        _budget(b)  # refuse a typo before running anything
    print(
        f"prefix index memory: {args.endpoints} endpoints, {args.tokens:,}-token distinct prompts, "
        f"{args.prompts} per arm, one child process per arm (ENTRY_BYTES={ENTRY_BYTES}, malloc: {args.malloc})",
        flush=True,
    )
    arms = {b: run_arm(args, b) for b in budgets}
    unbounded = next((lines for b, lines in arms.items() if _budget(b) is None), None)
    print("\nindex RSS = RSS growth over the process before the stream, less the in-flight requests' prompts")
    print(
        "| budget | prompts | entries | of budget entries | index estimate MB | RSS growth MB | in-flight prompts MB |",
        end="",
    )
    print(" index RSS MB | index RSS / budget | index RSS / no budget's | RSS bytes per entry |", end="")
    print(" evicted capacity / budget | pick CPU p50 / p99 ms | learn CPU p50 / p99 / max ms | full GC CPU ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for b, lines in arms.items():
        budget = _budget(b)
        label = format_byte_size(budget) if budget is not None else "none"
        for k, line in enumerate(lines):
            other = index_rss(unbounded[k]) if unbounded and k < len(unbounded) else None
            own = index_rss(line)
            print(
                f"| {label} | {line['prompts']} | {line['entries']:,} | "
                f"{_ratio(line['entries'], line['max_entries'])} | {line['estimated_bytes'] / MB:.1f} | "
                f"{line['rss_growth_bytes'] / MB:.1f} | {line['in_flight_prompt_bytes'] / MB:.1f} | {own / MB:.1f} | "
                f"{_ratio(own, budget)} | {_ratio(own, other)} | {own / max(1, line['entries']):.0f} | "
                f"{line['evicted_capacity']:,} / {line['evicted_budget']:,} | "
                f"{line['pick_ms'][0]:.2f} / {line['pick_ms'][1]:.2f} | "
                f"{line['learn_ms'][0]:.2f} / {line['learn_ms'][1]:.2f} / {line['learn_ms'][2]:.1f} | "
                f"{line['full_gc_ms']:.1f} |"
            )
    print("\nsummary (last checkpoint)")
    print("| budget | entries | index estimate MB | index RSS MB | / budget | / no budget's |")
    print("|---|---|---|---|---|---|")
    for b, lines in arms.items():
        budget, last = _budget(b), lines[-1]
        other = index_rss(unbounded[-1]) if unbounded else None
        own = index_rss(last)
        label = format_byte_size(budget) if budget is not None else "none"
        print(
            f"| {label} | {last['entries']:,} | {last['estimated_bytes'] / MB:.1f} | {own / MB:.1f} | "
            f"{_ratio(own, budget)} | {_ratio(own, other)} |"
        )


def index_rss(line: dict[str, Any]) -> int:
    """What the index and its churn (allocator fragmentation included) added to the resident set."""
    return int(line["rss_growth_bytes"] - line["in_flight_prompt_bytes"])


if __name__ == "__main__":
    main()
