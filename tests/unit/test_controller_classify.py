"""The descheduler's classification, case by case (ref §2.2-2.3)."""

from __future__ import annotations

import pytest

from controller.classify import Thresholds, capacity_cap, classify, usage_percent


@pytest.mark.parametrize(
    ("score", "percent"),
    [(0.0, 0.0), (0.29, 28.0), (0.57, 56.0), (0.999, 99.0), (1.0, 100.0), (0.105, 10.0)],
)
def test_usage_is_the_score_truncated_to_an_integer_percent_with_float_rounding(score, percent):
    assert usage_percent(score) == percent


@pytest.mark.parametrize(("threshold", "cap"), [(22.4, 22), (29.0, 28), (10.0, 10), (100.0, 100)])
def test_capacity_cap_truncates_like_go(threshold, cap):
    assert capacity_cap(threshold) == cap


@pytest.mark.parametrize(
    ("usage", "unschedulable", "thresholds", "expected"),
    [
        pytest.param(
            {"a": 0, "b": 0, "c": 0, "d": 0, "e": 60},
            (),
            Thresholds(0, 10),
            (12.0, 12.0, 22.0, ("a", "b", "c", "d"), (), ("e",)),
            id="reference-worked-example",
        ),
        pytest.param(
            {"a": 10, "b": 20, "c": 30, "d": 40},
            (),
            Thresholds(10, 10),
            (25.0, 15.0, 35.0, ("a",), ("b", "c"), ("d",)),
            id="symmetric-deviation",
        ),
        pytest.param(
            {"a": 25, "b": 26, "c": 15, "d": 4},
            (),
            Thresholds(2.5, 7.5),
            (17.5, 15.0, 25.0, ("c", "d"), ("a",), ("b",)),
            id="under-inclusive-over-strict",
        ),
        pytest.param(
            {"a": 0, "b": 0, "c": 90},
            ("a",),
            Thresholds(0, 10),
            (30.0, 30.0, 40.0, ("b",), ("a",), ("c",)),
            id="unschedulable-never-under",
        ),
        pytest.param(
            {"a": 5, "b": 95, "c": 96},
            (),
            Thresholds(30, 30),
            (65.33333333333333, 35.33333333333333, 95.33333333333333, ("a",), ("b",), ("c",)),
            id="mean-not-rounded",
        ),
        pytest.param(
            {"a": 0, "b": 3},
            (),
            Thresholds(30, 100),
            (1.5, 0.0, 100.0, ("a",), ("b",), ()),
            id="clamped-to-0-and-100",
        ),
        pytest.param(
            {"a": 15, "b": 60, "c": 45},
            (),
            Thresholds(20, 50, use_deviation=False),
            (None, 20.0, 50.0, ("a",), ("c",), ("b",)),
            id="static-thresholds",
        ),
        pytest.param(
            {"a": 0, "x": 70, "b": 0, "y": 90, "z": 70},
            (),
            Thresholds(0, 10),
            (46.0, 46.0, 56.0, ("a", "b"), (), ("y", "x", "z")),
            id="over-sorted-by-usage-then-name",
        ),
    ],
)
def test_classification(usage, unschedulable, thresholds, expected):
    c = classify(usage, set(unschedulable), thresholds)
    assert (c.average, c.low, c.high, c.under, c.appropriate, c.over) == expected
    for name in usage:
        category = c.category(name)
        assert name in {"under": c.under, "appropriate": c.appropriate, "over": c.over}[category]
    assert c.category("unknown") == "excluded"
