"""The capacity ratios of the Envoy hop benchmark (loadtests/picker/envoy_hop.py): each taken within its run, then
the median over runs; the arms' order rotates from run to run."""

from __future__ import annotations

import math

import pytest

from loadtests.picker.envoy_hop import capacity_ratios, median_ratios, rotated


def _run(envoy: float, floor: float, picker: float, floor_cpu: float, picker_cpu: float) -> dict[str, dict]:
    return {
        "envoy-round-robin": {"req_per_s": envoy, "envoy_cpu_s_per_1000": 0.1},
        "picker-round-robin": {"req_per_s": floor, "decisions_per_cpu_s": floor_cpu},
        "picker": {"req_per_s": picker, "decisions_per_cpu_s": picker_cpu},
        "picker-tls": {"skipped": "not installed"},
    }


def test_ratios_within_one_run():
    ratios = capacity_ratios(_run(2000, 800, 400, 1000, 800))
    assert set(ratios) == {"envoy-round-robin", "picker-round-robin", "picker"}  # a skipped arm has none
    assert ratios["picker"] == {
        "req_per_s": 400,
        "vs_floor": 0.5,
        "vs_envoy": 0.2,
        "decisions_per_cpu_s": 800,
        "cpu_vs_floor": 0.8,
    }
    assert ratios["envoy-round-robin"]["decisions_per_cpu_s"] == pytest.approx(10_000)  # Envoy's own CPU
    assert ratios["picker-round-robin"]["vs_floor"] == 1


def test_missing_baselines_are_nan():
    ratios = capacity_ratios({"picker": {"req_per_s": 10.0}})
    assert all(math.isnan(ratios["picker"][k]) for k in ("vs_floor", "vs_envoy", "decisions_per_cpu_s"))


def test_median_of_within_run_ratios_not_ratio_of_medians():
    runs = [_run(2000, 800, 400, 1000, 800), _run(1000, 200, 300, 1000, 900), _run(3000, 1000, 900, 1000, 700)]
    medians = median_ratios(runs)
    # picker vs floor per run: 0.5, 1.5, 0.9 -> 0.9 (the ratio of median rates would be 400 / 800 = 0.5)
    assert medians["picker"]["vs_floor"] == pytest.approx(0.9)
    assert medians["picker"]["vs_envoy"] == pytest.approx(0.3)  # 0.2, 0.3, 0.3
    assert medians["picker"]["cpu_vs_floor"] == pytest.approx(0.8)  # 0.8, 0.9, 0.7


@pytest.mark.parametrize(
    ("run", "order"),
    [(0, ["a", "b", "c"]), (1, ["b", "c", "a"]), (2, ["c", "a", "b"]), (3, ["a", "b", "c"])],
)
def test_each_arm_comes_first_once_per_cycle(run: int, order: list[str]):
    assert rotated(["a", "b", "c"], run) == order
    assert rotated([], run) == []
