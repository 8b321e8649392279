"""Hypothesis profiles for the fuzz targets, and a per-target count of the cases run.

`ci` (the default, part of `make test`): a few hundred cases per target, derandomized so a run is reproducible,
well under a minute for the whole directory on a busy 2-core box. `long` (`make fuzz`): `FUZZ_EXAMPLES` cases per
target (default 100,000), random. Select with `HYPOTHESIS_PROFILE=long`. The terminal summary prints the cases each
target ran and its rate, which is where RELIABILITY.md's figures come from.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from fuzz_support import CASES
from hypothesis import HealthCheck, settings

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile(
    "ci", max_examples=300, derandomize=True, deadline=None, database=None, suppress_health_check=_SLOW_OK
)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100000")),
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_SLOW_OK,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_SECONDS: dict[str, float] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        _SECONDS[item.nodeid] = _SECONDS.get(item.nodeid, 0.0) + time.perf_counter() - started


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = [(nodeid, CASES[nodeid], _SECONDS.get(nodeid, 0.0)) for nodeid in sorted(CASES)]
    if not rows:
        return
    tr = terminalreporter
    tr.section(f"fuzz cases (at most {settings().max_examples} per target)")
    for nodeid, cases, seconds in rows:
        rate = cases / seconds if seconds else 0.0
        tr.write_line(f"{cases:>10,} cases {seconds:>9.1f} s {rate:>9,.0f} cases/s  {nodeid}")
    total, seconds = sum(c for _, c, _ in rows), sum(s for _, _, s in rows)
    tr.write_line(f"{total:>10,} cases {seconds:>9.1f} s {total / seconds if seconds else 0:>9,.0f} cases/s  total")
