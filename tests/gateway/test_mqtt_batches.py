"""The MQTT link's batch ingress and non-blocking publishing, against a real mosquitto.

Batch ingress (`on_batch`, gateway/adapters/mqtt.py): batches start in arrival
order, one per loop turn, at most `max_batch` messages each; returning
acknowledges the whole batch, raising (or being cancelled by `stop()`)
acknowledges none of it and the broker redelivers (MQTT 5 persistent session,
PROTOCOLS.md "MQTT facts that bite"). With `max_unacked` messages received and
not acknowledged the link stops reading its socket, so a stalled handler holds
at most one socket read more than that in memory.

Publishing without a task per message (`room`, `wait_room`, `try_publish`) is
bounded by the broker's Receive Maximum (MQTT 5 §4.9), which mosquitto sets
from `max_inflight_messages`.

As in test_mqtt_adapter.py every scenario runs with `asyncio.run`, waits are
bounded, and "did NOT happen" is shown with a frozen broker (SIGSTOP) or a
later marker message, never with a sleep that decides the outcome.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, cast

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.mqtt.package import Package, PublishPacket
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.mqtt import (
    MQTT_V5,
    MQTT_V311,
    Backoff,
    MqttError,
    MqttLink,
    MqttNotConnected,
    MqttPublishError,
    _Connection,
    _publish_packet,
)
from tests.brokers import Mosquitto

pytestmark = pytest.mark.broker

_WAIT_S = 10.0
# gmqtt reads its socket 64 KiB at a time and hands every packet in a read over at once.
_READ_BYTES = 65_536


# -- helpers ------------------------------------------------------------------------
class Batches:
    """An `on_batch` handler that records each batch and lets a test await messages.

    `fail_first` batches raise (not stored); `release`, when given, is awaited
    before returning (a store that does not answer yet).
    """

    def __init__(self, *, fail_first: int = 0, release: asyncio.Event | None = None) -> None:
        self.calls: list[list[tuple[str, bytes]]] = []
        self.failed: list[list[tuple[str, bytes]]] = []
        self.stored: list[list[tuple[str, bytes]]] = []
        self._fail_first = fail_first
        self._release = release
        self._changed = asyncio.Event()

    async def __call__(self, messages: Sequence[tuple[str, bytes]]) -> None:
        batch = list(messages)
        self.calls.append(batch)
        self._changed.set()
        if len(self.calls) <= self._fail_first:
            self.failed.append(batch)
            raise OSError("disk full")  # the store failed: not stored
        if self._release is not None:
            await self._release.wait()
        self.stored.append(batch)
        self._changed.set()

    @property
    def entered(self) -> list[bytes]:
        """Payloads handed to the handler so far, in call order (repeats included)."""
        return [payload for batch in self.calls for _, payload in batch]

    @property
    def stored_payloads(self) -> list[bytes]:
        """Payloads of the batches that returned, in the order they returned."""
        return [payload for batch in self.stored for _, payload in batch]

    async def wait(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(_WAIT_S):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


def batch_link(
    port: int,
    client_id: str,
    on_batch: Callable[[Sequence[tuple[str, bytes]]], Awaitable[None]],
    **options: Any,
) -> MqttLink:
    """A batched link on in/# with test-sized backoff (50 ms doubling to 0.5 s)."""
    options.setdefault("backoff", Backoff(0.05, 0.5))
    options.setdefault("rng", random.Random(7))
    options.setdefault("subscriptions", ["in/#"])
    return MqttLink(host="127.0.0.1", port=port, client_id=client_id, on_batch=on_batch, **options)


def plain_link(port: int, client_id: str, **options: Any) -> MqttLink:
    """A link that only publishes (its on_message is never called)."""

    async def ignore(_topic: str, _payload: bytes) -> None:
        return None

    options.setdefault("backoff", Backoff(0.05, 0.5))
    return MqttLink(host="127.0.0.1", port=port, client_id=client_id, on_message=ignore, **options)


def payloads(count: int, start: int = 0) -> list[bytes]:
    return [b"%04d" % n for n in range(start, start + count)]


async def queue_for_session(port: int, client_id: str, messages: Sequence[bytes]) -> None:
    """Create `client_id`'s persistent session, leave, and have `messages` queued for it."""
    first = batch_link(port, client_id, Batches())
    await first.start()
    await first.stop()
    async with plain_link(port, "sender") as sender:
        for payload in messages:
            await sender.publish("in/n", payload)


async def nothing_redelivered(port: int, client_id: str) -> None:
    """A new session of `client_id` gets a marker and nothing older (all was acknowledged)."""
    recorder = Batches()
    async with batch_link(port, client_id, recorder), plain_link(port, "marker") as marker:
        await marker.publish("in/marker", b"marker")
        await recorder.wait(lambda: bool(recorder.calls))
        assert recorder.entered == [b"marker"]


async def no_tasks_left() -> None:
    """After stop(), nothing the links started may still be running."""
    for _ in range(3):
        await asyncio.sleep(0)
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, others


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def broker_with(tmp_path: Path, *config: str) -> Mosquitto:
    broker = Mosquitto(tmp_path, extra_config=config)
    broker.start()
    return broker


# -- construction and the link while down -------------------------------------------
async def _noop_batch(_messages: Sequence[tuple[str, bytes]]) -> None:
    return None


async def _noop_message(_topic: str, _payload: bytes) -> None:
    return None


@pytest.mark.parametrize(
    "options",
    [
        {"on_message": _noop_message, "on_batch": _noop_batch},
        {},
        {"on_batch": _noop_batch, "max_batch": 0},
        {"on_batch": _noop_batch, "max_batch": 8, "max_unacked": 7},
    ],
    ids=["both-handlers", "no-handler", "empty-batches", "unacked-below-batch"],
)
def test_constructor_rejects_bad_batch_settings(options: dict[str, Any]) -> None:
    """Exactly one of on_message / on_batch, max_batch >= 1, max_unacked >= max_batch."""
    with pytest.raises(ValueError, match=r"on_message|max_batch"):
        MqttLink(host="127.0.0.1", port=1883, client_id="gw", **options)


def test_batch_defaults() -> None:
    """max_unacked defaults to 4 x max_batch; `batched` tells the two ingress modes apart."""
    batched = MqttLink(host="127.0.0.1", port=1883, client_id="gw", on_batch=_noop_batch)
    assert batched.batched
    assert (batched.max_batch, batched.max_unacked) == (256, 1024)
    small = MqttLink(host="127.0.0.1", port=1883, client_id="gw", on_batch=_noop_batch, max_batch=4)
    assert small.max_unacked == 16
    exact = MqttLink(
        host="127.0.0.1",
        port=1883,
        client_id="gw",
        on_batch=_noop_batch,
        max_batch=4,
        max_unacked=4,
    )
    assert exact.max_unacked == 4
    assert not MqttLink(
        host="127.0.0.1", port=1883, client_id="gw", on_message=_noop_message
    ).batched


def test_no_room_and_no_publishing_before_connect() -> None:
    """Down: room is 0, try_publish and wait_room raise MqttNotConnected; bad arguments first."""

    async def scenario() -> None:
        idle = plain_link(1883, "gw")
        assert idle.room == 0
        with pytest.raises(ValueError, match="wildcards"):
            idle.try_publish("out/#", b"x")
        with pytest.raises(ValueError, match="qos"):
            idle.try_publish("out/x", b"x", qos=2)
        with pytest.raises(MqttNotConnected):
            idle.try_publish("out/x", b"x")
        with pytest.raises(MqttNotConnected):
            idle.try_publish("out/x", b"x", qos=0)
        with pytest.raises(MqttNotConnected):
            await idle.wait_room()

    run(scenario)


# -- batch ingress --------------------------------------------------------------------
def test_batches_arrive_in_order_bounded_and_exactly_once(mosquitto: Mosquitto) -> None:
    """Queued and live messages reach on_batch once each, in order, <= max_batch per batch;
    every batch that returned was acknowledged: a new session gets nothing again."""

    async def scenario() -> None:
        queued, live = payloads(60), payloads(40, start=60)
        await queue_for_session(mosquitto.port, "gw", queued)
        handler = Batches()
        async with (
            plain_link(mosquitto.port, "sender") as sender,
            batch_link(mosquitto.port, "gw", handler, max_batch=4) as gateway,
        ):
            assert gateway.batched
            await asyncio.gather(*(sender.publish("in/n", payload) for payload in live))
            await handler.wait(lambda: len(handler.entered) >= 100)
            assert handler.entered == queued + live
            assert all(1 <= len(batch) <= 4 for batch in handler.calls), handler.calls
            assert {topic for batch in handler.calls for topic, _ in batch} == {"in/n"}
            # Our own round trip: the broker has read our PUBACKs, written before it.
            await gateway.publish("out/sync", b"")
            await gateway.stop(clean=False)  # a crash: only what the broker has counts
            assert gateway.connections == 1
        await nothing_redelivered(mosquitto.port, "gw")
        await no_tasks_left()

    run(scenario)


def test_a_gate_of_one_message_still_reopens(mosquitto: Mosquitto) -> None:
    """max_batch=1, max_unacked=1: the gate shuts at every message and reopens after it."""

    async def scenario() -> None:
        live = payloads(20)
        handler = Batches()
        async with (
            plain_link(mosquitto.port, "sender") as sender,
            batch_link(mosquitto.port, "gw", handler, max_batch=1, max_unacked=1) as gateway,
        ):
            await asyncio.gather(*(sender.publish("in/n", payload) for payload in live))
            await handler.wait(lambda: len(handler.entered) >= 20)
            assert handler.entered == live
            assert all(len(batch) == 1 for batch in handler.calls)
            await gateway.stop()

    run(scenario)


def test_a_batch_that_raises_is_redelivered_then_acknowledged(mosquitto: Mosquitto) -> None:
    """A raising batch is not acknowledged: after the link recycles, the broker sends the same
    payloads again; once a batch returns they are acknowledged and never come back."""

    async def scenario() -> None:
        queued = payloads(10)
        await queue_for_session(mosquitto.port, "gw", queued)
        handler = Batches(fail_first=1)
        async with (
            plain_link(mosquitto.port, "sender") as sender,
            batch_link(mosquitto.port, "gw", handler, max_batch=4) as gateway,
        ):
            await handler.wait(lambda: set(handler.stored_payloads) >= set(queued))
            (failed,) = handler.failed
            assert 1 <= len(failed) <= 4
            failed_payloads = [payload for _, payload in failed]
            assert failed_payloads == queued[: len(failed)]  # the oldest first
            # Seen again after the failure, and this time stored.
            assert set(failed_payloads) <= set(handler.stored_payloads)
            assert handler.entered.count(failed_payloads[0]) >= 2
            assert gateway.connections >= 2  # the link recycled its connection
            # A marker published now follows every redelivery on this connection:
            # once its batch has returned, so has every earlier one (one per turn,
            # in order), and their PUBACKs precede our own round trip.
            await sender.publish("in/n", b"after")
            await handler.wait(lambda: b"after" in handler.stored_payloads)
            await gateway.publish("out/sync", b"")
            await gateway.stop(clean=False)
        await nothing_redelivered(mosquitto.port, "gw")
        await no_tasks_left()

    run(scenario)


def test_a_batch_cut_short_by_stop_is_not_acknowledged(mosquitto: Mosquitto) -> None:
    """stop() cancels a running batch; its messages come back to the next session."""

    async def scenario() -> None:
        stuck = Batches(release=asyncio.Event())  # never set: the store never answers
        gateway = batch_link(mosquitto.port, "gw", stuck, max_batch=4)
        async with plain_link(mosquitto.port, "sender") as sender:
            await gateway.start()
            await sender.publish("in/n", b"panic")
            await stuck.wait(lambda: bool(stuck.calls))
            await gateway.stop()  # clean DISCONNECT: the session stays
            assert stuck.stored == []
            again = Batches()
            async with batch_link(mosquitto.port, "gw", again):
                await again.wait(lambda: bool(again.stored))
                assert again.stored_payloads == [b"panic"]
        await no_tasks_left()

    run(scenario)


def test_a_stalled_handler_stops_the_link_reading(mosquitto: Mosquitto) -> None:
    """With every batch blocked, the link takes in at most max_unacked messages plus one
    socket read, though the broker may send all 200; released, all arrive once, in order."""

    async def scenario() -> None:
        size = 2000
        sent = [b"%04d" % n + b"x" * (size - 4) for n in range(200)]
        # Below max_unacked reads go on; one read (64 KiB) may carry whole packets
        # beyond it, plus the tail of a packet begun in the read before.
        bound = 8 + _READ_BYTES // size + 2
        assert bound < len(sent)
        release = asyncio.Event()
        handler = Batches(release=release)
        observer = Batches()
        async with (
            plain_link(mosquitto.port, "sender") as sender,
            # receive_maximum=65535: mosquitto would otherwise stop at its
            # max_inflight_messages (20) and hide the link's own bound.
            batch_link(
                mosquitto.port,
                "gw",
                handler,
                max_batch=4,
                max_unacked=8,
                receive_maximum=65_535,
            ),
            batch_link(mosquitto.port, "observer", observer, receive_maximum=65_535),
        ):
            await asyncio.gather(*(sender.publish("in/n", payload) for payload in sent))
            # The gate shut: max_unacked messages are in blocked batches.
            await handler.wait(lambda: len(handler.entered) >= 8)
            # The broker has sent all 200 to a subscriber that reads: it has
            # written ours too (to our socket, or queued them when it filled).
            await observer.wait(lambda: len(observer.stored_payloads) >= len(sent))
            for _ in range(20):
                await asyncio.sleep(0)
            assert len(handler.entered) <= bound, len(handler.entered)
            assert all(len(batch) <= 4 for batch in handler.calls)
            assert handler.stored == []
            release.set()
            await handler.wait(lambda: len(handler.stored_payloads) >= len(sent))
            assert handler.entered == sent
            assert sorted(handler.stored_payloads) == sent
        await no_tasks_left()

    run(scenario)


# -- publishing without a task per message --------------------------------------------
def test_try_publish_fills_the_window_and_wait_room_follows_pubacks(tmp_path: Path) -> None:
    """Receive Maximum 4 leaves 3 slots: try_publish fills them, then returns None; the
    futures and wait_room resolve only once the (frozen) broker's PUBACKs come."""
    broker = broker_with(tmp_path, "max_inflight_messages 4")

    async def scenario() -> None:
        sink = Batches()
        async with (
            plain_link(broker.port, "gw") as gateway,
            batch_link(broker.port, "sink", sink, subscriptions=["out/#"]),
        ):
            assert gateway.room == 3  # Receive Maximum - 1: gmqtt's id allocator
            broker.pause()
            try:
                confirmations = [gateway.try_publish("out/n", b"%d" % n) for n in range(3)]
                assert gateway.room == 0
                assert gateway.try_publish("out/n", b"refused") is None
                room = asyncio.create_task(gateway.wait_room())
                for _ in range(20):
                    await asyncio.sleep(0)
                assert not room.done()
                assert not any(c is None or c.done() for c in confirmations)
            finally:
                broker.resume()
            async with asyncio.timeout(_WAIT_S):
                await room
                for confirmation in confirmations:
                    assert confirmation is not None
                    await confirmation
            assert gateway.room == 3
            await gateway.wait_room()  # room now: returns at once
            qos0 = gateway.try_publish("out/q0", b"fast", qos=0)
            assert qos0 is not None
            assert qos0.done()
            assert gateway.room == 3  # QoS 0 takes no slot
            await sink.wait(lambda: len(sink.stored_payloads) >= 4)
            assert sorted(sink.stored_payloads) == [b"0", b"1", b"2", b"fast"]
        await no_tasks_left()

    try:
        run(scenario)
    finally:
        broker.kill()


def test_send_nowait_calls_back_on_each_puback_and_on_loss(tmp_path: Path) -> None:
    """send_nowait fills the window then returns False; each callback gets None once
    the (frozen) broker acknowledges, wait_room(at_least) waits for that many slots,
    and what is in flight when the broker dies gets the error."""
    broker = broker_with(tmp_path, "max_inflight_messages 4")

    async def scenario() -> None:
        outcomes: list[tuple[int, MqttError | None]] = []
        settled = asyncio.Event()

        def done(n: int) -> Callable[[MqttError | None], None]:
            def record(error: MqttError | None) -> None:
                outcomes.append((n, error))
                settled.set()

            return record

        async with plain_link(broker.port, "gw") as gateway:
            broker.pause()
            try:
                assert [gateway.send_nowait("out/n", b"x", done(n)) for n in range(4)] == [
                    True,
                    True,
                    True,
                    False,
                ]
                three = asyncio.create_task(gateway.wait_room(3))
                for _ in range(20):
                    await asyncio.sleep(0)
                assert outcomes == []
                assert not three.done()
            finally:
                broker.resume()
            async with asyncio.timeout(_WAIT_S):
                await three
            assert sorted(outcomes) == [(0, None), (1, None), (2, None)]
            outcomes.clear()
            broker.pause()
            assert gateway.send_nowait("out/n", b"y", done(9))
            broker.kill()
            settled.clear()
            async with asyncio.timeout(_WAIT_S):
                await settled.wait()
            [(n, error)] = outcomes
            assert n == 9
            assert isinstance(error, MqttPublishError)
            await gateway.stop()

    try:
        run(scenario)
    finally:
        broker.kill()


def test_a_lost_connection_fails_the_window(tmp_path: Path) -> None:
    """The broker dies holding our PUBLISHes: their futures and wait_room raise
    MqttPublishError, and there is no room until the link is back."""
    broker = broker_with(tmp_path, "max_inflight_messages 2")

    async def scenario() -> None:
        async with plain_link(broker.port, "gw") as gateway:
            assert gateway.room == 1
            broker.pause()
            confirmation = gateway.try_publish("out/n", b"lost")
            assert confirmation is not None
            assert gateway.try_publish("out/n", b"refused") is None
            room = asyncio.create_task(gateway.wait_room())
            for _ in range(20):
                await asyncio.sleep(0)
            broker.kill()
            async with asyncio.timeout(_WAIT_S):
                with pytest.raises(MqttPublishError):
                    await confirmation
                with pytest.raises(MqttPublishError):
                    await room
            assert gateway.room == 0
            with pytest.raises(MqttNotConnected):
                gateway.try_publish("out/n", b"x")
        await no_tasks_left()

    try:
        run(scenario)
    finally:
        broker.kill()


class _Ids:
    """The one part of a gmqtt protocol `PublishPacket.build_package` asks for an id."""

    def __init__(self, mid: int) -> None:
        self.mid = mid

    def next_id(self) -> int:
        return self.mid


class _Protocol:
    def __init__(self, version: int, mid: int) -> None:
        self.proto_ver = version
        self.id_generator = _Ids(mid)


@given(
    topic=st.text(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="+#\x00"), min_size=1
    ),
    payload=st.binary(max_size=300),
    qos=st.sampled_from([0, 1]),
    retain=st.booleans(),
    mid=st.integers(1, 65_535),
    v5=st.booleans(),
)
def test_our_publish_packets_are_gmqtts(
    topic: str, payload: bytes, qos: int, retain: bool, mid: int, v5: bool
) -> None:
    """The link's own PUBLISH encoder writes byte for byte what gmqtt's builder writes."""
    message = gmqtt.Message(topic, payload, qos=qos, retain=retain)
    version = MQTTv50 if v5 else MQTTv311
    _, expected = PublishPacket.build_package(message, _Protocol(version, mid))
    assert _publish_packet(topic, payload, qos, retain, mid, v5=v5) == bytes(expected)


class _Taker:
    """What `_Connection._take_publishes` needs of its connection: a version and a sink."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.delivered: list[tuple[str, bytes, int | None]] = []

    def _deliver(self, topic: str, payload: bytes, mid: int | None) -> None:
        self.delivered.append((topic, payload, mid))


class _GmqttSide:
    """Stands for gmqtt's MQTTConnection: records what falls through to its own path."""

    def __init__(self) -> None:
        self.fell_through: list[Package] = []

    def put_package(self, package: Package) -> None:
        self.fell_through.append(package)


def _split(packet: bytes) -> Package:
    """A whole PUBLISH packet as gmqtt hands it over: the first byte and the rest."""
    at = 1
    while packet[at] & 0x80:
        at += 1
    return Package(packet[0], packet[at + 1 :])


def _taking(version: int) -> tuple[_Taker, _GmqttSide]:
    taker, gmqtt_side = _Taker(version), _GmqttSide()
    _Connection._take_publishes(cast(Any, taker), cast(Any, gmqtt_side))
    return taker, gmqtt_side


@given(
    topic=st.text(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="+#\x00"), min_size=1
    ),
    payload=st.binary(max_size=300),
    qos=st.sampled_from([0, 1]),
    mid=st.integers(1, 65_535),
    v5=st.booleans(),
)
def test_plain_publishes_are_parsed_by_the_link(
    topic: str, payload: bytes, qos: int, mid: int, v5: bool
) -> None:
    """A PUBLISH without properties reaches the link as (topic, payload, packet id)."""
    taker, gmqtt_side = _taking(MQTT_V5 if v5 else MQTT_V311)
    packet = _publish_packet(topic, payload, qos, False, mid, v5=v5)
    gmqtt_side.put_package(_split(packet))  # now the link's parser
    assert taker.delivered == [(topic, payload, mid if qos else None)]
    assert gmqtt_side.fell_through == []


@pytest.mark.parametrize(
    "package",
    [
        Package(0x32, b"\x00\x03a/b\x00\x07\x03\x23\x00\x01x"),  # v5 properties: topic alias
        Package(0x32, b"\x00\x00\x00\x07\x00x"),  # empty topic (an alias)
        Package(0x32, b"\x00\x09a/b"),  # topic length past the end
        Package(0x32, b"\x00\x03a/b\x00"),  # packet id cut short
        Package(0x30, b"\x00\x02\xff\xfex"),  # topic not UTF-8
        Package(0x34, b"\x00\x03a/b\x00\x07\x00x"),  # QoS 2
        Package(0x40, b"\x00\x07"),  # a PUBACK
    ],
)
def test_anything_else_takes_gmqtts_path(package: Package) -> None:
    """Properties, aliases, QoS 2, short or odd packets and other types go to gmqtt."""
    taker, gmqtt_side = _taking(MQTT_V5)
    gmqtt_side.put_package(package)
    assert taker.delivered == []
    assert gmqtt_side.fell_through == [package]
