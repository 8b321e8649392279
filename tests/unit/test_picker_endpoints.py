"""Static endpoints of local mode: the flag and the YAML file, with every error reported by its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scorer.sources.endpoints import EndpointsError, load_endpoints_file, parse_endpoint_list, parse_endpoints_document


def test_flag_list():
    endpoints = parse_endpoint_list(" 10.0.0.1:8000, ,10.0.0.2:8001,")
    assert [e.address for e in endpoints] == ["10.0.0.1:8000", "10.0.0.2:8001"]


def test_file_with_bare_and_full_entries(tmp_path: Path):
    path = tmp_path / "pool.yaml"
    path.write_text("endpoints:\n- 10.0.0.1:8000\n- {address: 10.0.0.2:8000, name: vllm-1, labels: {gpu: h100}}\n")
    a, b = load_endpoints_file(path)
    assert (a.address, a.name, dict(a.labels)) == ("10.0.0.1:8000", "", {})
    assert (b.address, b.name, dict(b.labels)) == ("10.0.0.2:8000", "vllm-1", {"gpu": "h100"})


@pytest.mark.parametrize(
    ("doc", "errors"),
    [
        ([], ["document: must be a mapping with 'endpoints', got list"]),
        ({"endpoints": "a:1"}, ["endpoints: must be a list, got str"]),
        ({"endpoints": []}, ["endpoints: at least one endpoint is required"]),
        ({"endpoints": ["a:1"], "pool": 1}, ["pool: unknown field (expected endpoints)"]),
        (
            {"endpoints": ["a:1", "nope", {"address": "b:2", "weight": 3}, "a:1", {"address": "c:99999"}, 7]},
            [
                "endpoints[1].address: endpoint address must be host:port, got 'nope'",
                "endpoints[2].weight: unknown field",
                "endpoints[3].address: duplicate 'a:1' (first at endpoints[0])",
                "endpoints[4].address: endpoint address must be host:port, got 'c:99999'",
                "endpoints[5]: must be a mapping",
            ],
        ),
        (
            {"endpoints": [{"address": "a:1", "labels": {"gpu": 1}}]},
            ["endpoints[0].labels.gpu: Input should be a valid string"],
        ),
    ],
)
def test_document_errors_have_paths(doc: Any, errors: list[str]):
    with pytest.raises(EndpointsError) as err:
        parse_endpoints_document(doc, "pool.yaml")
    assert len(err.value.errors) == len(errors), err.value.errors
    for got, want in zip(err.value.errors, errors, strict=True):
        assert got.startswith(want), got
    assert "invalid endpoints (pool.yaml)" in str(err.value)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("a:1,b", "--endpoints[1].address: endpoint address must be host:port, got 'b'"),
        ("a:1,a:1", "--endpoints[1].address: duplicate 'a:1' (first at --endpoints[0])"),
        (" , ", "endpoints: at least one endpoint is required"),
    ],
)
def test_flag_errors(text: str, error: str):
    with pytest.raises(EndpointsError) as err:
        parse_endpoint_list(text)
    assert err.value.errors == [error]


def test_unreadable_and_broken_files(tmp_path: Path):
    with pytest.raises(EndpointsError, match="No such file"):
        load_endpoints_file(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("endpoints: [a:1\n")
    with pytest.raises(EndpointsError, match="yaml: "):
        load_endpoints_file(broken)
