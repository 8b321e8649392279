"""The server's tokens for a request, known without I/O: what to ask `/tokenize`, and a bounded cache of answers.

Why it exists: the precise prefix scorer (pure core) reads tokens that the picker's tokenizer (an I/O source,
`scorer/sources/tokenize.py`) fetched earlier from the pool's servers. Keeping the cache and the question here lets
the core read them without importing the HTTP client. `TokenCache` is a pure LRU bounded both in entries and in total
tokens (4 bytes each), keyed by a 128-bit digest of the input, not by the input. It also keeps each prompt's prefix
text and, when the server's token strings gave them, where every 16th token ends in it (all counted in the token
bound at 4 bytes a unit), so that a later request that extends a cached prompt, or shares at least one 1 KiB rung
with one whose token ends are known, gets a true prefix of its tokens without asking (`derive`,
`scorer.token_prefix`, `scorer.token_offsets`).

What is asked (`tokenize_input`; `known_tokens` is what the scorer reads):

- a completion with one text prompt: the completion form, `{"model", "prompt"}`;
- a chat request: vLLM's chat form, `{"model", "messages", ...}` with the request's own template fields
  (`LLMRequest.chat_fields`), so the server applies its chat template exactly as it will for the request itself;
  cached under a key of its own kind, so a prompt text can never stand for a chat;
- a completion with one token-id prompt: nothing, the ids are the tokens;
- nothing either for a completions batch (several prompts: no single sequence to match), a chat with non-text
  parts, or other requests: the scorer uses the approximate index for them.
"""

from __future__ import annotations

import functools
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Literal

from scorer.block_hash_memo import common_blocks
from scorer.token_prefix import LADDER_BYTES, DerivedTokens, chat_prefix_text, derive, ladder, text_prefix_text
from scorer.types import LLMRequest

TokenSource = Literal["exact", "derived"]


def _digest(model: str, prompt: str, chat: bool) -> bytes:
    h = blake2b(model.encode(), digest_size=16)
    h.update(b"\x01" if chat else b"\x00")  # a chat's JSON and an equal prompt text are different inputs
    h.update(prompt.encode(errors="surrogatepass"))
    return h.digest()


@dataclass(frozen=True)
class TokenizeInput:
    """What to send to `/tokenize` for a request: a prompt `text`, or the chat `fields` (`text` is then their
    canonical JSON, the cache key)."""

    text: str
    fields: Mapping[str, Any] | None = None

    @property
    def chat(self) -> bool:
        return self.fields is not None

    def body(self, model: str) -> dict[str, Any]:
        if self.fields is not None:
            return {**self.fields, "model": model}
        return {"model": model, "prompt": self.text}

    @functools.cached_property
    def prefix_text(self) -> bytes:
        """What an earlier prompt must start this one with to stand for its prefix (`scorer.token_prefix`)."""
        return chat_prefix_text(self.fields) if self.fields is not None else text_prefix_text(self.text)


def tokenize_input(request: LLMRequest) -> TokenizeInput | None:
    """The `/tokenize` question whose answer is the server's tokens for `request`; None when none is needed or fits."""
    if request.kind == "chat" and request.chat_fields is not None and request.chat_input is not None:
        return TokenizeInput(request.chat_input, request.chat_fields)
    if request.kind == "completions" and request.prompt_count == 1 and request.prompt_token_ids is None:
        return TokenizeInput(request.prompt) if request.prompt else None
    return None


def known_tokens(request: LLMRequest, cache: TokenCache) -> Sequence[int] | None:
    """The server's tokens for `request` if known without I/O: its own token ids, or the cached `/tokenize` answer."""
    if request.kind == "completions" and request.prompt_count == 1 and request.prompt_token_ids is not None:
        return request.prompt_token_ids
    question = tokenize_input(request)
    return None if question is None else cache.peek(request.model, question.text, chat=question.chat)


def known_prefix(
    request: LLMRequest, cache: TokenCache, margin: int | None
) -> tuple[TokenSource, Sequence[int], int] | None:
    """What is known of `request`'s tokens without I/O: ("exact", tokens, their count), or, with a `margin` (None:
    never derive), ("derived", a true prefix of them, their estimated count): `TokenCache.derive`."""
    exact = known_tokens(request, cache)
    if exact is not None:
        return "exact", exact, len(exact)
    question = tokenize_input(request) if margin is not None else None
    found = cache.derive(request.model, question, margin) if question is not None and margin is not None else None
    return None if found is None else ("derived", found.tokens, found.estimated_total)


_RUNG_UNITS = 24  # ~96 bytes per rung filed in `TokenCache._rungs` (a dict slot, an int, a reference)
ENDS_STRIDE = 16  # token ends kept for every 16th token only: a known prefix then ends on a multiple of 16 tokens


@dataclass
class _Entry:
    tokens: array[int]
    text: bytes  # the prompt's prefix text, empty when not kept
    anchor: int | None  # the ladder rung it is filed under, None when not filed
    model: str
    chat: bool
    ends: array[int] | None = None  # where tokens 16, 32, ... end in `text` (bytes; `scorer.token_offsets`)
    rungs: list[int] | None = None  # every rung of `text`, filed in `_rungs` (only with `ends`)

    @property
    def cost(self) -> int:
        extra = len(self.ends) + _RUNG_UNITS * len(self.rungs) if self.ends is not None and self.rungs else 0
        return len(self.tokens) + (len(self.text) + 3) // 4 + extra


class TokenCache:
    """LRU of prompt -> token ids, at most `max_entries` prompts and `max_tokens` units of 4 bytes in total (each
    prompt's tokens plus, with `keep_prefixes`, its prefix text for `derive`)."""

    def __init__(self, max_entries: int = 1024, max_tokens: int = 16 * 1024 * 1024, *, keep_prefixes: bool = True):
        if max_entries < 1 or max_tokens < 1:
            raise ValueError(f"max_entries and max_tokens must be >= 1, got {max_entries}, {max_tokens}")
        self.max_entries = max_entries
        self.max_tokens = max_tokens
        self.keep_prefixes = keep_prefixes
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._anchors: dict[int, list[bytes]] = {}  # last ladder rung -> keys of the prompts filed under it
        self._rungs: dict[int, bytes] = {}  # any ladder rung -> the latest prompt with token ends holding it
        self.tokens = 0  # tokens held
        self.units = 0  # what the bound counts: tokens plus prefix text in 4-byte units
        self.hits = 0
        self.misses = 0
        self._generation = 0  # bumped by every change of the entries: a remembered `derive` is valid within one
        self._last_derive: tuple[tuple[str, bool, str, int, int], DerivedTokens | None] | None = None

    def get(self, model: str, prompt: str, *, chat: bool = False) -> Sequence[int] | None:
        key = _digest(model, prompt, chat)
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found.tokens

    def peek(self, model: str, prompt: str, *, chat: bool = False) -> Sequence[int] | None:
        """Like `get` without counting or refreshing (for Explain-like reads)."""
        found = self._entries.get(_digest(model, prompt, chat))
        return None if found is None else found.tokens

    def put(
        self,
        model: str,
        prompt: str,
        tokens: Sequence[int],
        *,
        chat: bool = False,
        prefix_text: bytes | None = None,
        ends: Sequence[int] | None = None,
    ) -> None:
        """Keep `tokens` for (model, prompt); `prefix_text` (`TokenizeInput.prefix_text`; a text prompt's own UTF-8
        when not given, nothing for a chat) files it for `derive`. `ends` (a text prompt's only: where each token
        ends in `prefix_text`, `scorer.token_offsets`) also lets a request that merely shares a prefix with it derive
        from it."""
        if prefix_text is None:
            prefix_text = b"" if chat else text_prefix_text(prompt)
        if not self.keep_prefixes:
            prefix_text = b""
        rungs = ladder(model, chat, prefix_text) if prefix_text else []
        entry = _Entry(array("I", tokens), prefix_text if rungs else b"", rungs[-1] if rungs else None, model, chat)
        if rungs and ends and not chat and len(ends) == len(tokens) and ends[-1] == len(prefix_text):
            entry.ends, entry.rungs = array("I", ends[ENDS_STRIDE - 1 :: ENDS_STRIDE]), rungs
        if entry.cost > self.max_tokens:
            return  # larger than the whole cache: not worth evicting everything for
        key = _digest(model, prompt, chat)
        self._drop(key)
        self._entries[key] = entry
        self.tokens += len(entry.tokens)
        self.units += entry.cost
        self._generation += 1
        if entry.anchor is not None:
            self._anchors.setdefault(entry.anchor, []).append(key)
        for rung in entry.rungs or ():
            self._rungs[rung] = key
        while len(self._entries) > self.max_entries or self.units > self.max_tokens:
            self._drop(next(iter(self._entries)))

    def derive(self, model: str, question: TokenizeInput, margin: int) -> DerivedTokens | None:
        """A known prefix of the tokens of `question`, or None: from the longest cached prompt of the same model and
        kind that it extends (`scorer.token_prefix`), or from the cached prompt with token ends that shares the
        longest prefix with it, whichever knows more. Refreshes that prompt in the LRU.

        The answer for the last question is remembered until the entries change: the shell's `prepare` and the
        scorer's match ask it for the same request one after the other, and the second ask costs no hashing."""
        asked = (model, question.chat, question.text, margin, self._generation)
        if self._last_derive is not None and self._last_derive[0] == asked:
            return self._last_derive[1]
        found = self._derive(model, question, margin)
        self._last_derive = (asked, found)
        return found

    def _derive(self, model: str, question: TokenizeInput, margin: int) -> DerivedTokens | None:
        data = question.prefix_text
        rungs = ladder(model, question.chat, data)
        extended = self._extended(model, question.chat, data, rungs, margin)
        shared = self._shared(model, question.chat, data, rungs, margin) if self._rungs else None
        best = max((f for f in (extended, shared) if f is not None), key=lambda f: len(f[1].tokens), default=None)
        if best is None:
            return None
        self._entries.move_to_end(best[0])
        return best[1]

    def _shared(
        self, model: str, chat: bool, data: bytes, rungs: list[int], margin: int
    ) -> tuple[bytes, DerivedTokens] | None:
        """From the latest prompt holding the request's longest rung: the tokens that end within the bytes both
        share, minus the margin."""
        for k in range(len(rungs) - 1, -1, -1):
            key = self._rungs.get(rungs[k])
            entry = self._entries.get(key) if key is not None else None
            if entry is None or entry.ends is None or entry.model != model or entry.chat != chat:
                continue
            common = common_blocks(data, entry.text, len(data), 1)
            if common < (k + 1) * LADDER_BYTES:
                continue  # a digest collision: the bytes decide
            strides = bisect_right(entry.ends, common)  # the first 16 * strides tokens end within the shared bytes
            inside = strides * ENDS_STRIDE
            found = derive(entry.tokens[:inside], int(entry.ends[strides - 1]) if strides else 0, len(data), margin)
            return None if found is None or key is None else (key, found)
        return None

    def _extended(
        self, model: str, chat: bool, data: bytes, rungs: list[int], margin: int
    ) -> tuple[bytes, DerivedTokens] | None:
        """From the longest cached prompt that `data` extends: all its tokens but the margin."""
        for rung in reversed(rungs):
            best: tuple[bytes, _Entry] | None = None
            for key in self._anchors.get(rung, ()):
                entry = self._entries[key]
                if entry.model != model or entry.chat != chat or not data.startswith(entry.text):
                    continue  # another model or kind, or a digest collision: the bytes decide
                if best is None or len(entry.text) > len(best[1].text):
                    best = key, entry
            if best is not None:
                found = derive(best[1].tokens, len(best[1].text), len(data), margin)
                return None if found is None else (best[0], found)
        return None

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._generation += 1
        self.tokens -= len(entry.tokens)
        self.units -= entry.cost
        if entry.anchor is not None:
            filed = self._anchors[entry.anchor]
            filed.remove(key)
            if not filed:
                del self._anchors[entry.anchor]
        for rung in entry.rungs or ():
            if self._rungs.get(rung) == key:
                del self._rungs[rung]

    def __len__(self) -> int:
        return len(self._entries)
