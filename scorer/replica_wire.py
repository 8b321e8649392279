"""What picker replicas tell each other (active-active), and its wire form: checked where it enters.

Why it exists: with several picker replicas behind one Envoy, each decision is made by one replica and each
response's end may be reported to another (Envoy balances the routing and the observer ext_proc streams of a request
independently). For their in-flight counts and approximate prefix indexes to agree, every replica tells its peers
two things: `Routed` (this request went to that endpoint, charged so many tokens, with these prompt block hashes per
sharing plugin) and `Ended` (this request's response ended, served by that endpoint, with that status). A batch is
one JSON object sent over HTTP (scorer/replica_sync.py):

    {"replica": "10.0.0.7:9004", "events": [["r", id, address, tokens, {"prefix-cache-scorer": "<base64>"}],
                                            ["e", id, served_or_null, status], ...]}

Block hashes travel as base64 of little-endian unsigned 64-bit integers (8 bytes each, a third of their decimal
JSON). `decode_batch` refuses anything else with `ReplicaWireError`, whose message names the offending path.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_EVENTS = 4096  # per batch
MAX_BLOCKS = 65_536  # per plugin per event (a 4 MiB prompt at 64-byte blocks)
MAX_TEXT = 256  # request ids, addresses, plugin and replica names
MAX_PLUGINS = 16


class ReplicaWireError(ValueError):
    """A batch that does not decode; the message names the path of the problem (e.g. `events[3][2]`)."""


@dataclass(frozen=True)
class Routed:
    request_id: str
    address: str
    tokens: int
    blocks: Mapping[str, Sequence[int]]  # sharing plugin name -> prompt block hashes


@dataclass(frozen=True)
class Ended:
    request_id: str
    served: str | None
    status: int  # 0: the stream ended before response headers


Event = Routed | Ended


@dataclass(frozen=True)
class Batch:
    replica: str
    events: tuple[Event, ...]


def pack_blocks(blocks: Sequence[int]) -> str:
    return base64.b64encode(struct.pack(f"<{len(blocks)}Q", *blocks)).decode("ascii")


def unpack_blocks(text: str) -> tuple[int, ...]:
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 8:
        raise ValueError(f"{len(raw)} bytes is not a whole number of 8-byte hashes")
    return struct.unpack(f"<{len(raw) // 8}Q", raw)


def encode_batch(replica: str, events: Sequence[Event]) -> bytes:
    wire: list[list[Any]] = []
    for event in events:
        if isinstance(event, Routed):
            packed = {name: pack_blocks(b) for name, b in event.blocks.items()}
            wire.append(["r", event.request_id, event.address, event.tokens, packed])
        else:
            wire.append(["e", event.request_id, event.served, event.status])
    return json.dumps({"replica": replica, "events": wire}, separators=(",", ":")).encode()


def decode_batch(body: bytes) -> Batch:
    """Parse one batch; raises ReplicaWireError naming the path of the first problem."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ReplicaWireError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ReplicaWireError("the batch must be a JSON object")
    replica = _text(doc.get("replica"), "replica")
    events = doc.get("events")
    if not isinstance(events, list):
        raise ReplicaWireError("events: must be a list")
    if len(events) > MAX_EVENTS:
        raise ReplicaWireError(f"events: {len(events)} events, at most {MAX_EVENTS}")
    return Batch(replica, tuple(_event(e, f"events[{i}]") for i, e in enumerate(events)))


def _event(item: Any, path: str) -> Event:
    if not isinstance(item, list) or not item or item[0] not in ("r", "e"):
        raise ReplicaWireError(f'{path}: must be a list starting with "r" or "e"')
    if item[0] == "r":
        if len(item) != 5:
            raise ReplicaWireError(f"{path}: a routed event has 5 items, got {len(item)}")
        tokens = item[3]
        if not isinstance(tokens, int) or isinstance(tokens, bool) or not 0 <= tokens < 2**40:
            raise ReplicaWireError(f"{path}[3]: tokens must be a non-negative integer")
        return Routed(_text(item[1], f"{path}[1]"), _text(item[2], f"{path}[2]"), tokens, _blocks(item[4], path))
    if len(item) != 4:
        raise ReplicaWireError(f"{path}: an ended event has 4 items, got {len(item)}")
    served = None if item[2] is None else _text(item[2], f"{path}[2]")
    status = item[3]
    if not isinstance(status, int) or isinstance(status, bool) or not 0 <= status <= 999:
        raise ReplicaWireError(f"{path}[3]: status must be an integer 0..999")
    return Ended(_text(item[1], f"{path}[1]"), served, status)


def _blocks(value: Any, path: str) -> dict[str, tuple[int, ...]]:
    if not isinstance(value, dict) or len(value) > MAX_PLUGINS:
        raise ReplicaWireError(f"{path}[4]: must be an object of at most {MAX_PLUGINS} plugins")
    out: dict[str, tuple[int, ...]] = {}
    for name, packed in value.items():
        where = f"{path}[4].{name}"
        _text(name, where)
        if not isinstance(packed, str) or len(packed) > (MAX_BLOCKS * 8 * 4) // 3 + 4:
            raise ReplicaWireError(f"{where}: must be base64 of at most {MAX_BLOCKS} hashes")
        try:
            out[name] = unpack_blocks(packed)
        except (ValueError, binascii.Error) as exc:
            raise ReplicaWireError(f"{where}: {exc}") from None
    return out


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise ReplicaWireError(f"{path}: must be a non-empty string of at most {MAX_TEXT} characters")
    return value
