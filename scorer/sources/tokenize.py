"""Tokenizes prompts the way the model servers do (their own `/tokenize`), filling the core's token cache.

Why it exists: the precise index keys blocks by the token ids the servers cached, so a request can only be matched
against it once it is tokenized exactly as a server tokenizes it. Asking a server of the pool (vLLM's
`POST /tokenize {"model", "prompt"}` -> `{"tokens": [...]}`) needs no tokenizer in the picker and cannot disagree
with the servers. The answer depends only on (model, what is asked), so it is kept in `scorer.token_cache.TokenCache`
(pure, read by the scorer without I/O); what is asked is `scorer.token_cache.tokenize_input`.

`Tokenizer.prepare(request)` runs before a decision (the ext_proc shell and the Picker API await it): on a cache miss
it asks one server, round robin over the ready ones, with a timeout; after an error other than a timeout it tries one
other server, then gives up quietly (the scorer then falls back to the approximate index for this request).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from scorer.token_cache import TokenCache, tokenize_input
from scorer.types import LLMRequest

log = logging.getLogger("autonomic.picker.tokenize")


class Tokenizer:
    """`async with Tokenizer(cache, servers) as t: await t.prepare(request)`; `servers()` lists ready endpoints."""

    def __init__(self, cache: TokenCache, servers: Callable[[], Sequence[str]], timeout_s: float = 0.5):
        self.cache = cache
        self.servers = servers
        self.timeout_s = timeout_s
        self.failures = 0
        self.requests = 0
        self._turn = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Tokenizer:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def prepare(self, request: LLMRequest) -> None:
        """Make sure the request's tokens are cached when it can be tokenized (never raises)."""
        question = tokenize_input(request)
        if question is None or self._session is None:
            return
        if self.cache.get(request.model, question.text, chat=question.chat) is not None:
            return
        servers = list(self.servers())
        body = question.body(request.model)
        for attempt in range(min(2, len(servers))):
            address = servers[(self._turn + attempt) % len(servers)]
            tokens, retry = await self._ask(address, body)
            if tokens is not None:
                self.cache.put(request.model, question.text, tokens, chat=question.chat)
            if not retry:
                break
        self._turn += 1

    async def _ask(self, address: str, body: dict[str, Any]) -> tuple[list[int] | None, bool]:
        """(tokens or None, whether another server is worth asking: not after a timeout, which already cost)."""
        assert self._session is not None
        self.requests += 1
        try:
            async with self._session.post(f"http://{address}/tokenize", json=body) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                doc = await resp.json(content_type=None)
            tokens = doc.get("tokens") if isinstance(doc, dict) else None
            if not isinstance(tokens, list) or not all(type(t) is int and 0 <= t < 2**32 for t in tokens):
                raise ValueError("answer has no 'tokens' list of non-negative 32-bit integers")
            return tokens, False
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            self.failures += 1
            log.info("tokenize failed", extra={"endpoint": address, "error": f"{type(exc).__name__}: {exc}"})
            return None, not isinstance(exc, TimeoutError)
