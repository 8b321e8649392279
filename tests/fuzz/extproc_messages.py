"""Hypothesis strategies for ext_proc streams: what Envoy sends, in order or not, whole or in pieces, and worse.

A stream is drawn in one of two ways: a plausible exchange (request headers, the body split anywhere, maybe trailers,
the response the same way) that is then damaged (messages dropped, repeated, swapped, inserted), or a sequence of
arbitrary messages. Header maps come with odd, missing and duplicate pseudo-headers and values in `raw_value`
(any bytes) or `value`; bodies are OpenAI requests, nesting bombs, huge numbers or random bytes; the first message
may announce body modes (unknown enum values included) and any message may carry a subset hint or a served endpoint.
"""

from __future__ import annotations

import itertools
import json

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from fuzz_support import JSON, nested
from google.protobuf import struct_pb2
from hypothesis import strategies as st

from scorer.extproc import protocol as p
from scorer.request_parser import PRIORITY_HEADER

A, B = "10.0.0.1:8000", "10.0.0.2:8000"
BOMB_DEPTH = 5000  # deep enough for any recursion limit, small enough (~120 KB) to stay under a message cap
ADDRESSES = (A, B)

PATHS = st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/models", "/", "", "/v1/completions?x=1"])
HEADER_VALUES = {
    ":path": PATHS | st.text(max_size=20),
    ":method": st.sampled_from(["POST", "GET", "post", "", "PUT"]),
    ":authority": st.sampled_from(["example.com", ""]),
    "content-length": st.sampled_from(["", "0", "12", "-1", "²", "١٢", "9" * 5000, "abc"]),
    "content-type": st.sampled_from(["application/json", "text/plain", "text/event-stream", "", "multipart/form-data"]),
    "x-request-id": st.sampled_from(["", "r1", "r1", "x" * 300]) | st.text(max_size=10),
    PRIORITY_HEADER: st.sampled_from(["", "-1", "5", "²", "9" * 5000]),
    "x-session-id": st.sampled_from(["s1", ""]),
    ":status": st.sampled_from(["200", "500", "429", "", "abc", "²", "9" * 5000, "-1"]),
}
HEADER_KEYS = st.sampled_from(sorted(HEADER_VALUES)) | st.text(max_size=8)


@st.composite
def header(draw: st.DrawFn, keys: st.SearchStrategy[str] = HEADER_KEYS) -> base_pb2.HeaderValue:
    key = draw(keys)
    value = draw(HEADER_VALUES.get(key, st.text(max_size=12)))
    how = draw(st.sampled_from(["raw", "raw", "value", "bytes"]))
    if how == "value":
        return base_pb2.HeaderValue(key=key, value=value)
    raw = draw(st.binary(max_size=12)) if how == "bytes" else value.encode("utf-8", "surrogatepass")
    return base_pb2.HeaderValue(key=key, raw_value=raw)


@st.composite
def header_map(draw: st.DrawFn, pseudo: tuple[str, ...], usual: dict[str, str]) -> base_pb2.HeaderMap:
    """Often the usual headers, then any of `pseudo` (missing, odd or repeated) and any others, in any order."""
    hs = [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in usual.items()] if draw(st.booleans()) else []
    hs += draw(st.lists(header(st.sampled_from(pseudo)), max_size=len(pseudo) + 1))
    hs += draw(st.lists(header(), max_size=3))
    return base_pb2.HeaderMap(headers=draw(st.permutations(hs)) if draw(st.booleans()) else hs)


@st.composite
def request_body(draw: st.DrawFn) -> bytes:
    doc = draw(
        st.fixed_dictionaries(
            {"model": st.sampled_from(["m", "", "\ud800"]) | JSON},
            optional={
                "prompt": st.text(max_size=30) | st.lists(st.integers(0, 2**33), max_size=5) | JSON,
                "messages": st.lists(
                    st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=20) | JSON}), max_size=3
                ),
                "stream": st.booleans() | JSON,
            },
        )
        | JSON
    )
    text = json.dumps(doc).encode("utf-8", "surrogatepass")
    return draw(
        st.sampled_from([text, text, text]) | nested(BOMB_DEPTH) | st.binary(max_size=64) | st.just(b"9" * 4400)
    )


@st.composite
def response_body(draw: st.DrawFn) -> bytes:
    usage = {
        "prompt_tokens": draw(JSON),
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": draw(JSON)},
    }
    doc = json.dumps({"usage": usage, "choices": []}).encode()
    sse = b"data: " + doc + b"\n\ndata: [DONE]\n\n"
    bomb = b'{"usage":' + draw(nested(BOMB_DEPTH))
    bigint = b'{"usage":' + b"9" * 4400 + b"}"
    return draw(
        st.sampled_from([doc, sse, bomb, b"data: " + bomb + b"\n", bigint, b"data: " + bigint + b"\n", b""])
        | st.binary(max_size=64)
    )


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def body_messages(draw: st.DrawFn, data: bytes, *, response: bool) -> list[pb.ProcessingRequest]:
    pieces = split(data, draw(st.lists(st.integers(0, 10**6), max_size=6)))
    field = "response_body" if response else "request_body"
    last = len(pieces) - 1
    eos_last = draw(st.booleans() | st.just(True))
    return [
        pb.ProcessingRequest(**{field: pb.HttpBody(body=piece, end_of_stream=eos_last and i == last)})
        for i, piece in enumerate(pieces)
    ]


def headers_message(headers: base_pb2.HeaderMap, eos: bool, *, response: bool) -> pb.ProcessingRequest:
    field = "response_headers" if response else "request_headers"
    return pb.ProcessingRequest(**{field: pb.HttpHeaders(headers=headers, end_of_stream=eos)})


REQUEST_PSEUDO = (":path", ":method", ":authority", "content-type", "x-request-id", "content-length")
RESPONSE_PSEUDO = (":status", "content-type")
REQUEST_USUAL = st.sampled_from(["/v1/completions", "/v1/chat/completions"]).map(
    lambda path: {":path": path, ":method": "POST", "x-request-id": "r1"}
)
RESPONSE_USUAL = st.sampled_from(["application/json", "text/event-stream"]).map(
    lambda ctype: {":status": "200", "content-type": ctype}
)


@st.composite
def plausible(draw: st.DrawFn) -> list[pb.ProcessingRequest]:
    """Envoy's order for one request and its response, each part maybe cut short."""
    msgs = []
    request_eos = draw(st.booleans())
    msgs.append(headers_message(draw(header_map(REQUEST_PSEUDO, draw(REQUEST_USUAL))), request_eos, response=False))
    if not request_eos:
        msgs += draw(body_messages(draw(request_body()), response=False))
        if draw(st.booleans()):
            msgs.append(pb.ProcessingRequest(request_trailers=pb.HttpTrailers()))
    response_eos = draw(st.booleans())
    msgs.append(headers_message(draw(header_map(RESPONSE_PSEUDO, draw(RESPONSE_USUAL))), response_eos, response=True))
    if not response_eos:
        msgs += draw(body_messages(draw(response_body()), response=True))
        if draw(st.booleans()):
            msgs.append(pb.ProcessingRequest(response_trailers=pb.HttpTrailers()))
    return msgs


@st.composite
def any_message(draw: st.DrawFn) -> pb.ProcessingRequest:
    kind = draw(st.sampled_from(["rqh", "rqb", "rqt", "rsh", "rsb", "rst", "empty"]))
    if kind in ("rqh", "rsh"):
        pseudo, usual = (REQUEST_PSEUDO, REQUEST_USUAL) if kind == "rqh" else (RESPONSE_PSEUDO, RESPONSE_USUAL)
        return headers_message(draw(header_map(pseudo, draw(usual))), draw(st.booleans()), response=kind == "rsh")
    if kind in ("rqb", "rsb"):
        data = draw(request_body() if kind == "rqb" else response_body())
        field = "request_body" if kind == "rqb" else "response_body"
        return pb.ProcessingRequest(**{field: pb.HttpBody(body=data, end_of_stream=draw(st.booleans()))})
    if kind == "rqt":
        return pb.ProcessingRequest(request_trailers=pb.HttpTrailers())
    if kind == "rst":
        return pb.ProcessingRequest(response_trailers=pb.HttpTrailers())
    return pb.ProcessingRequest()


@st.composite
def damaged(draw: st.DrawFn) -> list[pb.ProcessingRequest]:
    msgs = draw(plausible())
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["drop", "repeat", "swap", "insert"]))
        i = draw(st.integers(0, max(len(msgs) - 1, 0)))
        if op == "drop" and msgs:
            del msgs[i]
        elif op == "repeat" and msgs:
            msgs.insert(i, msgs[i])
        elif op == "swap" and len(msgs) > 1:
            j = draw(st.integers(0, len(msgs) - 1))
            msgs[i], msgs[j] = msgs[j], msgs[i]
        else:
            msgs.insert(i, draw(any_message()))
    return msgs


SUBSETS = (
    st.none()
    | st.lists(st.sampled_from([A, B, "10.0.0.1", "", " ", "9.9.9.9:1"]), max_size=3)
    | st.sampled_from([f"{A}, {B}", "", ",", "10.0.0.2"])
    | st.integers(-(2**60), 2**60)
    | st.booleans()
)
MODES = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 99, -1])


@st.composite
def decorated(draw: st.DrawFn, msgs: list[pb.ProcessingRequest]) -> list[pb.ProcessingRequest]:
    """Copies of the messages, the first maybe announcing body modes, any maybe carrying metadata; the stream may be
    an observability-mode one (a response observer's) or a routing one marked as reported by an observer."""
    out = []
    observer = draw(st.integers(0, 5)) == 0
    marked = draw(st.integers(0, 5)) == 0
    for i, msg in enumerate(msgs):
        msg = pb.ProcessingRequest.FromString(msg.SerializeToString())
        if i == 0 and draw(st.booleans()):
            msg.protocol_config.request_body_mode = draw(MODES)
            msg.protocol_config.response_body_mode = draw(MODES)
        if draw(st.integers(0, 4)) == 0:
            subset = draw(SUBSETS)
            if subset is not None:
                s = struct_pb2.Struct()
                s.update({p.SUBSET_KEY: subset})
                msg.metadata_context.filter_metadata[p.SUBSET_NAMESPACE].CopyFrom(s)
            served = draw(st.sampled_from([A, B, "", "garbage"]))
            msg.metadata_context.filter_metadata[p.LB_NAMESPACE].update({p.SERVED_KEY: served})
        msg.observability_mode = observer
        if marked and draw(st.booleans()):
            msg.metadata_context.filter_metadata[p.OBSERVER_NAMESPACE].update({p.OBSERVER_KEY: True})
        out.append(msg)
    return out


STREAMS = (damaged() | plausible() | st.lists(any_message(), max_size=8)).flatmap(decorated)
