"""Translation between Envoy ext_proc messages and the picker's decisions, with no I/O.

Why it exists: the endpoint-picker protocol (GIE proposal 004) is a precise wire contract — which header and which
`envoy.lb` metadata key carry the chosen `ip:port[,ip:port...]`, where the subset hint and the served endpoint
arrive, how the buffered request body is re-emitted (chunks of at most 62,000 bytes, last one end_of_stream), and
what an ImmediateResponse looks like. Keeping it in plain functions over protobuf messages lets unit tests pin
every byte of it while `server.py` only sequences the messages.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast, get_args

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

BODY_CHUNK_LIMIT = 62_000  # GIE's BodyByteLimit: some Envoy builds cap a streamed chunk at 64 KiB
DESTINATION_KEY = "x-gateway-destination-endpoint"
LB_NAMESPACE = "envoy.lb"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_KEY = "x-gateway-destination-endpoint-subset"
SERVED_KEY = "x-gateway-destination-endpoint-served"
# set on a request (Envoy's set_metadata filter) when a second ext_proc filter in observability mode reports its
# response to the picker: the routing stream then ends after the routing decision and must not report the outcome
OBSERVER_NAMESPACE = "autonomic.extproc"
OBSERVER_KEY = "response_observer"

BodyMode = Literal["NONE", "STREAMED", "BUFFERED", "BUFFERED_PARTIAL", "FULL_DUPLEX_STREAMED", "GRPC"]
Phase = Literal["request_headers", "response_headers", "request_body", "response_body"]
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_BODY_MODES: dict[int, BodyMode] = {
    v.number: cast(BodyMode, v.name)
    for v in processing_mode_pb2.ProcessingMode.BodySendMode.DESCRIPTOR.values
    if v.name in get_args(BodyMode)
}


# ---- reading what Envoy sends ---------------------------------------------------------------------------------
def header_dict(headers: base_pb2.HeaderMap) -> dict[str, str]:
    """Headers with lower-cased names; Envoy sends values in `raw_value` (bytes) or, from older builds, `value`."""
    out: dict[str, str] = {}
    for h in headers.headers:
        value = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
        out[h.key.lower()] = value
    return out


@dataclass(frozen=True)
class RequestHead:
    headers: dict[str, str]
    path: str
    method: str
    request_id: str | None
    content_length: int | None
    end_of_stream: bool  # no body follows (e.g. a GET)


def header_int(value: str) -> int | None:
    """A header's decimal value (`content-length`, `:status`), None unless it is 1 to 18 ASCII digits.

    `str.isdigit` alone is not enough: it is true for "²" and other Unicode digits that `int` refuses, and for
    digit strings longer than `int` converts (4300).
    """
    return int(value) if 0 < len(value) <= 18 and value.isascii() and value.isdigit() else None


def read_request_head(msg: pb.HttpHeaders) -> RequestHead:
    headers = header_dict(msg.headers)
    return RequestHead(
        headers=headers,
        path=headers.get(":path", "/"),
        method=headers.get(":method", "GET").upper(),
        request_id=headers.get("x-request-id") or None,
        content_length=header_int(headers.get("content-length", "")),
        end_of_stream=msg.end_of_stream,
    )


@dataclass(frozen=True)
class ResponseHead:
    status: int  # 0 when Envoy sent no parsable :status
    streaming: bool  # text/event-stream: usage arrives in SSE `data:` lines
    end_of_stream: bool


def read_response_head(msg: pb.HttpHeaders) -> ResponseHead:
    headers = header_dict(msg.headers)
    return ResponseHead(
        status=header_int(headers.get(":status", "")) or 0,
        streaming="text/event-stream" in headers.get("content-type", "").lower(),
        end_of_stream=msg.end_of_stream,
    )


def body_modes(req: pb.ProcessingRequest) -> tuple[BodyMode | None, BodyMode | None]:
    """(request, response) body modes Envoy announced in `protocol_config` (first message only), else Nones.

    A value this build of the protos does not name (proto3 enums are open: a newer Envoy may send one) is None too.
    """
    if not req.HasField("protocol_config"):
        return None, None
    cfg = req.protocol_config
    return _BODY_MODES.get(cfg.request_body_mode), _BODY_MODES.get(cfg.response_body_mode)


def subset_hint(req: pb.ProcessingRequest) -> list[str] | None:
    """The endpoints the data plane allows, or None when it set no hint.

    GIE reads a list value; a comma-separated string (what `header_to_metadata` writes) is accepted too. A present
    but empty hint is `[]`: the picker must then answer 503.
    """
    ns = req.metadata_context.filter_metadata.get(SUBSET_NAMESPACE)
    if ns is None or SUBSET_KEY not in ns.fields:
        return None
    value = ns.fields[SUBSET_KEY]
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        return [v.string_value.strip() for v in value.list_value.values if v.string_value.strip()]
    if kind == "string_value":
        return [p.strip() for p in value.string_value.split(",") if p.strip()]
    return None  # an unexpected type is ignored, as GIE does


def served_endpoint(req: pb.ProcessingRequest) -> str | None:
    """The endpoint that actually served the request (may differ from the primary after retries)."""
    ns = req.metadata_context.filter_metadata.get(LB_NAMESPACE)
    if ns is None or SERVED_KEY not in ns.fields:
        return None
    return ns.fields[SERVED_KEY].string_value or None


def response_observed_elsewhere(req: pb.ProcessingRequest) -> bool:
    """Whether the data plane marked this request as reported by a response observer (see OBSERVER_NAMESPACE)."""
    ns = req.metadata_context.filter_metadata.get(OBSERVER_NAMESPACE)
    return ns is not None and OBSERVER_KEY in ns.fields and ns.fields[OBSERVER_KEY].bool_value


# ---- building what the picker answers -------------------------------------------------------------------------
def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, raw_value=value.encode()), append_action=_OVERWRITE
    )


def destination_value(targets: Sequence[str]) -> str:
    """Primary first, fallbacks after, comma-joined: the same string goes in the header and the metadata."""
    if not targets:
        raise ValueError("a routing decision needs at least one target")
    return ",".join(targets)


def _routing(targets: Sequence[str], body_length: int | None) -> tuple[pb.CommonResponse, struct_pb2.Struct]:
    value = destination_value(targets)
    set_headers = [_header(DESTINATION_KEY, value)]
    if body_length is not None:
        set_headers.append(_header("content-length", str(body_length)))
    common = pb.CommonResponse(header_mutation=pb.HeaderMutation(set_headers=set_headers), clear_route_cache=True)
    metadata = struct_pb2.Struct()
    metadata.update({LB_NAMESPACE: {DESTINATION_KEY: value}})
    return common, metadata


def route_headers_response(targets: Sequence[str], body_length: int | None = None) -> pb.ProcessingResponse:
    """The routing decision on the request-headers answer (FULL_DUPLEX_STREAMED, or a request without a body).

    `body_length` is the length of the body that will be re-emitted: Envoy forwards what the picker streams back,
    so the upstream's `content-length` must match it.
    """
    common, metadata = _routing(targets, body_length)
    return pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common), dynamic_metadata=metadata)


def route_body_response(targets: Sequence[str]) -> pb.ProcessingResponse:
    """The routing decision on the request-body answer (BUFFERED): Envoy still holds the request headers then, so
    the header mutation and clear_route_cache apply to them; the body itself goes on unchanged."""
    common, metadata = _routing(targets, None)
    return pb.ProcessingResponse(request_body=pb.BodyResponse(response=common), dynamic_metadata=metadata)


def continue_response(phase: Phase) -> pb.ProcessingResponse:
    """CONTINUE without changes for one phase."""
    if phase in ("request_headers", "response_headers"):
        return pb.ProcessingResponse(**{phase: pb.HeadersResponse()})
    return pb.ProcessingResponse(**{phase: pb.BodyResponse()})


def trailers_response(*, request: bool) -> pb.ProcessingResponse:
    if request:
        return pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
    return pb.ProcessingResponse(response_trailers=pb.TrailersResponse())


def streamed_body_responses(
    body: bytes, *, response: bool = False, end_of_stream: bool = True, limit: int = BODY_CHUNK_LIMIT
) -> list[pb.ProcessingResponse]:
    """The body as StreamedBodyResponse messages of at most `limit` bytes; only the last carries end_of_stream.

    An empty body is still one (empty) message so that Envoy sees the end of the stream.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    pieces = [body[i : i + limit] for i in range(0, len(body), limit)] or [b""]
    out = []
    for i, piece in enumerate(pieces):
        streamed = pb.StreamedBodyResponse(body=piece, end_of_stream=end_of_stream and i == len(pieces) - 1)
        answer = pb.BodyResponse(response=pb.CommonResponse(body_mutation=pb.BodyMutation(streamed_response=streamed)))
        out.append(
            pb.ProcessingResponse(response_body=answer) if response else pb.ProcessingResponse(request_body=answer)
        )
    return out


# ---- immediate responses ---------------------------------------------------------------------------------------
_ERROR_TYPES = {
    400: "BadRequestError",
    413: "RequestTooLargeError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


def error_body(status: int, message: str, param: str | None = None) -> bytes:
    """An error object shaped like vLLM's / OpenAI's: `{"error": {"message", "type", "param", "code"}}`."""
    err = {"message": message, "type": _ERROR_TYPES.get(status, "Error"), "param": param, "code": status}
    return json.dumps({"error": err}, separators=(",", ":")).encode()


def immediate_response(
    status: int, message: str, *, param: str | None = None, reason: str = ""
) -> pb.ProcessingResponse:
    """Answer the client directly (Envoy sends no request upstream); `reason` becomes `details` in Envoy's logs."""
    headers = pb.HeaderMutation(set_headers=[_header("content-type", "application/json")])
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=headers,
            body=error_body(status, message, param),
            details=reason or f"picker_{status}",
        )
    )
