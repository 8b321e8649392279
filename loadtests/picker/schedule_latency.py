"""How long one `Director.pick()` takes with the default profile, against a random-picker profile, same run.

Why it exists: the picker sits in every request's path, so its cost per decision must be known per pool size and
prompt length (docs/benchmarks.md, "Pure scheduling"). Reported as p50/p99 and as ratios to a baseline measured in
the same process on the same endpoints and prompts: a Director whose only profile is `random-picker` (what is left
is candidate selection, in-flight accounting and the framework itself).

Realistic state: each endpoint's prefix index is filled to `--fill` of its LRU capacity with the block hashes of
shared documents and unique conversation blocks; every endpoint has scraped metrics; each measured request is a
shared document (3/4 of the prompt) plus a conversation (1/4) plus a unique turn, at ~4 characters per token, and
its response is completed after the pick (outside the timing) so the in-flight table stays steady.

What is timed is what the `autonomic picker` process makes Envoy wait for: `pick(..., defer_learning=True)`, the
decision and its in-flight charge. The learning from it (recording the prompt's blocks in the prefix index), which
the process runs once the answer is handed to gRPC, is timed apart (`learn`), and `inline p99` is the p99 of the sum
of both per pick: what a pick cost before learning was deferred. `--clock cpu` times with the thread's CPU clock
instead of the wall clock, so that a shared machine's preemptions stay out of the tail.

    python -m loadtests.picker.schedule_latency [--picks 400] [--fill 0.5] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import time
from collections.abc import Callable, Sequence

from scorer.config import default_config, load_config
from scorer.director import Director
from scorer.hashing import prompt_block_hashes
from scorer.plugins.scorers.prefix_cache import PrefixCacheScorer
from scorer.scheduler import Scheduler
from scorer.types import Endpoint, EndpointMetrics, LLMRequest

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
BASELINE = """
apiVersion: autonomic.dev/v1alpha1
kind: EndpointPickerConfig
plugins: [{type: random-picker}]
schedulingProfiles: [{name: default, plugins: [{pluginRef: random-picker}]}]
"""
CHARS_PER_TOKEN = 4


def _text(rng: random.Random, chars: int) -> str:
    return "".join(rng.choices(string.ascii_lowercase + "     ", k=chars))


class Workload:
    """Shared documents and conversations; `prompt(i)` is doc + conversation + a unique turn of the target size."""

    def __init__(self, tokens: int, rng: random.Random, docs: int = 16, conversations: int = 64):
        chars = tokens * CHARS_PER_TOKEN
        self.docs = [_text(rng, chars * 3 // 4) for _ in range(docs)]
        self.conversations = [_text(rng, chars - chars * 3 // 4 - 16) for _ in range(conversations)]
        self.rng = rng

    def prompt(self, i: int) -> str:
        doc = self.docs[self.rng.randrange(len(self.docs))]
        return doc + self.conversations[i % len(self.conversations)] + f" turn {i:09d}"


def build(config_text: str | None, addresses: Sequence[str], seed: int) -> Director:
    config = default_config() if config_text is None else load_config(config_text)
    director = Director(Scheduler(config), rng=random.Random(seed), staleness_s=1e9)
    director.set_endpoints([Endpoint(a) for a in addresses])
    rng = random.Random(seed)
    for a in addresses:
        metrics = EndpointMetrics(waiting=rng.randrange(6), running=rng.randrange(64), kv_usage=rng.random() * 0.9)
        director.update_metrics(a, metrics)
    return director


def warm(director: Director, workload: Workload, fill: float, rng: random.Random) -> None:
    """Fill every endpoint's prefix LRU: a few shared documents' real hashes, the rest unique blocks."""
    for plugin in director.scheduler.plugins.values():
        if not isinstance(plugin, PrefixCacheScorer):
            continue
        p = plugin.params
        doc_hashes = [prompt_block_hashes(MODEL, doc, p.block_size, p.max_prefix_blocks) for doc in workload.docs]
        for address in plugin_addresses(director):
            target = int(p.lru_capacity_per_server * fill)
            blocks: list[int] = []
            for doc in rng.sample(doc_hashes, k=min(4, len(doc_hashes))):
                blocks.extend(doc)
            blocks.extend(rng.getrandbits(64) for _ in range(max(0, target - len(blocks))))
            plugin.index.record(address, blocks[:target])


def plugin_addresses(director: Director) -> list[str]:
    return [s.address for s in director.endpoints()]


def measure(
    director: Director,
    workload: Workload,
    picks: int,
    tag: str,
    learn: list[float] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Seconds of each pick until its answer (learning deferred); each pick's learning time goes to `learn`."""
    samples: list[float] = []
    for i in range(picks):
        request = LLMRequest(f"{tag}-{i}", MODEL, prompt=workload.prompt(i))
        start = clock()
        director.pick(request, defer_learning=True)
        answered = clock()
        director.learn_pending()
        samples.append(answered - start)
        if learn is not None:
            learn.append(clock() - answered)
        director.response_complete(request.request_id, None, 200, None)
    return samples


def hash_and_match_ms(director: Director, workload: Workload, prompts: int = 50) -> float:
    """Median time to hash one prompt and match it against the warm index (no learning, no scoring)."""
    plugin = next(p for p in director.scheduler.plugins.values() if isinstance(p, PrefixCacheScorer))
    samples = []
    for i in range(prompts):
        prompt = workload.prompt(i)
        start = time.perf_counter()
        plugin.index.match(
            prompt_block_hashes(MODEL, prompt, plugin.params.block_size, plugin.params.max_prefix_blocks)
        )
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def pct(samples: list[float], q: int) -> float:
    """The q-th percentile in ms, interpolated between observed values: the default ("exclusive") method extrapolates
    past the largest sample when there are fewer than 100, so a p99 could exceed every pick and the p99 of
    per-pick sums could come out below the p99 of their parts."""
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", type=int, default=400, help="measured picks per cell")
    parser.add_argument("--fill", type=float, default=0.5, help="fraction of each endpoint's prefix LRU to fill")
    parser.add_argument("--endpoints", type=int, nargs="*", default=[8, 64, 256])
    parser.add_argument("--tokens", type=int, nargs="*", default=[1024, 32768])
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall clock, or the thread's CPU time")
    args = parser.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    print(
        f"Director.pick() until the answer ({args.clock} clock), {args.picks} picks per cell, "
        f"prefix LRUs filled to {args.fill:.0%}"
    )
    print("| endpoints | prompt tokens | default p50 ms | p99 ms | random-picker p50 ms | p99 ms |", end="")
    print(" p50 ratio | p99 ratio | learn p50 ms | learn p99 ms | inline p99 ms | hash+match ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    breakdown: dict[str, float] = {}
    for count in args.endpoints:
        addresses = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:8000" for i in range(count)]
        for tokens in args.tokens:
            rng = random.Random(count * 100_003 + tokens)
            workload = Workload(tokens, rng)
            ours, baseline = build(None, addresses, 1), build(BASELINE, addresses, 1)
            warm(ours, workload, args.fill, rng)
            measure(ours, workload, 20, "warmup")
            measure(baseline, workload, 20, "warmup")
            learn_s: list[float] = []
            ours_s = measure(ours, workload, args.picks, "ours", learn_s, clock)
            base_s = measure(baseline, workload, args.picks, "base", clock=clock)
            inline = [a + b for a, b in zip(ours_s, learn_s, strict=True)]
            print(
                f"| {count} | {tokens} | {pct(ours_s, 50):.3f} | {pct(ours_s, 99):.3f} | {pct(base_s, 50):.3f} | "
                f"{pct(base_s, 99):.3f} | {pct(ours_s, 50) / pct(base_s, 50):.1f}x | "
                f"{pct(ours_s, 99) / pct(base_s, 99):.1f}x | {pct(learn_s, 50):.3f} | {pct(learn_s, 99):.3f} | "
                f"{pct(inline, 99):.3f} | {hash_and_match_ms(ours, workload):.3f} |",
                flush=True,
            )
            explained = ours.explain(LLMRequest("explain", MODEL, prompt=workload.prompt(1)))
            breakdown = {k: v * 1e3 for k, v in explained.plugin_seconds.items()}
    if breakdown:
        parts = ", ".join(f"{name} {ms:.3f} ms" for name, ms in breakdown.items())
        print(f"\nschedule() time per plugin, last cell (one Explain): {parts}")


if __name__ == "__main__":
    main()
