"""Engine profile: the stated real configuration the fleet twin imitates (capacity and latency model).

A profile is a YAML file validated at load; every error names its path. The default profile ships in
`sim/fleet/profiles/` and docs/fleet-twin.md says where each number comes from.

Step-time model (seconds of model time for one engine step; a roofline with a fixed overhead):

    t = step_overhead_s
        + max(weights_read_s, new_tokens * linear_s_per_token)          # memory floor vs. linear-layer compute
        + attn_pairs * attn_s_per_token_pair                              # prefill attention, query x context
        + kv_read_tokens * kv_read_s_per_token                            # decode attention reads the KV cache

where new_tokens = prefill tokens scheduled + one per decoding sequence, attn_pairs = sum over prefill chunks
of chunk_len * (context before the chunk + chunk_len / 2), kv_read_tokens = sum of context lengths of the
decoding sequences.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ProfileError(ValueError):
    """A profile file that cannot be used; the message lists every problem with its path."""


class EngineProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="short name of the configuration, e.g. llama-3.1-8b-h100")
    description: str = ""
    sources: list[str] = Field(default_factory=list, description="where the numbers come from")
    model: str = Field(description="served model name, as /v1/models lists it")
    max_model_len: int = Field(gt=0)
    block_size: int = Field(16, gt=0)
    num_gpu_blocks: int = Field(gt=0)
    max_num_seqs: int = Field(256, gt=0)
    max_num_batched_tokens: int = Field(8192, gt=0)
    kv_bytes_per_token: int = Field(gt=0)
    max_loras: int = Field(0, ge=0)
    step_overhead_s: float = Field(ge=0)
    weights_read_s: float = Field(ge=0)
    linear_s_per_token: float = Field(ge=0)
    attn_s_per_token_pair: float = Field(ge=0)
    kv_read_s_per_token: float = Field(ge=0)
    decode_s_per_seq: float = Field(0.0, ge=0, description="per decoding sequence: sampling, paged-attention launch")

    @model_validator(mode="after")
    def _consistent(self) -> EngineProfile:
        if self.max_num_batched_tokens < self.block_size:
            raise ValueError("max_num_batched_tokens must be at least block_size")
        if self.num_gpu_blocks * self.block_size < self.block_size * 2:
            raise ValueError("num_gpu_blocks too small to hold any request")
        return self

    def step_time(self, new_tokens: int, attn_pairs: float, kv_read_tokens: int, decode_seqs: int = 0) -> float:
        if new_tokens <= 0:
            return 0.0
        return (
            self.step_overhead_s
            + max(self.weights_read_s, new_tokens * self.linear_s_per_token)
            + attn_pairs * self.attn_s_per_token_pair
            + kv_read_tokens * self.kv_read_s_per_token
            + decode_seqs * self.decode_s_per_seq
        )


DEFAULT_PROFILE = "llama-3.1-8b-h100.yaml"


def load_profile(path: str | Path | None = None, **overrides: object) -> EngineProfile:
    """Load and validate a profile (the shipped default when path is None); overrides replace fields."""
    if path is None:
        text = resources.files("sim.fleet").joinpath("profiles", DEFAULT_PROFILE).read_text()
        origin = f"<builtin {DEFAULT_PROFILE}>"
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ProfileError(f"{path}: cannot read profile: {exc}") from exc
        origin = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{origin}: expected a mapping at the top level")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return EngineProfile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ProfileError(f"{origin}: {problems}") from exc
