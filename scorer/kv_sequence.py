"""What to do with the next KV-event batch of one publisher, judged by its sequence number alone.

Why it exists: the precise index is only exact if every batch of an endpoint is applied once, in order. vLLM
numbers each publisher's batches 0, 1, 2, ...; ZMQ delivers one publisher's live messages in order but may lose
some (PUB high-water mark, a subscriber that joined late), and a restarted server starts again at 0. This pure
core turns each sequence number into an action; the I/O shell (`scorer.sources.kv_events`) carries it out:

- `APPLY`: the next batch in order;
- `SKIP`: already applied (a live message that a replay had already delivered);
- `Gap(first, last)`: batches first..last are missing: ask the replay socket from `first`, apply what comes back
  in order, and if the replay does not start exactly at `first` (the buffer dropped them, or there is no replay
  socket) clear the endpoint and rebuild from what remains;
- `RESTART`: the publisher restarted: clear the endpoint and resynchronise from seq 0.

Live messages of one publisher arrive in increasing order, so a live seq at or below the previous *live* seq can
only mean a new publisher; one at or below the last *applied* seq but above the previous live one is a duplicate of
a replayed batch. After the subscriber's connection dropped and came back (`reconnected`), a publisher that kept
running continues above what was applied, so the first live seq at or below it also means a restart (this catches a
restart that happened before any live message was seen, e.g. right after the start-up replay).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Simple = Literal["apply", "skip", "restart"]
APPLY: Final[Simple] = "apply"
SKIP: Final[Simple] = "skip"
RESTART: Final[Simple] = "restart"


@dataclass(frozen=True)
class Gap:
    first: int
    last: int  # inclusive


Action = Simple | Gap


class SequenceTracker:
    def __init__(self) -> None:
        self.applied: int | None = None  # last sequence number applied (live or replayed)
        self.live: int | None = None  # last sequence number received live
        self._verify = False  # the connection came back: the next live seq tells whether the publisher restarted

    def on_live(self, seq: int) -> Action:
        """The action for a batch received live with this sequence number (does not mark it applied)."""
        if seq < 0:
            raise ValueError(f"sequence numbers are non-negative, got {seq}")
        previous_live, self.live = self.live, seq
        verify, self._verify = self._verify, False
        if previous_live is not None and seq <= previous_live:
            return RESTART
        if verify and self.applied is not None and seq <= self.applied:
            return RESTART
        expected = 0 if self.applied is None else self.applied + 1
        if seq < expected:
            return SKIP
        if seq > expected:
            return Gap(expected, seq - 1)
        return APPLY

    def applied_through(self, seq: int) -> None:
        """Batches up to `seq` are applied (a live one, or the last of a replay)."""
        self.applied = seq

    def reconnected(self) -> None:
        """The subscriber's connection to the publisher was lost and is back."""
        self._verify = True
        self.live = None

    def reset(self) -> None:
        """Forget everything (after a restart, before resynchronising from 0)."""
        self.applied = None
        self.live = None
        self._verify = False

    def next_wanted(self) -> int:
        return 0 if self.applied is None else self.applied + 1
