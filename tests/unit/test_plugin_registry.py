"""The plugin registry: an explicit table of types that the loader resolves against, never filled by an import."""

from __future__ import annotations

import inspect
import pkgutil
import random
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from pydantic import BaseModel, Field

import scorer.plugins
from scorer.config import ConfigError, load_config
from scorer.framework import NoParams, PluginParams
from scorer.plugins import DEFAULT_PLUGIN_TYPES, default_registry
from scorer.plugins.pickers import MaxScorePicker
from scorer.plugins.scorers import QueueScorer
from scorer.registry import PluginRegistry, PluginRuntime, PluginType
from scorer.scheduler import Scheduler
from scorer.types import CycleState, Endpoint, EndpointMetrics, EndpointState, LLMRequest

ROOT = Path(__file__).parents[2]
HEAD = "apiVersion: autonomic.dev/v1alpha1\nkind: EndpointPickerConfig\n"

SHIPPED_TYPES = {
    "label-selector-filter",
    "saturation-filter",
    "device-health-filter",
    "prefix-cache-scorer",
    "precise-prefix-cache-scorer",
    "ttft-estimate-scorer",
    "queue-scorer",
    "kv-cache-utilization-scorer",
    "running-requests-scorer",
    "active-request-scorer",
    "lora-affinity-scorer",
    "session-affinity-scorer",
    "device-capacity-scorer",
    "max-score-picker",
    "weighted-random-picker",
    "random-picker",
    "single-profile-handler",
    "header-profile-handler",
}


class FavouriteParams(PluginParams):
    address: str = Field(min_length=1)
    score: float = Field(1.0, ge=0.0)


class FavouriteScorer:
    """A scorer that is not shipped: `score` for one address, 0 for the others."""

    type_name: ClassVar[str] = "favourite-scorer"
    Params = FavouriteParams

    def __init__(self, name: str, params: FavouriteParams):
        self.name, self.params = name, params

    def score(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> dict[str, float]:
        return {c.address: self.params.score if c.address == self.params.address else 0.0 for c in candidates}


class OtherQueueScorer(QueueScorer):
    """Claims a type name the table already has."""


class Untyped:
    pass


class BadParams:
    type_name: ClassVar[str] = "bad-params"
    Params = dict


FAVOURITE = PluginType.of(FavouriteScorer)
WITH_FAVOURITE = default_registry().with_types(FAVOURITE)
SMALL = PluginRegistry([PluginType.of(QueueScorer), PluginType.of(MaxScorePicker)])  # no profile handler


def _errors(text: str, registry: PluginRegistry) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(HEAD + text, registry)
    return info.value.errors


@pytest.mark.parametrize(
    ("registry", "text", "expected"),
    [
        pytest.param(
            default_registry(),
            "plugins: [{type: queue-scorer}, {type: favourite-scorer}]\nschedulingProfiles: [{name: d}]\n",
            "plugins[1].type: unknown plugin type 'favourite-scorer' (known: active-request-scorer, ",
            id="not-in-the-default-table",
        ),
        pytest.param(
            SMALL,
            "plugins: [{type: max-score-picker}, {type: prefix-cache-scorer, name: p}]\n"
            "schedulingProfiles: [{name: d, plugins: [{pluginRef: p}]}]\n",
            "plugins[1].type: unknown plugin type 'prefix-cache-scorer' (known: max-score-picker, queue-scorer)",
            id="known-lists-this-registry",
        ),
        pytest.param(
            WITH_FAVOURITE,
            "plugins: [{type: favourite-scorer, parameters: {address: ''}}]\nschedulingProfiles: [{name: d}]\n",
            "plugins[0].parameters.address: ",
            id="extra-type-parameter-bound",
        ),
        pytest.param(
            WITH_FAVOURITE,
            "plugins: [{type: favourite-scorer, parameters: {address: a, scroe: 2}}]\n"
            "schedulingProfiles: [{name: x}]\n",
            "plugins[0].parameters.scroe: unknown field",
            id="extra-type-unknown-parameter",
        ),
        pytest.param(
            WITH_FAVOURITE,
            "plugins: [{type: favourite-scorer}]\nschedulingProfiles: [{name: d}]\n",
            "plugins[0].parameters.address: required",
            id="extra-type-missing-parameter",
        ),
        pytest.param(
            SMALL,
            "plugins: [{type: queue-scorer}]\nschedulingProfiles: [{name: d, plugins: [{pluginRef: queue-scorer}]}]\n",
            "schedulingProfiles: needs a single-profile-handler, a plugin type the registry does not have",
            id="default-handler-missing",
        ),
    ],
)
def test_errors_name_their_path_and_this_registrys_types(registry: PluginRegistry, text: str, expected: str) -> None:
    errors = _errors(text, registry)
    assert any(e.startswith(expected) for e in errors), errors


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(lambda: PluginRegistry([FAVOURITE, FAVOURITE]), "'favourite-scorer' registered twice", id="twice"),
        pytest.param(
            lambda: default_registry().with_types(PluginType.of(OtherQueueScorer)),
            "'queue-scorer' registered twice",
            id="shipped-name-other-class",
        ),
        pytest.param(
            lambda: WITH_FAVOURITE.with_types(PluginType.of(FavouriteScorer)),
            "'favourite-scorer' registered twice",
            id="extra-name-again",
        ),
    ],
)
def test_a_second_row_for_a_type_name_is_refused(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    ("cls", "message"),
    [(Untyped, "Untyped must declare a non-empty type_name"), (BadParams, "BadParams.Params must be a pydantic")],
)
def test_a_row_needs_a_type_name_and_a_params_model(cls: type, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        PluginType.of(cls)


def test_a_registry_with_an_extra_type_is_used_by_a_config_and_changes_no_other_table() -> None:
    text = (
        HEAD + "plugins: [{type: favourite-scorer, name: fav, parameters: {address: '10.0.0.2:80'}}, "
        "{type: queue-scorer}]\n"
        "schedulingProfiles: [{name: d, plugins: [{pluginRef: fav, weight: 5}, {pluginRef: queue-scorer}]}]\n"
    )
    config = load_config(text, WITH_FAVOURITE)
    assert config.registry is WITH_FAVOURITE and config.plugin("fav").params == FavouriteParams(address="10.0.0.2:80")
    scheduler = Scheduler(config)
    assert isinstance(scheduler.plugins["fav"], FavouriteScorer)
    candidates = [EndpointState(Endpoint(a), EndpointMetrics()) for a in ("10.0.0.1:80", "10.0.0.2:80")]
    result = scheduler.schedule(LLMRequest("r", "m", prompt="p"), candidates, CycleState(0.0, random.Random(0)))
    assert result.addresses == ["10.0.0.2:80"] and result.scored[1].by_scorer == {"fav": 1.0, "queue-scorer": 1.0}
    assert "favourite-scorer" not in default_registry()  # extending built a new table
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.type: unknown plugin type 'favourite-scorer'"):
        load_config(text)


def test_the_default_table_lists_every_shipped_plugin_class_once() -> None:
    registry = default_registry()
    assert set(registry) == SHIPPED_TYPES and len(registry) == len(DEFAULT_PLUGIN_TYPES)
    shipped_classes = set()
    for module in pkgutil.walk_packages(scorer.plugins.__path__, "scorer.plugins."):
        for _, obj in inspect.getmembers(__import__(module.name, fromlist=["_"]), inspect.isclass):
            if obj.__module__ == module.name and isinstance(getattr(obj, "type_name", None), str):
                shipped_classes.add(obj)
    assert {row.cls for row in DEFAULT_PLUGIN_TYPES} == shipped_classes
    for row in DEFAULT_PLUGIN_TYPES:
        assert row.name == row.cls.type_name and row.roles, row.name  # every shipped plugin fills some role
        assert issubclass(row.params, BaseModel) and row.params is getattr(row.cls, "Params", NoParams)
        row.params()  # every parameter has a default


def _shipped_profiles() -> list[Path]:
    paths = sorted(ROOT.glob("scorer/*.yaml")) + sorted(ROOT.glob("deploy/**/*.yaml"))
    found = []
    for path in paths:
        if path.is_relative_to(ROOT / "deploy" / "helm") and "templates" in path.parts:
            continue  # Helm templates are not YAML until rendered (tests/unit/test_helm_chart.py renders them)
        docs = list(yaml.safe_load_all(path.read_text()))
        if any(isinstance(d, dict) and d.get("kind") == "EndpointPickerConfig" for d in docs):
            found.append(path)
    return found


@pytest.mark.parametrize("path", _shipped_profiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_shipped_profile_loads_and_builds(path: Path) -> None:
    config = load_config(path)
    runtime = PluginRuntime()
    scheduler = Scheduler(config, runtime)
    assert set(scheduler.plugins) == {p.name for p in config.plugins}
    assert {p.type for p in config.plugins} <= SHIPPED_TYPES


def test_shipped_profiles_are_found() -> None:
    names = {str(p.relative_to(ROOT)) for p in _shipped_profiles()}
    expected = {"scorer/default-config.yaml", "scorer/precise-config.yaml", "scorer/dra-config.yaml"}
    assert expected | {"deploy/base/picker/config.yaml"} <= names


def test_runtime_refuses_an_input_of_the_wrong_kind() -> None:
    runtime = PluginRuntime({"p": "not a state"})
    with pytest.raises(TypeError, match="plugin 'p': run-time input is a str, not a int"):
        runtime.provide("p", int, lambda: 0)
    assert runtime.provide("q", int, lambda: 7) == 7 and runtime.provided(int) == {"q": 7}
