"""session-affinity-scorer: keep a conversation on the replica that served its previous turn.

Formula: `score(e) = 1.0` if the request's session (header `header`, default `x-session-id`) is bound to e and the
binding has not expired, else 0.0 (requests without a session score 0 everywhere: neutral).
Learning: `pre_request` binds the session to the primary target for `ttlSeconds` (refreshed on every turn); when
the response says another endpoint served it (Envoy retried), the binding moves there. At most `maxSessions` bindings
are kept, the least recently used dropped first (llm-d's `session_id` mode).
Parameters: `header` ("x-session-id"), `ttlSeconds` (300), `maxSessions` (100000).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

from pydantic import Field

from scorer.framework import PluginParams, Usage
from scorer.types import CycleState, EndpointState, LLMRequest, SchedulingResult


class SessionAffinityParams(PluginParams):
    header: str = Field("x-session-id", min_length=1)
    ttl_seconds: float = Field(300.0, gt=0, allow_inf_nan=False)
    max_sessions: int = Field(100_000, ge=1)


class SessionAffinityScorer:
    type_name: ClassVar[str] = "session-affinity-scorer"
    Params = SessionAffinityParams

    def __init__(self, name: str, params: SessionAffinityParams):
        self.name = name
        self.params = params
        self.bindings: OrderedDict[str, tuple[str, float]] = OrderedDict()  # session -> (address, expires at)

    def session_of(self, request: LLMRequest) -> str | None:
        return request.headers.get(self.params.header.lower()) or request.headers.get(self.params.header) or None

    def bound_endpoint(self, session: str, now: float) -> str | None:
        binding = self.bindings.get(session)
        if binding is None or binding[1] <= now:
            return None
        return binding[0]

    def score(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> dict[str, float]:
        session = self.session_of(request)
        bound = self.bound_endpoint(session, cycle.now) if session else None
        return {c.address: 1.0 if c.address == bound else 0.0 for c in candidates}

    def pre_request(self, cycle: CycleState, request: LLMRequest, result: SchedulingResult) -> None:
        session = self.session_of(request)
        if session and result.targets:
            self._bind(session, result.targets[0].address, cycle.now)

    def response_complete(
        self, request: LLMRequest, address: str, status: int, usage: Usage | None, now: float
    ) -> None:
        session = self.session_of(request)
        if session and status < 400 and self.bindings.get(session, ("", 0.0))[0] != address:
            self._bind(session, address, now)

    def _bind(self, session: str, address: str, now: float) -> None:
        self.bindings[session] = (address, now + self.params.ttl_seconds)
        self.bindings.move_to_end(session)
        while len(self.bindings) > self.params.max_sessions:
            self.bindings.popitem(last=False)
