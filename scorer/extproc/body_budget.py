"""The request-body bytes all ext_proc streams of one picker may hold at once.

Why it exists: in FULL_DUPLEX_STREAMED (and BUFFERED) mode the picker keeps each request body until it is complete,
since the decision needs the whole prompt. `max_body_bytes` bounds one body (413 beyond it); nothing bounded their
sum, so many large bodies arriving together (a burst of long-context requests, or clients that send slowly and hold
their bytes for as long as Envoy's message timeout allows) grew the process past its memory limit, and the kernel's
OOM kill then failed every request in flight. Over the budget a body is shed with 429 (the gateway's "try again
later", as GIE sheds a sheddable request), not held: the budget is shared by all streams of the process, one of
`autonomic picker --workers N` each having its own.

What counts is what the exchanges keep between messages (the bytes appended to their buffers), taken when a chunk
arrives and given back when the body leaves the buffer (at the decision, at a rejection, at the stream's end). The
copies a decision makes for a moment (the body as bytes, the parsed prompt, the chunks streamed back: about three
times the body, for milliseconds) are not counted: they exist only while a decision runs, one at a time per
process.
"""

from __future__ import annotations

MAX_BODY_BYTES = 32 * 1024 * 1024  # one body: ~8M tokens of text, or a few large images in base64, beyond any context
MAX_BUFFERED_BODY_BYTES = 256 * 1024 * 1024  # 8 bodies at the 32 MiB limit, ~1,000 at 256 KB (64k tokens)


class BodyBudget:
    """A counter of bytes held, refused past `limit`. Single-threaded: every stream runs on the picker's one loop."""

    def __init__(self, limit: int = MAX_BUFFERED_BODY_BYTES):
        if limit < 1:
            raise ValueError(f"the buffered body budget must be >= 1 byte, got {limit}")
        self.limit = limit
        self.held = 0
        self.refused = 0  # bodies shed because the budget was spent

    def take(self, size: int) -> bool:
        """Hold `size` more bytes if the budget allows it; False (nothing taken) if it does not."""
        if self.held + size > self.limit:
            self.refused += 1
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held = max(0, self.held - size)
