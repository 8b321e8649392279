"""Scrape faults that answer 200 with bad data: what a broken node-exporter, a buggy relabelling or a stuck
federation hands Prometheus, as opposed to the gaps ("error", "stall") that make a node's series disappear.

Why it exists: a controller must refuse values it cannot trust (NaN, a PSI fraction above 1, samples that stopped
advancing) and say so, and the only honest way to test that is to have Prometheus scrape them. The exporter passes
each node's body through `corrupt` while its fault is one of `VALUE_MODES`:

- "nan": every `node_pressure_*` sample is NaN (rate() of it is NaN);
- "inflate": every `node_pressure_*` counter is multiplied by `INFLATE` (rate() of it exceeds 1 on a busy node);
- "frozen": the body of the first faulty scrape is served again and again with that scrape's time as an explicit
  timestamp on every sample; Prometheus keeps the old samples (no staleness marker for explicit timestamps), so
  `timestamp(...)` ages while the values stay queryable within the lookback.
"""

from __future__ import annotations

VALUE_MODES = ("nan", "inflate", "frozen")
INFLATE = 100.0
PRESSURE_PREFIX = "node_pressure_"


def _samples(body: str) -> list[tuple[str, str | None]]:
    """(line, value) per line; value None for comments and blank lines."""
    out: list[tuple[str, str | None]] = []
    for line in body.splitlines():
        if not line or line.startswith("#"):
            out.append((line, None))
        else:
            out.append((line, line.rsplit(" ", 1)[1]))
    return out


def corrupt(body: str, mode: str) -> str:
    """The body with its pressure values made NaN ("nan") or inflated ("inflate")."""
    if mode not in ("nan", "inflate"):
        raise ValueError(f"corrupt: unknown mode {mode!r}")
    lines = []
    for line, value in _samples(body):
        if value is not None and line.startswith(PRESSURE_PREFIX):
            head = line.rsplit(" ", 1)[0]
            line = f"{head} NaN" if mode == "nan" else f"{head} {float(value) * INFLATE!r}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def freeze(body: str, at_ms: int) -> str:
    """The body with every sample stamped `at_ms` (milliseconds since the epoch)."""
    lines = [line if value is None else f"{line} {at_ms}" for line, value in _samples(body)]
    return "\n".join(lines) + "\n"
