"""KV-cache event types, as vLLM defines them (vllm/distributed/kv_events.py).

The engine emits these when a block becomes a reusable prefix-cache entry (BlockStored), when a cached
block is evicted for reuse (BlockRemoved), and when the whole cache is reset (AllBlocksCleared). They are
plain data here; `kv_wire.py` turns a batch of them into the exact msgpack bytes vLLM publishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BlockStored:
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = "GPU"
    lora_name: str | None = None


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    block_hashes: list[int]
    medium: str | None = "GPU"


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
