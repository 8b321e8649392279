"""Where each of a prompt's tokens ends in its text, from the token strings a server's `/tokenize` returns, verified.

Why it exists: a derived token prefix (`scorer.token_prefix`) needs an earlier prompt that the request extends. Often
the request only shares a long prefix with an earlier prompt without extending it (an edited last turn, a trace
whose turns re-synthesize the earlier turn's partial last block, a shared document followed by another question).
Knowing the byte offset at which each of the earlier prompt's tokens ends turns any shared prefix of C bytes into a
known token prefix: the tokens that end within the first C bytes, minus the same margin. The picker has no
tokenizer; vLLM's `/tokenize` returns each token's string with `"return_token_strs": true`, and those strings give
the offsets once mapped back to bytes.

Mapping strings back to bytes depends on the tokenizer family, so two readings are tried for the whole answer, and
one is kept only when the bytes of all tokens, joined, are exactly the prompt's bytes (a leading special token that
is not in the text, such as a BOS, may count as zero bytes):

- literal: each string is its text, except `<0xNN>` byte pieces (SentencePiece-style byte fallback; the fleet
  twin's pieces);
- byte-level: each character stands for one byte through GPT-2's byte-to-unicode table (Llama 3, Qwen, DeepSeek,
  GPT-OSS tokenizers).

Anything else (SentencePiece's `▁`, a tokenizer that normalizes its input, an answer without strings) gives no
offsets, and only the extension rule applies to that prompt.

Cost. In both readings a character of a string is usually one byte: always in byte-level strings, and in literal
strings that are ASCII without byte pieces. Then the strings are joined once, turned into bytes by one `translate`
(byte-level) or `encode` (ASCII), compared with the prompt, and the ends are the running sum of the strings'
lengths: C-level passes over the answer, no lookup per token (`_one_byte_per_character`). Otherwise (non-ASCII
literal strings, byte pieces) each string is decoded once and memoized (bounded by `MEMO_LIMIT`), and an answer is
one C-level pass of dict lookups, one join, one comparison, one running sum. In the precise picker under the routing
benchmark the lookups were its largest single cost (py-spy: 10% of its samples: strings fresh from the JSON parse
hash anew on every lookup); with such strings, for the trace's first 200 prompts (14k tokens on average, the twin's
tokenizer) an answer takes 0.54 ms on the one-byte-per-character path against 3.8-5.3 ms with the lookups.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable, Sequence
from itertools import accumulate, chain, islice

MEMO_LIMIT = 300_000  # decoded token strings kept per reading (above any vocabulary size)
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level_table() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: printable Latin-1 bytes stand for themselves, the other bytes for
    code points from 256 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


_BYTE_LEVEL = _byte_level_table()
# the same table for `str.translate`: each byte-level character to the Latin-1 character of its byte; a character
# that no byte-level string holds (a control character, a space) to one that Latin-1 cannot encode
_NOT_A_BYTE = "\uffff"
_BYTE_LEVEL_TO_LATIN1 = {c: _NOT_A_BYTE for c in range(256)} | {ord(c): chr(b) for c, b in _BYTE_LEVEL.items()}


def _one_byte_per_character(text: bytes, strs: Sequence[str]) -> array[int] | None:
    """The ends when every character of the strings is one byte of the text (byte-level strings; ASCII literal
    strings without byte pieces), else None; a leading string that is not in the text (BOS) counts as zero bytes."""
    joined = "".join(strs)
    if joined.isascii():
        if "<0x" in joined:
            return None  # byte pieces: the literal reading's one byte for six characters
        as_bytes = joined.encode("ascii")
    else:
        try:
            as_bytes = joined.translate(_BYTE_LEVEL_TO_LATIN1).encode("latin-1")
        except UnicodeEncodeError:
            return None  # not byte-level strings
    if as_bytes == text:
        return array("I", accumulate(map(len, strs)))
    if strs and as_bytes[len(strs[0]) :] == text:
        return array("I", accumulate(chain((0,), islice(map(len, strs), 1, None))))
    return None


def _literal(piece: str) -> bytes | None:
    found = _BYTE_PIECE.fullmatch(piece)
    return bytes([int(found.group(1), 16)]) if found else piece.encode(errors="surrogatepass")


def _byte_level(piece: str) -> bytes | None:
    try:
        return bytes(_BYTE_LEVEL[c] for c in piece)
    except KeyError:
        return None


class TokenOffsets:
    """`ends(text, strs)`: the byte offset where each token ends, or None when no reading reproduces the text."""

    def __init__(self) -> None:
        self._readings: list[tuple[Callable[[str], bytes | None], dict[str, bytes], set[str]]] = [
            (_literal, {}, set()),
            (_byte_level, {}, set()),
        ]
        self._first = 0  # the reading that worked last: tried first

    def ends(self, text: bytes, strs: Sequence[str]) -> array[int] | None:
        fast = _one_byte_per_character(text, strs)
        return fast if fast is not None else self.memoized_ends(text, strs)

    def memoized_ends(self, text: bytes, strs: Sequence[str]) -> array[int] | None:
        """`ends` by decoding each string under each reading (memoized): any strings, a dict lookup per token."""
        order = [self._first, 1 - self._first]
        for which in order:
            decode, memo, undecodable = self._readings[which]
            parts = self._decode(decode, memo, undecodable, strs)
            if parts is None:
                continue
            joined = b"".join(parts)
            if joined != text and parts and joined[len(parts[0]) :] == text:
                parts[0] = b""  # a leading special token that is not in the text (BOS)
                joined = text
            if joined == text:
                self._first = which
                return array("I", accumulate(map(len, parts)))
        return None

    @staticmethod
    def _decode(
        decode: Callable[[str], bytes | None], memo: dict[str, bytes], undecodable: set[str], strs: Sequence[str]
    ) -> list[bytes] | None:
        """Each string's bytes under one reading (one C-level dict lookup per token once the vocabulary is seen)."""
        if len(memo) + len(undecodable) > MEMO_LIMIT:
            memo.clear()
            undecodable.clear()
        try:  # the common case, every string seen before: one C-level pass, no per-token check in Python
            return list(map(memo.__getitem__, strs))
        except KeyError:
            pass
        parts: list[bytes] = []
        for s in strs:
            found = memo.get(s)
            if found is None:
                found = None if s in undecodable else decode(s)
                if found is None:
                    undecodable.add(s)
                    return None
                memo[s] = found
            parts.append(found)
        return parts
