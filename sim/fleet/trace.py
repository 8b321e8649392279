"""Load Mooncake-format request traces and compute their ideal prefix-cache hit ratio.

Why it exists: demos and load tests replay a real production trace (see /work/shared/data/README.md) through
the routers and the fleet twin, so the trace has to be read with validation at entry (a malformed line is an
error naming its line, never a silent skip), and results need the trace's own upper bound to compare against:
the hit ratio of an ideal, infinite cache shared by all servers.

Format: one JSON object per line with ``timestamp`` (ms from trace start, non-decreasing), ``input_length`` and
``output_length`` (tokens) and ``hash_ids`` (one id per prompt block of 512 tokens; the last may be partial).
Other keys are ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HitRatios",
    "TraceFormatError",
    "TraceRequest",
    "block_token_counts",
    "hit_ratios",
    "load_trace",
    "oracle_hit_ratio",
]

BLOCK_TOKENS = 512


class TraceFormatError(ValueError):
    """A trace line is malformed; the message starts with ``path:line:``."""


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request of a trace. ``hash_ids`` is a tuple so requests are immutable and hashable."""

    timestamp_s: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def _int_field(obj: dict[str, object], key: str, where: str, minimum: int) -> int:
    if key not in obj:
        raise TraceFormatError(f"{where}: missing {key!r}")
    v = obj[key]
    if not isinstance(v, int) or isinstance(v, bool):
        raise TraceFormatError(f"{where}: {key!r} must be an integer, got {v!r}")
    if v < minimum:
        raise TraceFormatError(f"{where}: {key!r} must be >= {minimum}, got {v}")
    return v


def _parse_line(line: str, where: str) -> TraceRequest:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TraceFormatError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise TraceFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "timestamp" not in obj:
        raise TraceFormatError(f"{where}: missing 'timestamp'")
    ts = obj["timestamp"]
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts) or ts < 0:
        raise TraceFormatError(f"{where}: 'timestamp' must be a finite number >= 0 (ms), got {ts!r}")
    input_length = _int_field(obj, "input_length", where, 0)
    output_length = _int_field(obj, "output_length", where, 0)
    if "hash_ids" not in obj:
        raise TraceFormatError(f"{where}: missing 'hash_ids'")
    hash_ids = obj["hash_ids"]
    if not isinstance(hash_ids, list):
        raise TraceFormatError(f"{where}: 'hash_ids' must be a list, got {type(hash_ids).__name__}")
    for k, h in enumerate(hash_ids):
        if not isinstance(h, int) or isinstance(h, bool) or h < 0:
            raise TraceFormatError(f"{where}: hash_ids[{k}] must be an integer >= 0, got {h!r}")
    if input_length > 0 and not hash_ids:
        raise TraceFormatError(f"{where}: 'hash_ids' is empty but input_length is {input_length}")
    return TraceRequest(ts / 1000.0, input_length, output_length, tuple(hash_ids))


def load_trace(path: str | Path, *, max_seconds: float | None = None, limit: int | None = None) -> list[TraceRequest]:
    """Read a Mooncake-format JSONL trace, validating every line read.

    ``max_seconds`` keeps requests with ``timestamp_s < max_seconds``; ``limit`` keeps at most that many
    requests. Reading stops at the first request outside either bound (timestamps are non-decreasing).
    Raises TraceFormatError (``path:line: reason``) for a malformed or blank line or a timestamp going back.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    out: list[TraceRequest] = []
    prev_ts = -math.inf
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if limit is not None and len(out) >= limit:
                break
            where = f"{path}:{n}"
            if not line.strip():
                raise TraceFormatError(f"{where}: blank line")
            req = _parse_line(line, where)
            if req.timestamp_s < prev_ts:
                raise TraceFormatError(
                    f"{where}: timestamp {req.timestamp_s * 1000:g} ms is before the previous line's "
                    f"{prev_ts * 1000:g} ms (the trace must be sorted by time)"
                )
            prev_ts = req.timestamp_s
            if max_seconds is not None and req.timestamp_s >= max_seconds:
                break
            out.append(req)
    return out


def block_token_counts(req: TraceRequest, block_tokens: int = BLOCK_TOKENS) -> list[int]:
    """Prompt tokens in each block of ``req``: ``block_tokens`` except a partial last block; 0 for blocks past
    ``input_length``. Tokens past ``len(hash_ids) * block_tokens`` belong to no block."""
    return [max(0, min(block_tokens, req.input_length - k * block_tokens)) for k in range(len(req.hash_ids))]


@dataclass(frozen=True, slots=True)
class HitRatios:
    """Ideal-cache hit ratios of a trace; token ratios divide by all prompt tokens, block ratios by all blocks.

    ``prefix_*``: a block hits iff its whole id prefix ``hash_ids[0..k]`` was seen earlier (what a prefix cache,
    such as vLLM's, can reuse). ``seen_*``: a block hits iff its id was seen earlier anywhere (the README's
    "blocks seen earlier" figure; ignores position).
    """

    prefix_token_ratio: float
    prefix_block_ratio: float
    seen_token_ratio: float
    seen_block_ratio: float
    total_tokens: int
    total_blocks: int


def hit_ratios(requests: Iterable[TraceRequest], block_tokens: int = BLOCK_TOKENS) -> HitRatios:
    """Hit ratios of an infinite cache shared by all requests, processed in trace order (see `HitRatios`).

    Blocks counted are those with at least one prompt token; tokens past ``len(hash_ids) * block_tokens``
    count as misses (no block id covers them).
    """
    if block_tokens <= 0:
        raise ValueError(f"block_tokens must be > 0, got {block_tokens}")
    trie: dict[tuple[int, int], int] = {}  # (parent node, hash id) -> node; node 0 is the empty prefix
    seen: set[int] = set()
    tokens = blocks = prefix_tok = prefix_blk = seen_tok = seen_blk = 0
    for req in requests:
        tokens += req.input_length
        node = 0
        for h, n in zip(req.hash_ids, block_token_counts(req, block_tokens), strict=True):
            if n == 0:
                break
            blocks += 1
            child = trie.get((node, h))
            if child is None:
                child = trie[(node, h)] = len(trie) + 1
            else:
                prefix_blk += 1
                prefix_tok += n
            node = child
            if h in seen:
                seen_blk += 1
                seen_tok += n
            else:
                seen.add(h)
    return HitRatios(
        prefix_token_ratio=prefix_tok / tokens if tokens else 0.0,
        prefix_block_ratio=prefix_blk / blocks if blocks else 0.0,
        seen_token_ratio=seen_tok / tokens if tokens else 0.0,
        seen_block_ratio=seen_blk / blocks if blocks else 0.0,
        total_tokens=tokens,
        total_blocks=blocks,
    )


def oracle_hit_ratio(requests: Sequence[TraceRequest], block_tokens: int = BLOCK_TOKENS) -> float:
    """Fraction of prompt tokens an ideal, infinite, shared prefix cache would serve from cache.

    Block k of a request hits iff ``hash_ids[0..k]`` appeared as a prefix of an earlier request (prefix
    semantics); it then contributes its token count (a partial last block counts its own length).
    """
    return hit_ratios(requests, block_tokens).prefix_token_ratio
