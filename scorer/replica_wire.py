"""What picker replicas tell each other (active-active), and its wire form: checked where it enters.

Why it exists: with several picker replicas behind one Envoy, each decision is made by one replica and each
response's end may be reported to another (Envoy balances the routing and the observer ext_proc streams of a request
independently). For their in-flight counts and approximate prefix indexes to agree, every replica tells its peers
two things: `Routed` (this request went to that endpoint, charged so many tokens, with these prompt block hashes per
sharing plugin) and `Ended` (this request's response ended, served by that endpoint, with that status). A batch is
one JSON object sent over HTTP (scorer/replica_sync.py):

    {"replica": "10.0.0.7:9004", "events": [["r", id, address, tokens, {"prefix-cache-scorer@128B": "<base64>"}],
                                            ["e", id, served_or_null, status], ...]}

Block hashes travel as base64 of little-endian unsigned 64-bit integers (8 bytes each, a third of their decimal
JSON). `decode_batch` refuses anything else with `ReplicaWireError`, whose message names the offending path.

A replica that starts (or restarts) asks a peer for its prefix indexes once, so as not to decide blind until the
traffic has taught it again (a `Snapshot`, one JSON object, each endpoint's blocks least recently used first):

    {"replica": "10.0.0.7:9004",
     "plugins": {"prefix-cache-scorer@128B": {"bytes_per_token": 6.85,
                                              "endpoints": {"10.0.1.5:8000": "<base64>", ...}}}}

(`bytes_per_token`: what sized the peer's index, null when it has not learned it yet. A plugin's state travels under
its share key, `scorer.framework.share_key`: the prefix index's names its block size, so a peer hashing other
blocks is ignored.)

`decode_snapshot` checks it as `decode_batch` checks a batch.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scorer.types import IndexSnapshot

MAX_EVENTS = 4096  # per batch
MAX_BLOCKS = 65_536  # per plugin per event (a 4 MiB prompt at 64-byte blocks)
MAX_TEXT = 256  # request ids, addresses, plugin and replica names
MAX_PLUGINS = 16
MAX_SNAPSHOT_ENDPOINTS = 4096  # per plugin
MAX_BYTES_PER_TOKEN = 1000  # far past any tokenizer: a sanity bound, the plugin clamps to its own range
MAX_SNAPSHOT_BLOCKS = 1 << 21  # per endpoint: 128 MiB of prompt at 64-byte blocks, beyond any LRU's capacity


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


@dataclass(frozen=True)
class Snapshot:
    replica: str
    plugins: Mapping[str, IndexSnapshot]  # prefix plugin name -> its endpoints' blocks, oldest first


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
    replica, doc = _document(body, "batch")
    events = doc.get("events")
    if not isinstance(events, list):
        raise ReplicaWireError("events: must be a list")
    if len(events) > MAX_EVENTS:
        raise ReplicaWireError(f"events: {len(events)} events, at most {MAX_EVENTS}")
    return Batch(replica, tuple(_event(e, f"events[{i}]") for i, e in enumerate(events)))


def encode_snapshot(replica: str, plugins: Mapping[str, IndexSnapshot]) -> bytes:
    wire = {
        name: {
            "bytes_per_token": snap.bytes_per_token,
            "endpoints": {address: pack_blocks(b) for address, b in snap.endpoints.items()},
        }
        for name, snap in plugins.items()
    }
    return json.dumps({"replica": replica, "plugins": wire}, separators=(",", ":")).encode()


def decode_snapshot(body: bytes) -> Snapshot:
    """Parse a peer's snapshot; raises ReplicaWireError naming the path of the first problem."""
    replica, doc = _document(body, "snapshot")
    plugins = doc.get("plugins")
    if not isinstance(plugins, dict) or len(plugins) > MAX_PLUGINS:
        raise ReplicaWireError(f"plugins: must be an object of at most {MAX_PLUGINS} plugins")
    out: dict[str, IndexSnapshot] = {}
    for name, plugin in plugins.items():
        where = f"plugins.{name}"
        _text(name, where)
        if not isinstance(plugin, dict):
            raise ReplicaWireError(f"{where}: must be an object")
        rate = plugin.get("bytes_per_token")
        if rate is not None and (
            not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 < rate <= MAX_BYTES_PER_TOKEN
        ):
            raise ReplicaWireError(f"{where}.bytes_per_token: must be null or a number in (0, {MAX_BYTES_PER_TOKEN}]")
        lrus = plugin.get("endpoints")
        if not isinstance(lrus, dict) or len(lrus) > MAX_SNAPSHOT_ENDPOINTS:
            raise ReplicaWireError(
                f"{where}.endpoints: must be an object of at most {MAX_SNAPSHOT_ENDPOINTS} endpoints"
            )
        endpoints = {
            _text(a, f"{where}.endpoints.{a}"): _packed(v, f"{where}.endpoints.{a}", MAX_SNAPSHOT_BLOCKS)
            for a, v in lrus.items()
        }
        out[name] = IndexSnapshot(endpoints, None if rate is None else float(rate))
    return Snapshot(replica, out)


def _document(body: bytes, what: str) -> tuple[str, dict[str, Any]]:
    """A JSON object naming the replica that sent it: (that replica, the object)."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ReplicaWireError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ReplicaWireError(f"the {what} must be a JSON object")
    return _text(doc.get("replica"), "replica"), doc


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
        out[name] = _packed(packed, where, MAX_BLOCKS)
    return out


def _packed(value: Any, where: str, limit: int) -> tuple[int, ...]:
    if not isinstance(value, str) or len(value) > (limit * 8 * 4) // 3 + 4:
        raise ReplicaWireError(f"{where}: must be base64 of at most {limit} hashes")
    try:
        return unpack_blocks(value)
    except (ValueError, binascii.Error) as exc:
        raise ReplicaWireError(f"{where}: {exc}") from None


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise ReplicaWireError(f"{path}: must be a non-empty string of at most {MAX_TEXT} characters")
    return value
