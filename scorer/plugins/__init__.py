"""The built-in plugins and the table that ships them: `default_registry()` (importing registers nothing).

- filters: label-selector-filter, saturation-filter, device-health-filter
- scorers: prefix-cache-scorer, precise-prefix-cache-scorer, ttft-estimate-scorer, queue-scorer,
  kv-cache-utilization-scorer, running-requests-scorer, active-request-scorer, lora-affinity-scorer,
  session-affinity-scorer, device-capacity-scorer
- pickers: max-score-picker, weighted-random-picker, random-picker
- profile handlers: single-profile-handler, header-profile-handler

docs/picker-plugins.md describes each one (formula, inputs, parameters, defaults).
"""

from scorer.plugins import filters, handlers, pickers, scorers
from scorer.plugins.scorers.precise_prefix import build_precise_prefix
from scorer.registry import PluginRegistry, PluginType

DEFAULT_PLUGIN_TYPES: tuple[PluginType, ...] = (
    PluginType.of(filters.LabelSelectorFilter),
    PluginType.of(filters.SaturationFilter),
    PluginType.of(filters.DeviceHealthFilter),
    PluginType.of(scorers.PrefixCacheScorer),
    PluginType.of(scorers.PrecisePrefixCacheScorer, build_precise_prefix),
    PluginType.of(scorers.TTFTEstimateScorer),
    PluginType.of(scorers.QueueScorer),
    PluginType.of(scorers.KVCacheUtilizationScorer),
    PluginType.of(scorers.RunningRequestsScorer),
    PluginType.of(scorers.ActiveRequestScorer),
    PluginType.of(scorers.LoRAAffinityScorer),
    PluginType.of(scorers.SessionAffinityScorer),
    PluginType.of(scorers.DeviceCapacityScorer),
    PluginType.of(pickers.MaxScorePicker),
    PluginType.of(pickers.WeightedRandomPicker),
    PluginType.of(pickers.RandomPicker),
    PluginType.of(handlers.SingleProfileHandler),
    PluginType.of(handlers.HeaderProfileHandler),
)


def default_registry() -> PluginRegistry:
    """Every built-in plugin type (a new table each call; extend it with `with_types`)."""
    return PluginRegistry(DEFAULT_PLUGIN_TYPES)


__all__ = ["DEFAULT_PLUGIN_TYPES", "default_registry", "filters", "handlers", "pickers", "scorers"]
