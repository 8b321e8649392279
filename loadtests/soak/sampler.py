"""What a process holds, read from /proc: resident memory, open file descriptors, threads (Linux only).

Why it exists: a soak judges growth of the picker, the controller, Envoy and the twins from outside, as an operator's
node exporter would, without instrumenting them. Reading /proc costs a few system calls per process.

Open fds are split into live TCP connections (in /proc/net/tcp{,6}: opening, established or closing) and the rest.
Keep-alive pools hold as many live connections as requests were once in flight at the same time, so their count
follows the client's concurrency (which rises whenever the machine slows), not time. What a leak leaves behind is
in the rest: files, pipes, event fds, listening sockets, and sockets whose peer has gone (CLOSE_WAIT) but that were
never closed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# the `st` column of /proc/net/tcp (include/net/tcp_states.h): a socket that is listening, was never connected
# (CLOSE) or whose peer has gone while it stays open (CLOSE_WAIT, the leak's signature) is held; every other state
# is a connection being made, in use or being closed
_NOT_LIVE = {"07", "08", "0A"}  # CLOSE, CLOSE_WAIT, LISTEN


@dataclass(frozen=True)
class ProcStat:
    rss_mb: float
    fds: int
    threads: int
    connections: int = 0  # of the fds, live TCP connections (opening, established or closing)

    @property
    def held_fds(self) -> int:
        """Open fds other than live TCP connections: where a leak shows."""
        return self.fds - self.connections


def live_tcp_inodes(tables: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")) -> set[int]:
    """Socket inodes of every live TCP connection (see _NOT_LIVE) in this network namespace."""
    found: set[int] = set()
    for table in tables:
        try:
            with open(table) as f:
                next(f, None)  # header
                for line in f:
                    cols = line.split()
                    if len(cols) > 9 and cols[3] not in _NOT_LIVE:
                        found.add(int(cols[9]))
        except FileNotFoundError:
            continue
    return found


def read_proc(pid: int, established: set[int] | None = None) -> ProcStat | None:
    """The process' RSS (VmRSS), open fds (entries of /proc/PID/fd), threads and, of its fds, the live TCP
    connections among `established` (from `live_tcp_inodes()`, read once per sample); None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        fd_dir = f"/proc/{pid}/fd"
        entries = os.listdir(fd_dir)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    connections = 0
    if established:
        for entry in entries:
            try:
                target = os.readlink(f"{fd_dir}/{entry}")
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in established:
                connections += 1
    rss_kb = int(fields.get("VmRSS", "0 kB").split()[0])
    threads = int(fields["Threads"].strip())
    return ProcStat(rss_mb=rss_kb / 1024, fds=len(entries), threads=threads, connections=connections)


def _stat(pid: int | str) -> tuple[str, list[str]] | None:
    """A process's /proc stat: its command name and the fields after it (state, ppid, pgrp, ...); None if gone.
    The name may hold spaces and parentheses, so the fields start after the last ')'."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()


def _cpu(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _processes() -> list[tuple[int, str, list[str]]]:
    """Every live process: (pid, command name, stat fields)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(entry)) is not None:
            found.append((int(entry), *stat))
    return found


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds the process has used so far; None if it is gone or unknown."""
    stat = _stat(pid) if pid is not None else None
    return _cpu(stat[1]) if stat is not None else None


def group_cpu_seconds(pgid: int | None) -> float | None:
    """User + system CPU seconds used so far by the live processes of process group `pgid` (a router that spawns
    workers); None if no process of the group is left."""
    members = [_cpu(fields) for _, _, fields in _processes() if int(fields[2]) == pgid] if pgid is not None else []
    return sum(members) if members else None


def children(pid: int) -> dict[int, str]:
    """The direct children of `pid`: their pids and command names."""
    return {child: comm for child, comm, fields in _processes() if int(fields[1]) == pid}
