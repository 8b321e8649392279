"""The controller's typed configuration (YAML), with every mistake reported at start with its path.

Why it exists: the policy, its thresholds, the limits and the cooldowns are data an operator tunes, and a typo must
stop the controller with `psiRelief.low: must be <= psiRelief.high (0.3)` rather than run with a default. Keys
are camelCase like the descheduler's policy; unknown keys are errors. Defaults reproduce the OpenShift
KubeVirtRelieveAndMigrate profile as the operator's main branch generates it (docs/reference/descheduler.md
§1.2-1.5, §4: `evictionLimits.node: 2` and the KubevirtMigrationAware evictor), so the `descheduler-compatible`
policy is a drop-in, and the strongest baseline, with no configuration at all; `deschedulerCompatible.profileVersion:
4.21-ga` gives the release-4.21 GA profile instead (`PROFILE_VERSIONS`), and any knob written out overrides it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

DEFAULT_SCORE_QUERY = "descheduler:node:linear_amplified_ideal_point_positive_distance:k3:avg1m"  # ref §1.4
# ref §1.3 `devDeviationThresholds` and `devLowNodeUtilizationThresholds`: name -> (low, high) in percent
DEVIATION_THRESHOLDS = {
    "Low": (10.0, 10.0),
    "Medium": (20.0, 20.0),
    "High": (30.0, 30.0),
    "AsymmetricLow": (0.0, 10.0),
    "AsymmetricMedium": (0.0, 20.0),
    "AsymmetricHigh": (0.0, 30.0),
}
STATIC_THRESHOLDS = {"Low": (10.0, 30.0), "Medium": (20.0, 50.0), "High": (40.0, 70.0)}
DEFAULT_EXCLUDED_NAMESPACES = (
    "kube-system",
    "hypershift",
    "openshift",
    "openshift-kube-descheduler-operator",
    "openshift-kube-scheduler",
)


PsiDimension = Literal["cpu", "memory", "io"]
DEFAULT_PSI_QUERIES: dict[PsiDimension, str] = {
    "cpu": "avg by (instance) (rate(node_pressure_cpu_waiting_seconds_total[1m]))",
    "memory": "avg by (instance) (rate(node_pressure_memory_waiting_seconds_total[1m]))",
    "io": "avg by (instance) (rate(node_pressure_io_waiting_seconds_total[1m]))",
}

DEFAULT_UTILIZATION_QUERIES: dict[
    Literal["cpu", "memory"], str
] = {  # the recording rules' own utilisation series (ref §1.4)
    "cpu": "descheduler:nodeutilization:cpu:avg1m",
    "memory": "descheduler:nodeutilization:memory:avg1m",
}
DEFAULT_FRESHNESS_QUERY = "timestamp(node_pressure_cpu_waiting_seconds_total)"
EvictionStrategy = Literal["LiveMigrate", "LiveMigrateIfPossible", "External", "None"]


class ConfigError(ValueError):
    """The configuration is invalid; `errors` lists every problem as `path: message`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid controller configuration:\n  " + "\n  ".join(errors))
        self.errors = errors


class _Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class VmQueriesConfig(_Section):
    """Per-VM usage (KubeVirt's virt-handler series, labels namespace/name[/node]); an empty query is not run."""

    cpu_usage: str = "rate(kubevirt_vmi_cpu_usage_seconds_total[1m])"  # cores
    memory_usage: str = "kubevirt_vmi_memory_used_bytes"
    dirty_rate: str = "kubevirt_vmi_dirty_rate_bytes_per_second"


class MetricsConfig(_Section):
    """Where node pressure comes from (the shell runs the queries; the planner only checks their results)."""

    source: Literal["recording-rule", "promql", "raw-psi"] = "recording-rule"
    query: str = DEFAULT_SCORE_QUERY  # the score query for recording-rule / promql
    psi_queries: dict[PsiDimension, str] = Field(default_factory=lambda: dict(DEFAULT_PSI_QUERIES))
    utilization_queries: dict[Literal["cpu", "memory"], str] = Field(
        default_factory=lambda: dict(DEFAULT_UTILIZATION_QUERIES)
    )
    vm_queries: VmQueriesConfig = VmQueriesConfig()
    # the age of each node's data: an instant query stamps results with the query time, so the shell asks for
    # the timestamp of a raw series (and of a bare recording-rule name); "" relies on the rule's timestamp alone
    freshness_query: str = DEFAULT_FRESHNESS_QUERY
    max_age_seconds: Annotated[float, Field(gt=0, description="a node with older samples is left out")] = 60.0
    # a node whose metrics are missing, stale, non-finite or out of range is left out of the cycle; the whole cycle
    # is skipped when fewer than 2, or fewer than this fraction of the population, remain trusted
    min_trusted_fraction: Annotated[float, Field(ge=0, le=1, description="of the population, to act at all")] = 0.5
    timeout_seconds: Annotated[float, Field(gt=0, description="per query; a timeout skips the cycle")] = 10.0

    @field_validator("psi_queries", "utilization_queries", mode="before")
    @classmethod
    def _keep_unnamed_defaults(cls, value: Any, info: ValidationInfo) -> Any:
        """A document naming some dimensions' queries keeps the defaults of the others (a policy may read them)."""
        if not isinstance(value, dict):
            return value  # the field's own validation reports it
        defaults = DEFAULT_PSI_QUERIES if info.field_name == "psi_queries" else DEFAULT_UTILIZATION_QUERIES
        return {**defaults, **value}


class LimitsConfig(_Section):
    """Concurrency limits; in-flight migrations count against them (ref §2.5, KubeVirt defaults §3)."""

    max_in_flight_total: Annotated[
        int, Field(ge=0, description="maxNoOfPodsToEvictTotal / parallelMigrationsPerCluster")
    ] = 5
    max_in_flight_per_node: Annotated[
        int, Field(ge=0, description="maxNoOfPodsToEvictPerNode, outbound per source")
    ] = 2
    max_moves_per_cycle: Annotated[int, Field(ge=0)] = 5
    protected_priority: Annotated[int, Field(description="VMs at or above this priority never move")] = 2_000_000_000


class SoftTaintsConfig(_Section):
    """PreferNoSchedule taints with the soft-tainter's keys (ref §1.5)."""

    enabled: bool = True
    overutilized_key: str = "nodeutilization.descheduler.openshift.io/overutilized"
    appropriate_key: str = "nodeutilization.descheduler.openshift.io/appropriate"


class CooldownConfig(_Section):
    """Per-VM cooldown: min(max(base, last duration) * growth^(moves in window - 1), max); max 0 = no cap (ref §4)."""

    base_seconds: Annotated[float, Field(ge=0)] = 900.0
    growth_factor: Annotated[float, Field(ge=1.0)] = 2.0
    max_seconds: Annotated[float, Field(ge=0, description="0: no cap, as the plugin's maxMigrationCooldown")] = 21_600.0
    history_window_seconds: Annotated[float, Field(gt=0)] = 172_800.0


class MigrationAwareConfig(CooldownConfig):
    """The KubevirtMigrationAware evictor plugin of the operator's main branch (ref §1.2, §4): migrationCooldown
    15m, maxMigrationCooldown 6h, migrationHistoryWindow 48h, growth x2. On with profileVersion main, off in 4.21 GA."""

    enabled: bool = True


DeviationPreset = Literal["Low", "Medium", "High", "AsymmetricLow", "AsymmetricMedium", "AsymmetricHigh"]
StaticPreset = Literal["Low", "Medium", "High"]
ProfileVersion = Literal["main", "4.21-ga"]
DEFAULT_PROFILE_VERSION: ProfileVersion = "main"
# What each version of the operator's generated policy sets (ref §1.2), as defaults under the knobs a document
# leaves out: main adds LowNodeUtilization `evictionLimits.node: 2` and enables KubevirtMigrationAware; 4.21 GA
# has neither (one eviction per node per cycle, no per-VM cooldown, a VM mid-migration is not filtered out).
PROFILE_VERSIONS: dict[str, dict[str, Any]] = {
    "main": {"evictionLimitsNode": 2, "migrationAwareEnabled": True},
    "4.21-ga": {"evictionLimitsNode": None, "migrationAwareEnabled": False},
}


class DeschedulerCompatibleConfig(_Section):
    """The `descheduler-compatible` policy's knobs, named after the operator's (ref §1.2-1.3). `profileVersion`
    picks the defaults of `evictionLimitsNode` and `migrationAware.enabled` (`PROFILE_VERSIONS`); a knob written
    in the document keeps its value whatever the version."""

    profile_version: ProfileVersion = DEFAULT_PROFILE_VERSION
    dev_deviation_thresholds: DeviationPreset | None = None
    dev_low_node_utilization_thresholds: StaticPreset | None = None
    number_of_nodes: Annotated[int, Field(ge=0)] = 0
    eviction_limits_node: Annotated[
        int | None, Field(ge=1, description="main sets 2; unset (4.21 GA) = one per node per cycle")
    ] = 2
    evictor_no_eviction_policy: Literal["Mandatory", "Preferred"] = "Mandatory"
    migration_aware: MigrationAwareConfig = MigrationAwareConfig()

    @model_validator(mode="before")
    @classmethod
    def _profile_version_defaults(cls, data: Any) -> Any:
        """Fill in what `profileVersion` sets for the knobs the document leaves out; written knobs win."""
        if not isinstance(data, dict):
            return data
        version = _given(data, "profileVersion", "profile_version", DEFAULT_PROFILE_VERSION)
        preset = PROFILE_VERSIONS.get(version) if isinstance(version, str) else None
        if preset is None:  # the field's own validation reports the bad value with its path
            return data
        out = dict(data)
        if _given(out, "evictionLimitsNode", "eviction_limits_node", _ABSENT) is _ABSENT:
            out["evictionLimitsNode"] = preset["evictionLimitsNode"]
        aware_key = "migration_aware" if "migration_aware" in out and "migrationAware" not in out else "migrationAware"
        aware = out.get(aware_key, _ABSENT)
        if aware is _ABSENT:
            out[aware_key] = {"enabled": preset["migrationAwareEnabled"]}
        elif isinstance(aware, dict) and "enabled" not in aware:
            out[aware_key] = {**aware, "enabled": preset["migrationAwareEnabled"]}
        return out

    def thresholds(self) -> tuple[float, float, bool]:
        """(low, high, use_deviation) exactly as getKubeVirtRelieveAndMigrateThresholds resolves them."""
        if self.dev_low_node_utilization_thresholds is not None:
            return (*STATIC_THRESHOLDS[self.dev_low_node_utilization_thresholds], False)
        return (*DEVIATION_THRESHOLDS[self.dev_deviation_thresholds or "AsymmetricLow"], True)

    def describe(self) -> str:
        """One line for logs: the profile version and what it resolved to, e.g. `main (evictionLimits.node 2,
        KubevirtMigrationAware)`."""
        limit = f"evictionLimits.node {self.eviction_limits_node}" if self.eviction_limits_node else "1 per node"
        aware = "KubevirtMigrationAware" if self.migration_aware.enabled else "no KubevirtMigrationAware"
        return f"{self.profile_version} ({limit}, {aware})"


_ABSENT: Any = object()


def _given(data: dict[str, Any], alias: str, name: str, default: Any) -> Any:
    """A key of a raw section by its camelCase alias or its field name (both are accepted)."""
    return data[alias] if alias in data else data.get(name, default)


class MigrationCostConfig(_Section):
    bandwidth_bytes_per_second: Annotated[float, Field(gt=0, description="assumed per-migration copy rate")] = 1.0e9
    max_dirty_rate_ratio: Annotated[
        float, Field(gt=0, le=1, description="dirty/bandwidth above this may not converge")
    ] = 0.8
    completion_timeout_per_gib: Annotated[float, Field(gt=0, description="KubeVirt completionTimeoutPerGiB")] = 150.0


class PressureModelConfig(_Section):
    default_exponent: Annotated[float, Field(gt=0)] = 8.0
    min_exponent: Annotated[float, Field(gt=0)] = 1.0
    max_exponent: Annotated[float, Field(gt=0)] = 40.0


class SearchConfig(_Section):
    candidates_per_source: Annotated[int, Field(ge=1)] = 12
    targets_considered: Annotated[int, Field(ge=1)] = 24
    exact_max_variables: Annotated[int, Field(ge=0, description="0 disables the exact (MILP) search")] = 1500
    exact_node_limit: Annotated[int, Field(ge=1)] = 2000


class PsiReliefConfig(_Section):
    signal: Literal["psi", "score"] = "psi"
    dimensions: tuple[Literal["cpu", "memory"], ...] = ("cpu", "memory")
    high: Annotated[float, Field(ge=0, le=1, description="act on a node above this")] = 0.30
    low: Annotated[float, Field(ge=0, le=1, description="relieve sources down to this")] = 0.15
    target_threshold: Annotated[float, Field(ge=0, le=1, description="targets must stay at or under this")] = 0.20
    node_cooldown_seconds: Annotated[float, Field(ge=0)] = 300.0
    hysteresis_memory_seconds: Annotated[float, Field(ge=0)] = 900.0
    metric_lag_seconds: Annotated[
        float, Field(ge=0, description="how long a finished move is invisible in metrics")
    ] = 90.0
    vm_cooldown: CooldownConfig = CooldownConfig()
    vm_return_block_seconds: Annotated[
        float, Field(ge=0, description="a VM never returns to a node it left sooner")
    ] = 21_600.0
    migration: MigrationCostConfig = MigrationCostConfig()
    model: PressureModelConfig = PressureModelConfig()
    search: SearchConfig = SearchConfig()


class ControllerConfig(_Section):
    api_version: Literal["autonomic.dev/v1alpha1"] = "autonomic.dev/v1alpha1"
    kind: Literal["ControllerConfig"] = "ControllerConfig"
    policy: Literal["descheduler-compatible", "psi-relief"] = "descheduler-compatible"
    dry_run: bool = False
    actuator: Literal["eviction", "migration"] = "eviction"
    # KubeVirt's cluster-wide evictionStrategy for VMIs that set none (OpenShift Virtualization: LiveMigrate)
    cluster_eviction_strategy: EvictionStrategy = "LiveMigrate"
    node_selector: dict[str, str] = Field(default_factory=lambda: {"kubevirt.io/schedulable": "true"})
    excluded_namespaces: tuple[str, ...] = DEFAULT_EXCLUDED_NAMESPACES
    metrics: MetricsConfig = MetricsConfig()
    limits: LimitsConfig = LimitsConfig()
    soft_taints: SoftTaintsConfig = SoftTaintsConfig()
    descheduler_compatible: DeschedulerCompatibleConfig = DeschedulerCompatibleConfig()
    psi_relief: PsiReliefConfig = PsiReliefConfig()

    def required_signals(self) -> tuple[str, ...]:
        """The NodePressure fields the active policy cannot do without (validate.py checks them)."""
        if self.policy == "descheduler-compatible" or self.psi_relief.signal == "score":
            return ("score",)
        return tuple(f"psi_{d}" for d in self.psi_relief.dimensions)


def parse_config(data: Any) -> ControllerConfig:
    """Validate an already-parsed document; raises `ConfigError` listing every problem with its path.

    Field types and ranges are checked first (pydantic); the cross-field rules run once every field is valid.
    """
    try:
        config = ControllerConfig.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(format_errors(exc)) from None
    errors = cross_field_errors(config)
    if errors:
        raise ConfigError(errors)
    return config


def cross_field_errors(config: ControllerConfig) -> list[str]:
    """Rules that relate two fields, as the descheduler's ValidateLowNodeUtilizationArgs does for its thresholds."""
    errors = []
    compat, relief = config.descheduler_compatible, config.psi_relief
    if compat.dev_deviation_thresholds is not None and compat.dev_low_node_utilization_thresholds is not None:
        errors.append(
            "deschedulerCompatible.devLowNodeUtilizationThresholds: only one of devDeviationThresholds and "
            "devLowNodeUtilizationThresholds may be set (as the operator refuses)"
        )
    if relief.low > relief.high:
        errors.append(f"psiRelief.low: must be <= psiRelief.high ({relief.high}), got {relief.low}")
    elif not relief.low <= relief.target_threshold < relief.high:
        errors.append(
            f"psiRelief.targetThreshold: must be >= psiRelief.low ({relief.low}) and < psiRelief.high "
            f"({relief.high}), got {relief.target_threshold}"
        )
    if not relief.dimensions:
        errors.append("psiRelief.dimensions: must name at least one of cpu, memory")
    if relief.model.min_exponent > relief.model.max_exponent:
        errors.append("psiRelief.model.minExponent: must be <= psiRelief.model.maxExponent")
    needs_score = config.policy == "descheduler-compatible" or relief.signal == "score"
    if needs_score and config.metrics.source == "raw-psi":
        errors.append(
            f"metrics.source: raw-psi provides no score but policy {config.policy} needs one; use source promql "
            "with e.g. rate(node_pressure_cpu_waiting_seconds_total[1m]) (the operator's PrometheusCPUPSIPressure)"
        )
    for path, cooldown in (
        ("deschedulerCompatible.migrationAware", compat.migration_aware),
        ("psiRelief.vmCooldown", relief.vm_cooldown),
    ):
        if 0 < cooldown.max_seconds < cooldown.base_seconds:  # the plugin's ValidateKubevirtMigrationAwareArgs
            errors.append(
                f"{path}.maxSeconds: must be 0 (no cap) or >= {path}.baseSeconds ({cooldown.base_seconds:g}), "
                f"got {cooldown.max_seconds:g}"
            )
    if config.limits.max_in_flight_per_node > config.limits.max_in_flight_total:
        errors.append("limits.maxInFlightPerNode: must be <= limits.maxInFlightTotal")
    return errors


def load_config(source: str | Path) -> ControllerConfig:
    """Read YAML from a file (a `Path`, or a one-line string ending in .yaml/.yml) or from YAML text."""
    is_path = isinstance(source, Path) or ("\n" not in source and source.strip().endswith((".yaml", ".yml")))
    try:
        text = Path(source).read_text(encoding="utf-8") if is_path else str(source)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ConfigError([f"{source}: {getattr(exc, 'strerror', None) or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"yaml: {exc}".replace("\n", " ")]) from None
    except RecursionError:  # PyYAML composes nested collections recursively: "[" * 5000
        raise ConfigError(["yaml: collections nested too deeply"]) from None
    return parse_config(data)


def format_errors(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "document"
        message = err["msg"].removeprefix("Value error, ")
        out.append(f"{path}: {message}")
    return out
