"""The bytes of vLLM's KV-cache events: msgpack payloads and ZMQ frames, with no sockets involved.

Why this exists: the fleet twin must publish KV events that real consumers (llm-d's kv-events indexer,
vllm-router's KV-aware policy, our own picker) decode exactly as they decode a real vLLM server's. vLLM
encodes with msgspec; this module reproduces msgspec's output with the plain `msgpack` package, and decodes
every layout vLLM has shipped so the picker can read old and new servers alike. It belongs to the product (the
picker decodes with it); the twin imports it from here to encode.

What vLLM does, as read in its source (vllm-project/vllm, `vllm/distributed/kv_events.py`):

* Structs. `EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False)` with fields
  `ts: float, events: list, data_parallel_rank: int | None = None`. Events derive from
  `KVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True)`: the tag is the class name
  ("BlockStored", "BlockRemoved", "AllBlocksCleared"), under the key "type".
  - Up to vLLM v0.23 (e.g. commit b4e69e0 of that file, and every release up to `v0.23.0`), events were
    `array_like=True` too: a positional array `[tag, field, field, ...]` holding every field.
  - vLLM PR #42892 (merged 2026-06-09, in releases after v0.23.0; v0.26.0 confirmed) dropped `array_like` from
    the events: each is a msgpack map `{"type": tag, field: value, ...}`, keys in declaration order, fields
    whose default is None left out when None. The batch envelope stays the positional array
    `[ts, events, data_parallel_rank]` (confirmed by a v0.26.0 capture in volcano-sh/kthena#1535, by
    sgl-project/sglang#40684 and ai-dynamo/dynamo#10660, and by every consumer below, which all read the
    envelope as an array). One stored snapshot (0181ea3) shows the envelope without `array_like`; no
    release or consumer uses that form, so we do not emit it, but `decode_batch` accepts it.
* Fields, in order. BlockStored: block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium,
  lora_name (these seven have no default, so they are always on the wire, None included), then
  extra_keys, group_idx, kv_cache_spec_kind, kv_cache_spec_sliding_window (default None, omitted when
  None). BlockRemoved: block_hashes, medium (always), group_idx (omitted when None). AllBlocksCleared: none.
  Block hashes are `ExternalBlockHash = bytes | int`; vLLM's default sends ints (uint64).
* `omit_defaults` only acts on map-encoded structs: with `array_like=True` msgspec writes every field,
  defaults included (jcrist/msgspec#720; checked with msgspec 0.22). So the envelope is always 3 elements,
  `data_parallel_rank` nil when None, and array-layout events always carry all their fields. (llm-d's
  adapter comment says trailing defaults are omitted; its decoder tolerates both, and so does ours.)
* msgspec's msgpack: floats as float64 (0xcb); ints in the smallest form (positive fixint, uint8..uint64,
  negative fixint, int8..int64); str as fixstr/str8/16/32; bytes as bin; tuples as arrays. msgpack-python
  with `use_bin_type=True` makes the same choices, so `msgpack.packb` of the same values in the same order
  gives identical bytes (checked against msgspec 0.22 while writing this; see tests/unit/test_kv_wire.py).
* Frames: each ZMQ message is `[topic, seq.to_bytes(8, "big"), payload]`, seq counting 0, 1, 2, ... per
  publisher. Replay (ROUTER socket): the request is `[identity, b"", start_seq(8 bytes big-endian)]`
  (a DEALER sends `[b"", start_seq]`); the reply is one message `[identity, b"", topic, seq, payload]` per
  buffered batch with seq >= start_seq, then the end marker `[identity, b"", b"", END_SEQ, b""]` with
  `END_SEQ = (-1).to_bytes(8, "big", signed=True)`. The topic frame in replies came with vLLM PR #45177
  (v0.26.0); before it, replies were `[seq, payload]` and the end marker `[END_SEQ, b""]`.

Consumers, as read: llm-d/llm-d-router `pkg/kvevents/engineadapter/vllm_msgpack.go` and `common.go`
(envelope must be an array of >= 2; each event an array or a "type"-tagged map; hashes int or bytes, bytes
reduced to their last 8 bytes big-endian) and `pkg/kvevents/zmq_subscriber.go` (live and replay messages
must be exactly 3 frames; replay through a DEALER; end when the third frame is empty);
vllm-project/router `src/kv_events/decoder.rs` (array events only, BlockStored needs >= 8 elements) and
`src/kv_index/wire.rs` (map events tagged "type", positional envelope). Hence `event_format="array"`
for older consumers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal

import msgpack

from common.kv_event_types import AllBlocksCleared, BlockRemoved, BlockStored, EventBatch, KVEvent

EventFormat = Literal["map", "array"]
"""How events are laid out: "map" (vLLM after PR #42892, the default) or "array" (vLLM up to v0.23)."""

END_SEQ: Final[bytes] = (-1).to_bytes(8, "big", signed=True)
"""Sequence frame of the replay end marker."""

_REQUIRED: Final = object()
"""Marks a struct field without a default: always encoded, even when None."""

# (field name, default) in vLLM's declaration order; _REQUIRED for fields without a default.
_BLOCK_STORED_FIELDS: Final[tuple[tuple[str, object], ...]] = (
    ("block_hashes", _REQUIRED),
    ("parent_block_hash", _REQUIRED),
    ("token_ids", _REQUIRED),
    ("block_size", _REQUIRED),
    ("lora_id", _REQUIRED),
    ("medium", _REQUIRED),
    ("lora_name", _REQUIRED),
    ("extra_keys", None),
    ("group_idx", None),
    ("kv_cache_spec_kind", None),
    ("kv_cache_spec_sliding_window", None),
)
_BLOCK_REMOVED_FIELDS: Final[tuple[tuple[str, object], ...]] = (
    ("block_hashes", _REQUIRED),
    ("medium", _REQUIRED),
    ("group_idx", None),
)
_SCHEMAS: Final[dict[str, tuple[tuple[str, object], ...]]] = {
    "BlockStored": _BLOCK_STORED_FIELDS,
    "BlockRemoved": _BLOCK_REMOVED_FIELDS,
    "AllBlocksCleared": (),
}
# Fields a decoder cannot do without (the rest default to None when absent, as in older vLLM versions).
_MIN_FIELDS: Final[dict[str, int]] = {"BlockStored": 4, "BlockRemoved": 1, "AllBlocksCleared": 0}
# An extra_keys entry is a tuple of LoRA names, cache salts and multimodal ids (a few levels at most); anything deeper
# than this is refused before turning it into tuples recursively could exhaust the interpreter's stack.
_MAX_EXTRA_KEY_DEPTH: Final = 32
_INT_ONLY: Final = frozenset({int})


class KVWireError(ValueError):
    """A KV-event payload or frame that does not follow vLLM's wire format."""


# ---- frames --------------------------------------------------------------------------------------------


def encode_seq(seq: int) -> bytes:
    """The 8-byte big-endian sequence frame (unsigned, as vLLM's `seq.to_bytes(8, "big")`)."""
    if not 0 <= seq < 1 << 64:
        raise KVWireError(f"sequence number out of range: {seq}")
    return seq.to_bytes(8, "big")


def decode_seq(frame: bytes) -> int:
    """The sequence number of an 8-byte frame; -1 for the replay end marker."""
    if len(frame) != 8:
        raise KVWireError(f"sequence frame must be 8 bytes, got {len(frame)}")
    if frame == END_SEQ:
        return -1
    return int.from_bytes(frame, "big")


def frames(topic: bytes, seq: int, payload: bytes) -> list[bytes]:
    """One published message: `[topic, seq (8 bytes big-endian), payload]`."""
    return [topic, encode_seq(seq), payload]


def parse_frames(parts: Sequence[bytes]) -> tuple[bytes, int, bytes]:
    """(topic, seq, payload) of a 3-frame message, as published live or replayed by vLLM >= v0.26."""
    if len(parts) != 3:
        raise KVWireError(f"expected 3 frames (topic, seq, payload), got {len(parts)}")
    return bytes(parts[0]), decode_seq(bytes(parts[1])), bytes(parts[2])


# ---- encoding ------------------------------------------------------------------------------------------


def _event_tag_and_values(ev: KVEvent) -> tuple[str, list[tuple[str, object, Any]]]:
    if isinstance(ev, BlockStored):
        schema, tag = _BLOCK_STORED_FIELDS, "BlockStored"
    elif isinstance(ev, BlockRemoved):
        schema, tag = _BLOCK_REMOVED_FIELDS, "BlockRemoved"
    elif isinstance(ev, AllBlocksCleared):
        return "AllBlocksCleared", []
    else:
        raise KVWireError(f"not a KV event: {type(ev).__name__}")
    return tag, [(name, default, getattr(ev, name)) for name, default in schema]


def _event_obj(ev: KVEvent, event_format: EventFormat) -> list[Any] | dict[str, Any]:
    tag, values = _event_tag_and_values(ev)
    if event_format == "array":  # msgspec ignores omit_defaults for array_like structs: every field
        return [tag, *(value for _, _, value in values)]
    out: dict[str, Any] = {"type": tag}
    for name, default, value in values:
        if default is _REQUIRED or value != default:
            out[name] = value
    return out


def encode_batch(batch: EventBatch, *, event_format: EventFormat = "map") -> bytes:
    """The msgpack payload vLLM's `msgspec.msgpack.Encoder().encode(batch)` produces for this batch.

    `event_format="map"` is current vLLM (events as "type"-tagged maps); "array" is vLLM up to v0.23
    (events as tagged positional arrays). The envelope is always `[ts, events, data_parallel_rank]`
    (nil when None; vLLM's publisher fills the rank in, and so does `KVEventPublisher`).
    """
    if event_format not in ("map", "array"):
        raise KVWireError(f"unknown event format {event_format!r}; use 'map' or 'array'")
    events = [_event_obj(ev, event_format) for ev in batch.events]
    envelope = [float(batch.ts), events, batch.data_parallel_rank]
    try:
        return msgpack.packb(envelope, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise KVWireError(f"cannot encode event batch: {e}") from e


# ---- decoding ------------------------------------------------------------------------------------------


def _int(value: Any, where: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise KVWireError(f"{where}: expected {'int or nil' if optional else 'int'}, got {type(value).__name__}")
    return value


def _str(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise KVWireError(f"{where}: expected str or nil, got {type(value).__name__}")
    return value


def _hash(value: Any, where: str) -> int:
    """A block hash: int as is; bytes reduced to their last 8 bytes big-endian (llm-d's rule)."""
    if isinstance(value, bytes):
        if not value:
            raise KVWireError(f"{where}: empty byte hash")
        return int.from_bytes(value[-8:], "big")
    out = _int(value, where)
    assert out is not None
    return out


def _all_ints(value: list[Any]) -> bool:
    """Every item a plain int (bools are not): one C-level pass, so a batch's thousands of token ids and hashes cost
    no Python loop; anything else takes the per-item path below, which names the first bad item."""
    return set(map(type, value)) <= _INT_ONLY


def _hash_list(value: Any, where: str) -> list[int]:
    if not isinstance(value, list):
        raise KVWireError(f"{where}: expected array, got {type(value).__name__}")
    if _all_ints(value):
        return value
    return [_hash(h, f"{where}[{i}]") for i, h in enumerate(value)]


def _int_list(value: Any, where: str) -> list[int]:
    if not isinstance(value, list):
        raise KVWireError(f"{where}: expected array, got {type(value).__name__}")
    if _all_ints(value):
        return value
    out: list[int] = []
    for i, v in enumerate(value):
        n = _int(v, f"{where}[{i}]")
        assert n is not None
        out.append(n)
    return out


def _tupled(value: Any, where: str, depth: int = 1) -> Any:
    if not isinstance(value, list):
        return value
    if depth > _MAX_EXTRA_KEY_DEPTH:
        raise KVWireError(f"{where}: arrays nested more than {_MAX_EXTRA_KEY_DEPTH} deep")
    return tuple(_tupled(v, where, depth + 1) for v in value)


def _extra_keys(value: Any, where: str) -> list[tuple[Any, ...] | None] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise KVWireError(f"{where}: expected array or nil, got {type(value).__name__}")
    out: list[tuple[Any, ...] | None] = []
    for i, entry in enumerate(value):
        if entry is not None and not isinstance(entry, list):
            raise KVWireError(f"{where}[{i}]: expected array or nil, got {type(entry).__name__}")
        out.append(None if entry is None else _tupled(entry, f"{where}[{i}]"))
    return out


def _fields_of(raw: Any, where: str) -> tuple[str, dict[str, Any]]:
    """The tag and named fields of one event, from either its array or its map layout."""
    if isinstance(raw, list):
        if not raw:
            raise KVWireError(f"{where}: empty event array (no tag)")
        tag = raw[0]
        if not isinstance(tag, str):
            raise KVWireError(f"{where}: event tag must be a str, got {type(tag).__name__}")
        schema = _SCHEMAS.get(tag)
        if schema is None:
            raise KVWireError(f"{where}: unknown event tag {tag!r}")
        # Extra trailing elements come from newer vLLM versions; they are ignored.
        return tag, {name: value for (name, _), value in zip(schema, raw[1:], strict=False)}
    if isinstance(raw, dict):
        if "type" not in raw:
            raise KVWireError(f"{where}: map-encoded event has no 'type' tag")
        tag = raw["type"]
        if not isinstance(tag, str):
            raise KVWireError(f"{where}: event tag must be a str, got {type(tag).__name__}")
        if tag not in _SCHEMAS:
            raise KVWireError(f"{where}: unknown event tag {tag!r}")
        # Unknown keys (fields of newer vLLM versions) are ignored.
        return tag, {k: v for k, v in raw.items() if k != "type"}
    raise KVWireError(f"{where}: event must be an array or a map, got {type(raw).__name__}")


def _decode_event(raw: Any, where: str) -> KVEvent:
    tag, f = _fields_of(raw, where)
    for name, _ in _SCHEMAS[tag][: _MIN_FIELDS[tag]]:
        if name not in f:
            raise KVWireError(f"{where}: {tag} is missing required field {name!r}")
    if tag == "AllBlocksCleared":
        return AllBlocksCleared()
    if tag == "BlockRemoved":
        return BlockRemoved(
            block_hashes=_hash_list(f["block_hashes"], f"{where}.block_hashes"),
            medium=_str(f.get("medium"), f"{where}.medium"),
            group_idx=_int(f.get("group_idx"), f"{where}.group_idx", optional=True),
        )
    parent = f["parent_block_hash"]
    block_size = _int(f["block_size"], f"{where}.block_size")
    assert block_size is not None
    return BlockStored(
        block_hashes=_hash_list(f["block_hashes"], f"{where}.block_hashes"),
        parent_block_hash=None if parent is None else _hash(parent, f"{where}.parent_block_hash"),
        token_ids=_int_list(f["token_ids"], f"{where}.token_ids"),
        block_size=block_size,
        lora_id=_int(f.get("lora_id"), f"{where}.lora_id", optional=True),
        medium=_str(f.get("medium"), f"{where}.medium"),
        lora_name=_str(f.get("lora_name"), f"{where}.lora_name"),
        extra_keys=_extra_keys(f.get("extra_keys"), f"{where}.extra_keys"),
        group_idx=_int(f.get("group_idx"), f"{where}.group_idx", optional=True),
        kv_cache_spec_kind=_str(f.get("kv_cache_spec_kind"), f"{where}.kv_cache_spec_kind"),
        kv_cache_spec_sliding_window=_int(
            f.get("kv_cache_spec_sliding_window"), f"{where}.kv_cache_spec_sliding_window", optional=True
        ),
    )


def decode_batch(payload: bytes) -> EventBatch:
    """Decode a vLLM KV-event payload of any shipped layout; raise KVWireError if it is not one.

    Accepted: the positional envelope `[ts, events(, data_parallel_rank)]` (extra trailing elements
    ignored) or a map envelope `{"ts", "events", "data_parallel_rank"}`; each event a tagged array or a
    "type"-tagged map, mixed freely. Absent optional fields decode as None (older vLLM versions did not
    send medium or lora_name). Byte block hashes become ints from their last 8 bytes, as llm-d does.
    """
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise KVWireError(f"payload must be bytes, got {type(payload).__name__}")
    if not payload:
        raise KVWireError("empty payload")
    try:
        obj = msgpack.unpackb(bytes(payload), raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise KVWireError(f"payload is not valid msgpack: {e}") from e
    if isinstance(obj, list):
        if len(obj) < 2:
            raise KVWireError(f"event batch: need at least 2 elements [ts, events], got {len(obj)}")
        ts, events, rank = obj[0], obj[1], obj[2] if len(obj) > 2 else None
    elif isinstance(obj, dict):
        if "ts" not in obj or "events" not in obj:
            raise KVWireError("map-encoded event batch needs 'ts' and 'events'")
        ts, events, rank = obj["ts"], obj["events"], obj.get("data_parallel_rank")
    else:
        raise KVWireError(f"event batch must be an array, got {type(obj).__name__}")
    if isinstance(ts, bool) or not isinstance(ts, float | int):
        raise KVWireError(f"event batch ts: expected float, got {type(ts).__name__}")
    if not isinstance(events, list):
        raise KVWireError(f"event batch events: expected array, got {type(events).__name__}")
    return EventBatch(
        ts=float(ts),
        events=[_decode_event(ev, f"events[{i}]") for i, ev in enumerate(events)],
        data_parallel_rank=_int(rank, "event batch data_parallel_rank", optional=True),
    )
