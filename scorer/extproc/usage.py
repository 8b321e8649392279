"""Reading OpenAI `usage` out of a response body as it streams past the picker.

Why it exists: the picker learns from each answer (prompt tokens, cached tokens, completion tokens) without
holding the response back. In FULL_DUPLEX_STREAMED mode every chunk is echoed to Envoy at once and also fed
here; SSE chunks can split a `data:` line anywhere, so lines are reassembled, and only lines that mention
`"usage"` are decoded (vLLM puts usage in the last chunk, or in every chunk with `continuous_usage_stats`).
A non-streaming body is kept (up to a limit) and decoded at the end.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from scorer.framework import Usage

MAX_BUFFER = 16 * 1024 * 1024  # a JSON body or one SSE line larger than this is not inspected for usage


def usage_from_dict(raw: Any) -> Usage | None:
    """`usage` as OpenAI/vLLM write it; None when absent or not an object."""
    if not isinstance(raw, Mapping):
        return None
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    return Usage(
        prompt_tokens=_count(raw.get("prompt_tokens")),
        completion_tokens=_count(raw.get("completion_tokens")),
        cached_tokens=_count(cached),
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class UsageReader:
    """Feed it every response body chunk in order, then call `usage()`; it never raises on bad input."""

    def __init__(self, *, streaming: bool, limit: int = MAX_BUFFER):
        self.streaming = streaming
        self.limit = limit
        self._buf = bytearray()
        self._overflow = False
        self._usage: Usage | None = None

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._overflow:  # a body or SSE line was too long: skip it (for SSE, resume at the next line)
            cut = chunk.find(b"\n") if self.streaming else -1
            if cut < 0:
                return
            self._overflow = False
            chunk = chunk[cut + 1 :]
        self._buf += chunk
        if self.streaming:
            self._drain_lines()
        if len(self._buf) > self.limit:
            self._overflow = True
            self._buf.clear()

    def _drain_lines(self) -> None:
        end = self._buf.rfind(b"\n")
        if end < 0:
            return
        complete = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        for line in complete.splitlines():
            self._sse_line(line)

    def _sse_line(self, line: bytes) -> None:
        if not line.startswith(b"data:") or b'"usage"' not in line:
            return
        doc = _json(line[5:].strip())
        if isinstance(doc, dict):
            found = usage_from_dict(doc.get("usage"))
            if found is not None:
                self._usage = found

    def usage(self) -> Usage | None:
        """The last usage seen (streaming) or the body's usage (non-streaming)."""
        if self.streaming:
            if self._buf and not self._overflow:  # a final line without its newline
                self._sse_line(bytes(self._buf))
                self._buf.clear()
            return self._usage
        if self._usage is None and self._buf and not self._overflow:
            doc = _json(bytes(self._buf))
            if isinstance(doc, dict):
                self._usage = usage_from_dict(doc.get("usage"))
        return self._usage


def _json(data: bytes) -> Any:
    """The decoded document, or None for anything that is not JSON: a model server's body is not ours to trust."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # bad JSON or UTF-8, an over-long integer, a nesting bomb
        return None
