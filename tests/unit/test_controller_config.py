"""Controller configuration: the profile's defaults (the operator's main branch), the profile versions and the
operator's threshold presets, and errors with paths."""

from __future__ import annotations

import pytest

from controller.config import DEFAULT_SCORE_QUERY, ConfigError, load_config, parse_config
from controller.sources.prometheus import query_plan


def test_defaults_reproduce_the_kubevirt_relieve_and_migrate_profile():
    c = parse_config({})
    assert c.policy == "descheduler-compatible"
    assert c.metrics.source == "recording-rule" and c.metrics.query == DEFAULT_SCORE_QUERY
    assert (c.limits.max_in_flight_total, c.limits.max_in_flight_per_node) == (5, 2)
    assert c.descheduler_compatible.thresholds() == (0.0, 10.0, True)  # AsymmetricLow, deviation mode
    compat = c.descheduler_compatible
    assert compat.profile_version == "main"  # the operator's main branch (and 4.21.z after the #2163 backport)
    assert compat.eviction_limits_node == 2  # LowNodeUtilization evictionLimits.node
    aware = compat.migration_aware  # KubevirtMigrationAware: migrationCooldown 15m, max 6h, window 48h
    assert (aware.enabled, aware.base_seconds, aware.growth_factor) == (True, 900.0, 2.0)
    assert (aware.max_seconds, aware.history_window_seconds) == (21_600.0, 172_800.0)
    assert c.node_selector == {"kubevirt.io/schedulable": "true"}
    assert c.soft_taints.overutilized_key == "nodeutilization.descheduler.openshift.io/overutilized"
    assert c.soft_taints.appropriate_key == "nodeutilization.descheduler.openshift.io/appropriate"
    assert "openshift-kube-descheduler-operator" in c.excluded_namespaces


@pytest.mark.parametrize(
    ("section", "limit", "aware"),
    [
        pytest.param({}, 2, True, id="default-is-main"),
        pytest.param({"profileVersion": "main"}, 2, True, id="main"),
        pytest.param({"profileVersion": "4.21-ga"}, None, False, id="4.21-ga"),
        pytest.param({"profile_version": "4.21-ga"}, None, False, id="field-name-accepted"),
        pytest.param({"profileVersion": "4.21-ga", "evictionLimitsNode": 2}, 2, False, id="ga-with-node-limit"),
        pytest.param({"profileVersion": "4.21-ga", "migrationAware": {"enabled": True}}, None, True, id="ga-aware"),
        pytest.param({"evictionLimitsNode": 1}, 1, True, id="main-one-per-node"),
        pytest.param({"evictionLimitsNode": None}, None, True, id="main-limit-unset"),
        pytest.param({"migrationAware": {"enabled": False}}, 2, False, id="main-without-cooldown"),
        pytest.param({"migrationAware": {"baseSeconds": 600}}, 2, True, id="main-tuned-cooldown-stays-on"),
        pytest.param({"profileVersion": "4.21-ga", "migrationAware": {"baseSeconds": 600}}, None, False, id="ga-tuned"),
    ],
)
def test_profile_version_sets_defaults_and_written_knobs_override_it(section, limit, aware):
    compat = parse_config({"deschedulerCompatible": section}).descheduler_compatible
    assert (compat.eviction_limits_node, compat.migration_aware.enabled) == (limit, aware)
    if "baseSeconds" in section.get("migrationAware", {}):
        assert compat.migration_aware.base_seconds == 600


def test_a_zero_cap_means_no_cap_and_is_valid():
    aware = parse_config({"deschedulerCompatible": {"migrationAware": {"maxSeconds": 0}}}).descheduler_compatible
    assert aware.migration_aware.max_seconds == 0


def test_profile_version_is_described_for_the_logs():
    assert parse_config({}).descheduler_compatible.describe() == "main (evictionLimits.node 2, KubevirtMigrationAware)"
    ga = parse_config({"deschedulerCompatible": {"profileVersion": "4.21-ga"}}).descheduler_compatible
    assert ga.describe() == "4.21-ga (1 per node, no KubevirtMigrationAware)"


@pytest.mark.parametrize(
    ("customization", "expected"),
    [
        ({"devDeviationThresholds": "Low"}, (10.0, 10.0, True)),
        ({"devDeviationThresholds": "Medium"}, (20.0, 20.0, True)),
        ({"devDeviationThresholds": "High"}, (30.0, 30.0, True)),
        ({"devDeviationThresholds": "AsymmetricLow"}, (0.0, 10.0, True)),
        ({"devDeviationThresholds": "AsymmetricMedium"}, (0.0, 20.0, True)),
        ({"devDeviationThresholds": "AsymmetricHigh"}, (0.0, 30.0, True)),
        ({"devLowNodeUtilizationThresholds": "Low"}, (10.0, 30.0, False)),
        ({"devLowNodeUtilizationThresholds": "Medium"}, (20.0, 50.0, False)),
        ({"devLowNodeUtilizationThresholds": "High"}, (40.0, 70.0, False)),
    ],
)
def test_threshold_presets_resolve_as_the_operator_does(customization, expected):
    assert parse_config({"deschedulerCompatible": customization}).descheduler_compatible.thresholds() == expected


@pytest.mark.parametrize(
    ("document", "errors"),
    [
        pytest.param({"policy": "round-robin"}, ["policy: Input should be"], id="unknown-policy"),
        pytest.param(
            {"limits": {"maxInFlightTotal": -1}},
            ["limits.maxInFlightTotal: Input should be greater"],
            id="negative-limit",
        ),
        pytest.param(
            {"psiRelief": {"high": 2, "bogus": 1}},
            ["psiRelief.high: Input should be less", "psiRelief.bogus: Extra inputs"],
            id="every-error-at-once",
        ),
        pytest.param(
            {"psiRelief": {"low": 0.5, "high": 0.3}},
            ["psiRelief.low: must be <= psiRelief.high (0.3)"],
            id="inverted-band",
        ),
        pytest.param(
            {"deschedulerCompatible": {"devDeviationThresholds": "Low", "devLowNodeUtilizationThresholds": "Low"}},
            ["deschedulerCompatible.devLowNodeUtilizationThresholds: only one of"],
            id="both-threshold-kinds",
        ),
        pytest.param(
            {"metrics": {"source": "raw-psi"}}, ["metrics.source: raw-psi provides no score"], id="baseline-needs-score"
        ),
        pytest.param(
            {"deschedulerCompatible": {"profileVersion": "4.20"}},
            ["deschedulerCompatible.profileVersion: Input should be 'main' or '4.21-ga'"],
            id="unknown-profile-version",
        ),
        pytest.param(
            {"deschedulerCompatible": {"profileVersion": None, "evictionLimitsNode": 0, "migrationAware": []}},
            [
                "deschedulerCompatible.profileVersion: Input should be 'main' or '4.21-ga'",
                "deschedulerCompatible.evictionLimitsNode: Input should be greater than or equal to 1",
                "deschedulerCompatible.migrationAware: Input should be a valid dictionary",
            ],
            id="profile-errors-all-at-once",
        ),
        pytest.param(
            {"deschedulerCompatible": {"profileVersion": "4.21-ga", "migrationAware": {"enabled": "sometimes"}}},
            ["deschedulerCompatible.migrationAware.enabled: Input should be a valid boolean"],
            id="ga-bad-knob",
        ),
        pytest.param(
            {"deschedulerCompatible": {"migrationAware": {"baseSeconds": 900, "maxSeconds": 600}}},
            ["deschedulerCompatible.migrationAware.maxSeconds: must be 0 (no cap) or >= deschedulerCompatible."],
            id="cap-below-base",
        ),
        pytest.param(
            {"psiRelief": {"vmCooldown": {"maxSeconds": 60}}},
            ["psiRelief.vmCooldown.maxSeconds: must be 0 (no cap) or >= psiRelief.vmCooldown.baseSeconds (900)"],
            id="relief-cap-below-base",
        ),
        pytest.param(
            {"limits": {"maxInFlightPerNode": 6}}, ["limits.maxInFlightPerNode: must be <="], id="node-above-total"
        ),
        pytest.param(
            {"metrics": {"maxAgeSeconds": 0}}, ["metrics.maxAgeSeconds: Input should be greater than 0"], id="zero-age"
        ),
        pytest.param(
            {"metrics": {"minTrustedFraction": 1.5}},
            ["metrics.minTrustedFraction: Input should be less than or equal to 1"],
            id="fraction-above-one",
        ),
        pytest.param(
            {"metrics": {"minTrustedFraction": -0.1}},
            ["metrics.minTrustedFraction: Input should be greater than or equal to 0"],
            id="negative-fraction",
        ),
    ],
)
def test_invalid_documents_report_every_error_with_its_path(document, errors):
    with pytest.raises(ConfigError) as raised:
        parse_config(document)
    assert len(raised.value.errors) == len(errors)
    for got, want in zip(raised.value.errors, errors, strict=True):
        assert got.startswith(want), got


def test_min_trusted_fraction_defaults_to_half_and_accepts_its_bounds():
    assert parse_config({}).metrics.min_trusted_fraction == 0.5
    for fraction in (0, 1):
        assert parse_config({"metrics": {"minTrustedFraction": fraction}}).metrics.min_trusted_fraction == fraction


def test_psi_relief_on_raw_psi_is_valid_and_needs_psi_fields():
    c = parse_config({"policy": "psi-relief", "metrics": {"source": "raw-psi"}})
    assert c.required_signals() == ("psi_cpu", "psi_memory")
    assert parse_config({"policy": "psi-relief", "psiRelief": {"signal": "score"}}).required_signals() == ("score",)


def test_yaml_text_is_loaded_and_bad_yaml_is_a_config_error():
    c = load_config("policy: psi-relief\ndryRun: true\npsiRelief:\n  high: 0.4\n  low: 0.2\n")
    assert (c.policy, c.dry_run, c.psi_relief.high, c.psi_relief.low) == ("psi-relief", True, 0.4, 0.2)
    with pytest.raises(ConfigError, match="yaml"):
        load_config("policy: [unclosed")
    with pytest.raises(ConfigError, match="yaml: collections nested too deeply"):  # was a RecursionError
        load_config("psiRelief: " + "[" * 5000)
    with pytest.raises(ConfigError, match="embedded null byte"):  # a path Path.read_text refuses with ValueError
        load_config("x\x00.yaml")


def test_a_config_file_is_read_by_path_and_a_missing_one_is_a_config_error(tmp_path):
    path = tmp_path / "controller.yaml"
    path.write_text("policy: psi-relief\n")
    assert load_config(path).policy == "psi-relief"
    assert load_config(str(path)).policy == "psi-relief"
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize("key", ["psiQueries", "utilizationQueries"])
def test_naming_one_query_keeps_the_defaults_of_the_others(key):
    """A document that sets one dimension's query must not drop the others: psi-relief reads cpu and memory by
    default, and a missing query would fail every cycle (found by the model-time engine's tests)."""
    config = parse_config({"policy": "psi-relief", "metrics": {key: {"cpu": "my_cpu_query"}}})
    queries = config.metrics.psi_queries if key == "psiQueries" else config.metrics.utilization_queries
    assert queries["cpu"] == "my_cpu_query" and queries["memory"]
    plan = query_plan(config)
    assert all(plan[f"{prefix}:{d}"] for prefix in ("psi", "util") for d in ("cpu", "memory"))
