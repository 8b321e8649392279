"""Fuzz target: the ext_proc state machine (scorer/extproc/exchange.py, protocol.py) on any sequence of messages.

The driver does what the gRPC shell does: optionally parse ahead (`pending_request`), `handle` each message, stop at
an ImmediateResponse, call `finish` at the end. Invariants, with a round-robin backend and with the shipped
scheduling profile behind a `Director`:

- `handle`, `pending_request` and `finish` never raise, and nothing is logged at error level;
- every answer is a well-formed ProcessingResponse; an ImmediateResponse carries a client-side status (400, 413 for a
  body over the limit, 429/503 when no endpoint may take the request), never a 5xx, with a JSON error body;
- a routing decision names endpoints of the pool, its content-length is the length of the body re-emitted, and the
  re-emitted request body is exactly the body received, in chunks of at most 62,000 bytes; a streamed response
  body is echoed byte for byte;
- the buffered body never exceeds the limit; the backend hears about a picked request exactly once.
"""

from __future__ import annotations

import json
import random

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc_messages import ADDRESSES, STREAMS
from fuzz_support import counted, describe, error_logs
from hypothesis import given
from hypothesis import strategies as st

from scorer.config import default_config
from scorer.director import Director
from scorer.extproc import protocol as p
from scorer.extproc.body_budget import BodyBudget
from scorer.extproc.exchange import Exchange
from scorer.extproc.roundrobin import RoundRobinBackend
from scorer.framework import Usage
from scorer.scheduler import Scheduler
from scorer.types import Endpoint, EndpointMetrics, LLMRequest, SchedulingResult

CLIENT_STATUSES = {400, 413, 429, 503}
_SCHEDULER = Scheduler(default_config())


class Recording:
    """Wraps a backend and records what the exchange tells it."""

    def __init__(self, inner: RoundRobinBackend | Director):
        self.inner = inner
        self.picked: list[str] = []
        self.completed: list[str] = []

    def ready(self) -> bool:
        return self.inner.ready()

    def pick(self, request: LLMRequest, subset=None) -> SchedulingResult:
        result = self.inner.pick(request, subset)
        self.picked.append(request.request_id)
        return result

    def response_complete(self, request_id: str, served: str | None, status: int, usage: Usage | None) -> None:
        self.completed.append(request_id)
        self.inner.response_complete(request_id, served, status, usage)


def director() -> Director:
    d = Director(_SCHEDULER, clock=lambda: 1000.0, rng=random.Random(1))
    d.set_endpoints([Endpoint(a) for a in ADDRESSES])
    for a in ADDRESSES:
        d.update_metrics(a, EndpointMetrics(waiting=1, running=2, kv_usage=0.5))
    return d


def check_answer(answer: pb.ProcessingResponse, ex: Exchange, body_bytes: int) -> None:
    """One answer is valid; `body_bytes`: the request body the exchange took in so far (it keeps none after the
    decision)."""
    kind = answer.WhichOneof("response")
    assert kind is not None, "an answer without a response part"
    if kind == "immediate_response":
        status = answer.immediate_response.status.code
        assert status in CLIENT_STATUSES, f"ImmediateResponse {status}: {answer.immediate_response.body!r}"
        assert json.loads(answer.immediate_response.body)["error"]["code"] == status
        return
    if kind.endswith("trailers"):
        return
    common = getattr(answer, kind).response
    for h in common.header_mutation.set_headers:
        if h.header.key == p.DESTINATION_KEY:
            targets = h.header.raw_value.decode().split(",")
            assert targets and set(targets) <= set(ADDRESSES), targets
            assert targets == ex.targets
        if h.header.key == "content-length":
            assert int(h.header.raw_value) == body_bytes
    streamed = common.body_mutation.streamed_response
    assert len(streamed.body) <= p.BODY_CHUNK_LIMIT


def streamed(out: list[pb.ProcessingResponse], kind: str) -> bytes:
    return b"".join(
        getattr(a, kind).response.body_mutation.streamed_response.body for a in out if a.WhichOneof("response") == kind
    )


def drive(ex: Exchange, backend: Recording, msgs: list[pb.ProcessingRequest], parse_ahead: bool, limit: int) -> None:
    answers: list[pb.ProcessingResponse] = []
    accepted = bytearray()  # request body chunks the exchange took in (not ignored)
    responses = bytearray()
    marked = False  # marked as observed elsewhere before the exchange reported (a later mark cannot undo a report)
    for msg in msgs:
        marked = marked or (p.response_observed_elsewhere(msg) and not backend.completed)
        took_body = msg.WhichOneof("request") == "request_body" and not ex.body_done
        if parse_ahead:
            ex.pending_request(msg)
        out = ex.handle(msg)
        taken = len(accepted) + (len(msg.request_body.body) if took_body else 0)
        for answer in out:
            check_answer(answer, ex, taken)
        answers += out
        if took_body and not ex.closed:
            accepted += msg.request_body.body
        if msg.WhichOneof("request") == "response_body":
            responses += msg.response_body.body
        assert len(ex.body) <= limit
        if ex.closed:
            break
    ex.finish()
    ex.finish()
    ex.release_body()  # as the shell does at the stream's end
    if ex.observer:  # a response observer: answers nothing, decides nothing, reports the id it saw, once
        assert not answers and not backend.picked and not ex.targets
        assert backend.completed == ([ex.request_id] if ex.request_id else []), backend.completed
        return
    expected = [ex.request_id] if ex.targets and not marked else []
    assert backend.completed == expected, (backend.picked, backend.completed)
    if ex.targets and ex.request_mode == "FULL_DUPLEX_STREAMED":
        assert streamed(answers, "request_body") == bytes(accepted)
    if ex.response_mode == "FULL_DUPLEX_STREAMED" and not ex.closed:
        assert streamed(answers, "response_body") == bytes(responses)


@given(
    msgs=STREAMS,
    use_director=st.booleans(),
    parse_ahead=st.booleans(),
    fallbacks=st.integers(0, 2),
    limit=st.sampled_from([64, 4096, 1 << 20]),
    budget_bytes=st.sampled_from([None, 32, 4096]),
)
@counted
def test_exchange_answers_every_stream_validly(msgs, use_director, parse_ahead, fallbacks, limit, budget_bytes):
    backend = Recording(director() if use_director else RoundRobinBackend(ADDRESSES, fallbacks=fallbacks))
    budget = BodyBudget(budget_bytes) if budget_bytes else None
    ex = Exchange(backend, max_body_bytes=limit, budget=budget)
    with error_logs() as errors:
        drive(ex, backend, msgs, parse_ahead, limit)
    assert not errors, describe(errors)
    assert budget is None or budget.held == 0  # whatever the stream did, its bytes went back at its end
