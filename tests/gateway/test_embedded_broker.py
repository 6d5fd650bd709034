"""The embedded demo broker: amqtt on loopback, MQTT 3.1.1, a quick "no" to MQTT 5."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.embedded_broker import EmbeddedBroker
from gateway.adapters.mqtt import MQTT_V311, MqttLink

_WAIT_S = 10.0

# MQTT 3.1.1 CONNECT (§3.1): "MQTT", level 4, clean session, keepalive 60, client id "c1".
CONNECT_311 = bytes.fromhex("100e00044d5154540402003c00026331")
CONNACK_ACCEPTED = bytes.fromhex("20020000")
PINGREQ, PINGRESP = bytes.fromhex("c000"), bytes.fromhex("d000")
# The same CONNECT at level 5 with an empty property block (MQTT 5 §3.1.2.11).
CONNECT_5 = bytes.fromhex("100f00044d515454050200" + "3c" + "00" + "00026331")
CONNACK_BAD_VERSION = bytes.fromhex("20020001")


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


async def exchange(port: int, chunks: list[bytes], expect: int) -> bytes:
    """Send `chunks` as separate writes, then read `expect` bytes (or to EOF if fewer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        async with asyncio.timeout(_WAIT_S):
            data = b""
            while len(data) < expect:
                more = await reader.read(expect - len(data))
                if not more:
                    break
                data += more
        return data
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.fixture(autouse=True)
def _restore_amqtt_log_levels() -> Iterator[None]:
    """The broker quiets amqtt's loggers; give other tests the levels back."""
    names = ("amqtt", "transitions")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_listens_on_loopback_on_a_free_port() -> None:
    """Port 0 picks a free port on 127.0.0.1; the port is readable once started."""

    async def scenario() -> None:
        broker = EmbeddedBroker()
        with pytest.raises(RuntimeError, match="not started"):
            _ = broker.port
        async with broker:
            assert broker.running
            assert broker.address == ("127.0.0.1", broker.port)
            assert broker.port > 0
        assert not broker.running

    run(scenario)


def test_binds_the_port_it_is_given(free_port: int) -> None:
    """An explicit port is used as given."""

    async def scenario() -> None:
        async with EmbeddedBroker(port=free_port) as broker:
            assert broker.port == free_port

    run(scenario)


def test_rejects_an_impossible_port() -> None:
    """A port outside 0..65535 is our own bug."""
    with pytest.raises(ValueError, match="port"):
        EmbeddedBroker(port=70000)


def test_quiets_amqtt_logging() -> None:
    """amqtt's INFO chatter is cut to warnings unless the application chose a level."""
    logging.getLogger("amqtt").setLevel(logging.NOTSET)
    logging.getLogger("transitions").setLevel(logging.DEBUG)

    async def scenario() -> None:
        async with EmbeddedBroker():
            assert logging.getLogger("amqtt").level == logging.WARNING
            assert logging.getLogger("transitions").level == logging.DEBUG

    run(scenario)


@pytest.mark.parametrize(
    "chunks",
    [
        [CONNECT_311 + PINGREQ],  # whole, with a packet right behind
        [bytes([b]) for b in CONNECT_311 + PINGREQ],  # one byte at a time
        [CONNECT_311[:1], CONNECT_311[1:2], CONNECT_311[2:] + PINGREQ[:1], PINGREQ[1:]],
    ],
    ids=["whole", "bytewise", "split"],
)
def test_a_311_connect_reaches_amqtt_however_it_is_split(chunks: list[bytes]) -> None:
    """The peeked CONNECT and the bytes after it reach amqtt intact: CONNACK, then PINGRESP."""

    async def scenario() -> None:
        async with EmbeddedBroker() as broker:
            reply = await exchange(broker.port, chunks, expect=6)
            assert reply == CONNACK_ACCEPTED + PINGRESP

    run(scenario)


@given(st.lists(st.integers(1, len(CONNECT_311) + 1), min_size=1, max_size=6))
def test_any_split_of_a_connect_is_accepted(cuts: list[int]) -> None:
    """Property: whatever the write boundaries, a valid CONNECT gets CONNACK 0 and a PING works."""
    data = CONNECT_311 + PINGREQ
    points = sorted(set(cuts))
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]

    async def scenario() -> None:
        async with EmbeddedBroker() as broker:
            assert await exchange(broker.port, [c for c in chunks if c], 6) == (
                CONNACK_ACCEPTED + PINGRESP
            )

    run(scenario)


def test_mqtt5_connect_gets_unacceptable_protocol_version() -> None:
    """A v5 CONNECT is answered CONNACK 0x01 and closed (MQTT-3.1.2-2), not left hanging."""

    async def scenario() -> None:
        async with EmbeddedBroker() as broker:
            assert await exchange(broker.port, [CONNECT_5], expect=8) == CONNACK_BAD_VERSION

    run(scenario)


def test_garbage_first_packet_does_not_hurt_the_broker() -> None:
    """A client sending a non-CONNECT is dropped; the next client is served."""

    async def scenario() -> None:
        async with EmbeddedBroker() as broker:
            assert await exchange(broker.port, [PINGREQ], expect=4) == b""
            assert await exchange(broker.port, [CONNECT_311], expect=4) == CONNACK_ACCEPTED

    run(scenario)


def test_publish_and_subscribe_over_311() -> None:
    """With the broker's own version hint, a link connects at once and relays messages."""

    async def scenario() -> None:
        got: list[tuple[str, bytes]] = []
        arrived = asyncio.Event()

        async def on_message(topic: str, payload: bytes) -> None:
            got.append((topic, payload))
            arrived.set()

        async with EmbeddedBroker() as broker:
            assert broker.mqtt_version == MQTT_V311
            link = MqttLink(
                host="127.0.0.1",
                port=broker.port,
                client_id="gw",
                on_message=on_message,
                subscriptions=["in/#"],
                mqtt_version=broker.mqtt_version,
            )
            async with link:
                assert link.connected
                assert not link.ack_after_handler
                await link.publish("in/checkpoint/k1", b"\x80")
                async with asyncio.timeout(_WAIT_S):
                    await arrived.wait()
        assert got == [("in/checkpoint/k1", b"\x80")]

    run(scenario)


def test_stop_ends_every_connection_and_frees_the_port() -> None:
    """stop() drops idle and half-open clients; afterwards the port refuses connections."""

    async def scenario() -> None:
        broker = EmbeddedBroker()
        await broker.start()
        port = broker.port
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        half_reader, half_writer = await asyncio.open_connection("127.0.0.1", port)
        half_writer.write(CONNECT_311[:5])  # a CONNECT that never finishes
        await half_writer.drain()
        connected_reader, connected_writer = await asyncio.open_connection("127.0.0.1", port)
        connected_writer.write(CONNECT_311)
        assert await connected_reader.readexactly(4) == CONNACK_ACCEPTED
        await broker.stop()
        for reader in (idle_reader, half_reader, connected_reader):
            async with asyncio.timeout(_WAIT_S):
                assert await reader.read() == b""
        for writer in (idle_writer, half_writer, connected_writer):
            writer.close()
            await writer.wait_closed()
        with pytest.raises(OSError):  # noqa: PT011 - ConnectionRefusedError on Linux
            await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            await asyncio.sleep(0)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(scenario)
