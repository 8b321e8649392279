"""KV-event payload bytes: the layout vLLM's msgspec encoder produces, and tolerant decoding of every layout.

The expected byte strings below are written out by hand from msgspec's rules (tagged structs; map events
with the tag first and fields in declaration order; float64 floats; smallest int forms; default-None fields
omitted from maps, while array-like structs keep every field, msgspec ignoring omit_defaults there), so a
drift in field order, omission or number encoding fails here. When msgspec is importable, the same
batches are also checked against msgspec itself, with structs declared as vLLM declares them.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from common.kv_event_types import AllBlocksCleared, BlockRemoved, BlockStored, EventBatch, KVEvent
from common.kv_wire import (
    END_SEQ,
    EventFormat,
    KVWireError,
    decode_batch,
    decode_seq,
    encode_batch,
    encode_seq,
    frames,
    parse_frames,
)

BIG = 2**63  # needs uint64 (0xcf), as vLLM's 64-bit int block hashes do


def _stored(**kw: Any) -> BlockStored:
    base: dict[str, Any] = {"block_hashes": [1, BIG], "parent_block_hash": None, "token_ids": [1, 2], "block_size": 2}
    return BlockStored(**{**base, **kw})


# ---- hand-written bytes ---------------------------------------------------------------------------------

MAP_BATCH = EventBatch(ts=1.5, events=[_stored(group_idx=0), AllBlocksCleared()], data_parallel_rank=0)
MAP_BYTES = b"".join(
    [
        b"\x93",  # EventBatch: positional fixarray(3) [ts, events, data_parallel_rank]
        b"\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00",  # ts: float64 1.5
        b"\x92",  # events: fixarray(2)
        b"\x89",  # BlockStored: fixmap(9) = tag + 7 fields without default + group_idx (not None)
        b"\xa4type\xabBlockStored",  # tag first, under "type"
        b"\xacblock_hashes\x92\x01\xcf\x80\x00\x00\x00\x00\x00\x00\x00",  # [1, 2**63]: fixint, uint64
        b"\xb1parent_block_hash\xc0",  # no default: None is sent
        b"\xa9token_ids\x92\x01\x02",
        b"\xaablock_size\x02",
        b"\xa7lora_id\xc0",
        b"\xa6medium\xa3GPU",
        b"\xa9lora_name\xc0",
        # extra_keys is None and has a default: left out
        b"\xa9group_idx\x00",  # 0 is not the default (None): kept
        # kv_cache_spec_kind, kv_cache_spec_sliding_window: None, left out
        b"\x81\xa4type\xb0AllBlocksCleared",  # fixmap(1): the tag alone
        b"\x00",  # data_parallel_rank 0
    ]
)

ARRAY_BATCH = EventBatch(
    ts=1.5,
    events=[_stored(group_idx=0), BlockRemoved(block_hashes=[255], medium="GPU"), AllBlocksCleared()],
)
ARRAY_BYTES = b"".join(
    [
        b"\x93",  # array_like ignores omit_defaults: [ts, events, data_parallel_rank] even when it is None
        b"\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00",
        b"\x93",
        b"\x9c",  # BlockStored: fixarray(12) = tag + all 11 fields, None ones included
        b"\xabBlockStored",
        b"\x92\x01\xcf\x80\x00\x00\x00\x00\x00\x00\x00",  # block_hashes
        b"\xc0",  # parent_block_hash
        b"\x92\x01\x02",  # token_ids
        b"\x02",  # block_size
        b"\xc0",  # lora_id
        b"\xa3GPU",  # medium
        b"\xc0",  # lora_name
        b"\xc0",  # extra_keys
        b"\x00",  # group_idx
        b"\xc0\xc0",  # kv_cache_spec_kind, kv_cache_spec_sliding_window
        b"\x94\xacBlockRemoved\x91\xcc\xff\xa3GPU\xc0",  # [tag, [255 as uint8], medium, group_idx]
        b"\x91\xb0AllBlocksCleared",  # [tag]
        b"\xc0",  # data_parallel_rank None
    ]
)


@pytest.mark.parametrize(
    ("batch", "fmt", "expected"),
    [(MAP_BATCH, "map", MAP_BYTES), (ARRAY_BATCH, "array", ARRAY_BYTES)],
    ids=["map-events", "array-events"],
)
def test_hand_written_bytes(batch: EventBatch, fmt: EventFormat, expected: bytes) -> None:
    assert encode_batch(batch, event_format=fmt) == expected
    assert decode_batch(expected) == batch


def test_default_format_is_map() -> None:
    assert encode_batch(MAP_BATCH) == MAP_BYTES


# ---- round trips --------------------------------------------------------------------------------------

EVENTS: dict[str, KVEvent] = {
    "stored-minimal": _stored(),
    "stored-parent-lora": _stored(parent_block_hash=7, lora_id=3, lora_name="adapter-a", medium="CPU"),
    "stored-no-medium": _stored(medium=None),
    "stored-hma": _stored(group_idx=1, kv_cache_spec_kind="sliding_window", kv_cache_spec_sliding_window=4096),
    "stored-extra-keys": _stored(extra_keys=[("salt", ("mm-hash", 0)), None]),
    "stored-big-tokens": _stored(token_ids=list(range(150_000, 150_016)), block_size=16),
    "removed": BlockRemoved(block_hashes=[2**64 - 1, 0]),
    "removed-cpu-group": BlockRemoved(block_hashes=[5], medium="CPU", group_idx=2),
    "cleared": AllBlocksCleared(),
}


@pytest.mark.parametrize("fmt", ["map", "array"])
@pytest.mark.parametrize("name", list(EVENTS))
def test_round_trip_each_event(name: str, fmt: EventFormat) -> None:
    for rank in (None, 0, 3):
        batch = EventBatch(ts=1_700_000_000.25, events=[EVENTS[name]], data_parallel_rank=rank)
        assert decode_batch(encode_batch(batch, event_format=fmt)) == batch


@pytest.mark.parametrize("fmt", ["map", "array"])
def test_round_trip_mixed_and_empty(fmt: EventFormat) -> None:
    mixed = EventBatch(ts=0.0, events=list(EVENTS.values()), data_parallel_rank=1)
    assert decode_batch(encode_batch(mixed, event_format=fmt)) == mixed
    empty = EventBatch(ts=2.0)
    assert encode_batch(empty, event_format=fmt) == b"\x93\xcb\x40\x00\x00\x00\x00\x00\x00\x00\x90\xc0"
    assert decode_batch(encode_batch(empty, event_format=fmt)) == empty


def test_integer_ts_is_sent_as_float64() -> None:
    assert encode_batch(EventBatch(ts=1)).startswith(b"\x93\xcb\x3f\xf0")


# ---- what decoders must tolerate ------------------------------------------------------------------------


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


TOLERATED: dict[str, tuple[Any, EventBatch]] = {
    # vLLM before medium (#19737) and lora_name (#27577): shorter arrays; absent fields decode as None.
    # Two-element envelopes: what llm-d and vllm-router also accept.
    "v0.9-array": (
        [1.0, [["BlockStored", [9], None, [1, 2], 2, None]]],
        EventBatch(1.0, [BlockStored([9], None, [1, 2], 2, None, None, None)]),
    ),
    "removed-no-medium": ([1.0, [["BlockRemoved", [9]]]], EventBatch(1.0, [BlockRemoved([9], None)])),
    # Fields of a vLLM newer than this code: extra array elements and unknown map keys are ignored.
    "array-extra-trailing": (
        [1.0, [["BlockRemoved", [9], "GPU", 0, "LOCAL", "x"]], 0, "future"],
        EventBatch(1.0, [BlockRemoved([9], "GPU", 0)], 0),
    ),
    "map-unknown-keys": (
        [1.0, [{"type": "BlockRemoved", "block_hashes": [9], "medium": "GPU", "locality": "LOCAL"}]],
        EventBatch(1.0, [BlockRemoved([9], "GPU")]),
    ),
    # Map events need not list keys in order; required-but-None keys may be absent.
    "map-any-order": (
        [
            1.0,
            [{"token_ids": [3], "block_size": 1, "block_hashes": [4], "parent_block_hash": 2, "type": "BlockStored"}],
        ],
        EventBatch(1.0, [BlockStored([4], 2, [3], 1, None, None, None)]),
    ),
    # One stored vLLM snapshot (0181ea3) declares the envelope without array_like: a map.
    "map-envelope": (
        {"ts": 1.0, "events": [{"type": "AllBlocksCleared"}], "data_parallel_rank": 1},
        EventBatch(1.0, [AllBlocksCleared()], 1),
    ),
    # ExternalBlockHash may be bytes: reduced to the last 8 bytes big-endian, as llm-d does.
    "byte-hashes": (
        [1.0, [["BlockStored", [b"\x00" * 24 + b"\x00\x00\x00\x00\x00\x00\x01\x02"], b"\x05", [1], 1, None, "GPU"]]],
        EventBatch(1.0, [BlockStored([258], 5, [1], 1, None, "GPU", None)]),
    ),
    "mixed-layouts": (
        [1.0, [["AllBlocksCleared"], {"type": "AllBlocksCleared"}]],
        EventBatch(1.0, [AllBlocksCleared(), AllBlocksCleared()]),
    ),
}


@pytest.mark.parametrize("name", list(TOLERATED))
def test_decoder_tolerates(name: str) -> None:
    obj, expected = TOLERATED[name]
    assert decode_batch(_pack(obj)) == expected


# ---- malformed input ------------------------------------------------------------------------------------

MALFORMED: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "empty payload"),
    "not-msgpack": (b"\xc1", "not valid msgpack"),
    "truncated": (MAP_BYTES[:-5], "not valid msgpack"),
    "trailing-garbage": (MAP_BYTES + b"\x00", "not valid msgpack"),
    "scalar-envelope": (_pack(3), "must be an array"),
    "short-envelope": (_pack([1.0]), "at least 2 elements"),
    "ts-not-number": (_pack(["x", []]), "ts: expected float"),
    "events-not-array": (_pack([1.0, {}]), "events: expected array"),
    "rank-not-int": (_pack([1.0, [], "0"]), "data_parallel_rank: expected int"),
    "event-scalar": (_pack([1.0, [7]]), "events\\[0\\]: event must be an array or a map"),
    "event-empty-array": (_pack([1.0, [[]]]), "no tag"),
    "tag-not-str": (_pack([1.0, [[0, [1]]]]), "tag must be a str"),
    "unknown-tag": (_pack([1.0, [["BlockMoved", [1]]]]), "unknown event tag 'BlockMoved'"),
    "map-no-type": (_pack([1.0, [{"block_hashes": [1]}]]), "no 'type' tag"),
    "map-unknown-type": (_pack([1.0, [{"type": "Nope"}]]), "unknown event tag 'Nope'"),
    "stored-too-short": (_pack([1.0, [["BlockStored", [1], None, [1]]]]), "missing required field 'block_size'"),
    "map-stored-no-tokens": (
        _pack([1.0, [{"type": "BlockStored", "block_hashes": [1], "parent_block_hash": None, "block_size": 1}]]),
        "missing required field 'token_ids'",
    ),
    "hashes-not-array": (_pack([1.0, [["BlockRemoved", 5]]]), "block_hashes: expected array"),
    "hash-is-str": (_pack([1.0, [["BlockRemoved", ["ab"]]]]), "block_hashes\\[0\\]: expected int"),
    "hash-empty-bytes": (_pack([1.0, [["BlockRemoved", [b""]]]]), "empty byte hash"),
    "token-is-float": (_pack([1.0, [["BlockStored", [1], None, [1.5], 1]]]), "token_ids\\[0\\]: expected int"),
    "block-size-bool": (_pack([1.0, [["BlockStored", [1], None, [1], True]]]), "block_size: expected int"),
    "medium-not-str": (_pack([1.0, [["BlockRemoved", [1], 3]]]), "medium: expected str"),
    "extra-keys-entry": (
        _pack([1.0, [["BlockStored", [1], None, [1], 1, None, None, None, [5]]]]),
        "extra_keys\\[0\\]",
    ),
    "bad-utf8": (b"\x92\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00\x91\x91\xa2\xff\xfe", "not valid msgpack"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_raises_kv_wire_error(name: str) -> None:
    payload, message = MALFORMED[name]
    with pytest.raises(KVWireError, match=message):
        decode_batch(payload)


def test_kv_wire_error_is_a_value_error() -> None:
    assert issubclass(KVWireError, ValueError)


def test_unencodable_values_raise_kv_wire_error() -> None:
    with pytest.raises(KVWireError, match="cannot encode"):
        encode_batch(EventBatch(1.0, [BlockRemoved([2**64])]))
    with pytest.raises(KVWireError, match="not a KV event"):
        encode_batch(EventBatch(1.0, ["BlockStored"]))  # type: ignore[list-item]
    with pytest.raises(KVWireError, match="unknown event format"):
        encode_batch(MAP_BATCH, event_format="json")  # type: ignore[arg-type]


# ---- frames -------------------------------------------------------------------------------------------


def test_frames_and_sequence_numbers() -> None:
    assert frames(b"kv@10.0.0.1:8000@m", 258, b"p") == [b"kv@10.0.0.1:8000@m", b"\x00" * 6 + b"\x01\x02", b"p"]
    assert encode_seq(0) == b"\x00" * 8
    assert decode_seq(encode_seq(2**64 - 2)) == 2**64 - 2
    assert END_SEQ == b"\xff" * 8  # = seq 2**64 - 1 unsigned, which vLLM's counter never reaches
    assert decode_seq(END_SEQ) == -1
    assert parse_frames(frames(b"t", 7, b"x")) == (b"t", 7, b"x")
    for bad in (-1, 2**64):
        with pytest.raises(KVWireError, match="out of range"):
            encode_seq(bad)
    with pytest.raises(KVWireError, match="8 bytes"):
        decode_seq(b"\x00")
    with pytest.raises(KVWireError, match="expected 3 frames"):
        parse_frames([b"t", b"\x00" * 8])


# ---- conformance with msgspec itself (only where msgspec is installed) --------------------------------


def _msgspec_encoder(fmt: EventFormat) -> Any:
    """Structs declared the way vLLM declares them; events array_like only in the older layout."""
    msgspec: Any = pytest.importorskip("msgspec")
    opt_int, opt_str = int | None, str | None
    envelope = msgspec.defstruct(
        "EventBatch",
        [("ts", float), ("events", list[Any]), ("data_parallel_rank", opt_int, None)],
        array_like=True,
        omit_defaults=True,
        gc=False,
    )
    event_opts = {"omit_defaults": True, "gc": False, "tag": True, "array_like": fmt == "array"}
    stored = msgspec.defstruct(
        "BlockStored",
        [
            ("block_hashes", list[int]),
            ("parent_block_hash", opt_int),
            ("token_ids", list[int]),
            ("block_size", int),
            ("lora_id", opt_int),
            ("medium", opt_str),
            ("lora_name", opt_str),
            ("extra_keys", list[tuple[Any, ...] | None] | None, None),
            ("group_idx", opt_int, None),
            ("kv_cache_spec_kind", opt_str, None),
            ("kv_cache_spec_sliding_window", opt_int, None),
        ],
        **event_opts,
    )
    removed = msgspec.defstruct(
        "BlockRemoved", [("block_hashes", list[int]), ("medium", opt_str), ("group_idx", opt_int, None)], **event_opts
    )
    cleared = msgspec.defstruct("AllBlocksCleared", [], **event_opts)

    def convert(ev: Any) -> Any:
        if isinstance(ev, BlockStored):
            return stored(**{f: getattr(ev, f) for f in stored.__struct_fields__})
        if isinstance(ev, BlockRemoved):
            return removed(**{f: getattr(ev, f) for f in removed.__struct_fields__})
        return cleared()

    enc = msgspec.msgpack.Encoder()
    return lambda b: enc.encode(envelope(b.ts, [convert(e) for e in b.events], b.data_parallel_rank))


@pytest.mark.parametrize("fmt", ["map", "array"])
def test_matches_msgspec(fmt: EventFormat) -> None:
    encode = _msgspec_encoder(fmt)
    batches = [MAP_BATCH, ARRAY_BATCH, EventBatch(ts=3.25, events=list(EVENTS.values()), data_parallel_rank=2)]
    batches += [EventBatch(ts=9.5, events=[ev]) for ev in EVENTS.values()]
    for batch in batches:
        assert encode_batch(batch, event_format=fmt) == encode(batch)


def test_deeply_nested_extra_keys_are_a_wire_error_not_a_recursion_error():
    def nested(depth: int) -> Any:
        value: Any = 1
        for _ in range(depth):
            value = [value]
        return value

    def payload(depth: int) -> bytes:
        event = {"type": "BlockStored", "block_hashes": [1], "parent_block_hash": None, "token_ids": [1],
                 "block_size": 1, "extra_keys": [nested(depth)]}  # fmt: skip
        return msgpack.packb([1.0, [event], 0])

    (stored,) = decode_batch(payload(32)).events
    assert isinstance(stored, BlockStored) and stored.extra_keys is not None
    with pytest.raises(KVWireError, match=r"events\[0\]\.extra_keys\[0\]: arrays nested more than 32 deep"):
        decode_batch(payload(500))
