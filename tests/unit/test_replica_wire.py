"""The replica wire format (scorer/replica_wire.py): round trip, every refusal names its path, and no input makes the
decoder raise anything but ReplicaWireError (property-based)."""

from __future__ import annotations

import contextlib
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.replica_wire import (
    MAX_EVENTS,
    Ended,
    ReplicaWireError,
    Routed,
    decode_batch,
    decode_snapshot,
    encode_batch,
    encode_snapshot,
    pack_blocks,
    unpack_blocks,
)
from scorer.types import IndexSnapshot


def test_a_batch_round_trips_in_order():
    events = [
        Routed("r1", "10.0.0.1:8000", 120, {"prefix-cache-scorer": [1, 2**64 - 1, 0]}),
        Ended("r1", "10.0.0.2:8000", 200),
        Ended("r2", None, 0),
        Routed("r3", "10.0.0.1:8000", 1, {}),
    ]
    batch = decode_batch(encode_batch("10.0.0.9:9004", events))
    assert batch.replica == "10.0.0.9:9004"
    assert batch.events == (
        Routed("r1", "10.0.0.1:8000", 120, {"prefix-cache-scorer": (1, 2**64 - 1, 0)}),
        Ended("r1", "10.0.0.2:8000", 200),
        Ended("r2", None, 0),
        Routed("r3", "10.0.0.1:8000", 1, {}),
    )


def _doc(*events: object, replica: object = "me:1") -> bytes:
    return json.dumps({"replica": replica, "events": list(events)}).encode()


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"\xff", "not JSON"),
        (b"[]", "the batch must be a JSON object"),
        (_doc(replica=""), "replica"),
        (json.dumps({"replica": "me:1"}).encode(), "events"),
        (_doc("r"), "events[0]"),
        (_doc(["x", "id"]), "events[0]"),
        (_doc(["r", "id", "a:1", 1]), "events[0]: a routed event has 5 items"),
        (_doc(["r", "id", "a:1", -1, {}]), "events[0][3]"),
        (_doc(["r", "id", "a:1", True, {}]), "events[0][3]"),
        (_doc(["r", "", "a:1", 1, {}]), "events[0][1]"),
        (_doc(["r", "id", 7, 1, {}]), "events[0][2]"),
        (_doc(["r", "id", "a:1", 1, []]), "events[0][4]"),
        (_doc(["r", "id", "a:1", 1, {"p": "!!"}]), "events[0][4].p"),
        (_doc(["r", "id", "a:1", 1, {"p": "AAAA"}]), "events[0][4].p"),  # 3 bytes: not whole hashes
        (_doc(["e", "id", None, 200], ["e", "id", None]), "events[1]: an ended event has 4 items"),
        (_doc(["e", "id", None, 1000]), "events[0][3]"),
        (_doc(["e", "id", 5, 200]), "events[0][2]"),
        (_doc(*[["e", "id", None, 200]] * (MAX_EVENTS + 1)), "events:"),
    ],
)
def test_bad_batches_are_refused_with_their_path(body: bytes, path: str):
    with pytest.raises(ReplicaWireError, match=path.replace("[", r"\[").replace("]", r"\]")):
        decode_batch(body)


@given(st.lists(st.integers(0, 2**64 - 1), max_size=50))
def test_blocks_pack_and_unpack(blocks: list[int]):
    assert unpack_blocks(pack_blocks(blocks)) == tuple(blocks)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps({"replica": "me:1", "events": v}).encode())))
def test_no_input_raises_anything_but_the_wire_error(body: bytes):
    with contextlib.suppress(ReplicaWireError):
        decode_batch(body)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(
                Routed,
                st.text(min_size=1, max_size=20),
                st.text(min_size=1, max_size=20),
                st.integers(0, 10**9),
                st.dictionaries(
                    st.text(min_size=1, max_size=10), st.lists(st.integers(0, 2**64 - 1), max_size=5), max_size=4
                ),
            ),
            st.builds(Ended, st.text(min_size=1, max_size=20), st.none() | st.text(min_size=1), st.integers(0, 999)),
        ),
        max_size=20,
    )
)
def test_whatever_is_encoded_decodes_to_the_same_events(events: list[Routed | Ended]):
    decoded = decode_batch(encode_batch("me:1", events)).events
    normalized = [
        Routed(e.request_id, e.address, e.tokens, {k: tuple(v) for k, v in e.blocks.items()})
        if isinstance(e, Routed)
        else e
        for e in events
    ]
    assert list(decoded) == normalized


# ---- snapshots (a starting replica's copy of a peer's prefix indexes) ----------------------------------------
def _snap(plugins: object, replica: object = "me:1") -> bytes:
    return json.dumps({"replica": replica, "plugins": plugins}).encode()


def _plugin(endpoints: object, rate: object = None) -> dict[str, object]:
    return {"bytes_per_token": rate, "endpoints": endpoints}


def test_a_snapshot_round_trips_with_its_order():
    plugins = {
        "prefix-cache-scorer": IndexSnapshot({"10.0.0.1:8000": [3, 1, 2**64 - 1], "10.0.0.2:8000": []}, 6.85),
        "other": IndexSnapshot({}),
    }
    snapshot = decode_snapshot(encode_snapshot("10.0.0.9:9004", plugins))
    assert snapshot.replica == "10.0.0.9:9004"
    assert snapshot.plugins == {
        "prefix-cache-scorer": IndexSnapshot({"10.0.0.1:8000": (3, 1, 2**64 - 1), "10.0.0.2:8000": ()}, 6.85),
        "other": IndexSnapshot({}, None),
    }


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"{", "not JSON"),
        (b"[]", "the snapshot must be a JSON object"),
        (_snap({}, replica=7), "replica"),
        (_snap([]), "plugins"),
        (_snap({f"p{i}": _plugin({}) for i in range(17)}), "plugins"),
        (_snap({"": _plugin({})}), "plugins."),
        (_snap({"p": []}), "plugins.p: must be an object"),
        (_snap({"p": _plugin([])}), "plugins.p.endpoints"),
        (_snap({"p": _plugin({}, rate=0)}), "plugins.p.bytes_per_token"),
        (_snap({"p": _plugin({}, rate=True)}), "plugins.p.bytes_per_token"),
        (_snap({"p": _plugin({}, rate="4")}), "plugins.p.bytes_per_token"),
        (_snap({"p": _plugin({"a:1": 5})}), "plugins.p.endpoints.a:1"),
        (_snap({"p": _plugin({"a:1": "AAAA"})}), "plugins.p.endpoints.a:1: 3 bytes is not a whole number"),
        (_snap({"p": _plugin({"a:1": "!!"})}), "plugins.p.endpoints.a:1"),
        (_snap({"p": _plugin({"x" * 300: ""})}), "plugins.p.endpoints."),
    ],
)
def test_bad_snapshots_are_refused_with_their_path(body: bytes, path: str):
    with pytest.raises(ReplicaWireError, match=re.escape(path)):
        decode_snapshot(body)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        _json.map(lambda v: json.dumps({"replica": "me:1", "plugins": v}).encode()),
        _json.map(lambda v: json.dumps({"replica": "me:1", "plugins": {"p": v}}).encode()),
        _json.map(lambda v: json.dumps({"replica": "me:1", "plugins": {"p": {"endpoints": v}}}).encode()),
    )
)
def test_no_snapshot_input_raises_anything_but_the_wire_error(body: bytes):
    with contextlib.suppress(ReplicaWireError):
        decode_snapshot(body)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10),
        st.builds(
            IndexSnapshot,
            st.dictionaries(
                st.text(min_size=1, max_size=20), st.lists(st.integers(0, 2**64 - 1), max_size=8), max_size=4
            ),
            st.none() | st.floats(0.5, 32),
        ),
        max_size=4,
    )
)
def test_whatever_snapshot_is_encoded_decodes_to_the_same_lists(plugins: dict[str, IndexSnapshot]):
    decoded = decode_snapshot(encode_snapshot("me:1", plugins)).plugins
    assert decoded == {
        name: IndexSnapshot({a: tuple(b) for a, b in snap.endpoints.items()}, snap.bytes_per_token)
        for name, snap in plugins.items()
    }
