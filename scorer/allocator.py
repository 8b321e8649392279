"""Large freed memory goes back to the operating system at once (glibc's malloc), so the picker's RSS follows its
prefix index down as well as up.

Why it exists: the prefix index is a few big dict tables that Python reallocates whenever they resize. glibc serves
a block of 128 KiB or more with its own mmap and unmaps it when freed, but only until the first such block is
freed: the threshold then rises to that block's size (up to 32 MiB), so later tables come from the heap, and the
heap keeps the holes the freed ones leave. Measured (`make bench-index-memory`, 100 endpoints, 100k-token prompts),
that fragmentation added a third to the index's resident memory and kept growing at constant entries, past the
configured budget. Fixing the threshold at glibc's own default (`mallopt(M_MMAP_THRESHOLD, 128 KiB)`) turns the
dynamic adjustment off; the cost is a page fault per 4 KiB when a big table is first written, next to the copy
the resize already does.

Without glibc (musl, macOS) this does nothing and says so.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
DEFAULT_THRESHOLD = 128 * 1024


def return_large_frees_to_os(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes; True when the C library accepted it."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
