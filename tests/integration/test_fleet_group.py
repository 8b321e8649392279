"""The routing benchmark's fleet of one-server processes: a port taken between choosing and binding is retried."""

from __future__ import annotations

import socket

import pytest

from harness.netutil import find_base_port
from loadtests.routing.fleet_group import FleetGroup
from sim.fleet.process import FleetStartError


async def test_a_port_taken_before_the_server_binds_it_is_retried_on_fresh_ports():
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    offered: list[list[int]] = []

    def choose(n: int) -> list[int]:
        bases = [taken] if not offered else [find_base_port(1)]
        offered.append(bases)
        return bases

    try:
        async with FleetGroup(1, time_scale=100.0, choose_bases=choose) as group:
            assert group.port_retries == 1
            assert group.urls == [f"http://127.0.0.1:{offered[1][0]}"]
    finally:
        squatter.close()


async def test_a_port_that_stays_taken_fails_after_the_last_attempt():
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    calls: list[int] = []

    def choose(n: int) -> list[int]:
        calls.append(n)
        return [taken]

    try:
        with pytest.raises(FleetStartError, match="address already in use"):
            await FleetGroup(1, time_scale=100.0, start_attempts=2, choose_bases=choose).start()
        assert len(calls) == 2  # retried once, then the last failure is raised
    finally:
        squatter.close()
