"""Finding free loopback ports for twins started by tests, demos and benchmarks."""

from __future__ import annotations

import contextlib
import random
import socket
from collections import deque
from collections.abc import Iterable


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


_HANDED_OUT: deque[int] = deque(maxlen=4096)  # ports this process was given lately, not to be given again


def free_port() -> int:
    """A free loopback port that this process has not been given lately: the kernel may return a port it just
    returned once its socket is closed, and two calls in a row (an Envoy's listener and admin ports) then collide
    (`Address already in use` at the child's start)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports: each socket stays bound until all are chosen, so the kernel cannot hand one out
    twice, and none this process was given lately."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(n + 64):  # a recent port comes back about once in 7 binds: 64 more is plenty
            if len(ports) == n:
                break
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if port not in _HANDED_OUT:  # a recent one stays bound here, so the next bind gets another
                ports.append(port)
        if len(ports) < n:
            raise RuntimeError(f"no {n} free loopback ports found")
        _HANDED_OUT.extend(ports)
        return ports


def find_base_port(n: int, offsets: Iterable[int] = (0, 1000, 2000), extra: Iterable[int] = (3000,)) -> int:
    """A base port P such that P+o+i is free for every offset o and i < n, and P+e for every extra e."""
    offs, ext = list(offsets), list(extra)
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 61000 - max(offs + ext + [0]) - n)
        ports = [base + o + i for o in offs for i in range(n)] + [base + e for e in ext]
        if all(port_free(p) for p in ports):
            return base
    raise RuntimeError("no free block of loopback ports found")


def find_loopback_hosts(n: int, offsets: Iterable[int] = (0, 1000, 2000, 3000)) -> tuple[list[str], int]:
    """n distinct loopback addresses 127.0.0.x (never 127.0.0.1) and one base port P such that P+o is free on each of
    them for every offset o: n servers that look like n pods (own IP, same port), as Kubernetes discovery sees them.
    Linux routes all of 127.0.0.0/8 to the loopback interface."""
    if not 1 <= n <= 200:
        raise ValueError(f"between 1 and 200 loopback hosts, got {n}")
    offs = list(offsets)
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(2, 255 - n)
        hosts = [f"127.0.0.{first + i}" for i in range(n)]
        base = rng.randrange(20000, 61000 - max([*offs, 0]))
        if all(port_free(base + o, h) for h in hosts for o in offs):
            return hosts, base
    raise RuntimeError("no port free on a block of loopback addresses")
