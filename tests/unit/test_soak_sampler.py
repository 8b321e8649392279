"""The soak's /proc sampler: open fds split into live TCP connections and the rest, read from this very process."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from loadtests.soak.report import goals_met, growth
from loadtests.soak.sampler import live_tcp_inodes, read_proc


def _stat():
    stat = read_proc(os.getpid(), live_tcp_inodes())
    assert stat is not None
    return stat


@contextmanager
def _connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A listening socket and one loopback connection through it, both ends in this process."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        try:
            yield client, server
        finally:
            client.close()
            server.close()


def test_live_connections_are_counted_apart_from_other_fds():
    before = _stat()
    with _connection():
        during = _stat()
        # both ends of the connection live in this process; the listening socket is not a connection
        assert during.connections - before.connections == 2
        assert during.fds - before.fds == 3
        assert during.held_fds - before.held_fds == 1
    after = _stat()
    assert (after.connections, after.fds) == (before.connections, before.fds)


def test_a_half_closed_connection_is_held_not_live():
    """The peer closed and this side did not: CLOSE_WAIT, what a leaked connection looks like, counts as held."""
    with _connection() as (client, _server):
        before = _stat()
        client.close()
        while _stat().connections == before.connections:  # the FIN arrives
            pass
        after = _stat()
        # the client's fd is gone, the server's socket is in CLOSE_WAIT: no longer live, still open
        assert (after.connections, after.fds) == (before.connections - 2, before.fds - 1)
        assert after.held_fds == before.held_fds + 1


def test_without_the_connection_table_every_fd_is_held():
    stat = read_proc(os.getpid())
    assert stat is not None and stat.connections == 0 and stat.held_fds == stat.fds


def test_a_process_that_is_gone_reads_as_none():
    assert read_proc(2**22 + 12345) is None


def _samples(held: list[int], warmup_s: float = 0.0) -> list[dict]:
    return [
        {
            "t_s": float(i),
            "processes": {"p": {"rss_mb": 100.0, "fds": h + 5, "held_fds": h, "connections": 5, "threads": 4}},
        }
        for i, h in enumerate(held)
    ]


@pytest.mark.parametrize(
    ("held", "met"),
    [
        ([7, 7, 7, 7, 7, 7, 8], True),  # one fd open at the last sampling instant: not growth
        ([7, 8, 7, 7, 7, 7, 7], True),
        ([7, 7, 7, 8, 8, 8, 8], False),  # a step that stays: 7 -> 8 is +14%
        ([10, 10, 10, 11, 12, 13, 14], False),  # a leak grows in every sample
        ([20, 20, 20, 21, 21, 21, 21], True),  # +5%
    ],
)
def test_growth_is_judged_on_medians_of_the_first_and_last_samples(held: list[int], met: bool):
    grown = growth(_samples(held), warmup_s=0.0)
    assert goals_met(grown) is met, grown["p"]["held_fds"]


def test_a_process_group_s_cpu_is_the_sum_of_its_live_members():
    """Two busy processes in one new process group (a parent and the child it spawned): the group's CPU counts both,
    more than the parent's own; a group with no live process reads as None."""
    import subprocess
    import sys
    import time

    from loadtests.soak.sampler import cpu_seconds, group_cpu_seconds

    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ntime.sleep(60)"
    parent = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {spin!r}])\nexec({spin!r})"
    proc = subprocess.Popen([sys.executable, "-c", parent], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        total = None
        while time.monotonic() < deadline:  # both have spun their 0.3 s
            total, own = group_cpu_seconds(proc.pid), cpu_seconds(proc.pid)
            if total is not None and own is not None and own >= 0.3 and total >= own + 0.3:
                break
            time.sleep(0.05)
        assert total is not None and own is not None and total >= own + 0.3
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    deadline = time.monotonic() + 10
    while group_cpu_seconds(proc.pid) is not None and time.monotonic() < deadline:  # the child is reaped by init
        time.sleep(0.05)
    assert group_cpu_seconds(proc.pid) is None
