"""The per-stream state machine: message order per body mode, odd input, and exactly-once completion."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from scorer.extproc import protocol as p
from scorer.extproc.body_budget import BodyBudget
from scorer.extproc.exchange import Exchange
from scorer.extproc.roundrobin import RoundRobinBackend
from scorer.framework import Usage
from scorer.types import LLMRequest, SchedulingResult

A, B = "10.0.0.1:8000", "10.0.0.2:8000"
BODY = json.dumps({"model": "m", "prompt": "hello", "max_tokens": 3}).encode()


def req_headers(path="/v1/completions", eos=False, rid="r1", method="POST", **extra: str) -> pb.ProcessingRequest:
    hs = {":path": path, ":method": method, **({"x-request-id": rid} if rid else {}), **extra}
    values = [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in hs.items()]
    return pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=values), end_of_stream=eos)
    )


def req_body(data: bytes, eos: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=data, end_of_stream=eos))


def resp_headers(status="200", ctype="application/json", eos=False) -> pb.ProcessingRequest:
    values = [
        base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in {":status": status, "content-type": ctype}.items()
    ]
    return pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=values), end_of_stream=eos)
    )


def resp_body(data: bytes, eos: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=data, end_of_stream=eos))


def kinds(out: list[pb.ProcessingResponse]) -> list[str]:
    return [str(o.WhichOneof("response")) for o in out]


def test_full_duplex_holds_headers_until_body_then_header_then_body():
    rr = RoundRobinBackend([A, B])
    ex = Exchange(rr)
    assert ex.handle(req_headers()) == []
    assert ex.handle(req_body(BODY[:10], False)) == []
    out = ex.handle(req_body(BODY[10:], True))
    assert kinds(out) == ["request_headers", "request_body"]
    set_headers = {
        h.header.key: h.header.raw_value for h in out[0].request_headers.response.header_mutation.set_headers
    }
    assert set_headers == {p.DESTINATION_KEY: A.encode(), "content-length": str(len(BODY)).encode()}
    assert out[1].request_body.response.body_mutation.streamed_response.body == BODY
    assert rr.picks[-1] == ("r1", (A,))
    # the response passes through chunk by chunk, and the usage reaches response_complete once
    assert kinds(ex.handle(resp_headers(ctype="text/event-stream"))) == ["response_headers"]
    raw_usage = {"prompt_tokens": 4, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2}}
    usage = b"data: " + json.dumps({"usage": raw_usage}).encode() + b"\n\n"
    echoed = ex.handle(resp_body(usage, False))
    assert echoed[0].response_body.response.body_mutation.streamed_response.body == usage
    last = ex.handle(resp_body(b"data: [DONE]\n\n", True))
    assert last[0].response_body.response.body_mutation.streamed_response.end_of_stream
    ex.finish()
    assert list(rr.completions) == [rr.completion("r1")]
    done = rr.completion("r1")
    assert done is not None and (done.status, done.usage) == (200, Usage(4, 3, 2))


def test_fallbacks_are_joined_in_header_and_metadata():
    ex = Exchange(RoundRobinBackend([A, B], fallbacks=1))
    ex.handle(req_headers())
    out = ex.handle(req_body(BODY, True))
    lb = out[0].dynamic_metadata.fields[p.LB_NAMESPACE].struct_value.fields
    assert lb[p.DESTINATION_KEY].string_value == f"{A},{B}"


def test_buffered_mode_answers_headers_then_routes_on_body():
    rr = RoundRobinBackend([A])
    ex = Exchange(rr, request_mode="BUFFERED", response_mode="STREAMED")
    assert kinds(ex.handle(req_headers())) == ["request_headers"]
    out = ex.handle(req_body(BODY, True))
    assert kinds(out) == ["request_body"]
    assert out[0].request_body.response.clear_route_cache
    assert kinds(ex.handle(resp_body(b"{}", True))) == ["response_body"]
    assert rr.completion("r1") is not None


def test_modes_announced_by_envoy_win():
    ex = Exchange(RoundRobinBackend([A]))
    first = req_headers()
    first.protocol_config.request_body_mode = 2  # BUFFERED
    assert kinds(ex.handle(first)) == ["request_headers"]
    assert ex.request_mode == "BUFFERED"


def test_an_unknown_announced_mode_keeps_the_configured_one():
    ex = Exchange(RoundRobinBackend([A]), request_mode="BUFFERED")
    first = req_headers()
    first.protocol_config.request_body_mode = 99
    assert kinds(ex.handle(first)) == ["request_headers"]
    assert ex.request_mode == "BUFFERED"


def test_a_hostile_response_body_is_echoed_and_reported_once():
    rr = RoundRobinBackend([A])
    ex = Exchange(rr)
    ex.handle(req_headers())
    ex.handle(req_body(BODY, True))
    ex.handle(resp_headers())
    bomb = b'{"usage":' + b"[" * 100_000
    out = ex.handle(resp_body(bomb, True))
    assert b"".join(o.response_body.response.body_mutation.streamed_response.body for o in out) == bomb
    ex.finish()
    assert [(c.request_id, c.usage) for c in rr.completions] == [("r1", None)]


def test_a_body_over_the_limit_is_413_and_not_kept(caplog):
    caplog.set_level(logging.INFO, logger="autonomic.extproc")
    rr = RoundRobinBackend([A])
    ex = Exchange(rr, max_body_bytes=100)
    ex.handle(req_headers())
    assert ex.handle(req_body(b"x" * 60, False)) == []
    (out,) = ex.handle(req_body(b"x" * 60, False))
    assert out.immediate_response.status.code == 413
    assert json.loads(out.immediate_response.body)["error"]["type"] == "RequestTooLargeError"
    assert ex.closed and not ex.body and not rr.picks
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("INFO", "request rejected")]


def test_bodies_held_together_stay_within_the_budget_and_past_it_are_shed_with_429(caplog):
    """Many large bodies at once must not grow the process without bound: what all streams buffer is counted, a
    chunk past the budget sheds its request, and every way a body leaves the buffer gives its bytes back."""
    caplog.set_level(logging.INFO, logger="autonomic.extproc")
    budget = BodyBudget(100)
    rr = RoundRobinBackend([A])
    first, second, third = (Exchange(rr, budget=budget) for _ in range(3))
    for i, ex in enumerate((first, second, third)):
        ex.handle(req_headers(rid=f"r{i}"))
    half = len(BODY) // 2
    assert first.handle(req_body(BODY[:half], False)) == []  # held: counted
    assert budget.held == half
    (shed,) = second.handle(req_body(b"x" * (101 - half), False))  # would take the sum past 100
    assert shed.immediate_response.status.code == 429
    assert json.loads(shed.immediate_response.body)["error"]["message"].endswith("retry later")
    assert second.closed and not second.body and budget.held == half and budget.refused == 1
    assert "request_headers" in kinds(first.handle(req_body(BODY[half:], True)))  # decided: its bytes go back
    assert budget.held == 0 and [rid for rid, _ in rr.picks] == ["r0"]
    assert third.handle(req_body(b"x" * 90, False)) == []
    third.finish()  # the response side of an odd stream ended: the request body it still buffers is kept
    assert budget.held == 90 and bytes(third.body) == b"x" * 90
    third.release_body()  # the stream ended mid-body (the shell's last step): given back
    assert budget.held == 0 and not third.body
    too_large = Exchange(rr, budget=budget, max_body_bytes=50)
    too_large.handle(req_headers(rid="r9"))
    assert too_large.handle(req_body(b"x" * 40, False)) == [] and budget.held == 40
    (out,) = too_large.handle(req_body(b"x" * 40, False))
    assert out.immediate_response.status.code == 413 and budget.held == 0
    assert [r.getMessage() for r in caplog.records] == ["request rejected"] * 2


@pytest.mark.parametrize("mode", ["FULL_DUPLEX_STREAMED", "BUFFERED"])
def test_a_content_length_over_the_limit_is_413_at_the_headers(mode):
    ex = Exchange(RoundRobinBackend([A]), request_mode=mode, max_body_bytes=100)
    (out,) = ex.handle(req_headers(**{"content-length": "101"}))
    assert out.immediate_response.status.code == 413
    ok = Exchange(RoundRobinBackend([A]), request_mode=mode, max_body_bytes=len(BODY))
    ok.handle(req_headers(**{"content-length": str(len(BODY))}))
    assert "immediate_response" not in kinds(ok.handle(req_body(BODY, True)))


def test_a_malformed_message_ends_the_exchange_with_a_400_once():
    rr = RoundRobinBackend([A])
    ex = Exchange(rr)
    ex.handle(req_headers())
    (out,) = ex.malformed("Wire format was corrupt")
    assert out.immediate_response.status.code == 400 and ex.closed
    assert ex.malformed("again") == []
    assert not rr.picks


def test_request_without_body_is_routed_at_headers():
    rr = RoundRobinBackend([A, B])
    ex = Exchange(rr)
    out = ex.handle(req_headers("/v1/models", eos=True, method="GET", rid=""))
    assert kinds(out) == ["request_headers"]
    assert len(ex.request_id) == 32  # generated
    ex.handle(resp_headers(eos=True))
    assert rr.completion(ex.request_id) is not None


def test_duplicate_end_of_stream_is_ignored():
    ex = Exchange(RoundRobinBackend([A]))
    ex.handle(req_headers())
    assert len(ex.handle(req_body(BODY, True))) == 2
    assert ex.handle(req_body(b"duplicate", True)) == []  # GIE #2988: not appended, not re-parsed
    assert bytes(ex.body) == b""  # released at the decision, and the duplicate not appended


def test_body_before_headers_does_not_crash():
    ex = Exchange(RoundRobinBackend([A]))
    out = ex.handle(req_body(b"", True))
    assert kinds(out) == ["request_headers", "request_body"]  # routed as "other" to any endpoint


def test_trailers_end_the_body():
    ex = Exchange(RoundRobinBackend([A]))
    ex.handle(req_headers())
    ex.handle(req_body(BODY, False))
    out = ex.handle(pb.ProcessingRequest(request_trailers=pb.HttpTrailers()))
    assert kinds(out) == ["request_headers", "request_body", "request_trailers"]
    assert not out[1].request_body.response.body_mutation.streamed_response.end_of_stream


def test_bad_body_is_400_and_nothing_is_picked():
    rr = RoundRobinBackend([A])
    ex = Exchange(rr)
    ex.handle(req_headers())
    out = ex.handle(req_body(b"{nope", True))
    assert out[0].immediate_response.status.code == 400
    assert ex.closed and not rr.picks
    ex.finish()
    assert not rr.completions


def test_a_nesting_bomb_is_the_clients_fault_400_and_an_info_line(caplog):
    caplog.set_level(logging.INFO, logger="autonomic.extproc")
    ex = Exchange(RoundRobinBackend([A]))
    ex.handle(req_headers())
    (out,) = ex.handle(req_body(b'{"model":"m","prompt":' + b"[" * 100_000, True))
    assert out.immediate_response.status.code == 400
    assert b"nested more than 128 levels deep" in out.immediate_response.body
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert caplog.records[0].getMessage() == "request rejected"


def test_subset_is_honoured_and_empty_subset_is_503():
    rr = RoundRobinBackend([A, B])
    ex = Exchange(rr)
    first = req_headers()
    s = struct_pb2.Struct()
    s.update({p.SUBSET_KEY: [B]})
    first.metadata_context.filter_metadata[p.SUBSET_NAMESPACE].CopyFrom(s)
    ex.handle(first)
    ex.handle(req_body(BODY, True))
    assert ex.targets == [B]
    ex2 = Exchange(rr)
    first2 = req_headers()
    s2 = struct_pb2.Struct()
    s2.update({p.SUBSET_KEY: []})
    first2.metadata_context.filter_metadata[p.SUBSET_NAMESPACE].CopyFrom(s2)
    ex2.handle(first2)
    assert ex2.handle(req_body(BODY, True))[0].immediate_response.status.code == 503


def test_shed_is_429_and_not_ready_is_503():
    rr = RoundRobinBackend([A], shed_sheddable=True)
    ex = Exchange(rr)
    ex.handle(req_headers(**{"x-autonomic-priority": "-1"}))
    assert ex.handle(req_body(BODY, True))[0].immediate_response.status.code == 429
    rr.set_addresses([])
    ex2 = Exchange(rr)
    ex2.handle(req_headers())
    assert ex2.handle(req_body(BODY, True))[0].immediate_response.status.code == 503


class _Broken:
    def ready(self) -> bool:
        return True

    def pick(self, request: LLMRequest, subset: Sequence[str] | None = None) -> SchedulingResult:
        raise RuntimeError("boom")

    def response_complete(self, request_id, served, status, usage) -> None:
        raise RuntimeError("boom")


def test_backend_failure_is_500():
    ex = Exchange(_Broken())
    ex.handle(req_headers())
    assert ex.handle(req_body(BODY, True))[0].immediate_response.status.code == 500


def test_completion_once_on_cancel_with_served_metadata():
    rr = RoundRobinBackend([A, B], fallbacks=1)
    ex = Exchange(rr)
    ex.handle(req_headers())
    ex.handle(req_body(BODY, True))
    served = pb.ProcessingRequest()
    s = struct_pb2.Struct()
    s.update({p.SERVED_KEY: B})
    served.metadata_context.filter_metadata[p.LB_NAMESPACE].CopyFrom(s)
    served.response_headers.CopyFrom(resp_headers(status="503").response_headers)
    ex.handle(served)
    ex.finish()
    ex.finish()
    assert len(rr.completions) == 1
    done = rr.completion("r1")
    assert done is not None and (done.served, done.status, done.usage) == (B, 503, None)


def test_response_complete_failure_is_contained():
    ex = Exchange(_Broken())
    ex.targets = [A]
    ex.finish()  # logs, does not raise
    assert ex.reported


def test_each_pick_is_logged_with_its_reason(caplog):
    caplog.set_level(logging.DEBUG, logger="autonomic.extproc")
    ex = Exchange(RoundRobinBackend([A, B], fallbacks=1))
    ex.handle(req_headers(rid="logged"))
    ex.handle(req_body(BODY, True))
    (record,) = [r for r in caplog.records if r.getMessage() == "picked"]
    assert record.request_id == "logged"
    assert record.targets == [A, B]
    assert record.reason.startswith("round robin")
    assert (record.kind, record.model, record.body_bytes) == ("completions", "m", len(BODY))


def test_pending_request_is_the_parsed_request_of_the_message_that_decides():
    """The async shell prepares (e.g. tokenizes) exactly the request the decision then uses, parsed once."""

    class Recording(RoundRobinBackend):
        seen: list[LLMRequest]

        def pick(self, request: LLMRequest, subset: Sequence[str] | None = None) -> SchedulingResult:
            self.seen.append(request)
            return super().pick(request, subset)

    backend = Recording([A, B])
    backend.seen = []
    ex = Exchange(backend)
    head, first, last = req_headers(), req_body(BODY[:10], False), req_body(BODY[10:], True)
    assert ex.pending_request(head) is None
    ex.handle(head)
    assert ex.pending_request(first) is None  # not the end of the body: no decision yet
    ex.handle(first)
    pending = ex.pending_request(last)
    assert pending is not None and (pending.model, pending.prompt, pending.request_id) == ("m", "hello", "r1")
    ex.handle(last)
    assert backend.seen == [pending] and backend.seen[0] is pending
    assert ex.pending_request(req_body(b"", True)) is None  # decided already

    bad = Exchange(RoundRobinBackend([A]))
    bad.handle(req_headers())
    broken = req_body(b"{not json", True)
    assert bad.pending_request(broken) is None  # the decision answers the 400 as usual
    assert kinds(bad.handle(broken)) == ["immediate_response"]


def _observed(msg: pb.ProcessingRequest, **metadata: dict) -> pb.ProcessingRequest:
    """`msg` as an observability-mode filter sends it, with `metadata` (namespace -> fields) in its context."""
    out = pb.ProcessingRequest()
    out.CopyFrom(msg)
    out.observability_mode = True
    for namespace, fields in metadata.items():
        s = struct_pb2.Struct()
        s.update(fields)
        out.metadata_context.filter_metadata[namespace].CopyFrom(s)
    return out


def _marked(msg: pb.ProcessingRequest) -> pb.ProcessingRequest:
    """`msg` on a routing stream whose response a separate observer reports."""
    out = pb.ProcessingRequest()
    out.CopyFrom(msg)
    s = struct_pb2.Struct()
    s.update({p.OBSERVER_KEY: True})
    out.metadata_context.filter_metadata[p.OBSERVER_NAMESPACE].CopyFrom(s)
    return out


def test_a_marked_routing_stream_routes_but_leaves_the_report_to_the_observer():
    rr = RoundRobinBackend([A, B])
    routing = Exchange(rr)
    assert routing.handle(_marked(req_headers())) == []
    assert kinds(routing.handle(req_body(BODY, True))) == ["request_headers", "request_body"]
    routing.finish()  # Envoy ends the routing stream right after the decision
    assert not rr.completions and routing.targets == [A]
    observer = Exchange(rr)
    for msg in (req_headers(), resp_headers(status="200")):  # what the observer filter sends, never waiting
        assert observer.handle(_observed(msg, **{p.LB_NAMESPACE: {p.SERVED_KEY: A}})) == []
    observer.finish()  # the HTTP stream ended
    observer.finish()
    assert [(c.request_id, c.served, c.status, c.usage) for c in rr.completions] == [("r1", A, 200, None)]
    assert len(rr.picks) == 1  # the observer decided nothing


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([req_headers()], [("r1", None, 0, None)]),  # the client went away before any response: status 0
        ([req_headers(), resp_headers(status="503")], [("r1", None, 503, None)]),
        ([resp_headers(status="200")], []),  # no request id seen: nothing to report
        ([req_headers(rid="")], []),  # no x-request-id: nothing the routing stream could have recorded
    ],
)
def test_an_observer_stream_reports_what_it_saw_once_at_its_end(messages, expected):
    rr = RoundRobinBackend([A, B])
    observer = Exchange(rr)
    for msg in messages:
        assert observer.handle(_observed(msg)) == []
        assert observer.pending_request(_observed(msg)) is None
    assert observer.malformed("junk") == []  # answers are ignored in observability mode: none is sent
    observer.finish()
    assert [(c.request_id, c.served, c.status, c.usage) for c in rr.completions] == expected
    assert not rr.picks


def test_an_unmarked_routing_stream_still_reports_itself():
    rr = RoundRobinBackend([A, B])
    ex = Exchange(rr)
    ex.handle(req_headers())
    ex.handle(req_body(BODY, True))
    ex.finish()
    assert [c.request_id for c in rr.completions] == ["r1"]


def test_after_the_decision_the_exchange_keeps_no_body_or_request():
    """A stream that reports its response lives as long as the response: it must not hold the prompt that long."""
    ex = Exchange(RoundRobinBackend([A]))
    ex.handle(req_headers())
    half = len(BODY) // 2
    assert ex.handle(req_body(BODY[:half], False)) == []
    assert ex.pending_request(req_body(BODY[half:], True)) is not None  # parsed ahead, as the servicer does
    out = ex.handle(req_body(BODY[half:], True))
    assert [m.WhichOneof("response") for m in out] == ["request_headers", "request_body"]
    assert out[1].request_body.response.body_mutation.streamed_response.body == BODY  # the whole body went back
    assert bytes(ex.body) == b"" and ex._parsed is None
