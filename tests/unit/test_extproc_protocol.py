"""The ext_proc wire contract: what is read from Envoy's messages and every byte of what the picker answers."""

from __future__ import annotations

import base64
import json

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from scorer.extproc import protocol as p
from scorer.extproc.usage import UsageReader, usage_from_dict
from scorer.framework import Usage


def headers_msg(headers: dict[str, str], eos: bool = False, raw: bool = True) -> pb.HttpHeaders:
    values = [
        base_pb2.HeaderValue(key=k, raw_value=v.encode()) if raw else base_pb2.HeaderValue(key=k, value=v)
        for k, v in headers.items()
    ]
    return pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=values), end_of_stream=eos)


def with_metadata(namespace: str, fields: dict) -> pb.ProcessingRequest:
    req = pb.ProcessingRequest()
    s = struct_pb2.Struct()
    s.update(fields)
    req.metadata_context.filter_metadata[namespace].CopyFrom(s)
    return req


def test_request_head_reads_raw_and_plain_values():
    msg = headers_msg({":path": "/v1/completions", ":method": "post", "X-Request-Id": "abc", "content-length": "12"})
    head = p.read_request_head(msg)
    assert (head.path, head.method, head.request_id, head.content_length, head.end_of_stream) == (
        "/v1/completions",
        "POST",
        "abc",
        12,
        False,
    )
    plain = p.read_request_head(headers_msg({":path": "/x", "content-length": "no"}, eos=True, raw=False))
    assert (plain.path, plain.request_id, plain.content_length, plain.end_of_stream) == ("/x", None, None, True)


@pytest.mark.parametrize("value", ["²", "١٢", "9" * 5000, "-1", "1e3", ""])
def test_odd_numbers_in_headers_read_as_absent(value):
    assert p.read_request_head(headers_msg({"content-length": value})).content_length is None
    assert p.read_response_head(headers_msg({":status": value})).status == 0


def test_response_head():
    head = p.read_response_head(headers_msg({":status": "200", "content-type": "text/event-stream; charset=utf-8"}))
    assert (head.status, head.streaming) == (200, True)
    assert p.read_response_head(headers_msg({})).status == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["10.0.0.1:8000", "10.0.0.2:8000"], ["10.0.0.1:8000", "10.0.0.2:8000"]),
        ("10.0.0.1:8000, 10.0.0.2:8000", ["10.0.0.1:8000", "10.0.0.2:8000"]),
        ([], []),
        ("", []),
        (3, None),
    ],
)
def test_subset_hint_forms(value, expected):
    assert p.subset_hint(with_metadata(p.SUBSET_NAMESPACE, {p.SUBSET_KEY: value})) == expected


def test_subset_hint_absent_and_served():
    assert p.subset_hint(pb.ProcessingRequest()) is None
    assert p.subset_hint(with_metadata(p.SUBSET_NAMESPACE, {"other": "x"})) is None
    assert p.served_endpoint(with_metadata(p.LB_NAMESPACE, {p.SERVED_KEY: "10.0.0.1:8000"})) == "10.0.0.1:8000"
    assert p.served_endpoint(pb.ProcessingRequest()) is None


def test_route_headers_response_sets_header_metadata_and_length():
    resp = p.route_headers_response(["10.0.0.1:8000", "10.0.0.2:8000"], body_length=123)
    common = resp.request_headers.response
    assert common.clear_route_cache
    got = {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}
    assert got == {p.DESTINATION_KEY: "10.0.0.1:8000,10.0.0.2:8000", "content-length": "123"}
    actions = {h.append_action for h in common.header_mutation.set_headers}
    assert actions == {base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD}
    lb = resp.dynamic_metadata.fields[p.LB_NAMESPACE].struct_value.fields
    assert lb[p.DESTINATION_KEY].string_value == "10.0.0.1:8000,10.0.0.2:8000"  # same value as the header


def test_route_without_body_and_buffered_body_answer():
    no_body = p.route_headers_response(["10.0.0.1:8000"])
    keys = [h.header.key for h in no_body.request_headers.response.header_mutation.set_headers]
    assert keys == [p.DESTINATION_KEY]
    buffered = p.route_body_response(["10.0.0.1:8000"])
    assert buffered.WhichOneof("response") == "request_body"
    assert buffered.request_body.response.clear_route_cache
    assert not buffered.request_body.response.HasField("body_mutation")
    with pytest.raises(ValueError):
        p.route_headers_response([])


@pytest.mark.parametrize(("size", "chunks"), [(0, 1), (1, 1), (62_000, 1), (62_001, 2), (1_000_000, 17)])
def test_body_chunking(size, chunks):
    body = bytes(i % 251 for i in range(size))
    out = p.streamed_body_responses(body)
    assert len(out) == chunks
    parts = [o.request_body.response.body_mutation.streamed_response for o in out]
    assert all(len(x.body) <= p.BODY_CHUNK_LIMIT for x in parts)
    assert b"".join(x.body for x in parts) == body
    assert [x.end_of_stream for x in parts] == [False] * (chunks - 1) + [True]


def test_response_chunks_and_no_eos_before_trailers():
    out = p.streamed_body_responses(b"abc", response=True, end_of_stream=False)
    assert out[0].WhichOneof("response") == "response_body"
    assert not out[0].response_body.response.body_mutation.streamed_response.end_of_stream


@pytest.mark.parametrize(
    ("status", "kind"), [(400, "BadRequestError"), (429, "RateLimitError"), (503, "ServiceUnavailable")]
)
def test_immediate_responses_are_openai_errors(status, kind):
    resp = p.immediate_response(status, "why", param="model", reason="because")
    imm = resp.immediate_response
    assert imm.status.code == status
    assert imm.details == "because"
    assert json.loads(imm.body) == {"error": {"message": "why", "type": kind, "param": "model", "code": status}}
    assert [(h.header.key, h.header.raw_value) for h in imm.headers.set_headers] == [
        ("content-type", b"application/json")
    ]


def test_continue_and_trailers():
    assert p.continue_response("request_headers").WhichOneof("response") == "request_headers"
    assert p.continue_response("response_body").WhichOneof("response") == "response_body"
    assert p.trailers_response(request=True).WhichOneof("response") == "request_trailers"
    assert p.trailers_response(request=False).WhichOneof("response") == "response_trailers"


def test_body_modes_from_protocol_config():
    req = pb.ProcessingRequest()
    assert p.body_modes(req) == (None, None)
    req.protocol_config.request_body_mode = 2  # BUFFERED
    req.protocol_config.response_body_mode = 4  # FULL_DUPLEX_STREAMED
    assert p.body_modes(req) == ("BUFFERED", "FULL_DUPLEX_STREAMED")
    req.protocol_config.request_body_mode = 5
    req.protocol_config.response_body_mode = 0
    assert p.body_modes(req) == ("GRPC", "NONE")


def test_a_body_mode_this_build_does_not_know_is_not_announced():
    req = pb.ProcessingRequest()
    req.protocol_config.request_body_mode = 99  # proto3 enums are open: a newer Envoy may send a new mode
    req.protocol_config.response_body_mode = 1
    assert p.body_modes(req) == (None, "STREAMED")


# ---- usage --------------------------------------------------------------------------------------------------
def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def test_usage_from_sse_split_anywhere():
    usage = {"prompt_tokens": 40, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 32}}
    stream = _sse({"choices": [{"text": "a"}]}) + _sse({"choices": [], "usage": usage}) + b"data: [DONE]\n\n"
    for cut in range(1, len(stream)):
        reader = UsageReader(streaming=True)
        reader.feed(stream[:cut])
        reader.feed(stream[cut:])
        assert reader.usage() == Usage(40, 5, 32), cut


def test_usage_last_one_wins_and_missing_newline():
    reader = UsageReader(streaming=True)
    reader.feed(_sse({"usage": {"prompt_tokens": 1, "completion_tokens": 1}}))
    reader.feed(b'data: {"usage": {"prompt_tokens": 1, "completion_tokens": 2}}')
    assert reader.usage() == Usage(1, 2, None)


def test_usage_from_json_body_and_garbage():
    body = json.dumps({"usage": {"prompt_tokens": 9, "completion_tokens": 3, "prompt_tokens_details": None}}).encode()
    reader = UsageReader(streaming=False)
    reader.feed(body[:5])
    reader.feed(body[5:])
    assert reader.usage() == Usage(9, 3, None)
    bad = UsageReader(streaming=False)
    bad.feed(b"{oops")
    assert bad.usage() is None
    assert usage_from_dict({"prompt_tokens": True, "completion_tokens": -1}) == Usage(None, None, None)
    assert usage_from_dict(None) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"usage":' + b"[" * 100_000,
        b'{"usage":' + b"9" * 5000 + b"}",
        b"\xff\xfe",
        b'{"usage": {"prompt_tokens": 1e999}}',
    ],
)
def test_usage_reader_never_raises_on_a_servers_body(body):
    for streaming, data in ((False, body), (True, b"data: " + body + b"\n"), (True, b"data: " + body)):
        reader = UsageReader(streaming=streaming)
        reader.feed(data)
        assert reader.usage() in (None, Usage(None, None, None))


def test_usage_reader_limit():
    reader = UsageReader(streaming=True, limit=64)
    reader.feed(b"data: " + b"x" * 100)  # an over-long line is skipped...
    reader.feed(b'"usage"\n' + _sse({"usage": {"prompt_tokens": 2}}))  # ...and reading resumes at the next line
    assert reader.usage() == Usage(2, None, None)
    big = UsageReader(streaming=False, limit=8)
    big.feed(b'{"usage": {"prompt_tokens": 2}}')
    assert big.usage() is None


def test_subset_protobuf_value_header_encoding_roundtrip():
    """The `-pb` header form of the Envoy config carries base64 of a serialized google.protobuf.Value list."""
    value = struct_pb2.Value(list_value=struct_pb2.ListValue(values=[struct_pb2.Value(string_value="1.2.3.4:5")]))
    decoded = struct_pb2.Value.FromString(base64.b64decode(base64.b64encode(value.SerializeToString())))
    assert decoded.list_value.values[0].string_value == "1.2.3.4:5"
