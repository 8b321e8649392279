"""Trace loading (validation with line numbers) and the ideal prefix-cache hit ratio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.fleet.trace import TraceFormatError, TraceRequest, hit_ratios, load_trace, oracle_hit_ratio

MOONCAKE = Path(__file__).resolve().parents[3] / "shared/data/traces/mooncake_conversation_first30min.jsonl"


@pytest.mark.skipif(not MOONCAKE.exists(), reason="shared Mooncake trace not present")
def test_load_real_trace_first_100_lines() -> None:
    reqs = load_trace(MOONCAKE, limit=100)
    assert len(reqs) == 100
    first = reqs[0]
    assert first == TraceRequest(0.0, 6758, 500, tuple(range(14)))
    for r in reqs:
        assert -(-r.input_length // 512) == len(r.hash_ids)
    assert [r.timestamp_s for r in reqs] == sorted(r.timestamp_s for r in reqs)


@pytest.mark.skipif(not MOONCAKE.exists(), reason="shared Mooncake trace not present")
def test_max_seconds() -> None:
    reqs = load_trace(MOONCAKE, max_seconds=5.0)
    assert reqs and all(r.timestamp_s < 5.0 for r in reqs)
    assert len(load_trace(MOONCAKE, max_seconds=5.0, limit=3)) == 3


GOOD = '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}'


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ("not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"input_length": 1, "output_length": 1, "hash_ids": [1]}', "missing 'timestamp'"),
        ('{"timestamp": -1, "input_length": 1, "output_length": 1, "hash_ids": [1]}', "timestamp"),
        ('{"timestamp": "0", "input_length": 1, "output_length": 1, "hash_ids": [1]}', "timestamp"),
        ('{"timestamp": 5, "output_length": 1, "hash_ids": [1]}', "missing 'input_length'"),
        ('{"timestamp": 5, "input_length": 1.5, "output_length": 1, "hash_ids": [1]}', "input_length"),
        ('{"timestamp": 5, "input_length": 1, "output_length": -2, "hash_ids": [1]}', "output_length"),
        ('{"timestamp": 5, "input_length": 1, "output_length": true, "hash_ids": [1]}', "output_length"),
        ('{"timestamp": 5, "input_length": 1, "output_length": 1}', "missing 'hash_ids'"),
        ('{"timestamp": 5, "input_length": 1, "output_length": 1, "hash_ids": 3}', "must be a list"),
        ('{"timestamp": 5, "input_length": 1, "output_length": 1, "hash_ids": [1, "a"]}', r"hash_ids\[1\]"),
        ('{"timestamp": 5, "input_length": 9, "output_length": 1, "hash_ids": []}', "empty"),
        ("", "blank line"),
    ],
)
def test_malformed_line_reports_line_number(tmp_path: Path, bad_line: str, match: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(f"{GOOD}\n{GOOD}\n{bad_line}\n{GOOD}\n")
    with pytest.raises(TraceFormatError, match=rf":3: .*{match}"):
        load_trace(path)


def test_timestamps_going_back_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    later = GOOD.replace('"timestamp": 0', '"timestamp": 10')
    path.write_text(f"{later}\n{GOOD}\n")
    with pytest.raises(TraceFormatError, match=r":2: .*before"):
        load_trace(path)


def test_limit_stops_before_a_later_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(f"{GOOD}\nbroken\n")
    assert len(load_trace(path, limit=1)) == 1
    with pytest.raises(TraceFormatError, match=":2:"):
        load_trace(path)


def req(input_length: int, *hash_ids: int) -> TraceRequest:
    return TraceRequest(0.0, input_length, 1, tuple(hash_ids))


def test_oracle_hit_ratio_hand_computed() -> None:
    # Block size 4. Tokens per request: 10, 8, 6, 4, 8 = 36 total.
    reqs = [
        req(10, 1, 2, 3),  # blocks of 4, 4, 2 tokens; all new
        req(8, 1, 2),  # [1] and [1, 2] seen: 4 + 4 hit
        req(6, 1, 5),  # [1] hit (4); [1, 5] new
        req(4, 9),  # new
        req(8, 2, 3),  # ids 2 and 3 were seen, but not as the prefix [2] / [2, 3]: 0 prefix hits
    ]
    r = hit_ratios(reqs, block_tokens=4)
    assert r.total_tokens == 36
    assert r.total_blocks == 10
    assert r.prefix_token_ratio == pytest.approx(12 / 36)
    assert r.prefix_block_ratio == pytest.approx(3 / 10)
    # "Seen anywhere": req 2 both blocks, req 3 block 1, req 5 both blocks (4 + 4 tokens).
    assert r.seen_block_ratio == pytest.approx(5 / 10)
    assert r.seen_token_ratio == pytest.approx(20 / 36)
    assert oracle_hit_ratio(reqs, block_tokens=4) == pytest.approx(12 / 36)


def test_oracle_partial_and_overlong_requests() -> None:
    reqs = [
        req(8, 1, 2),
        req(5, 1, 2),  # block [1, 2] holds 1 token here: hits 4 + 1
        req(12, 1, 2),  # 8 tokens hit; 4 tokens past the ids are misses
        req(3, 7, 8),  # id 8 holds no token: not counted
    ]
    r = hit_ratios(reqs, block_tokens=4)
    assert r.total_tokens == 28
    assert r.total_blocks == 2 + 2 + 2 + 1
    assert r.prefix_token_ratio == pytest.approx(13 / 28)


def test_oracle_empty() -> None:
    assert oracle_hit_ratio([]) == 0.0


@pytest.mark.skipif(not MOONCAKE.exists(), reason="shared Mooncake trace not present")
def test_real_trace_ratio_close_to_readme() -> None:
    r = hit_ratios(load_trace(MOONCAKE))
    # Whole trace: 36.6% of blocks seen earlier (README); the first 30 minutes start cold, so somewhat lower.
    assert 0.30 < r.seen_block_ratio < 0.366
    assert r.prefix_block_ratio <= r.seen_block_ratio


def test_json_dump_round_trip(tmp_path: Path) -> None:
    rows = [{"timestamp": 1500, "input_length": 3, "output_length": 2, "hash_ids": [4], "extra": "ignored"}]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_trace(path) == [TraceRequest(1.5, 3, 2, (4,))]
