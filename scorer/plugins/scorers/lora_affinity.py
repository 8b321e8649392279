"""lora-affinity-scorer: send a LoRA request where its adapter is loaded, or can be loaded without a swap.

Formula (GIE), for a request whose model is a LoRA adapter `a`:
- 1.0 if `a` is active on e (`running_lora_adapters`);
- 0.8 else if e has a free adapter slot: `len(active | waiting) < max_loras`;
- 0.6 else if `a` is waiting to load on e;
- 0.0 otherwise.
A request for the base model scores 1.0 everywhere (neutral).
Which model names are adapters: any name other than `baseModel` when that parameter is set; otherwise a name that
some candidate lists as active or waiting (an adapter nobody has loaded yet is then treated as the base model).
Inputs: scraped `vllm:lora_requests_info` (active, waiting, max_lora); the request's `model`.
Parameters: `baseModel` (none: infer as above).
"""

from __future__ import annotations

from typing import ClassVar

from scorer.framework import PluginParams
from scorer.plugins.common import metrics_of
from scorer.types import CycleState, EndpointState, LLMRequest

ACTIVE, FREE_SLOT, WAITING, NONE = 1.0, 0.8, 0.6, 0.0


class LoRAAffinityParams(PluginParams):
    base_model: str | None = None


class LoRAAffinityScorer:
    type_name: ClassVar[str] = "lora-affinity-scorer"
    Params = LoRAAffinityParams

    def __init__(self, name: str, params: LoRAAffinityParams):
        self.name = name
        self.base_model = params.base_model

    def adapter_of(self, request: LLMRequest, candidates: list[EndpointState]) -> str | None:
        """The adapter the request needs, or None for the base model."""
        model = request.model
        if self.base_model is not None:
            return None if model == self.base_model else model
        for c in candidates:
            m = metrics_of(c)
            if model in m.active_loras or model in m.waiting_loras:
                return model
        return None

    def score(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> dict[str, float]:
        adapter = self.adapter_of(request, candidates)
        if adapter is None:
            return {c.address: 1.0 for c in candidates}
        return {c.address: self._affinity(c, adapter) for c in candidates}

    @staticmethod
    def _affinity(state: EndpointState, adapter: str) -> float:
        m = metrics_of(state)
        if adapter in m.active_loras:
            return ACTIVE
        if m.max_loras > 0 and len(m.active_loras | m.waiting_loras) < m.max_loras:
            return FREE_SLOT
        if adapter in m.waiting_loras:
            return WAITING
        return NONE
