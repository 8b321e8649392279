"""The state machine of one ext_proc stream (one HTTP request): messages in, answers out, no I/O.

Why it exists: Envoy's ext_proc stream has a strict order that depends on the body mode. In FULL_DUPLEX_STREAMED
the picker holds its headers answer until the whole request body has arrived (the decision needs the prompt),
then sends Headers -> Body chunks; in BUFFERED it answers the headers with CONTINUE and puts the decision on the
body answer. The response is passed through as it comes. The machine tolerates odd input (body before headers,
duplicate end_of_stream — GIE #2988 / envoy #46237, a request that ends at its headers) and guarantees that a
request the backend picked for is reported back to `response_complete` exactly once, whatever happens.

The body the picker holds is bounded: a request body over `max_body_bytes` (announced by its content-length or
found while buffering) is answered 413 at once and nothing more of it is kept; and the bodies all streams hold
together stay within a `BodyBudget` (scorer/extproc/body_budget.py): a chunk that would exceed it sheds its request
with 429. The exchange gives its bytes back when the body leaves its buffer (decision, rejection), and the shell
calls `release_body` when the stream ends.

Split streams (EnvoyOptions.observe_response_body off): the routing filter sends only the request, and a second
ext_proc filter in observability mode sends the request headers (for x-request-id) and the response headers, and
ends its stream when the HTTP stream ends. The routing stream, marked by `protocol.response_observed_elsewhere`,
then never reports the outcome; the observer stream answers nothing and reports the status, the served endpoint
and the end of the response, once.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Protocol

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from scorer.extproc import protocol as p
from scorer.extproc.body_budget import MAX_BODY_BYTES, BodyBudget
from scorer.extproc.usage import UsageReader
from scorer.framework import Usage
from scorer.request_parser import BadRequestError, parse_request, request_kind
from scorer.types import LLMRequest, NoEndpointError, SchedulingResult

log = logging.getLogger("autonomic.extproc")


class PickBackend(Protocol):
    """What the shell needs from the scheduling core (`scorer.director.Director` satisfies it)."""

    def ready(self) -> bool: ...

    def pick(self, request: LLMRequest, subset: Sequence[str] | None = None) -> SchedulingResult: ...

    def response_complete(self, request_id: str, served: str | None, status: int, usage: Usage | None) -> None: ...


Out = list[pb.ProcessingResponse]


class Exchange:
    def __init__(
        self,
        backend: PickBackend,
        *,
        request_mode: p.BodyMode = "FULL_DUPLEX_STREAMED",
        response_mode: p.BodyMode = "FULL_DUPLEX_STREAMED",
        max_body_bytes: int = MAX_BODY_BYTES,
        budget: BodyBudget | None = None,
    ):
        self.backend = backend
        self.budget = budget  # every byte appended to `body` was taken from it
        self.request_mode: p.BodyMode = request_mode
        self.response_mode: p.BodyMode = response_mode
        self.max_body_bytes = max_body_bytes
        self.head: p.RequestHead | None = None
        self.request_id = ""
        self.subset: list[str] | None = None
        self.body = bytearray()
        self.body_done = False
        self.targets: list[str] = []
        self.status = 0
        self.served: str | None = None
        self.usage: UsageReader | None = None
        self.closed = False  # an immediate response ended the exchange
        self.rejected = 0  # the status of that immediate response
        self.reported = False
        self.observer = False  # an observability-mode stream: answers nothing, reports the response
        self.reports = True  # False on a routing stream whose response a separate observer stream reports
        self._first = True
        self._parsed: tuple[int, LLMRequest] | None = None  # (body length, request) parsed ahead by pending_request

    def handle(self, req: pb.ProcessingRequest) -> Out:
        """The answers to one message, in the order they must be sent."""
        if self._first:
            self._first = False
            request_mode, response_mode = p.body_modes(req)
            self.request_mode = request_mode or self.request_mode
            self.response_mode = response_mode or self.response_mode
            self.observer = req.observability_mode
        if req.HasField("metadata_context"):
            self.subset = p.subset_hint(req) if self.subset is None else self.subset
            self.served = p.served_endpoint(req) or self.served
            self.reports = self.reports and not p.response_observed_elsewhere(req)
        kind = req.WhichOneof("request")
        if self.observer:
            self._observe(req, kind)
            return []
        if kind == "request_headers":
            return self._request_headers(req.request_headers)
        if kind == "request_body":
            return self._request_body(req.request_body)
        if kind == "request_trailers":
            return self._request_trailers()
        if kind == "response_headers":
            return self._response_headers(req.response_headers)
        if kind == "response_body":
            return self._response_body(req.response_body)
        if kind == "response_trailers":
            self.finish()
            return [p.trailers_response(request=False)]
        log.warning("ext_proc message without a request part", extra={"request_id": self.request_id})
        return []

    def _observe(self, req: pb.ProcessingRequest, kind: str | None) -> None:
        """An observability-mode message: Envoy does not wait for (and ignores) answers; note what the report needs."""
        if kind == "request_headers" and self.head is None:
            self.head = p.read_request_head(req.request_headers)
            self.request_id = self.head.request_id or ""
        elif kind == "response_headers":
            self.status = p.read_response_head(req.response_headers).status

    def malformed(self, error: str) -> Out:
        """A message that does not decode as a ProcessingRequest: the client's fault, a 400 that ends the exchange."""
        if self.closed or self.observer:  # an observer's answers are ignored
            return []
        return self._reject(400, f"malformed ext_proc message: {error}", "bad_message")

    def pending_request(self, req: pb.ProcessingRequest) -> LLMRequest | None:
        """The inference request this message completes, parsed, when handling it will ask for a decision.

        Lets the async shell prepare the request (e.g. tokenize it) before the synchronous `handle`; the parse is
        kept and reused by the decision. None when this message decides nothing or the body does not parse (then
        `handle` answers the error as usual).
        """
        kind = req.WhichOneof("request")
        if self.head is None or self.targets or self.closed or self.body_done or self.observer:
            return None
        if kind == "request_body":
            if self.request_mode == "FULL_DUPLEX_STREAMED" and not req.request_body.end_of_stream:
                return None
            if len(self.body) + len(req.request_body.body) > self.max_body_bytes:
                return None
            body = bytes(self.body) + req.request_body.body
        elif kind == "request_trailers":
            body = bytes(self.body)
        else:
            return None
        try:
            request = parse_request(self.head.path, self.head.headers, body, self.request_id)
        except BadRequestError:
            return None
        self._parsed = (len(body), request)
        return request

    # ---- request path -------------------------------------------------------------------------------------
    def _request_headers(self, msg: pb.HttpHeaders) -> Out:
        if self.head is not None:
            log.warning("duplicate request headers ignored", extra={"request_id": self.request_id})
            return [p.continue_response("request_headers")]
        self.head = p.read_request_head(msg)
        self.request_id = self.head.request_id or uuid.uuid4().hex
        if self.head.end_of_stream or self.request_mode in ("NONE", "STREAMED"):
            # no body to read before routing (a GET, or a mode that forwards headers before the body)
            self.body_done = self.head.end_of_stream
            return self._decide(body_follows=False)
        if (self.head.content_length or 0) > self.max_body_bytes:
            return self._too_large(self.head.content_length)
        if self.request_mode == "FULL_DUPLEX_STREAMED":
            return []  # the headers answer waits for the body
        return [p.continue_response("request_headers")]  # BUFFERED: headers stay held until the body answer

    def _request_body(self, msg: pb.HttpBody) -> Out:
        if self.head is None:
            log.warning("request body before headers", extra={"request_id": self.request_id})
            self.head = p.RequestHead({}, "/", "POST", None, None, False)
            self.request_id = uuid.uuid4().hex
        if self.body_done:
            log.warning(
                "request body after end of stream ignored",
                extra={"request_id": self.request_id, "bytes": len(msg.body), "end_of_stream": msg.end_of_stream},
            )
            return []
        if self.targets:  # routed before the body (STREAMED / NONE): let it through
            self.body_done = msg.end_of_stream
            if self.request_mode == "FULL_DUPLEX_STREAMED":
                return p.streamed_body_responses(msg.body, end_of_stream=msg.end_of_stream)
            return [p.continue_response("request_body")]
        if len(self.body) + len(msg.body) > self.max_body_bytes:
            return self._too_large(len(self.body) + len(msg.body))
        if self.budget is not None and msg.body and not self.budget.take(len(msg.body)):
            return self._over_budget()
        self.body += msg.body
        if self.request_mode == "FULL_DUPLEX_STREAMED" and not msg.end_of_stream:
            return []
        self.body_done = True
        return self._decide(body_follows=True)

    def _request_trailers(self) -> Out:
        out: Out = []
        if not self.body_done and not self.targets and self.head is not None:
            self.body_done = True  # the body ended at the trailers
            out = self._decide(body_follows=True, trailers_follow=True)
            if self.closed:
                return out
        return [*out, p.trailers_response(request=True)]

    def _decide(self, *, body_follows: bool, trailers_follow: bool = False) -> Out:
        assert self.head is not None
        head, body, parsed = self.head, bytes(self.body), self._parsed
        # the stream may outlive the decision (a response reported on it): it keeps no copy of the request
        self.release_body()
        self._parsed = None
        try:
            if body_follows and parsed is not None and parsed[0] == len(body):
                request = parsed[1]
            elif body_follows:
                request = parse_request(head.path, head.headers, body, self.request_id)
            else:
                request = LLMRequest(request_id=self.request_id, model="", kind="other", headers=head.headers)
            started = time.perf_counter()
            result = self.backend.pick(request, self.subset)
        except BadRequestError as exc:
            return self._reject(400, exc.message, "bad_request", param=exc.param)
        except NoEndpointError as exc:
            return self._reject(429 if exc.shed else 503, str(exc), "shed" if exc.shed else "no_endpoint")
        except Exception:
            log.exception("pick failed", extra={"request_id": self.request_id})
            return self._reject(500, "the endpoint picker failed", "picker_error")
        self.targets = result.addresses
        if log.isEnabledFor(logging.DEBUG):  # the reason of every decision, without its cost when not wanted
            pick_ms = round((time.perf_counter() - started) * 1e3, 3)
            why = {"targets": self.targets, "reason": result.reason, "profile": result.profile, "pick_ms": pick_ms}
            what = {"kind": request.kind, "model": request.model, "subset": self.subset, "body_bytes": len(body)}
            log.debug("picked", extra={"request_id": self.request_id, **why, **what})
        if not body_follows:
            return [p.route_headers_response(self.targets)]
        if self.request_mode != "FULL_DUPLEX_STREAMED":
            return [p.route_body_response(self.targets)]
        return [
            p.route_headers_response(self.targets, len(body)),
            *p.streamed_body_responses(body, end_of_stream=not trailers_follow),
        ]

    def _too_large(self, size: int | None) -> Out:
        self.release_body()
        message = f"request body of {size} bytes or more exceeds the picker's limit of {self.max_body_bytes} bytes"
        return self._reject(413, message, "body_too_large")

    def _over_budget(self) -> Out:
        self.release_body()
        assert self.budget is not None
        message = (
            f"the endpoint picker holds {self.budget.held} bytes of request bodies, its limit is {self.budget.limit}: "
            "retry later"
        )
        return self._reject(429, message, "body_budget")

    def release_body(self) -> None:
        """Drop the buffered body and give its bytes back to the budget (idempotent; the shell calls it when the
        stream ends, whatever state it ended in)."""
        if self.body and self.budget is not None:
            self.budget.give_back(len(self.body))
        self.body = bytearray()

    def _reject(self, status: int, message: str, reason: str, param: str | None = None) -> Out:
        self.closed = True
        self.rejected = status
        path = self.head.path if self.head else ""
        log.info(
            "request rejected",
            extra={
                "request_id": self.request_id,
                "status": status,
                "reason": reason,
                "detail": message,
                "kind": request_kind(path),
            },
        )
        return [p.immediate_response(status, message, param=param, reason=reason)]

    # ---- response path ------------------------------------------------------------------------------------
    def _response_headers(self, msg: pb.HttpHeaders) -> Out:
        head = p.read_response_head(msg)
        self.status = head.status
        self.usage = UsageReader(streaming=head.streaming)
        if head.end_of_stream:
            self.finish()
        return [p.continue_response("response_headers")]

    def _response_body(self, msg: pb.HttpBody) -> Out:
        if self.usage is None:
            self.usage = UsageReader(streaming=msg.body.startswith(b"data:"))
        self.usage.feed(msg.body)
        if msg.end_of_stream:
            self.finish()
        if self.response_mode == "FULL_DUPLEX_STREAMED":
            return p.streamed_body_responses(msg.body, response=True, end_of_stream=msg.end_of_stream)
        return [p.continue_response("response_body")]

    def finish(self) -> None:
        """Report the outcome once, if the backend picked for this request (also on cancel or error), or, on an
        observer stream, if it saw the request's id (the backend ignores an id it did not pick for)."""
        if self.reported or not (self.request_id if self.observer else self.targets and self.reports):
            return
        self.reported = True
        try:  # it runs in the shell's `finally`: nothing may escape it
            usage = self.usage.usage() if self.usage is not None else None
            self.backend.response_complete(self.request_id, self.served, self.status, usage)
        except Exception:
            log.exception("response_complete failed", extra={"request_id": self.request_id})
