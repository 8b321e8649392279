"""The replica wire format (scorer/replica_wire.py): round trip, every refusal names its path, and no input makes the
decoder raise anything but ReplicaWireError (property-based)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.replica_wire import (
    MAX_EVENTS,
    Ended,
    ReplicaWireError,
    Routed,
    decode_batch,
    encode_batch,
    pack_blocks,
    unpack_blocks,
)


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
