"""What a process holds, read from /proc: resident memory, open file descriptors, threads (Linux only).

Why it exists: a soak judges growth of the picker, the controller, Envoy and the twins from outside, as an operator's
node exporter would, without instrumenting them. Reading /proc costs a few system calls per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcStat:
    rss_mb: float
    fds: int
    threads: int


def read_proc(pid: int) -> ProcStat | None:
    """The process' RSS (VmRSS), open fds (entries of /proc/PID/fd) and threads; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rss_kb = int(fields.get("VmRSS", "0 kB").split()[0])
    return ProcStat(rss_mb=rss_kb / 1024, fds=fds, threads=int(fields["Threads"].strip()))


def children(pid: int) -> dict[int, str]:
    """The direct children of `pid`: their pids and command names."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found[int(entry)] = comm
    return found
