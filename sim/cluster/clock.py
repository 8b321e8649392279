"""Model time for the cluster twin: a clock that runs `time_scale` model seconds per real second.

Why it exists: live migrations take minutes and load traces span days; tests and demos must see them in
seconds. Everything in the twin that depends on time (migration progress, object timestamps, backoffs) asks
a `Clock`, never `time` directly, so tests can also drive a `ManualClock` by hand. Which clock each timestamp
uses is documented in docs/cluster-twin.md, "Time".
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    time_scale: float

    def now(self) -> float:
        """Model seconds since the twin started."""
        ...

    def wall(self) -> datetime:
        """The model instant as a UTC datetime, for object timestamps: the wall clock at time scale 1, running
        `time_scale` times as fast from the start otherwise."""
        ...

    def real_delay(self, model_seconds: float) -> float:
        """Real seconds to wait for `model_seconds` of model time to pass."""
        ...


class ScaledClock:
    """Model time runs `time_scale` times as fast as real time, from 0 at construction.

    `wall()` is the system's wall clock plus the model time gained on it, `(time_scale - 1) x real seconds
    elapsed`. At time scale 1 it is exactly the wall clock (`time.time()`), so timestamps are what a client on
    the wall clock expects: never in its future, whatever the twin's uptime or clock steps. Above 1 the model
    instant runs ahead of the wall clock, so that durations between timestamps are model durations. With an
    explicit `start` (tests) it is `start + now()`.
    """

    def __init__(self, time_scale: float = 1.0, *, start: datetime | None = None) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self._t0 = time.monotonic()
        self._start = start

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.time_scale

    def wall(self) -> datetime:
        if self._start is not None:
            return self._start + timedelta(seconds=self.now())
        gained = (self.time_scale - 1.0) * (time.monotonic() - self._t0)
        return datetime.fromtimestamp(time.time() + gained, UTC)

    def real_delay(self, model_seconds: float) -> float:
        return max(0.0, model_seconds / self.time_scale)


class ManualClock:
    """A clock that only moves when told to (unit tests of the pure models)."""

    def __init__(self, start_s: float = 0.0, *, time_scale: float = 1.0) -> None:
        self.time_scale = time_scale
        self._now = start_s
        self._start = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def wall(self) -> datetime:
        return self._start + timedelta(seconds=self._now)

    def real_delay(self, model_seconds: float) -> float:
        return 0.0


def rfc3339(dt: datetime) -> str:
    """Kubernetes' metav1.Time wire format (second precision, Z suffix)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(dt: datetime) -> str:
    """metav1.MicroTime wire format (Events' eventTime, Leases' renewTime)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
