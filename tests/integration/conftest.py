"""Fixtures that run real twin servers on loopback ports and stop them afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from harness.netutil import find_base_port
from sim.fleet.fleet import Fleet
from sim.fleet.profile import load_profile


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


# ---- ext_proc picker + real Envoy (helpers in envoy_fixture.py) ---------------------------------------------
from envoy_fixture import EchoUpstream, Stack, fleet_addresses, picker_and_envoy  # noqa: E402

from scorer.extproc.roundrobin import RoundRobinBackend  # noqa: E402


@pytest.fixture
async def echo_upstream() -> AsyncIterator[EchoUpstream]:
    """A loopback HTTP server that streams every request body back unchanged (byte-exactness checks)."""
    server = EchoUpstream()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def rr_envoy(fleet2: Fleet) -> AsyncIterator[Stack]:
    """fleet2 behind Envoy (FULL_DUPLEX_STREAMED, override_host routing) and the picker with a round-robin backend."""
    backend = RoundRobinBackend(fleet_addresses(fleet2))
    async with picker_and_envoy(backend, fleet_addresses(fleet2)) as stack:
        yield stack
