"""Fixtures that run real twin servers on loopback ports and stop them afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sim.fleet.fleet import Fleet
from sim.fleet.profile import load_profile
from sim.netutil import find_base_port


@pytest.fixture
async def fleet2() -> AsyncIterator[Fleet]:
    """Two small, fast servers: 512 blocks of 16 tokens, 1000x time scale."""
    profile = load_profile(num_gpu_blocks=512, max_loras=2)
    fleet = Fleet(
        servers=2,
        base_port=find_base_port(2),
        profile=profile,
        time_scale=1000.0,
        lora_names=("sql-adapter",),
    )
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()
