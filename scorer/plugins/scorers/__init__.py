"""Scorers: a score in [0, 1] per candidate; the scheduler clamps, weights and sums them."""

from scorer.plugins.scorers.active_request import ActiveRequestScorer
from scorer.plugins.scorers.device_capacity import DeviceCapacityScorer
from scorer.plugins.scorers.kv_cache_utilization import KVCacheUtilizationScorer
from scorer.plugins.scorers.lora_affinity import LoRAAffinityScorer
from scorer.plugins.scorers.precise_prefix import PrecisePrefixCacheScorer
from scorer.plugins.scorers.prefix_cache import PrefixCacheScorer
from scorer.plugins.scorers.queue import QueueScorer
from scorer.plugins.scorers.running_requests import RunningRequestsScorer
from scorer.plugins.scorers.session_affinity import SessionAffinityScorer
from scorer.plugins.scorers.ttft_estimate import TTFTEstimateScorer

__all__ = [
    "ActiveRequestScorer",
    "DeviceCapacityScorer",
    "KVCacheUtilizationScorer",
    "LoRAAffinityScorer",
    "PrecisePrefixCacheScorer",
    "PrefixCacheScorer",
    "QueueScorer",
    "RunningRequestsScorer",
    "SessionAffinityScorer",
    "TTFTEstimateScorer",
]
