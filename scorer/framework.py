"""Extension points of the scheduling framework, one method each.

A plugin class declares `type_name` (the `type:` in the config), a pydantic `Params` model (its parameters, with
defaults; unknown keys are errors) and a constructor `(name, params)`; it becomes usable in a config through a row of
a `scorer.registry.PluginRegistry`. It implements one of the protocols below and may also implement the optional
hooks:

- `Filter.filter` keeps the candidates that may serve the request;
- `Scorer.score` returns a score in [0, 1] for every candidate (the framework clamps, weights and sums);
- `Picker.pick` chooses the targets from the scored candidates, first the primary, then fallbacks;
- `ProfileHandler.select` chooses which scheduling profile runs for a request;
- `PreRequestHook.pre_request` learns from a decision (e.g. the prefix index records what was sent where);
- `ResponseHook.response_complete` learns from the answer (served endpoint, usage, cached tokens);
- `MembershipHook.endpoints_changed` drops the state of endpoints that left the pool;
- `MetricsHook.metrics_updated` learns from each successful scrape (e.g. the prefix index sizes itself from it);
- `PluginBinder.bind` receives every plugin by name once (a scorer that reads another plugin's per-cycle data).

A filter may declare `soft = True` (skipped when it would remove every candidate); a plugin class may define a
classmethod `check_references(params, plugin_types_by_name, profile_names)` that the config loader calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from scorer.types import (
    CycleState,
    EndpointMetrics,
    EndpointState,
    IndexSnapshot,
    LLMRequest,
    SchedulingResult,
    ScoredEndpoint,
)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@runtime_checkable
class Plugin(Protocol):
    type_name: ClassVar[str]
    name: str


@runtime_checkable
class Filter(Plugin, Protocol):
    def filter(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> list[EndpointState]:
        """The candidates that may serve the request (a subset of `candidates`, order kept)."""
        ...


@runtime_checkable
class Scorer(Plugin, Protocol):
    def score(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> dict[str, float]:
        """A score in [0, 1] for every candidate, keyed by address (missing means 0)."""
        ...


@runtime_checkable
class Picker(Plugin, Protocol):
    def pick(
        self, cycle: CycleState, request: LLMRequest, scored: list[ScoredEndpoint]
    ) -> tuple[list[ScoredEndpoint], str]:
        """The chosen endpoints (primary first, then fallbacks) and a short reason."""
        ...


@runtime_checkable
class ProfileHandler(Plugin, Protocol):
    def select(self, cycle: CycleState, request: LLMRequest, profiles: Sequence[str]) -> str:
        """The name of the profile to run for this request."""
        ...


@runtime_checkable
class PreRequestHook(Protocol):
    def pre_request(self, cycle: CycleState, request: LLMRequest, result: SchedulingResult) -> None: ...


@dataclass(frozen=True)
class Usage:
    """OpenAI `usage` as read from the response (None fields were absent)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None


@runtime_checkable
class ResponseHook(Protocol):
    def response_complete(
        self, request: LLMRequest, address: str, status: int, usage: Usage | None, now: float
    ) -> None: ...


# ---- compatible extensions used by the scheduler and the config loader ------------------------------------
class PluginParams(BaseModel):
    """Base for plugin parameters: snake_case in Python, camelCase in YAML (`blockSize`), unknown keys refused."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


@runtime_checkable
class MembershipHook(Protocol):
    """Told the full set of endpoint addresses whenever membership changes (drop state of departed endpoints)."""

    def endpoints_changed(self, present: frozenset[str]) -> None: ...


@runtime_checkable
class MetricsHook(Protocol):
    """Told every successful scrape of an endpoint (cheap: it runs for each endpoint every scrape interval)."""

    def metrics_updated(self, address: str, metrics: EndpointMetrics) -> None: ...


def share_key(name: str, plugin: object) -> str:
    """The key under which a plugin's state goes to peer replicas (`SharedRoutingHook`, `SnapshotHook`): its name, or
    its `share_key` attribute when its state only means something to a peer configured alike (the prefix index's
    hashes depend on its block size). A peer's state under a key this replica does not have is ignored, so replicas
    configured differently (mid-way through a rollout that changes the block size) do not fill each other's indexes
    with hashes that never match."""
    key = getattr(plugin, "share_key", None)
    return key if isinstance(key, str) and key else name


@runtime_checkable
class SharedRoutingHook(Protocol):
    """What a plugin learns from a decision, in a form another picker replica can learn it from (active-active).

    `routing_blocks` returns what this plugin recorded for the decision as unsigned 64-bit integers (the prompt's
    block hashes for the prefix index, the prefill work for the ttft estimate's backlog; None: nothing to share); a
    peer replica calls `learn_peer_routing(address, blocks, now)` with them, so its state holds what every replica
    sent where. Both must be cheap: they run inside the decision and for every peer decision."""

    def routing_blocks(self, cycle: CycleState, request: LLMRequest) -> Sequence[int] | None: ...

    def learn_peer_routing(self, address: str, blocks: Sequence[int], now: float) -> None: ...


@runtime_checkable
class SnapshotHook(Protocol):
    """State a replica that starts can copy from a running peer instead of learning it again from traffic.

    `snapshot()` returns, per endpoint, the block hashes the plugin holds for it, least recently used first, and
    what sizes them; `restore(snapshot, present)` takes the lists of the endpoints in `present` (the plugin's own
    bounds still apply) and returns how many blocks it took."""

    def snapshot(self) -> IndexSnapshot: ...

    def restore(self, snapshot: IndexSnapshot, present: frozenset[str]) -> int: ...


@runtime_checkable
class PluginBinder(Protocol):
    """Given every instantiated plugin by name once, before the first cycle (to reach a plugin it reads from)."""

    def bind(self, plugins: Mapping[str, Plugin]) -> None: ...


ReferenceCheck = Callable[[Any, Mapping[str, str], Sequence[str]], list[tuple[str, str]]]
"""Optional classmethod `check_references(params, plugin_types_by_name, profile_names)` on a plugin class: returns
`(parameter path, message)` for every reference to another plugin or profile that cannot be resolved."""

ROLE_METHODS: Mapping[str, str] = {
    "filter": "filter",
    "scorer": "score",
    "picker": "pick",
    "profile-handler": "select",
}


def plugin_roles(cls: type) -> frozenset[str]:
    """The extension points a plugin class fills, by the methods it defines (a class may fill several)."""
    return frozenset(role for role, method in ROLE_METHODS.items() if callable(getattr(cls, method, None)))


def is_soft_filter(plugin: object) -> bool:
    """A soft filter is skipped (with a note) when it would remove every candidate, instead of failing the cycle."""
    return bool(getattr(plugin, "soft", False))
