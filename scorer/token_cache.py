"""The server's tokens for a request, known without I/O: what to ask `/tokenize`, and a bounded cache of answers.

Why it exists: the precise prefix scorer (pure core) reads tokens that the picker's tokenizer (an I/O source,
`scorer/sources/tokenize.py`) fetched earlier from the pool's servers. Keeping the cache and the question here lets
the core read them without importing the HTTP client. `TokenCache` is a pure LRU bounded both in entries and in total
tokens (4 bytes each), keyed by a 128-bit digest of the input, not by the input.

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

from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from scorer.types import LLMRequest


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


class TokenCache:
    """LRU of prompt -> token ids, at most `max_entries` prompts and `max_tokens` tokens in total."""

    def __init__(self, max_entries: int = 1024, max_tokens: int = 16 * 1024 * 1024):
        if max_entries < 1 or max_tokens < 1:
            raise ValueError(f"max_entries and max_tokens must be >= 1, got {max_entries}, {max_tokens}")
        self.max_entries = max_entries
        self.max_tokens = max_tokens
        self._entries: OrderedDict[bytes, array[int]] = OrderedDict()
        self.tokens = 0
        self.hits = 0
        self.misses = 0

    def get(self, model: str, prompt: str, *, chat: bool = False) -> Sequence[int] | None:
        key = _digest(model, prompt, chat)
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found

    def peek(self, model: str, prompt: str, *, chat: bool = False) -> Sequence[int] | None:
        """Like `get` without counting or refreshing (for Explain-like reads)."""
        return self._entries.get(_digest(model, prompt, chat))

    def put(self, model: str, prompt: str, tokens: Sequence[int], *, chat: bool = False) -> None:
        if len(tokens) > self.max_tokens:
            return  # larger than the whole cache: not worth evicting everything for
        key = _digest(model, prompt, chat)
        old = self._entries.pop(key, None)
        if old is not None:
            self.tokens -= len(old)
        self._entries[key] = array("I", tokens)
        self.tokens += len(tokens)
        while len(self._entries) > self.max_entries or self.tokens > self.max_tokens:
            _key, evicted = self._entries.popitem(last=False)
            self.tokens -= len(evicted)

    def __len__(self) -> int:
        return len(self._entries)
