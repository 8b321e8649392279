"""KV-cache event types, as vLLM defines them (vllm/distributed/kv_events.py).

The engine emits these when a block becomes a reusable prefix-cache entry (BlockStored), when a cached
block is evicted for reuse (BlockRemoved), and when the whole cache is reset (AllBlocksCleared). They are
plain data here, shared by the picker (which decodes them) and the fleet twin (which emits them);
`kv_wire.py` turns a batch of them into the exact msgpack bytes vLLM publishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class BlockStored:
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = "GPU"
    lora_name: str | None = None
    # Newer vLLM fields (all optional on the wire; omitted when None). extra_keys: one entry per block, the
    # extra keys that went into its hash (LoRA name, cache_salt, multimodal ids). group_idx and the spec
    # fields: which KV-cache group (hybrid attention) the blocks belong to.
    extra_keys: list[tuple[Any, ...] | None] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    block_hashes: list[int]
    medium: str | None = "GPU"
    group_idx: int | None = None


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    pass


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(slots=True)
class EventBatch:
    """One engine step's events, published as one ZMQ message."""

    ts: float
    events: list[KVEvent] = field(default_factory=list)
    data_parallel_rank: int | None = None
