"""`python -m loadtests.picker.inflight_memory`: its bodies parse as the kind they stand for, bad arguments are
refused before anything runs, and a small run reports every kind against its baseline."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from loadtests.picker.inflight_memory import KINDS, body, main
from scorer.request_parser import parse_request


@pytest.mark.parametrize(
    ("kind", "path"),
    [("completions", "/v1/completions"), ("chat", "/v1/chat/completions"), ("token-ids", "/v1/completions")],
)
def test_each_body_parses_as_its_kind_with_about_the_tokens_asked(kind: str, path: str):
    rng = random.Random(1)
    first, second = body(kind, 1000, rng), body(kind, 1000, rng)
    request = parse_request(path, {}, first, "r")
    assert first != second  # distinct: no shared prefix between requests
    if kind == "token-ids":
        assert request.prompt_token_ids is not None and len(request.prompt_token_ids) == 1000
    else:
        assert 3900 <= len(request.prompt) <= 4200  # ~4 characters a token (a chat adds its roles)
        assert (request.chat_fields is not None) == (kind == "chat")


@pytest.mark.parametrize("argv", [["--kinds", "images"], ["--in-flight", "0"], ["--tokens", "0"], ["--kinds", ","]])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "--kinds from completions,chat,token-ids" in capsys.readouterr().err


def test_a_small_run_reports_every_kind_against_its_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "inflight.json"
    main(["--endpoints", "4", "--tokens", "2000", "--in-flight", "20", "--json", str(out)])
    rows = json.loads(out.read_text())["kinds"]
    assert [r["kind"] for r in rows] == list(KINDS)
    for r in rows:
        assert r["in_flight"] == 20 and r["body_bytes_mean"] > 8000
        assert r["bytes_per_request"] == (r["held_growth_bytes"] - r["ended_growth_bytes"]) / 20
    table = capsys.readouterr().out
    assert table.count("| completions |") == 1 and "KB per response outstanding" in table
