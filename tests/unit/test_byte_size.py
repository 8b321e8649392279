"""Byte sizes in Kubernetes notation (`256Mi`): accepted forms, refusals that say why, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scorer.byte_size import MAX_DIGITS, SUFFIXES, format_byte_size, parse_byte_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1048576", 1048576),
        ("256Mi", 256 * 2**20),
        ("1Gi", 2**30),
        ("3Ki", 3072),
        ("2Ti", 2 * 2**40),
        ("500M", 500_000_000),
        ("7k", 7000),
        ("1G", 10**9),
        ("  64Mi\n", 64 * 2**20),
        ("9" * MAX_DIGITS, int("9" * MAX_DIGITS)),
    ],
)
def test_accepted_forms(text: str, size: int):
    assert parse_byte_size(text) == size


@pytest.mark.parametrize(
    "text",
    ["", " ", "Mi", "1.5Gi", "1e9", "-1", "+5", "256MiB", "256mi", "1K", "1 Mi", "0x10", "١٢", "9" * (MAX_DIGITS + 1)],
)
def test_other_forms_are_refused_with_the_accepted_ones_named(text: str):
    with pytest.raises(ValueError, match=r"not a byte size.*Ki, Mi, Gi, Ti"):
        parse_byte_size(text)


@given(st.integers(min_value=0, max_value=2**50))
def test_formatting_then_parsing_is_the_identity(size: int):
    assert parse_byte_size(format_byte_size(size)) == size


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(SUFFIXES)))
def test_a_number_with_a_suffix_is_that_many_units(number: int, suffix: str):
    assert parse_byte_size(f"{number}{suffix}") == number * SUFFIXES[suffix]


@given(st.text(max_size=40))
def test_any_text_parses_to_a_non_negative_int_or_raises_value_error(text: str):
    try:
        size = parse_byte_size(text)
    except ValueError:
        return
    assert isinstance(size, int) and size >= 0
