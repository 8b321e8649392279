"""The scheduling core's facade for the shells: endpoint membership, metrics freshness, in-flight load, picks.

Why it exists: the scheduler is a pure function of (request, candidates, cycle); something has to own the state
around it and decide who is a candidate. The Director does, without any I/O: time comes from an injected `clock`
and randomness from an injected `rng`, so tests drive it step by step and the twins can run faster than real time.
The ext_proc shell calls `pick`/`response_complete`, the scrapers call `update_metrics`, discovery calls
`set_endpoints`, the Explain API calls `explain` (the same decision, with no side effect at all).

Who is a candidate: an endpoint whose last scrape succeeded and is at most `staleness_s` old. A failed scrape takes
the endpoint out at once (it is probably down; Envoy would otherwise have to retry), and it comes back with the next
good scrape. When no endpoint has fresh metrics but some have stale ones from a successful scrape (the scrape loop
is late, e.g. a starved CPU, while nothing says the servers are down), those stale endpoints are the candidates:
routing on old load figures plus the picker's own in-flight counts beats refusing every request, and GIE's EPP
likewise never drops a pod for late metrics. `stale_fallbacks` counts such decisions, and the staleness gauge and
its alert say it is happening. A subset hint (`envoy.lb.subset_hint`, ip:port or bare IP entries) restricts the
candidates further; an empty hint, or one that matches no candidate, is `NoEndpointError` (the shell answers 503),
as GIE's protocol says.

Passive health (outlier ejection): an endpoint whose responses ended with a 5xx `eject_after_errors` times in a row
is out for `ejection_s`, then back on probation (the next run of errors takes it out again). A scrape cannot see
this failure: a wedged vLLM answers every request with 500 while its /metrics still answers (the picker chaos
campaign's replica-error scenario: a third of the requests failed for the whole fault before this rule). Status 0
(the stream ended before response headers: a client cancel) and expired entries are not judged. Ejection never
empties the pool: when it would leave no candidate, the ejected endpoints are candidates again.

In-flight accounting: `pick` charges the primary target (in_flight + 1, in_flight_tokens + prompt tokens,
dispatched_since_scrape + 1); `response_complete` releases that same charge exactly once. When Envoy retried down
the fallback list, the served endpoint differs from the primary: the charge is still released where it was made
(releasing it on the served endpoint would leave the primary charged forever and undercount the served one), and
the response hooks are told the *served* endpoint, which is where the prompt's prefix is now cached. Entries older
than `inflight_ttl_s` are expired (charge released, hooks told status 504), so a lost response never leaks load.

Deferred learning: `pick(..., defer_learning=True)` returns as soon as the decision is made and charged; the
plugins' learning from it (`Scheduler.commit`: e.g. recording the prompt's blocks in the prefix index, about 40% of
a 32k-token decision) waits until `learn_pending()`, which the shell calls once the answer is on its way to Envoy.
Every other entry point (the next pick, explain, a response, a membership change) runs what is pending first, so
each decision still sees every earlier one, exactly as without deferral; at most one decision is ever pending.

Active-active replicas (scorer/replica_wire.py, scorer/replica_sync.py): `on_routed` / `on_ended`, when set, are told
every local decision and every response end the shell reported, for the peers; `peer_routed` / `peer_ended` apply a
peer's. A peer's decision is charged here as if made here (the endpoint's in-flight counts include it, the sharing
plugins learn its blocks), and a response end reported to any replica releases the charge on all. An end that
arrives before its decision (the other replica's `Routed` still in its batch) leaves a short-lived tombstone, so the
late decision teaches its blocks but is not charged forever. A deferred decision is told to the peers once it has
been learnt from (what the plugins learnt is what is sent).
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from scorer.framework import Usage
from scorer.inflight import InFlight, InFlightTable
from scorer.replica_wire import Ended, Routed
from scorer.scheduler import Scheduler
from scorer.types import (
    CycleState,
    Endpoint,
    EndpointMetrics,
    EndpointState,
    IndexSnapshot,
    LLMRequest,
    NoEndpointError,
    SchedulingResult,
)

LOST_RESPONSE_STATUS = 504  # what response hooks are told about a request whose end never arrived
TOMBSTONES = 65_536  # ended requests remembered without their decision (an end that overtook a peer's Routed)
TOMBSTONE_S = 60.0


@dataclass
class _Tracked:
    state: EndpointState
    received_at: float = float("-inf")  # clock time of the last successful scrape
    errors_in_row: int = 0  # responses that ended with a 5xx since the last one that did not
    ejected_until: float = float("-inf")
    ejections: int = 0


class Director:
    def __init__(
        self,
        scheduler: Scheduler,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        staleness_s: float = 5.0,
        inflight_ttl_s: float = 600.0,
        eject_after_errors: int = 5,  # 0: never eject
        ejection_s: float = 5.0,
    ):
        self.scheduler = scheduler
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self._explain_rng = random.Random(self.rng.getrandbits(64))  # Explain never advances the picks' rng
        self.staleness_s = staleness_s
        self.eject_after_errors = eject_after_errors
        self.ejection_s = ejection_s
        self.inflight = InFlightTable(inflight_ttl_s)
        self._tracked: dict[str, _Tracked] = {}
        self._lock = threading.Lock()
        self.stale_fallbacks = 0  # decisions made on stale metrics because no endpoint had fresh ones
        self._pending: list[tuple[LLMRequest, SchedulingResult, CycleState, int]] = []  # decided, not learnt from
        self.on_routed: Callable[[Routed], None] | None = None  # told each local decision (for peer replicas)
        self.on_ended: Callable[[Ended], None] | None = None  # told each response end the shell reported
        self._tombstones: OrderedDict[str, float] = OrderedDict()  # request id -> when it ended, decision unseen

    # ---- membership and metrics --------------------------------------------------------------------------
    def set_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        """The pool's members now; survivors keep their metrics and counters, newcomers wait for a first scrape."""
        with self._lock:
            self._learn()
            tracked: dict[str, _Tracked] = {}
            for endpoint in endpoints:
                known = self._tracked.get(endpoint.address)
                if known is None:
                    known = _Tracked(EndpointState(endpoint))
                else:
                    known.state.endpoint = endpoint  # labels may have changed
                tracked[endpoint.address] = known
            self._tracked = tracked
            self.scheduler.endpoints_changed(frozenset(tracked))

    def update_metrics(self, address: str, metrics: EndpointMetrics | None, error: str | None = None) -> None:
        """One scrape result; `metrics=None` is a failed scrape (`error` says why). Unknown addresses are ignored."""
        with self._lock:
            tracked = self._tracked.get(address)
            if tracked is None:
                return
            state = tracked.state
            if metrics is None:
                state.error = error or "scrape failed"
                return
            state.metrics, state.error, state.stale = metrics, None, False
            state.dispatched_since_scrape = 0
            tracked.received_at = self.clock()
            self.scheduler.metrics_updated(address, metrics)

    def endpoints(self) -> list[EndpointState]:
        """Every member with its freshness refreshed (for status pages and tests)."""
        with self._lock:
            now = self.clock()
            for tracked in self._tracked.values():
                self._refresh(tracked, now)
            return [t.state for t in self._tracked.values()]

    def ready(self) -> bool:
        """At least one endpoint can take traffic: its last scrape succeeded (fresh, or stale as a last resort)."""
        with self._lock:
            now = self.clock()
            for tracked in self._tracked.values():
                self._refresh(tracked, now)
            return any(t.state.metrics is not None and t.state.error is None for t in self._tracked.values())

    # ---- decisions ---------------------------------------------------------------------------------------
    def pick(
        self, request: LLMRequest, subset: Sequence[str] | None = None, *, defer_learning: bool = False
    ) -> SchedulingResult:
        """Choose targets, charge the primary, let the plugins learn (now, or at `learn_pending()` when
        `defer_learning`). Raises `NoEndpointError`."""
        with self._lock:
            self._learn()
            now = self.clock()
            self._expire(now)
            cycle = CycleState(now=now, rng=self.rng)
            result = self.scheduler.schedule(request, self._candidates(subset, now), cycle)
            tokens = self._charge(request, result.targets[0], now)
            if defer_learning:
                self._pending.append((request, result, cycle, tokens))
            else:
                self._commit(request, result, cycle, tokens)
            return result

    def learn_pending(self) -> int:
        """Let the plugins learn from the decisions `pick` deferred; returns how many there were (0 or 1)."""
        with self._lock:
            return self._learn()

    def explain(self, request: LLMRequest, subset: Sequence[str] | None = None) -> SchedulingResult:
        """The decision `pick` would make now, with no side effect (no charge, no learning, no rng advance)."""
        with self._lock:
            self._learn()
            now = self.clock()
            cycle = CycleState(now=now, rng=random.Random(self._explain_rng.getrandbits(64)))
            return self.scheduler.schedule(request, self._candidates(subset, now), cycle)

    def response_complete(self, request_id: str, served: str | None, status: int, usage: Usage | None) -> None:
        """A response ended: release its charge, tell the response hooks. Unknown or repeated ids are ignored."""
        with self._lock:
            self._learn()
            self._complete(request_id, served, status, usage)
        if self.on_ended is not None:
            self.on_ended(Ended(request_id, served, status))

    # ---- peer replicas -----------------------------------------------------------------------------------
    def peer_routed(self, event: Routed) -> None:
        """A peer replica sent a request: learn its blocks and charge it here too (unless it already ended)."""
        with self._lock:
            self._learn()
            now = self.clock()
            tracked = self._tracked.get(event.address)
            if tracked is None:  # not (or no longer) a member here
                return
            self.scheduler.learn_peer_routing(event.address, event.blocks, now)
            if self._tombstones.pop(event.request_id, None) is not None:
                return
            stub = LLMRequest(request_id=event.request_id, model="")
            self._charge_tokens(stub, tracked.state, event.tokens, now)

    def snapshot(self) -> dict[str, IndexSnapshot]:
        """What the plugins keep per endpoint, for a peer replica that starts (Scheduler.snapshot)."""
        with self._lock:
            self._learn()
            return self.scheduler.snapshot()

    def restore(self, plugins: Mapping[str, IndexSnapshot]) -> int:
        """Take a peer's snapshot for the endpoints this Director tracks; returns the blocks taken."""
        with self._lock:
            self._learn()
            return self.scheduler.restore(plugins, frozenset(self._tracked))

    def peer_ended(self, event: Ended) -> None:
        """A response a peer replica heard the end of: release it here (not told to `on_ended` again)."""
        with self._lock:
            self._learn()
            self._complete(event.request_id, event.served, event.status, None)

    def _complete(self, request_id: str, served: str | None, status: int, usage: Usage | None) -> None:
        now = self.clock()
        entry = self.inflight.pop(request_id)
        if entry is None:
            self._tombstones[request_id] = now
            self._tombstones.move_to_end(request_id)
            while self._tombstones and (
                len(self._tombstones) > TOMBSTONES or now - next(iter(self._tombstones.values())) > TOMBSTONE_S
            ):
                self._tombstones.popitem(last=False)
            return
        self._release(entry)
        self._judge(served or entry.address, status, now)
        self.scheduler.response_complete(entry.request, served or entry.address, status, usage, now)

    def in_flight_requests(self) -> int:
        return len(self.inflight)

    def ejections(self) -> dict[str, int]:
        """How many times each member was ejected for answering errors (for the metrics)."""
        with self._lock:
            return {address: t.ejections for address, t in self._tracked.items()}

    # ---- helpers -----------------------------------------------------------------------------------------
    def _learn(self) -> int:
        pending, self._pending = self._pending, []
        for request, result, cycle, tokens in pending:
            self._commit(request, result, cycle, tokens)
        return len(pending)

    def _commit(self, request: LLMRequest, result: SchedulingResult, cycle: CycleState, tokens: int) -> None:
        """The plugins learn from a decision; then the peer replicas are told it (with what the plugins learned)."""
        self.scheduler.commit(request, result, cycle)
        if self.on_routed is not None:
            blocks = self.scheduler.routing_blocks(cycle, request)
            self.on_routed(Routed(request.request_id, result.targets[0].address, tokens, blocks))

    def _judge(self, address: str, status: int, now: float) -> None:
        tracked = self._tracked.get(address)
        if tracked is None or status < 100:
            return
        if status < 500:
            tracked.errors_in_row = 0
            return
        tracked.errors_in_row += 1
        if self.eject_after_errors and tracked.errors_in_row >= self.eject_after_errors:
            tracked.errors_in_row = 0
            tracked.ejected_until = now + self.ejection_s
            tracked.ejections += 1

    def _refresh(self, tracked: _Tracked, now: float) -> bool:
        """Update the stale and ejected flags; True when the endpoint is a candidate (ejection aside)."""
        state = tracked.state
        state.stale = state.metrics is not None and now - tracked.received_at > self.staleness_s
        state.ejected = now < tracked.ejected_until
        return state.metrics is not None and state.error is None and not state.stale

    def _candidates(self, subset: Sequence[str] | None, now: float) -> list[EndpointState]:
        eligible = [t.state for t in self._tracked.values() if self._refresh(t, now)]
        healthy = [s for s in eligible if not s.ejected]
        eligible = healthy or eligible  # ejection never empties the pool
        if not eligible:  # last resort: the endpoints whose last scrape succeeded, however old
            eligible = [s for t in self._tracked.values() if (s := t.state).metrics is not None and s.error is None]
            if not eligible:
                raise NoEndpointError("no ready endpoints")
            self.stale_fallbacks += 1
        if subset is None:
            return eligible
        if not subset:
            raise NoEndpointError("the subset hint is empty")
        wanted = set(subset)
        chosen = [s for s in eligible if s.address in wanted or s.address.rpartition(":")[0] in wanted]
        if not chosen:
            raise NoEndpointError(f"no ready endpoint in the subset hint ({len(wanted)} given)")
        return chosen

    def _charge(self, request: LLMRequest, primary: EndpointState, now: float) -> int:
        tokens = request.estimated_prompt_tokens()
        self._charge_tokens(request, primary, tokens, now)
        return tokens

    def _charge_tokens(self, request: LLMRequest, primary: EndpointState, tokens: int, now: float) -> None:
        primary.in_flight += 1
        primary.in_flight_tokens += tokens
        primary.dispatched_since_scrape += 1
        replaced = self.inflight.add(InFlight(request.without_prompt(), primary, tokens, now))
        if replaced is not None:  # the same request id picked twice: the first charge is void
            self._release(replaced)

    def _release(self, entry: InFlight) -> None:
        tracked = self._tracked.get(entry.address)
        if tracked is None or tracked.state is not entry.target:  # it left the pool (and maybe came back afresh)
            return
        state = entry.target
        state.in_flight = max(0, state.in_flight - 1)
        state.in_flight_tokens = max(0, state.in_flight_tokens - entry.tokens)

    def _expire(self, now: float) -> None:
        for entry in self.inflight.expire(now):
            self._release(entry)
            self.scheduler.response_complete(entry.request, entry.address, LOST_RESPONSE_STATUS, None, now)
