"""The live-migration duration and convergence model of the cluster twin."""

from __future__ import annotations

import pytest

from sim.cluster.migration_model import GIB, MIB, MigrationParams, link_share, simulate

DEFAULT = MigrationParams()


@pytest.mark.parametrize(
    ("memory", "dirty", "bandwidth", "params", "succeeded", "mode"),
    [
        (4 * GIB, 0, GIB, DEFAULT, True, "PreCopy"),
        (8 * GIB, 64 * MIB, GIB, DEFAULT, True, "PreCopy"),
        (8 * GIB, 900 * MIB, GIB, DEFAULT, True, "PreCopy"),  # slow geometric convergence, within 150 s/GiB
        (8 * GIB, 2 * GIB, GIB, DEFAULT, False, "PreCopy"),  # dirtying faster than the link: never converges
        (8 * GIB, 2 * GIB, GIB, MigrationParams(allow_post_copy=True), True, "PostCopy"),
        (8 * GIB, 1100 * MIB, GIB, MigrationParams(allow_auto_converge=True), True, "PreCopy"),  # throttling helps
        (64 * GIB, 0, 64 * MIB, DEFAULT, True, "PreCopy"),  # 1024 s, within 64 GiB x 150 s
        (GIB, 0, 4 * MIB, DEFAULT, False, "PreCopy"),  # 256 s > completion timeout 150 s for 1 GiB
    ],
)
def test_outcomes(
    memory: int, dirty: float, bandwidth: float, params: MigrationParams, succeeded: bool, mode: str
) -> None:
    out = simulate(memory, dirty, bandwidth, params)
    assert (out.succeeded, out.mode) == (succeeded, mode)
    assert out.duration_s > 0
    if succeeded and mode == "PreCopy":
        assert out.downtime_ms <= params.max_downtime_ms
    if not succeeded:
        assert out.failure_reason and "did not converge" in out.failure_reason


def test_idle_vm_takes_memory_over_bandwidth() -> None:
    out = simulate(4 * GIB, 0, GIB, DEFAULT)
    assert out.duration_s == pytest.approx(4.0)
    assert out.rounds == 1 and out.transferred_bytes == 4 * GIB


def test_dirty_pages_add_rounds_and_time() -> None:
    idle, busy = simulate(8 * GIB, 0, GIB, DEFAULT), simulate(8 * GIB, 512 * MIB, GIB, DEFAULT)
    assert busy.rounds > idle.rounds and busy.duration_s > idle.duration_s
    assert busy.transferred_bytes > idle.transferred_bytes
    # geometric series: 8 s x (1 + 1/2 + 1/4 + ...) stays below 16 s
    assert busy.duration_s < 16.0


def test_completion_timeout_scales_with_memory() -> None:
    tight = MigrationParams(completion_timeout_per_gib=1.0)
    assert not simulate(4 * GIB, 0, GIB / 2, tight).succeeded  # needs 8 s, allowed 4 s
    assert simulate(4 * GIB, 0, GIB, MigrationParams(completion_timeout_per_gib=2.0)).succeeded


def test_non_convergence_aborts_after_progress_timeout() -> None:
    out = simulate(8 * GIB, 2 * GIB, GIB, MigrationParams(progress_timeout=30))
    assert not out.succeeded and out.duration_s < 8 * 150


@pytest.mark.parametrize(
    ("outbound", "inbound", "cap", "expected"),
    [(1, 1, 0.0, GIB), (2, 1, 0.0, GIB / 2), (1, 4, 0.0, GIB / 4), (1, 1, 64 * MIB, 64 * MIB), (2, 2, GIB, GIB / 2)],
)
def test_link_share(outbound: int, inbound: int, cap: float, expected: float) -> None:
    assert link_share(GIB, outbound, inbound, cap) == expected


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        simulate(0, 0, GIB, DEFAULT)
