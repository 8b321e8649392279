"""Fuzz target: the config loaders, `scorer.config.load_config` and `controller.config.load_config`, on any YAML.

Invariant: a typed config or `ConfigError` listing problems as non-empty `path: message` strings; nothing else
escapes (not a YAML error, a RecursionError, a pydantic error or an OSError). A picker config that loads also builds
a `Scheduler` (every plugin's parameters were validated at load time). Documents are drawn near the real shapes
(right keys, wrong values) and far from them (any YAML value, nesting, aliases, tags), then dumped or written raw.
"""

from __future__ import annotations

import yaml
from fuzz_support import counted
from hypothesis import event, given
from hypothesis import strategies as st

import controller.config as controller_config
import scorer.config as picker_config
from scorer.scheduler import Scheduler

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["", "0", "-1", "1e309", ".inf", "NaN", "true", "a,b", "queue-scorer", "max-score-picker"])
)
YAML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
PLUGIN_TYPES = st.sampled_from(
    [
        "prefix-cache-scorer",
        "queue-scorer",
        "kv-cache-utilization-scorer",
        "ttft-estimate-scorer",
        "max-score-picker",
        "random-picker",
        "weighted-random-picker",
        "session-affinity-scorer",
        "lora-affinity-scorer",
        "saturation-filter",
        "label-selector-filter",
        "device-capacity-scorer",
        "active-request-scorer",
        "running-requests-scorer",
        "single-profile-handler",
        "header-profile-handler",
        "device-health-filter",
        "nope",
    ]
)
PARAM_NAMES = st.sampled_from(
    [
        "blockSize",
        "maxPrefixBlocks",
        "lruCapacityPerServer",
        "maxNumOfEndpoints",
        "prefillTokensPerSecond",
        "decodeStepSeconds",
        "countUnscraped",
        "header",
        "matchLabels",
        "basis",
        "queueDepthThreshold",
        "x",
    ]
)
PLUGIN = st.fixed_dictionaries(
    {"type": PLUGIN_TYPES | SCALARS},
    optional={
        "name": st.sampled_from(["a", "b", "queue-scorer", ""]) | SCALARS,
        "parameters": st.dictionaries(PARAM_NAMES, SCALARS | YAML_VALUES, max_size=3) | YAML_VALUES,
    },
)
PROFILE = st.fixed_dictionaries(
    {"name": st.sampled_from(["default", "x", ""]) | SCALARS},
    optional={
        "plugins": st.lists(
            st.fixed_dictionaries(
                {"pluginRef": PLUGIN_TYPES | st.sampled_from(["a", "b"]) | SCALARS},
                optional={"weight": SCALARS},
            )
            | YAML_VALUES,
            max_size=4,
        )
        | YAML_VALUES
    },
)
PICKER_DOC = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.sampled_from(["autonomic.dev/v1alpha1", "inference.networking.x-k8s.io/v1alpha1"]) | SCALARS,
        "kind": st.just("EndpointPickerConfig") | SCALARS,
        "plugins": st.lists(PLUGIN | YAML_VALUES, max_size=5) | YAML_VALUES,
        "schedulingProfiles": st.lists(PROFILE | YAML_VALUES, max_size=3) | YAML_VALUES,
        "extra": YAML_VALUES,
    },
)
SANE = st.integers(-2, 100) | st.floats(-1, 1e5) | st.booleans() | st.sampled_from(["x-profile", "auto", "device"])


@st.composite
def near_valid_picker(draw: st.DrawFn) -> dict[str, object]:
    """A well-formed document with known plugin types, plausible parameters and a profile using them."""
    picker = draw(st.sampled_from(["max-score-picker", "random-picker", "weighted-random-picker"]))
    types = [*draw(st.lists(PLUGIN_TYPES, max_size=4, unique=True).filter(lambda ts: picker not in ts)), picker]
    plugins = [
        {
            "type": t,
            **(
                {"parameters": draw(st.dictionaries(PARAM_NAMES, SANE, max_size=2))}
                if not draw(st.integers(0, 2))
                else {}
            ),
        }
        for t in types
    ]
    refs = [
        {
            "pluginRef": t,
            **(
                {"weight": draw(st.integers(1, 5) | st.integers(-1, 0) | st.floats(0, 5))}
                if draw(st.booleans())
                else {}
            ),
        }
        for t in types
        if draw(st.integers(0, 5))
    ]
    doc: dict[str, object] = {
        "apiVersion": "autonomic.dev/v1alpha1",
        "kind": "EndpointPickerConfig",
        "plugins": plugins,
        "schedulingProfiles": [{"name": "default", "plugins": refs}],
    }
    if draw(st.integers(0, 3)) == 0:
        doc[draw(st.sampled_from(sorted(doc)))] = draw(YAML_VALUES)
    return doc


SECTIONS = {
    "metrics": ["source", "query", "psiQueries", "maxAgeSeconds", "timeoutSeconds", "vmQueries"],
    "limits": ["maxInFlightTotal", "maxInFlightPerNode", "maxMovesPerCycle", "protectedPriority"],
    "softTaints": ["enabled", "overutilizedKey"],
    "deschedulerCompatible": [
        "profileVersion",
        "profile_version",
        "evictionLimitsNode",
        "migrationAware",
        "devDeviationThresholds",
        "devLowNodeUtilizationThresholds",
        "numberOfNodes",
    ],
    "psiRelief": ["signal", "dimensions", "high", "low", "targetThreshold", "model", "search", "vmCooldown"],
}
CONTROLLER_DOC = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.just("autonomic.dev/v1alpha1") | SCALARS,
        "kind": st.just("ControllerConfig") | SCALARS,
        "policy": st.sampled_from(["descheduler-compatible", "psi-relief"]) | SCALARS,
        "dryRun": SCALARS,
        "nodeSelector": YAML_VALUES,
        "excludedNamespaces": YAML_VALUES,
        **{
            section: st.dictionaries(st.sampled_from(keys), SCALARS | YAML_VALUES, max_size=3) | YAML_VALUES
            for section, keys in SECTIONS.items()
        },
    },
)
RAW = st.sampled_from(
    [
        "[" * 5000,
        "{a: " * 3000,
        "- " * 3000 + "1",
        "&a [*a]",
        "a: &a [1, 2]\nb: [*a, *a, *a]\n",
        "!!python/object:os.system ls",
        "!!binary aGVsbG8=",
        "key: value\nkey: other\n",
        "x\x00.yaml",
        "nope.yaml",
        "a" * 300 + ".yml",
        "\ufeffkind: x",
        "? [a, b]\n: c\n",
        "%YAML 1.1\n---\na: 1\n...\n---\nb: 2\n",
    ]
) | st.text(max_size=60)


@st.composite
def yaml_text(draw: st.DrawFn, docs: st.SearchStrategy[object]) -> str:
    how = draw(st.sampled_from(["dump", "dump", "flow", "raw"]))
    if how == "raw":
        return draw(RAW)
    text = yaml.safe_dump(draw(docs), default_flow_style=how == "flow", allow_unicode=draw(st.booleans()))
    if draw(st.integers(0, 4)) == 0 and text:  # damage: cut it anywhere
        text = text[: draw(st.integers(0, len(text)))]
    return text


def assert_errors(exc: ValueError, errors: list[str]) -> None:
    assert errors and all(isinstance(e, str) and e for e in errors), errors
    assert str(exc)


@given(text=yaml_text(near_valid_picker() | PICKER_DOC | YAML_VALUES))
@counted
def test_picker_config_loads_or_raises_a_config_error(text: str):
    try:
        config = picker_config.load_config(text)
    except picker_config.ConfigError as exc:
        assert_errors(exc, exc.errors)
        return
    event("loaded")
    Scheduler(config)


@given(text=yaml_text(CONTROLLER_DOC | YAML_VALUES))
@counted
def test_controller_config_loads_or_raises_a_config_error(text: str):
    try:
        config = controller_config.load_config(text)
    except controller_config.ConfigError as exc:
        assert_errors(exc, exc.errors)
        return
    event("loaded")
    config.required_signals()
    config.descheduler_compatible.thresholds()
    config.descheduler_compatible.describe()
