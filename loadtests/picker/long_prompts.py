"""Long-prompt request bodies for the picker benchmarks, and the `4k,256k` size syntax their commands take.

Why it exists: the in-process body cost (loadtests.picker.body_cost) and the Envoy hop (loadtests.picker.envoy_hop)
must send the same bodies so that their figures can be set side by side. The prompt is the fleet twin's synthetic
text (`sim.fleet.synth.prompt_text`: words the twin tokenizes one token each, ~6.85 bytes per token, so a 220 KB
prompt is ~32k tokens), 7/8 of it one shared document and the rest unique to the request, in a /v1/completions
body. One document, so that every twin holds it whatever the routing: with several, round robin made the twins
prefill far more than the picker's prefix affinity did, and the baseline's latency measured the twins, not the hop.
"""

from __future__ import annotations

import json
import random

from sim.fleet.synth import BLOCK_TOKENS, prompt_text

BYTES_PER_TOKEN = 6.85  # sim.fleet.synth text: 32,000 tokens are ~219 KB
DOCUMENTS = 1
_SCALE = {"k": 1024, "m": 1024 * 1024}


def parse_size(text: str) -> int:
    """`4k` -> 4096, `1m` -> 1048576, `300` -> 300; raises ValueError on anything else."""
    text = text.strip().lower()
    scale = _SCALE.get(text[-1:], 1)
    number = int(text[:-1] if scale > 1 else text)
    if number < 1:
        raise ValueError(f"a body size must be positive, got {text!r}")
    return number * scale


def parse_sizes(text: str) -> list[int]:
    """A comma-separated list of sizes (`4k,256k`); raises ValueError on a bad item or an empty list."""
    sizes = [parse_size(s) for s in text.split(",") if s.strip()]
    if not sizes:
        raise ValueError("no body size given")
    return sizes


def size_label(size: int) -> str:
    """The inverse of `parse_size` for tables: 262144 -> `256k`."""
    return f"{size // 1024}k" if size % 1024 == 0 else str(size)


def prompt_tokens(size: int) -> int:
    """About how many twin tokens a body of `size` bytes carries."""
    return max(4, int(size / BYTES_PER_TOKEN))


class PromptBodies:
    """Completions bodies of about `size` bytes: a shared document (`shared` of the prompt, 7/8 by default) + a
    unique tail."""

    def __init__(self, size: int, model: str, seed: int = 1, max_tokens: int = 2, shared: float = 7 / 8):
        self.size = size
        self.model = model
        self.max_tokens = max_tokens
        tokens = prompt_tokens(size)
        doc_tokens = int(tokens * shared)
        self.tail_tokens = max(1, tokens - doc_tokens - 8)  # the JSON around the prompt
        self.rng = random.Random(seed * 1_000_003 + size)
        self.docs = [self._text(doc_tokens) for _ in range(DOCUMENTS)]

    def _text(self, tokens: int) -> str:
        ids = [self.rng.getrandbits(40) for _ in range(tokens // BLOCK_TOKENS + 1)]
        return prompt_text(ids, tokens)

    def body(self, i: int) -> bytes:
        """Request `i`'s body: document `i % DOCUMENTS` and a fresh tail."""
        prompt = self.docs[i % DOCUMENTS] + self._text(self.tail_tokens)
        return json.dumps({"model": self.model, "prompt": prompt, "max_tokens": self.max_tokens}).encode()
