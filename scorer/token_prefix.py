"""A known prefix of a request's tokens, taken from an earlier prompt it extends, so no `/tokenize` is awaited.

Why it exists: the precise scorer needs the request's tokens as the servers tokenize them, and asking a server
(`scorer/sources/tokenize.py`) is a round trip on the critical path of every new prompt. In a conversation the next
request's prompt P' is the earlier prompt P plus the model's answer plus a new user turn, and P was tokenized when
it was routed. Tokenization is prefix-stable except near the end of P: the last pre-token of P may merge with what
follows it (a word that goes on, a run of spaces that the next word takes its last space from, digits regrouped), a
tokenizer may add an end-of-sequence token, and a chat's generation prompt is not part of the next render. So P's
tokens without their last `margin` tokens are a prefix of P''s tokens (`derive`); their block keys can be matched
against the precise index at once, and the full answer fetched in the background fills the cache for the next turn.

The margin is a number of tokens, not of blocks: the unstable tail is a property of the tokenizer and the template
(one pre-token, one end-of-sequence token, a generation prompt of a few tokens), not of the servers' block size,
and endpoints of one pool may even have different block sizes. 64 tokens (the default `derivedPrefixMarginTokens`)
covers a long last word, a generation prompt such as Llama-3's `<|start_header_id|>assistant<|end_header_id|>\\n\\n`
and an end-of-turn token, and costs at most four 16-token blocks of a prompt that is thousands of tokens long.

What "extends" means, as bytes compared with `startswith` (the prompts' `prefix_text`):

- a text completion: P's prompt text is a prefix of P''s (UTF-8, so a byte prefix is a character prefix);
- a chat: the same template fields (everything but the messages, as canonical JSON) and P's messages are the first
  messages of P'. `chat_prefix_text` writes the fields, then each message as canonical JSON, each on a line of its
  own (JSON escapes newlines), so the byte-prefix test is exactly this rule. This assumes the chat template renders
  earlier messages the same whatever follows them: true for append-only templates (Llama 3, Qwen, the twin's);
  wrong for templates that re-render earlier turns (one that drops the reasoning of every assistant turn but the
  last, one that moves the system prompt into the last user message). Then the derived keys claim blocks that the
  server holding P holds but that P' no longer shares, and that server's hit is overestimated for this one request
  (docs/picker-plugins.md, "Precise prefix routing").

Finding P among the cached prompts: each prompt's `prefix_text` is cut into `LADDER_BYTES` blocks with chained xxh64
digests (`ladder`, seeded by model and kind); a cached prompt is filed under the digest of its last full block, and
a request's ladder is walked from its longest rung down, each candidate verified with a real `startswith` before
it is trusted. A 200 KB prompt costs ~200 xxh64 calls and at most as many dict lookups. Prompts shorter than one
rung (1 KiB, ~250 tokens) are never filed: with the margin they would know little.

Pure: no I/O. `scorer.token_cache.TokenCache` stores the prompts and runs the walk.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

LADDER_BYTES = 1024
DEFAULT_MARGIN_TOKENS = 64
_xxh64 = xxhash.xxh64_intdigest


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def chat_prefix_text(fields: Mapping[str, Any]) -> bytes:
    """A chat's template fields, then one line per message: an earlier turn's text is a prefix of a later turn's
    exactly when the fields are equal and its messages come first (ASCII JSON has no raw newline)."""
    template = {k: v for k, v in fields.items() if k != "messages"}
    messages = fields.get("messages")
    lines = [_canonical(template)]
    lines.extend(_canonical(m) for m in (messages if isinstance(messages, list) else ()))
    return ("\n".join(lines) + "\n").encode()


def text_prefix_text(prompt: str) -> bytes:
    return prompt.encode(errors="surrogatepass")


def ladder(model: str, chat: bool, data: bytes) -> list[int]:
    """Chained digests of `data`'s full `LADDER_BYTES` blocks: rung k stands for `data[: (k + 1) * LADDER_BYTES]`."""
    prev = _xxh64(f"{int(chat)}|{model}".encode())
    view = memoryview(data)
    rungs = []
    for start in range(0, len(data) - LADDER_BYTES + 1, LADDER_BYTES):
        prev = _xxh64(view[start : start + LADDER_BYTES], prev)
        rungs.append(prev)
    return rungs


@dataclass(frozen=True)
class DerivedTokens:
    """What is known of a request's tokens from an earlier prompt: a true prefix of them, and an estimate of their
    count (the earlier prompt's tokens per byte times the request's length)."""

    tokens: Sequence[int]
    estimated_total: int
    source_bytes: int  # length of the earlier prompt's prefix text


def derive(earlier: Sequence[int], earlier_bytes: int, request_bytes: int, margin: int) -> DerivedTokens | None:
    """The known prefix of a request whose prefix text (`request_bytes` long) extends an earlier one's
    (`earlier_bytes` long, tokenized as `earlier`): all but the last `margin` tokens; None when nothing is left."""
    if margin < 1:
        raise ValueError(f"margin must be >= 1 token, got {margin}")
    known = len(earlier) - margin
    if known < 1 or earlier_bytes < 1:
        return None
    rate = len(earlier) / earlier_bytes
    estimate = len(earlier) + round(max(0, request_bytes - earlier_bytes) * rate)
    return DerivedTokens(earlier[:known], max(estimate, known), earlier_bytes)
