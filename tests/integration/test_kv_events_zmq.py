"""KV events over real ZMQ sockets on 127.0.0.1: live delivery, replay for late joiners, gap detection.

Every wait is bounded by asyncio.timeout; nothing sleeps to let time pass. A SUB socket can miss the first
messages after connecting (ZMQ's slow joiner), so live-only tests first publish warm-up batches until one
arrives, then check that everything after it arrives in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import zmq
import zmq.asyncio

from common.kv_event_types import AllBlocksCleared, BlockRemoved, BlockStored, EventBatch
from common.kv_wire import END_SEQ, decode_batch, encode_batch, encode_seq
from sim.fleet.kv_publisher import KVEventPublisher
from sim.fleet.kv_subscriber import KVEventSubscriber, KVReplayError, SequenceGap

ANY_PORT = "tcp://127.0.0.1:*"
TOPIC = "kv@127.0.0.1:8000@test-model"
WAIT = 10.0  # seconds; the bound on any one step, never a pause


def _batch(i: int) -> EventBatch:
    ev = BlockStored(
        block_hashes=[1000 + i], parent_block_hash=None if i == 0 else 999 + i, token_ids=[i] * 4, block_size=4
    )
    return EventBatch(ts=1_700_000_000.0 + i, events=[ev, BlockRemoved(block_hashes=[i])], data_parallel_rank=0)


@pytest.fixture
async def publisher() -> AsyncIterator[KVEventPublisher]:
    pub = KVEventPublisher(ANY_PORT, replay_endpoint=ANY_PORT, topic=TOPIC, buffer_steps=100)
    yield pub
    await pub.aclose()


async def _recv(sub: KVEventSubscriber) -> tuple[int, EventBatch]:
    async with asyncio.timeout(WAIT):
        return await sub.recv()


async def _warm_up(pub: KVEventPublisher, sub: KVEventSubscriber) -> int:
    """Publish warm-up batches until the subscriber receives one; drain them; return the last warm-up seq."""
    async with asyncio.timeout(WAIT):
        await pub.wait_for_peers(1)
        while True:
            last = pub.publish(EventBatch(ts=0.0, events=[AllBlocksCleared()]))
            try:
                async with asyncio.timeout(0.05):
                    seq, _ = await sub.recv()
                break
            except TimeoutError:
                continue  # the subscription has not reached the publisher yet; publish another
        while seq < last:
            seq, _ = await sub.recv()
        return last


async def test_live_batches_arrive_in_order(publisher: KVEventPublisher) -> None:
    sub = KVEventSubscriber(publisher.endpoint, topic="kv@")
    try:
        warm = await _warm_up(publisher, sub)
        assert warm == publisher.next_seq - 1
        sent = {publisher.publish(_batch(i)): _batch(i) for i in range(200)}
        assert list(sent) == list(range(warm + 1, warm + 201))  # consecutive sequence numbers
        got = [await _recv(sub) for _ in range(200)]
        assert [seq for seq, _ in got] == list(sent)
        assert all(batch == sent[seq] for seq, batch in got)
        assert sub.gaps == [] and sub.last_topic == TOPIC.encode()
    finally:
        sub.close()


async def test_sequence_starts_at_zero_and_frames_are_byte_exact(publisher: KVEventPublisher) -> None:
    """A raw SUB sees [topic, 8-byte big-endian seq, msgspec-layout payload]; seq counts from 0."""
    ctx = zmq.asyncio.Context.instance()
    raw = ctx.socket(zmq.SUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.SUBSCRIBE, b"")
    raw.connect(publisher.endpoint)
    try:
        first = publisher.publish(EventBatch(ts=5.0, events=[AllBlocksCleared()]))  # dp rank filled in: 0
        assert first == 0
        async with asyncio.timeout(WAIT):
            await publisher.wait_for_peers(1)
            while True:  # warm-up until the raw subscription is live
                seq = publisher.publish(EventBatch(ts=5.0, events=[AllBlocksCleared()]))
                try:
                    async with asyncio.timeout(0.05):
                        parts = await raw.recv_multipart()
                    break
                except TimeoutError:
                    continue
        assert len(parts) == 3 and parts[0] == TOPIC.encode() and len(parts[1]) == 8
        assert parts[2] == encode_batch(EventBatch(ts=5.0, events=[AllBlocksCleared()], data_parallel_rank=0))
        assert parts[2] == b"\x93\xcb\x40\x14\x00\x00\x00\x00\x00\x00\x91\x81\xa4type\xb0AllBlocksCleared\x00"
        assert int.from_bytes(parts[1], "big") <= seq
    finally:
        raw.close(linger=0)


async def test_late_subscriber_catches_up_through_replay(publisher: KVEventPublisher) -> None:
    sent = {publisher.publish(_batch(i)): _batch(i) for i in range(30)}  # nobody is listening yet
    assert list(sent) == list(range(30))
    sub = KVEventSubscriber(publisher.endpoint, publisher.replay_endpoint, start_seq=0)
    try:
        got = [await _recv(sub) for _ in range(30)]
        assert [seq for seq, _ in got] == list(range(30))
        assert all(batch == sent[seq] for seq, batch in got)
        assert sub.received_replayed == 30 and sub.last_topic == TOPIC.encode()
        # Then it follows the live stream; anything its SUB missed while joining comes from replay too.
        async with asyncio.timeout(WAIT):
            await publisher.wait_for_peers(1)
        more = {publisher.publish(_batch(i)): _batch(i) for i in range(30, 40)}
        got = [await _recv(sub) for _ in range(10)]
        assert [seq for seq, _ in got] == list(more)
        assert all(batch == more[seq] for seq, batch in got)
        assert all(gap.recovered for gap in sub.gaps)
    finally:
        sub.close()


async def test_gap_is_detected_and_filled_from_replay(publisher: KVEventPublisher) -> None:
    sub = KVEventSubscriber(publisher.endpoint, publisher.replay_endpoint)
    try:
        await _warm_up(publisher, sub)
        a = publisher.publish(_batch(1))
        lost = publisher.publish(_batch(2), drop_live=True)  # buffered, never sent live
        c = publisher.publish(_batch(3))
        got = [await _recv(sub) for _ in range(3)]
        assert [seq for seq, _ in got] == [a, lost, c]
        assert got[1][1] == _batch(2)
        assert SequenceGap(lost, lost, recovered=True) in sub.gaps
        assert publisher.dropped == 1 and publisher.replays_served >= 1
    finally:
        sub.close()


async def test_gap_without_replay_is_recorded_as_lost() -> None:
    async with KVEventPublisher(ANY_PORT, topic=TOPIC) as pub:
        sub = KVEventSubscriber(pub.endpoint)
        try:
            await _warm_up(pub, sub)
            a = pub.publish(_batch(1))
            lost = [pub.publish(_batch(i), drop_live=True) for i in (2, 3)]
            c = pub.publish(_batch(4))
            got = [await _recv(sub) for _ in range(2)]
            assert [seq for seq, _ in got] == [a, c]
            assert sub.gaps == [SequenceGap(lost[0], lost[1], recovered=False)]
        finally:
            sub.close()


async def test_replay_buffer_keeps_only_buffer_steps() -> None:
    async with KVEventPublisher(ANY_PORT, replay_endpoint=ANY_PORT, topic=TOPIC, buffer_steps=5) as pub:
        for i in range(12):
            pub.publish(_batch(i))
        assert pub.buffered == 5
        sub = KVEventSubscriber(pub.endpoint, pub.replay_endpoint, start_seq=0)
        try:
            replayed = await sub.replay(0)
            assert [r.seq for r in replayed] == list(range(7, 12))
            assert all(r.topic == TOPIC.encode() for r in replayed)
            assert [r.seq for r in await sub.replay(10)] == [10, 11]
            assert await sub.replay(12) == []
            got = [await _recv(sub) for _ in range(5)]  # a late joiner from 0 gets what is left
            assert [seq for seq, _ in got] == list(range(7, 12))
            assert sub.gaps == [SequenceGap(0, 6, recovered=False)]
        finally:
            sub.close()


async def test_replay_protocol_frames_as_vllm(publisher: KVEventPublisher) -> None:
    """A raw DEALER (as llm-d's replay client) gets [b"", topic, seq, payload] then [b"", b"", END_SEQ, b""];
    a request with the wrong number of frames gets no answer, and the socket keeps serving."""
    payloads = [encode_batch(_batch(i)) for i in range(3)]
    for i in range(3):
        publisher.publish(_batch(i))
    ctx = zmq.asyncio.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(publisher.replay_endpoint or "")
    try:
        async with asyncio.timeout(WAIT):
            await dealer.send_multipart([b"", b"junk", encode_seq(0)])  # 4 frames at the ROUTER: ignored
            await dealer.send_multipart([b"", encode_seq(1)])
            replies = []
            while True:
                parts = await dealer.recv_multipart()
                replies.append(parts)
                if parts[-1] == b"":
                    break
        assert replies == [
            [b"", TOPIC.encode(), encode_seq(1), payloads[1]],
            [b"", TOPIC.encode(), encode_seq(2), payloads[2]],
            [b"", b"", END_SEQ, b""],
        ]
        assert decode_batch(replies[0][3]) == _batch(1)
    finally:
        dealer.close(linger=0)


async def test_replay_without_endpoint_or_answer_fails_cleanly() -> None:
    async with KVEventPublisher(ANY_PORT, topic=TOPIC) as pub:
        sub = KVEventSubscriber(pub.endpoint)
        with pytest.raises(KVReplayError, match="no replay endpoint"):
            await sub.replay(0)
        sub.close()
        # A ROUTER that never answers: the subscriber gives up after replay_timeout.
        ctx = zmq.asyncio.Context.instance()
        silent = ctx.socket(zmq.ROUTER)
        silent.setsockopt(zmq.LINGER, 0)
        silent.bind(ANY_PORT)
        try:
            sub = KVEventSubscriber(pub.endpoint, silent.getsockopt_string(zmq.LAST_ENDPOINT), replay_timeout=0.2)
            with pytest.raises(KVReplayError, match="timed out"):
                await sub.replay(0)
            sub.close()
        finally:
            silent.close(linger=0)


async def test_publish_never_blocks_without_subscribers_and_close_is_final() -> None:
    pub = KVEventPublisher(ANY_PORT, replay_endpoint=ANY_PORT, topic=TOPIC, buffer_steps=1000, hwm=10)
    for i in range(5000):  # far past the HWM with no subscriber: PUB drops, publish returns at once
        assert pub.publish(_batch(i)) == i
    assert pub.buffered == 1000 and pub.next_seq == 5000
    await pub.aclose()
    pub.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        pub.publish(_batch(0))


def test_publisher_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        KVEventPublisher("tcp://127.0.0.1:*")


async def test_a_restarted_publisher_binds_the_ports_its_predecessor_just_released() -> None:
    """A server restart rebinds the same ports at once: aclose() returns only once ZMQ's I/O thread has let them go
    (it closes sockets after close() returns; under CPU load a rebind right away failed with EADDRINUSE)."""
    first = KVEventPublisher("tcp://127.0.0.1:*", replay_endpoint="tcp://127.0.0.1:*")
    events, replay = first.endpoint, first.replay_endpoint
    assert events and replay and not events.endswith(":*")
    await first.aclose()
    for _ in range(20):
        again = KVEventPublisher(events, replay_endpoint=replay)  # raises ZMQError if a port is still held
        await again.aclose()
