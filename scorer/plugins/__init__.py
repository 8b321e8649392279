"""The built-in plugins. Importing this package registers every type below with `scorer.framework.register`.

- filters: label-selector-filter, saturation-filter, device-health-filter
- scorers: prefix-cache-scorer, precise-prefix-cache-scorer, ttft-estimate-scorer, queue-scorer,
  kv-cache-utilization-scorer, running-requests-scorer, active-request-scorer, lora-affinity-scorer,
  session-affinity-scorer, device-capacity-scorer
- pickers: max-score-picker, weighted-random-picker, random-picker
- profile handlers: single-profile-handler, header-profile-handler

docs/picker-plugins.md describes each one (formula, inputs, parameters, defaults).
"""

from scorer.plugins import filters, handlers, pickers, scorers

__all__ = ["filters", "handlers", "pickers", "scorers"]
