"""EndpointPickerConfig loading: defaults filled in, every error reported with its path, the shipped default."""

from __future__ import annotations

from pathlib import Path

import pytest

from scorer.config import ConfigError, default_config, load_config
from scorer.scheduler import Scheduler

HEAD = "apiVersion: autonomic.dev/v1alpha1\nkind: EndpointPickerConfig\n"


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(text)
    assert str(info.value).startswith("invalid EndpointPickerConfig:")
    for line in info.value.errors:  # the message lists every error
        assert line in str(info.value)
    return info.value.errors


def test_minimal_config_gets_defaults():
    cfg = load_config(
        HEAD
        + """
plugins:
- {type: prefix-cache-scorer, name: prefix, parameters: {blockSize: 32, lruCapacityPerServer: 100}}
- {type: queue-scorer}
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: prefix, weight: 3}
  - {pluginRef: queue-scorer}
"""
    )
    assert [p.name for p in cfg.plugins] == ["prefix", "queue-scorer", "single-profile-handler", "max-score-picker"]
    assert cfg.handler == "single-profile-handler"
    assert cfg.plugin("single-profile-handler").auto_added
    profile = cfg.profile("default")
    assert profile.scorers == (("prefix", 3.0), ("queue-scorer", 1.0))
    assert profile.filters == ()
    assert profile.picker == "max-score-picker"
    params = cfg.plugin("prefix").params
    assert (params.block_size, params.lru_capacity_per_server, params.max_prefix_blocks) == (32, 100, 8192)


def test_filters_and_picker_are_slotted_in_document_order():
    cfg = load_config(
        HEAD
        + """
plugins:
- {type: saturation-filter}
- {type: label-selector-filter, name: gpu, parameters: {matchLabels: {gpu: h100}}}
- {type: random-picker, parameters: {maxNumOfEndpoints: 3}}
schedulingProfiles:
- {name: p, plugins: [{pluginRef: gpu}, {pluginRef: random-picker}, {pluginRef: saturation-filter}]}
"""
    )
    profile = cfg.profile("p")
    assert profile.filters == ("gpu", "saturation-filter")
    assert profile.scorers == ()
    assert profile.picker == "random-picker"
    assert cfg.plugin("gpu").params.match_labels == {"gpu": "h100"}
    assert not any(p.type == "max-score-picker" for p in cfg.plugins)


def test_auto_picker_takes_a_free_name():
    cfg = load_config(
        HEAD + "plugins: [{type: queue-scorer, name: max-score-picker}]\n"
        "schedulingProfiles: [{name: a, plugins: [{pluginRef: max-score-picker}]}]\n"
    )
    assert cfg.profile("a").picker == "max-score-picker-2"
    assert cfg.plugin("max-score-picker-2").type == "max-score-picker"


def test_two_profiles_with_header_handler_share_one_auto_picker():
    cfg = load_config(
        HEAD + "plugins: [{type: header-profile-handler, parameters: {defaultProfile: b}}, {type: queue-scorer}]\n"
        "schedulingProfiles: [{name: a, plugins: [{pluginRef: queue-scorer}]}, {name: b}]\n"
    )
    assert cfg.handler == "header-profile-handler"
    assert cfg.profile("a").picker == cfg.profile("b").picker == "max-score-picker"
    assert sum(p.type == "max-score-picker" for p in cfg.plugins) == 1


def test_load_from_path_and_from_path_string(tmp_path: Path):
    text = HEAD + "schedulingProfiles: [{name: only}]\n"
    path = tmp_path / "picker.yaml"
    path.write_text(text)
    assert load_config(path).profiles[0].name == "only"
    assert load_config(str(path)).profiles[0].name == "only"


def test_llm_d_api_version_is_accepted():
    text = "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\n"
    assert load_config(text + "schedulingProfiles: [{name: x}]\n").profiles[0].name == "x"


def test_default_config_ships_and_builds():
    cfg = default_config()
    profile = cfg.profile("default")
    weights = dict(profile.scorers)
    assert set(weights) >= {
        "ttft-estimate-scorer",
        "prefix-cache-scorer",
        "queue-scorer",
        "kv-cache-utilization-scorer",
    }
    assert weights["ttft-estimate-scorer"] == max(weights.values())
    assert cfg.plugin(profile.picker).type == "max-score-picker"
    scheduler = Scheduler(cfg)
    assert scheduler.profile_names == ("default",)
    assert (Path(__file__).parents[2] / "scorer" / "default-config.yaml").is_file()


_PLUGINS_OK = "plugins: [{type: queue-scorer}, {type: random-picker}]\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            "plugins: [{type: prefix-cache-scorer, parameters: {blockSize: 0}}]\nschedulingProfiles: [{name: d}]\n",
            "plugins[0].parameters.blockSize: must be >= 1",
            id="parameter-bound",
        ),
        pytest.param(
            "plugins: [{type: queue-scorer, parameters: {bogus: 1}}]\nschedulingProfiles: [{name: d}]\n",
            "plugins[0].parameters.bogus: unknown field",
            id="unknown-parameter",
        ),
        pytest.param(
            "plugins: [{type: queue-scorer}, {type: warp-drive}]\nschedulingProfiles: [{name: d}]\n",
            "plugins[1].type: unknown plugin type 'warp-drive'",
            id="unknown-type",
        ),
        pytest.param(
            "plugins: [{type: queue-scorer}, {type: kv-cache-utilization-scorer, name: queue-scorer}]\n"
            "schedulingProfiles: [{name: d}]\n",
            "plugins[1].name: duplicate plugin name 'queue-scorer' (first defined at plugins[0])",
            id="duplicate-name",
        ),
        pytest.param(
            _PLUGINS_OK + "schedulingProfiles: [{name: d, plugins: [{pluginRef: queue-scorer}, {pluginRef: foo}]}]\n",
            "schedulingProfiles[0].plugins[1].pluginRef: unknown plugin 'foo'",
            id="unknown-ref",
        ),
        pytest.param(
            _PLUGINS_OK + "schedulingProfiles: [{name: d, plugins: [{pluginRef: random-picker, weight: 2}]}]\n",
            "schedulingProfiles[0].plugins[0].weight: 'random-picker' (random-picker) is not a scorer",
            id="weight-on-non-scorer",
        ),
        pytest.param(
            "plugins: [{type: random-picker}, {type: max-score-picker}]\n"
            "schedulingProfiles: [{name: d, plugins: [{pluginRef: random-picker}, {pluginRef: max-score-picker}]}]\n",
            "schedulingProfiles[0].plugins[1].pluginRef: a second picker 'max-score-picker' (already 'random-picker')",
            id="two-pickers",
        ),
        pytest.param(_PLUGINS_OK, "schedulingProfiles: at least one profile is required", id="no-profiles"),
        pytest.param(
            _PLUGINS_OK + "schedulingProfiles: []\n", "schedulingProfiles: at least one profile", id="empty-profiles"
        ),
        pytest.param(
            "plugins: [{type: header-profile-handler}]\nschedulingProfiles: [{name: d}, {name: d}]\n",
            "schedulingProfiles[1].name: duplicate profile name 'd'",
            id="duplicate-profile",
        ),
        pytest.param(
            _PLUGINS_OK + "schedulingProfiles: [{name: d, plugins: [{pluginRef: queue-scorer}, "
            "{pluginRef: queue-scorer}]}]\n",
            "schedulingProfiles[0].plugins[1].pluginRef: 'queue-scorer' is listed twice",
            id="ref-twice",
        ),
        pytest.param(
            "plugins: [{type: header-profile-handler}]\n"
            "schedulingProfiles: [{name: d, plugins: [{pluginRef: header-profile-handler}]}]\n",
            "schedulingProfiles[0].plugins[0].pluginRef: 'header-profile-handler' is a profile handler",
            id="handler-in-profile",
        ),
        pytest.param(
            "plugins: [{type: header-profile-handler}, {type: single-profile-handler}]\n"
            "schedulingProfiles: [{name: d}]\n",
            "plugins[1]: a second profile handler 'single-profile-handler'",
            id="two-handlers",
        ),
        pytest.param(
            "schedulingProfiles: [{name: a}, {name: b}]\n",
            "schedulingProfiles: single-profile-handler runs one profile, but 2 are defined",
            id="single-handler-many-profiles",
        ),
        pytest.param(
            "plugins: [{type: header-profile-handler, parameters: {defaultProfile: zzz}}]\n"
            "schedulingProfiles: [{name: a}, {name: b}]\n",
            "plugins[0].parameters.defaultProfile: unknown profile 'zzz'",
            id="handler-default-profile",
        ),
        pytest.param(
            "plugins: [{type: ttft-estimate-scorer, parameters: {prefixPluginRef: queue-scorer}},"
            " {type: queue-scorer}]\n"
            "schedulingProfiles: [{name: d}]\n",
            "plugins[0].parameters.prefixPluginRef: 'queue-scorer' is not a prefix-cache-scorer plugin",
            id="ttft-bad-prefix-ref",
        ),
        pytest.param(
            "plugins: [{type: ttft-estimate-scorer}, {type: prefix-cache-scorer, name: a},"
            " {type: prefix-cache-scorer, name: b}]\nschedulingProfiles: [{name: d}]\n",
            "plugins[0].parameters.prefixPluginRef: required: several prefix-cache-scorers ['a', 'b']",
            id="ttft-ambiguous-prefix",
        ),
        pytest.param(
            _PLUGINS_OK + "schedulingProfiles: [{name: d, plugins: [{pluginRef: queue-scorer, weight: -1}]}]\n",
            "schedulingProfiles[0].plugins[0].weight: must be >= 0",
            id="negative-weight",
        ),
        pytest.param(
            _PLUGINS_OK + "schedulingProfiles: [{name: d, plugins: [{weight: 1}]}]\n",
            "schedulingProfiles[0].plugins[0].pluginRef: required",
            id="missing-ref",
        ),
        pytest.param(
            "plugins: {type: queue-scorer}\nschedulingProfiles: [{name: d}]\n",
            "plugins: must be a list, got dict",
            id="plugins-not-list",
        ),
        pytest.param(
            "plugins: [7]\nschedulingProfiles: [{name: d}]\n", "plugins[0]: must be a mapping", id="entry-not-mapping"
        ),
        pytest.param(
            "plugins: [{name: x}]\nschedulingProfiles: [{name: d}]\n", "plugins[0].type: required", id="missing-type"
        ),
        pytest.param(
            "featureGates: [x]\nschedulingProfiles: [{name: d}]\n", "featureGates: unknown field", id="unknown-top"
        ),
    ],
)
def test_each_error_is_reported_with_its_path(body: str, expected: str):
    errors = _errors(HEAD + body)
    assert any(e.startswith(expected) for e in errors), errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("apiVersion: v9\nkind: EndpointPickerConfig\nschedulingProfiles: [{name: d}]\n", "apiVersion: must be one of"),
        ("apiVersion: autonomic.dev/v1alpha1\nkind: Pod\nschedulingProfiles: [{name: d}]\n", "kind: must be"),
        ("- just\n- a list\n", "document: must be a mapping, got list"),
        ("a: [unclosed\n", "yaml: "),
        ("[" * 5000, "yaml: collections nested too deeply"),  # was a RecursionError out of yaml.safe_load
        ("x\x00.yaml", "x\x00.yaml: embedded null byte"),  # a path Path.read_text refuses with ValueError
    ],
)
def test_document_level_errors(text: str, expected: str):
    assert any(e.startswith(expected) for e in _errors(text))


def test_every_error_is_reported_at_once():
    errors = _errors(
        HEAD
        + """
plugins:
- {type: prefix-cache-scorer, parameters: {blockSize: 0, maxPrefixBlocks: 0}}
- {type: nope}
- {type: random-picker}
schedulingProfiles:
- name: d
  plugins:
  - {pluginRef: random-picker, weight: 1}
  - {pluginRef: ghost}
"""
    )
    expected = [
        "plugins[0].parameters.blockSize: must be >= 1",
        "plugins[0].parameters.maxPrefixBlocks: must be >= 1",
        "plugins[1].type: unknown plugin type 'nope' (known: ",
        "schedulingProfiles[0].plugins[0].weight: 'random-picker' (random-picker) is not a scorer",
        "schedulingProfiles[0].plugins[1].pluginRef: unknown plugin 'ghost'",
    ]
    assert len(errors) == len(expected), errors
    for prefix in expected:
        assert sum(e.startswith(prefix) for e in errors) == 1, (prefix, errors)


def test_reference_to_a_broken_plugin_is_not_reported_twice():
    errors = _errors(
        HEAD + "plugins: [{type: nope, name: x}]\nschedulingProfiles: [{name: d, plugins: [{pluginRef: x}]}]\n"
    )
    assert errors == [errors[0]] and errors[0].startswith("plugins[0].type: unknown plugin type 'nope'")


def test_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"picker\.yaml"):
        load_config(tmp_path / "picker.yaml")
