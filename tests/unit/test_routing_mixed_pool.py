"""loadtests/routing/mixed_pool.py: the heterogeneous pool is what it says, and a short replay runs both profiles."""

from __future__ import annotations

import pytest

from loadtests.routing import mixed_pool
from sim.fleet.profile import load_profile


def test_the_mig_slice_is_slower_and_smaller_and_its_hints_say_so() -> None:
    whole = load_profile()
    small = mixed_pool.mig_3g40gb(whole)
    assert small.step_time(512, 0.0, 0) > whole.step_time(512, 0.0, 0)
    assert small.num_gpu_blocks < whole.num_gpu_blocks
    members = mixed_pool.pool(1, 2)
    hints = [e.hints for e, _ in members]
    assert [h.total("multiprocessors") if h else None for h in hints] == [132, 60, 60]
    assert [p.name for _, p in members] == [whole.name, small.name, small.name]


@pytest.mark.skipif(not mixed_pool.TRACE.exists(), reason="trace not available")
def test_a_short_replay_prints_both_profiles_and_the_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    mixed_pool.main(["--minutes", "0.1", "--big", "1", "--small", "1"])
    out = capsys.readouterr().out
    assert "| default-config.yaml |" in out and "| dra-config.yaml |" in out
    assert "dra-config / default-config: TTFT p50" in out
