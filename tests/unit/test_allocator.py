"""The allocator setting the picker applies at start: accepted by glibc, a no-op elsewhere, never an error."""

from __future__ import annotations

import platform

from scorer.allocator import DEFAULT_THRESHOLD, return_large_frees_to_os


def test_glibc_accepts_the_fixed_mmap_threshold_and_others_are_told_no():
    glibc = platform.libc_ver()[0] == "glibc"
    assert return_large_frees_to_os(DEFAULT_THRESHOLD * 2) is glibc
    assert return_large_frees_to_os() is glibc  # may be set again (tests start several pickers in one process)
