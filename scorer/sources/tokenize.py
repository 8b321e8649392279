"""Tokenizes prompts the way the model servers do (their own `/tokenize`), filling the core's token cache.

Why it exists: the precise index keys blocks by the token ids the servers cached, so a request can only be matched
against it once it is tokenized exactly as a server tokenizes it. Asking a server of the pool (vLLM's
`POST /tokenize {"model", "prompt"}` -> `{"tokens": [...]}`) needs no tokenizer in the picker and cannot disagree
with the servers. The answer depends only on (model, what is asked), so it is kept in `scorer.token_cache.TokenCache`
(pure, read by the scorer without I/O); what is asked is `scorer.token_cache.tokenize_input`.

`Tokenizer.prepare(request)` runs before a decision (the ext_proc shell and the Picker API await it). On a cache miss:

- when the request extends a cached prompt (`TokenCache.derive`, `scorer.token_prefix`: the next turn of a
  conversation), the scorer can match a known prefix of its tokens with no I/O, so nothing is awaited: the full
  prompt is tokenized in the background (its answer serves the next turn and any repeat of this request);
- otherwise it asks one server, round robin over the ready ones, waiting at most `timeout_s` for the answer; after
  an error other than a timeout it tries one other server, then gives up quietly (the scorer then falls back to the
  approximate index for this request). A wait that times out leaves the call running in the background, so its
  answer still serves the conversation's next turn. With `timeout_s == 0` it never waits: the question goes to the
  background at once.

Background calls are bounded: at most `max_background` in flight, one per distinct prompt, and at most
`QUEUED_PER_SLOT` times as many waiting for a slot (a burst of new prompts is tokenized a little later, not lost);
past that a question is dropped and counted as skipped. They have a timeout of their own (`BACKGROUND_TIMEOUT_S`,
not on any critical path) and are cancelled when the tokenizer closes. A call that a decision waits for (nothing to
derive) takes no slot, as before (it counts in the bound while it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from array import array
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from scorer.token_cache import TokenCache, TokenizeInput, tokenize_input
from scorer.token_offsets import TokenOffsets
from scorer.types import LLMRequest

log = logging.getLogger("autonomic.picker.tokenize")


def _uint32_list(values: list[Any]) -> bool:
    """Every item a plain int in [0, 2**32) (not a bool): C-level passes, a 30k-token answer in ~1 ms less than a
    Python loop over it."""
    if not set(map(type, values)) <= {int}:
        return False
    try:
        array("I", values)
    except OverflowError:
        return False
    return True


BACKGROUND_TIMEOUT_S = 10.0
QUEUED_PER_SLOT = 8


class Tokenizer:
    """`async with Tokenizer(cache, servers) as t: await t.prepare(request)`; `servers()` lists ready endpoints.

    `margin`: the derivation margin in tokens (`derivedPrefixMarginTokens`), None to never derive."""

    def __init__(
        self,
        cache: TokenCache,
        servers: Callable[[], Sequence[str]],
        timeout_s: float = 0.5,
        *,
        margin: int | None = None,
        max_background: int = 8,
    ):
        if timeout_s < 0 or max_background < 1 or (margin is not None and margin < 1):
            raise ValueError(
                f"need timeout_s >= 0, max_background >= 1, margin >= 1 or None: {timeout_s}, "
                f"{max_background}, {margin}"
            )
        self.cache = cache
        self.servers = servers
        self.timeout_s = timeout_s
        self.margin = margin
        self.max_background = max_background
        self.failures = 0
        self.requests = 0  # /tokenize calls made, waited for or not
        self.waited = 0  # requests whose decision waited for a /tokenize round trip
        self.wait_timeouts = 0  # ...of which the wait ended before the answer (which then went on in the background)
        self.derived = 0  # requests decided on a derived prefix (their /tokenize went to the background)
        self.skipped = 0  # background questions dropped: all slots busy and the queue full
        self._turn = 0
        self._session: aiohttp.ClientSession | None = None
        self._background: dict[tuple[str, bool, str], asyncio.Task[None]] = {}
        self._offsets = TokenOffsets()
        self._slots = asyncio.Semaphore(max_background)

    async def __aenter__(self) -> Tokenizer:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = list(self._background.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def prepare(self, request: LLMRequest) -> None:
        """Make sure the request's tokens are cached, or derivable, when it can be tokenized (never raises)."""
        question = tokenize_input(request)
        if question is None or self._session is None:
            return
        if self.cache.get(request.model, question.text, chat=question.chat) is not None:
            return
        if self.margin is not None and self.cache.derive(request.model, question, self.margin) is not None:
            self.derived += 1
            self._start_background(request.model, question)
        elif self.timeout_s == 0:
            self._start_background(request.model, question)
        else:
            self.waited += 1
            task = self._start_background(request.model, question, slot=False)
            if task is None:  # the background is full: ask within the wait only, as before
                await self._tokenize(request.model, question, self.timeout_s)
                return
            try:
                await asyncio.wait_for(asyncio.shield(task), self.timeout_s)
            except TimeoutError:
                self.wait_timeouts += 1  # decided without it; the answer still fills the cache for the next turn

    def in_background(self) -> int:
        """Background /tokenize calls in flight or waiting for a slot."""
        return len(self._background)

    async def settled(self) -> None:
        """Return once the background calls in flight now have ended (their answers cached, or failed)."""
        await asyncio.gather(*self._background.values(), return_exceptions=True)

    def _start_background(self, model: str, question: TokenizeInput, *, slot: bool = True) -> asyncio.Task[None] | None:
        """The background call for `question` (an existing one for the same question), None when none may start."""
        key = (model, question.chat, question.text)
        task = self._background.get(key)
        if task is not None:
            return task  # already asked: its answer will serve this request's repeats too
        if len(self._background) >= self.max_background * (1 + QUEUED_PER_SLOT):
            self.skipped += 1
            return None
        task = asyncio.create_task(self._tokenize_in_background(model, question, slot))
        self._background[key] = task
        task.add_done_callback(lambda _t: self._background.pop(key, None))
        return task

    async def _tokenize_in_background(self, model: str, question: TokenizeInput, slot: bool) -> None:
        """`_tokenize` where nobody may await the outcome: an unexpected error is logged here, not lost in the task."""
        try:
            async with self._slots if slot else contextlib.nullcontext():
                await self._tokenize(model, question, BACKGROUND_TIMEOUT_S)
        except Exception:
            self.failures += 1
            log.exception("background tokenize failed")

    async def _tokenize(self, model: str, question: TokenizeInput, timeout_s: float) -> None:
        servers = list(self.servers())
        body = question.body(model)
        with_strs = self.margin is not None and not question.chat  # token ends only serve text prompts
        if with_strs:
            body["return_token_strs"] = True
        for attempt in range(min(2, len(servers))):
            address = servers[(self._turn + attempt) % len(servers)]
            tokens, strs, retry = await self._ask(address, body, timeout_s)
            if tokens is not None:
                text = question.prefix_text if self.margin is not None else None
                ends = self._offsets.ends(text, strs) if text is not None and strs is not None else None
                self.cache.put(model, question.text, tokens, chat=question.chat, prefix_text=text, ends=ends)
            if not retry:
                break
        self._turn += 1

    async def _ask(
        self, address: str, body: dict[str, Any], timeout_s: float
    ) -> tuple[list[int] | None, list[str] | None, bool]:
        """(tokens or None, their strings when the server gave them, whether another server is worth asking: not
        after a timeout, which already cost)."""
        assert self._session is not None
        self.requests += 1
        try:
            timeout = aiohttp.ClientTimeout(total=timeout_s)
            async with self._session.post(f"http://{address}/tokenize", json=body, timeout=timeout) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                doc = await resp.json(content_type=None)
            tokens = doc.get("tokens") if isinstance(doc, dict) else None
            if not isinstance(tokens, list) or not _uint32_list(tokens):
                raise ValueError("answer has no 'tokens' list of non-negative 32-bit integers")
            strs = doc.get("token_strs")
            valid = isinstance(strs, list) and len(strs) == len(tokens) and set(map(type, strs)) <= {str}
            return tokens, strs if valid else None, False
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            self.failures += 1
            log.info("tokenize failed", extra={"endpoint": address, "error": f"{type(exc).__name__}: {exc}"})
            return None, None, not isinstance(exc, TimeoutError)
