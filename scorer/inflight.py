"""The requests the picker has sent and not yet heard the end of, with a time-to-live so none is counted forever.

Why it exists: in-flight counts are the freshest load signal a picker has (scrapes lag), but they are only as good
as their bookkeeping: every pick must be released exactly once, whatever happens to the response. A response can be
lost (the proxy dies, a stream is reset without a trailer), so entries older than the TTL are expired and their
charge released; a second completion of the same request finds nothing and does nothing.

What an entry keeps is small and fixed: the request without its prompt, chat messages or token ids (the response
hooks read none of them; the prefix-cache scorer keeps a copy of the block hashes it needs, within a budget).
Otherwise memory grows with responses in flight times prompt length, which no budget bounds: an outstanding
100k-token request held 393 KB (completions), 785 KB (chat) and 4.5 MB (token ids) when entries kept the whole
request, 50-64 KB since (`python -m loadtests.picker.inflight_memory`, BENCHMARKS.md).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from scorer.types import EndpointState, LLMRequest


@dataclass(frozen=True)
class InFlight:
    """One request in flight: what was sent, to which endpoint's counters it is charged, and since when."""

    request: LLMRequest  # without its prompt (`LLMRequest.without_prompt`): entries live as long as responses do
    target: EndpointState  # the endpoint whose counters carry the charge (the primary at pick time)
    tokens: int
    started_at: float

    @property
    def address(self) -> str:
        return self.target.address


class InFlightTable:
    def __init__(self, ttl_s: float):
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, InFlight] = OrderedDict()  # oldest first (the clock is monotonic)

    def add(self, entry: InFlight) -> InFlight | None:
        """Track a request; returns the entry it replaces if the same request id was already in flight."""
        previous = self._entries.pop(entry.request.request_id, None)
        self._entries[entry.request.request_id] = entry
        return previous

    def pop(self, request_id: str) -> InFlight | None:
        """Stop tracking a request (its response ended); None when unknown or already done."""
        return self._entries.pop(request_id, None)

    def expire(self, now: float) -> list[InFlight]:
        """Remove and return the entries older than the TTL."""
        expired: list[InFlight] = []
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if now - oldest.started_at <= self.ttl_s:
                break
            expired.append(entries.popitem(last=False)[1])
        return expired

    def get(self, request_id: str) -> InFlight | None:
        return self._entries.get(request_id)

    def __len__(self) -> int:
        return len(self._entries)
