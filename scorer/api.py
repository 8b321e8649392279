"""`autonomic.picker.v1.Picker`: the picker's own gRPC API (Pick, Complete, Explain) over the Director.

Why it exists: not every client speaks ext_proc (a gateway with its own proxy, a batch job choosing a replica), and
an operator needs to see why a request would go where it goes. Pick and Complete are the ext_proc decision and its
completion as two unary calls; Explain runs the same scheduling cycle with no side effect and reports every
candidate's score by scorer, what each filter removed, which pool members were not candidates and why, and the
reason. The request is parsed by the same parser as the ext_proc path, so both see the same prompt. Served on the
ext_proc port (`serve_extproc(services=[...])`); the message types live in proto/autonomic/picker/v1/picker.proto.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import NoReturn

import grpc

from proto.autonomic.picker.v1 import picker_pb2 as pb
from proto.autonomic.picker.v1 import picker_pb2_grpc as pb_grpc
from scorer.extproc.roundrobin import in_subset
from scorer.framework import Usage
from scorer.metrics import PickerMetrics
from scorer.observed import ObservedDirector
from scorer.request_parser import BadRequestError, parse_request
from scorer.types import EndpointState, LLMRequest, NoEndpointError, SchedulingResult

log = logging.getLogger("autonomic.picker.api")

DEFAULT_PATH = "/v1/completions"


class PickerApi(pb_grpc.PickerServicer):
    def __init__(self, backend: ObservedDirector, metrics: PickerMetrics):
        self.backend = backend
        self.metrics = metrics

    def add_to_server(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_PickerServicer_to_server(self, server)

    async def Pick(self, request: pb.PickRequest, context: grpc.aio.ServicerContext) -> pb.PickResponse:
        llm, subset = await self._parse(request, context, "Pick")
        await self.backend.prepare(llm)
        try:
            result = self.backend.pick(llm, subset)
        except NoEndpointError as exc:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if exc.shed else grpc.StatusCode.UNAVAILABLE
            await self._abort(context, "Pick", code, str(exc))
        targets = result.addresses
        log.debug(
            "picked",
            extra={"request_id": llm.request_id, "targets": targets, "reason": result.reason, "api": "Pick"},
        )
        self._count("Pick", grpc.StatusCode.OK)
        return pb.PickResponse(
            request_id=llm.request_id,
            endpoint=targets[0],
            fallbacks=targets[1:],
            reason=result.reason,
            profile=result.profile,
        )

    async def Complete(self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext) -> pb.CompleteResponse:
        known = self.backend.director.inflight.get(request.request_id) is not None
        usage = None
        if request.HasField("usage"):
            u = request.usage
            usage = Usage(
                prompt_tokens=u.prompt_tokens if u.HasField("prompt_tokens") else None,
                completion_tokens=u.completion_tokens if u.HasField("completion_tokens") else None,
                cached_tokens=u.cached_tokens if u.HasField("cached_tokens") else None,
            )
        if known:  # a repeated or unknown id changes nothing (and is not counted as a response)
            self.backend.response_complete(request.request_id, request.served_endpoint or None, request.status, usage)
        self._count("Complete", grpc.StatusCode.OK)
        return pb.CompleteResponse(known=known)

    async def Explain(self, request: pb.PickRequest, context: grpc.aio.ServicerContext) -> pb.ExplainResponse:
        llm, subset = await self._parse(request, context, "Explain")
        await self.backend.prepare(llm)
        director = self.backend.director
        pool = director.endpoints()
        try:
            result = self.backend.explain(llm, subset)
        except NoEndpointError as exc:
            answer = pb.ExplainResponse(request_id=llm.request_id, error=str(exc), shed=exc.shed)
            _add_filters(answer, exc.filtered_out)
        else:
            answer = self._explanation(llm, result, director.clock())
        answer.prompt_tokens = llm.estimated_prompt_tokens()
        _add_pool(answer, pool, subset)
        self._count("Explain", grpc.StatusCode.OK)
        return answer

    # ---- helpers -----------------------------------------------------------------------------------------
    def _explanation(self, llm: LLMRequest, result: SchedulingResult, now: float) -> pb.ExplainResponse:
        weights = self.backend.weights(result.profile)
        answer = pb.ExplainResponse(
            request_id=llm.request_id, profile=result.profile, targets=result.addresses, reason=result.reason
        )
        answer.scorers.extend(pb.ScorerWeight(name=n, weight=w) for n, w in weights.items())
        for scored in sorted(result.scored, key=lambda s: -s.total):
            state = scored.state
            entry = answer.endpoints.add(endpoint=state.address, total=scored.total, load=_load(state, now))
            entry.scores.update(scored.by_scorer)
        _add_filters(answer, result.filtered_out)
        answer.plugin_seconds.update(result.plugin_seconds)
        answer.notes.update(result.notes)
        return answer

    async def _parse(
        self, request: pb.PickRequest, context: grpc.aio.ServicerContext, method: str
    ) -> tuple[LLMRequest, list[str] | None]:
        request_id = request.request_id or uuid.uuid4().hex
        try:
            llm = parse_request(request.path or DEFAULT_PATH, dict(request.headers), request.body, request_id)
        except BadRequestError as exc:
            where = f"{exc.param}: " if exc.param else ""
            await self._abort(context, method, grpc.StatusCode.INVALID_ARGUMENT, where + exc.message)
        subset = list(request.subset.endpoints) if request.HasField("subset") else None
        return llm, subset

    async def _abort(
        self, context: grpc.aio.ServicerContext, method: str, code: grpc.StatusCode, message: str
    ) -> NoReturn:
        self._count(method, code)
        await context.abort(code, message)
        raise AssertionError("unreachable: context.abort raises")

    def _count(self, method: str, code: grpc.StatusCode) -> None:
        self.metrics.api_requests.labels(method, code.name).inc()


def _load(state: EndpointState, now: float) -> pb.EndpointLoad:
    m = state.metrics
    load = pb.EndpointLoad(in_flight=state.in_flight, dispatched_since_scrape=state.dispatched_since_scrape)
    if m is not None:
        load.waiting, load.running, load.kv_usage = m.waiting, m.running, m.kv_usage
        load.metrics_age_seconds = max(0.0, now - m.scraped_at)
    return load


def _add_filters(answer: pb.ExplainResponse, filtered_out: Mapping[str, tuple[str, ...]]) -> None:
    for name, removed in filtered_out.items():
        answer.filters.add(filter=name, removed=list(removed))


def _add_pool(answer: pb.ExplainResponse, pool: Sequence[EndpointState], subset: Sequence[str] | None) -> None:
    """Members that were not candidates (and why), and the candidates the subset hint left out."""
    outside_subset = []
    for state in pool:
        if state.metrics is None:
            why = f"scrape failed: {state.error}" if state.error else "no successful scrape yet"
        elif state.error is not None:
            why = f"scrape failed: {state.error}"
        elif state.stale:
            why = "metrics stale"
        else:
            if subset is not None and not in_subset(state.address, subset):
                outside_subset.append(state.address)
            continue
        answer.unavailable.add(endpoint=state.address, why=why)
    if outside_subset:
        answer.filters.add(filter="subset hint", removed=outside_subset)
