"""How big each endpoint's part of the approximate prefix index should be: its KV cache, in prompt bytes.

Why it exists: the approximate prefix index (scorer/prefix_index.py) predicts hits only as well as its size matches
the server's cache. Too small, and it forgets prefixes the server still holds, so conversations are sent elsewhere
and lose their cached prefix; too large, and it predicts hits the server has already evicted. A fixed size cannot be
right: KV capacity differs per model, GPU and memory setting (a 70B model on 8 GPUs or an 8B on one L4), and the
index counts prompt bytes while the cache holds tokens, at a rate set by the tokenizer and the text (about 4 bytes
per token for English under Llama-3's tokenizer, GIE's guess; fewer for code and Chinese; 6.8 for the fleet twin's
synthetic words). With the fixed default (31,250 blocks of 64 bytes, GIE's) the twin's index held 0.65 of what its
servers cache, and that alone cost the default profile a third of its hit ratio (docs/picker-plugins.md, "Index
size").

So both factors are measured rather than guessed, as GIE's sizing guide asks (`kv_tokens * bytes_per_token /
blockSize`, "as close as possible to the HBM cache size"):

- KV tokens per endpoint: `num_gpu_blocks * block_size` from the server's `vllm:cache_config_info`;
- bytes per token, for the whole pool: the prompt bytes routed to the endpoints over the prompt tokens they counted
  (`vllm:prompt_tokens_total`, which vLLM adds to when a prompt's prefill ends). Both totals run from each
  endpoint's first counter sample; a counter that went down is a restarted server counting from zero again. The
  bytes of prompts still queued or prefilling have no tokens counted yet, so the estimate starts a little high and
  settles as the totals grow; until `min_tokens` tokens were counted it is the configured initial value.

`BytesPerToken` is the estimator (pure: it is told what was routed and what was counted), `capacity_blocks` the
formula.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field

MIN_BYTES_PER_TOKEN = 1.0  # a token is at least one byte of UTF-8 text
MAX_BYTES_PER_TOKEN = 32.0  # beyond this the counters and the routed bytes are not about the same requests


def capacity_blocks(kv_tokens: int, bytes_per_token: float, block_bytes: int) -> int:
    """Index blocks (of `block_bytes` prompt bytes) that hold what a cache of `kv_tokens` tokens holds."""
    if kv_tokens < 1 or block_bytes < 1 or not bytes_per_token > 0:
        raise ValueError(f"need positive sizes, got {kv_tokens} tokens, {bytes_per_token} bytes/token, {block_bytes}")
    return max(1, math.ceil(kv_tokens * bytes_per_token / block_bytes))


@dataclass
class BytesPerToken:
    """Prompt bytes per model token over the pool, from routed bytes and the servers' prompt-token counters."""

    initial: float = 4.0
    min_tokens: int = 500_000
    routed_bytes: float = 0.0  # bytes sent to endpoints whose counter had a first sample
    counted_tokens: float = 0.0  # the counters' increases since their first samples
    _last: dict[str, float] = field(default_factory=dict)  # address -> its last counter value

    def routed(self, address: str, prompt_bytes: float) -> None:
        """A prompt of `prompt_bytes` was sent to `address` (by this picker or a peer replica)."""
        if address in self._last and prompt_bytes > 0:
            self.routed_bytes += prompt_bytes

    def counted(self, address: str, prompt_tokens_total: float) -> None:
        """A scrape of `address` read its `vllm:prompt_tokens_total`."""
        last = self._last.get(address)
        self._last[address] = prompt_tokens_total
        if last is not None:
            # a counter that went down belongs to a restarted server: it counted this much since it started
            self.counted_tokens += prompt_tokens_total - last if prompt_tokens_total >= last else prompt_tokens_total

    def retain(self, present: Collection[str]) -> None:
        """Forget the endpoints that left the pool (a later sample of one that comes back is a new first sample)."""
        for address in [a for a in self._last if a not in present]:
            del self._last[address]

    @property
    def learned(self) -> bool:
        return self.counted_tokens >= self.min_tokens

    def value(self) -> float:
        """The current estimate: the initial value until `min_tokens` were counted, then the measured ratio."""
        if not self.learned:
            return self.initial
        return min(MAX_BYTES_PER_TOKEN, max(MIN_BYTES_PER_TOKEN, self.routed_bytes / self.counted_tokens))
