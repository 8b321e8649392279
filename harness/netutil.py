"""Finding free loopback ports for twins started by tests, demos and benchmarks."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
