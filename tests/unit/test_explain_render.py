"""`autonomic picker explain` prints the plugins' notes of the cycle under the choice (e.g. where tokens came from)."""

from __future__ import annotations

from proto.autonomic.picker.v1 import picker_pb2 as pb
from scorer.explain_cli import render


def test_notes_are_printed_after_the_reason_in_key_order():
    answer = pb.ExplainResponse(profile="precise", prompt_tokens=1000, targets=["10.0.0.1:8000"], reason="max score")
    answer.notes.update({"precise-prefix-cache-scorer.tokens": "derived", "a.b": "c"})
    lines = render(answer).splitlines()
    assert lines[1:5] == [
        "choice: 10.0.0.1:8000 (fallbacks: none)",
        "reason: max score",
        "a.b: c",
        "precise-prefix-cache-scorer.tokens: derived",
    ]


def test_no_notes_no_lines():
    answer = pb.ExplainResponse(profile="default", targets=["10.0.0.1:8000"], reason="max score")
    assert render(answer).splitlines()[3:] == []
