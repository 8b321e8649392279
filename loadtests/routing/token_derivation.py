"""How often the precise profile can decide on derived tokens, and whether they are right: a trace replayed through
the token cache's derivation with the fleet twin's tokenizer, no servers, no clock.

Why it exists: the precise scorer waits for `/tokenize` only when a request's tokens are neither cached nor
derivable from an earlier prompt it extends (`scorer.token_prefix`). Whether that wait is gone depends on the
workload; whether the derived tokens are a true prefix of the real ones must hold for every request. This replays
the first minutes of a trace in order, as the picker sees it when every `/tokenize` answer (waited for or in the
background) arrives before the next request: each request is classified as decided on exact tokens (the same prompt
was tokenized before), on a derived prefix, or on nothing (a wait for `/tokenize`), and each derived prefix is
compared with the twin's tokenization of the whole prompt.

    python -m loadtests.routing.token_derivation --minutes 5

Defaults: the margin and token cache bounds of the shipped precise profile (scorer/precise-config.yaml).

Figures: shares of requests per source; of the derived requests, the share of the prompt's 16-token blocks the
derived prefix covers and the error of the estimated token count; the number of derived prefixes that are not a
prefix of the real tokens (must be 0). "Shared" is the longest token prefix any earlier prompt shares with the
request, read from the trace's block ids (a block's tokens depend on its id only, a partial block is a prefix of
the full one): the most any derivation could know. The synthesized trace gives a turn's partial last block new text
in the next turn, so a later turn shares the earlier prompt's full blocks but seldom extends it: `--no-offsets` (no
token ends, the extension rule only) shows what that leaves.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from scorer.config import load_config
from scorer.plugins.scorers.precise_prefix import PrecisePrefixParams
from scorer.token_cache import TokenCache, TokenizeInput
from scorer.token_offsets import TokenOffsets
from sim.fleet.synth import BLOCK_TOKENS, prompt_text
from sim.fleet.tokenizer import get_tokenizer
from sim.fleet.trace import TraceRequest, load_trace

TRACE = Path("/work/shared/data/traces/mooncake_conversation_first30min.jsonl")
PRECISE_CONFIG = Path(__file__).resolve().parents[2] / "scorer" / "precise-config.yaml"
MODEL = "twin"
KV_BLOCK = 16  # the twin's (and vLLM's) block size, for the coverage figure


@dataclass
class DerivationStats:
    requests: int = 0
    exact: int = 0
    derived: int = 0
    none: int = 0
    none_sharing: int = 0  # undecidable requests that share a full trace block with an earlier prompt
    wrong: int = 0  # derived prefixes that are not a prefix of the real tokens
    covered_blocks: int = 0  # over derived requests: full KV blocks of the derived prefix
    prompt_blocks: int = 0  # over derived requests: full KV blocks of the real tokens
    shared_blocks: int = 0  # over derived requests: KV blocks of the longest token prefix an earlier prompt shares
    estimate_error: list[float] = field(default_factory=list)  # |estimated - real| / real, derived requests
    with_ends: int = 0  # tokenized prompts whose token ends were read from their token strings

    @property
    def exact_misses(self) -> int:
        return self.requests - self.exact

    def report(self) -> str:
        n = max(1, self.requests)
        d = max(1, self.derived)
        err = sorted(self.estimate_error)
        median = err[len(err) // 2] if err else 0.0
        worst = err[-1] if err else 0.0
        return "\n".join(
            [
                f"requests                       {self.requests}",
                f"exact tokens (cached)          {self.exact} ({self.exact / n:.1%})",
                f"derived prefix                 {self.derived} ({self.derived / n:.1%})",
                f"nothing (wait for /tokenize)   {self.none} ({self.none / n:.1%}), of which sharing a trace block "
                f"with an earlier prompt: {self.none_sharing} ({self.none_sharing / n:.1%})",
                f"derived: blocks covered        {self.covered_blocks / max(1, self.prompt_blocks):.1%} of the "
                f"prompts' {KV_BLOCK}-token blocks; {self.covered_blocks / max(1, self.shared_blocks):.1%} of those "
                f"an earlier prompt shares ({self.shared_blocks / max(1, self.prompt_blocks):.1%} of all)",
                f"derived: token count estimate  |error| median {median:.2%}, max {worst:.2%}",
                f"derived: true token prefix     {self.derived - self.wrong} of {self.derived} "
                f"({(self.derived - self.wrong) / d:.1%})",
                f"token ends read                {self.with_ends} of {self.exact_misses} tokenized prompts",
            ]
        )


def replay_derivation(
    trace: list[TraceRequest], cache: TokenCache, margin: int, *, offsets: bool = True
) -> DerivationStats:
    """Each request in order: exact, derived (checked against the real tokens) or nothing; then its tokens cached,
    with their ends when `offsets` (as the picker does from `/tokenize`'s token strings)."""
    tok = get_tokenizer()
    reader = TokenOffsets()
    stats = DerivationStats()
    seen: dict[tuple[int, ...], int] = {}  # id prefix of an earlier prompt -> most tokens it had in its last block
    for req in trace:
        text = prompt_text(req.hash_ids, req.input_length)
        question = TokenizeInput(text)
        stats.requests += 1
        blocks = block_lengths(req)
        shared = 0  # tokens of the longest prefix an earlier prompt shares (a block's tokens depend on its id only)
        for j, n in enumerate(blocks):
            had = seen.get(req.hash_ids[: j + 1], 0)
            shared += min(had, n)
            if had < n or n < BLOCK_TOKENS:
                break
        if cache.get(MODEL, text) is not None:
            stats.exact += 1
        else:
            real = tok.encode(text)
            found = cache.derive(MODEL, question, margin)
            if found is None:
                stats.none += 1
                stats.none_sharing += shared >= BLOCK_TOKENS
            else:
                stats.derived += 1
                known = list(found.tokens)
                stats.wrong += real[: len(known)] != known
                stats.covered_blocks += len(known) // KV_BLOCK
                stats.prompt_blocks += len(real) // KV_BLOCK
                stats.shared_blocks += shared // KV_BLOCK
                stats.estimate_error.append(abs(found.estimated_total - len(real)) / max(1, len(real)))
            ends = reader.ends(question.prefix_text, [tok.id_to_piece(t) for t in real]) if offsets else None
            stats.with_ends += ends is not None
            cache.put(MODEL, text, real, prefix_text=question.prefix_text, ends=ends)
        for j, n in enumerate(blocks):
            key = req.hash_ids[: j + 1]
            seen[key] = max(seen.get(key, 0), n)
    return stats


def block_lengths(req: TraceRequest) -> list[int]:
    """Tokens of each trace block the prompt uses (`sim.fleet.synth`: the last may be partial, or longer than a block
    when the prompt outgrows its ids)."""
    lengths, left = [], req.input_length
    for j in range(len(req.hash_ids)):
        if left <= 0:
            break
        n = left if j == len(req.hash_ids) - 1 else min(left, BLOCK_TOKENS)
        lengths.append(n)
        left -= n
    return lengths


def shipped_params() -> PrecisePrefixParams:
    """The precise-prefix-cache-scorer's parameters in the shipped precise profile."""
    config = load_config(PRECISE_CONFIG)
    (params,) = [p.params for p in config.plugins if isinstance(p.params, PrecisePrefixParams)]
    return params


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.routing.token_derivation", description=__doc__.split("\n")[0])
    p.add_argument("--trace", type=Path, default=TRACE)
    p.add_argument("--minutes", type=float, default=5.0)
    shipped = shipped_params()
    p.add_argument("--margin", type=int, default=shipped.derived_prefix_margin_tokens, help="derivedPrefixMarginTokens")
    p.add_argument("--entries", type=int, default=shipped.token_cache_entries, help="tokenCacheEntries")
    p.add_argument("--tokens", type=int, default=shipped.token_cache_tokens, help="tokenCacheTokens")
    p.add_argument("--no-offsets", action="store_true", help="no token strings: only prompts that extend a cached one")
    args = p.parse_args(argv)
    if args.margin is None or args.margin < 1:
        print("error: --margin must be >= 1 (the shipped profile derives nothing)", file=sys.stderr)
        return 2
    if not args.trace.exists():
        print(f"error: trace not found: {args.trace}", file=sys.stderr)
        return 2
    trace = load_trace(args.trace, max_seconds=args.minutes * 60)
    stats = replay_derivation(trace, TokenCache(args.entries, args.tokens), args.margin, offsets=not args.no_offsets)
    print(
        f"trace {args.trace.name}, first {args.minutes:g} min, margin {args.margin} tokens, cache "
        f"{args.entries} prompts / {args.tokens} units, token ends {'off' if args.no_offsets else 'on'}"
    )
    print(stats.report())
    return 1 if stats.wrong else 0


if __name__ == "__main__":
    sys.exit(main())
