"""Fuzz target: the KV-event decoder (common/kv_wire.py): `decode_batch` on any msgpack and any bytes,
`parse_frames` on any frame layout, `decode_seq` on any frame.

Invariant: a result or `KVWireError` (with a message naming where the payload is wrong); nothing else escapes.
A decoded batch is what vLLM could have sent: it encodes, and decodes back to what encodes to the same bytes; and
its events apply to the picker's precise index or are refused with `EventError`, as `scorer.sources.kv_events`
applies them.
"""

from __future__ import annotations

import msgpack
from fuzz_support import counted
from hypothesis import given
from hypothesis import strategies as st

from common.kv_wire import KVWireError, decode_batch, decode_seq, encode_batch, parse_frames
from scorer.precise_index import EventError, PreciseIndex

HASHES = (
    st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=12) | st.integers(-9, 9) | st.none() | st.text(max_size=3)
)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.sampled_from(["BlockStored", "BlockRemoved", "AllBlocksCleared", "type"])
)
MSGPACK = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.sampled_from(["type", "ts", "events", "block_hashes", "token_ids"]) | LEAVES, inner, max_size=5
        )
    ),
    max_leaves=25,
)
TAGS = st.sampled_from(["BlockStored", "BlockRemoved", "AllBlocksCleared"]) | st.text(max_size=4) | LEAVES


@st.composite
def event(draw: st.DrawFn) -> object:
    """An event close to vLLM's, in either layout, with any field of any type."""
    tag = draw(TAGS)
    fields = draw(
        st.lists(
            st.lists(HASHES, max_size=4) | HASHES | st.lists(st.integers(-5, 2**33) | LEAVES, max_size=4) | MSGPACK,
            max_size=12,
        )
    )
    if draw(st.booleans()):
        return [tag, *fields]
    names = ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name",
             "extra_keys", "group_idx", "kv_cache_spec_kind", "kv_cache_spec_sliding_window"]  # fmt: skip
    doc = dict(zip(names, fields, strict=False))
    if draw(st.booleans()):
        doc["type"] = tag
    return doc


@st.composite
def consistent_store(draw: st.DrawFn) -> dict[str, object]:
    """A BlockStored the index accepts the shape of (n blocks of bs tokens), with any values in it."""
    bs, n = draw(st.integers(1, 4)), draw(st.integers(0, 3))
    token = st.integers(0, 2**32 - 1) | st.sampled_from([-1, 2**32, 2**63 - 1, -(2**63)])
    return {
        "type": "BlockStored",
        "block_hashes": draw(st.lists(HASHES.filter(lambda h: h is not None), min_size=n, max_size=n)),
        "parent_block_hash": draw(st.none() | HASHES),
        "token_ids": draw(st.lists(token, min_size=n * bs, max_size=n * bs)),
        "block_size": bs,
        "lora_name": draw(st.none() | st.text(max_size=3)),
        "extra_keys": draw(st.none() | st.lists(st.none() | st.lists(MSGPACK, max_size=2), min_size=n, max_size=n)),
    }


@st.composite
def payload(draw: st.DrawFn) -> bytes:
    events = draw(st.lists(event() | consistent_store(), max_size=4) | MSGPACK)
    envelope = draw(
        st.sampled_from(["array", "array", "map", "short", "other"]).map(
            lambda form: {
                "array": [draw(st.floats() | LEAVES), events, draw(st.integers(-3, 2**40) | LEAVES)],
                "map": {"ts": draw(st.floats() | LEAVES), "events": events},
                "short": [draw(st.floats())],
                "other": draw(MSGPACK),
            }[form]
        )
    )
    data = msgpack.packb(envelope, use_bin_type=draw(st.booleans()))
    cut = draw(st.sampled_from(["whole", "whole", "truncate", "append", "flip"]))
    if cut == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif cut == "append":
        data += draw(st.binary(min_size=1, max_size=8))
    elif cut == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    return data


NESTED = st.integers(1, 5000).map(lambda n: b"\x91" * n + b"\xc0")  # fixarray of one, n deep: a nesting bomb


@given(data=payload() | NESTED | st.binary(max_size=64))
@counted
def test_decode_batch_returns_a_batch_or_a_wire_error(data: bytes):
    try:
        batch = decode_batch(data)
    except KVWireError as exc:
        assert str(exc)
        return
    for form in ("map", "array"):  # compared as bytes: a NaN (ts, extra keys) is not equal to itself
        wire = encode_batch(batch, event_format=form)
        assert encode_batch(decode_batch(wire), event_format=form) == wire
    index = PreciseIndex(max_blocks_per_endpoint=64)
    index.add_endpoint("a")
    for ev in batch.events:
        try:
            index.apply("a", ev)
        except EventError as exc:
            assert str(exc)


@given(
    parts=st.lists(st.binary(max_size=10) | st.sampled_from([b"\x00" * 8, b"\xff" * 8, b"\x00" * 7]), max_size=5)
    | st.lists(st.binary(max_size=3), min_size=3, max_size=3).map(lambda p: [p[0], b"\x00" * 7 + p[1][:1], p[2]]),
    seq=st.binary(max_size=12),
)
@counted
def test_frames_and_sequence_numbers_parse_or_raise_a_wire_error(parts: list[bytes], seq: bytes):
    try:
        topic, number, body = parse_frames(parts)
        assert -1 <= number < 2**64 and (topic, body) == (parts[0], parts[2])
    except KVWireError as exc:
        assert str(exc)
    try:
        assert -1 <= decode_seq(seq) < 2**64
    except KVWireError as exc:
        assert str(exc)
