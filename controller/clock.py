"""The controller's clock: "now" in the cluster's time, the time its object timestamps are written in.

Why it exists: the planner compares `now` with migration start and end timestamps (cooldowns, hysteresis, metric
lag), so `now` must run in the same time as the API server's objects. In a real cluster that is the wall clock.
The cluster twin can run faster than real time (`--time-scale`): its objects are stamped with its model time, so
the shell is given a clock that follows it (convention 6, time is injected). Prometheus sample ages and lease
expiry are real-time notions and are measured on the wall clock whatever this clock says.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix seconds, in the time the cluster's objects are stamped with."""
        ...


class WallClock:
    def now(self) -> float:
        return time.time()


class ScaledClock:
    """`scale` cluster seconds per real second, equal to `anchor` at the real instant `anchor_real`."""

    def __init__(self, scale: float, anchor: float, anchor_real: float | None = None) -> None:
        if scale <= 0:
            raise ValueError("time scale must be positive")
        self.scale, self.anchor = scale, anchor
        self._real0 = time.monotonic() if anchor_real is None else anchor_real

    def now(self) -> float:
        return self.anchor + (time.monotonic() - self._real0) * self.scale


class FunctionClock:
    """A clock read from a function (tests hand the twin's own clock in: `lambda: twin_clock.wall().timestamp()`)."""

    def __init__(self, fn: Callable[[], float]) -> None:
        self._fn = fn

    def now(self) -> float:
        return float(self._fn())
