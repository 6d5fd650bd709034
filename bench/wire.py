"""A minimal MQTT 5 client for the benchmark's load generator and sink.

Why not gmqtt here: the generator and the sink share two cores with the system
under test, so every microsecond they spend is taken from it. A general client
builds a message object per publish, tracks it for redelivery and runs a
callback per packet; the generator only needs to write precomputed PUBLISH
packets and count PUBACKs, and the sink only needs to timestamp each PUBLISH
and acknowledge it. This module does exactly that and nothing else, on one TCP
connection, without reconnects (a lost connection fails the benchmark run,
which is what a benchmark wants).

Wire format (MQTT 5.0, OASIS standard, sections 2 and 3):

* Fixed header: one byte of packet type and flags, then the Remaining Length as a
  variable byte integer (7 bits per byte, high bit = more, at most 4 bytes, §1.5.5).
* CONNECT (§3.1): protocol name "MQTT", level 5, flags (Clean Start), Keep Alive
  (0 = off: the benchmark's connections are never idle long enough to matter and
  no PINGREQ timer runs in the hot loop), properties (Session Expiry 0, Receive
  Maximum), the client id.
* CONNACK (§3.2): flags, reason code, properties; the broker's Receive Maximum
  (property 0x21, absent = 65535) bounds our unacknowledged QoS 1 PUBLISHes.
  Mosquitto 2 sends its `max_inflight_messages` here and disconnects a client
  that exceeds it.
* PUBLISH (§3.3): flags carry QoS and retain; topic (2-byte length + UTF-8),
  packet id for QoS > 0, properties (length 0 here), payload = the rest.
  `publish_parts` splits a packet around its packet id, so a generator can
  build every packet before the clock starts and only splice in the id.
* PUBACK (§3.4): packet id, then (MQTT 5) an optional reason code and properties.
* SUBSCRIBE/SUBACK (§3.8, §3.9); DISCONNECT (§3.14) with reason 0.

`PacketReader` is sans-I/O (STYLE.md 1): fed bytes, it returns whole packets and
keeps a partial one for the next read, whatever the read boundaries are.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Callable
from typing import Final

__all__ = [
    "CONNACK",
    "DISCONNECT",
    "PUBACK",
    "PUBLISH",
    "SUBACK",
    "MqttWireError",
    "PacketReader",
    "WireProtocol",
    "connect_packet",
    "open_wire",
    "parse_connack",
    "parse_puback",
    "parse_publish",
    "puback_packet",
    "publish_parts",
    "subscribe_packet",
    "varint",
]

CONNACK: Final = 0x20
PUBLISH: Final = 0x30
PUBACK: Final = 0x40
SUBACK: Final = 0x90
PINGRESP: Final = 0xD0
DISCONNECT: Final = 0xE0

_MAX_REMAINING: Final = 268_435_455  # §1.5.5: four bytes of 7 bits
_PROP_SESSION_EXPIRY: Final = 0x11
_PROP_RECEIVE_MAXIMUM: Final = 0x21
_U16: Final = struct.Struct("!H")
_U32: Final = struct.Struct("!I")


class MqttWireError(Exception):
    """The broker refused us, or sent something this minimal client cannot follow."""


def varint(value: int) -> bytes:
    """MQTT's variable byte integer (§1.5.5)."""
    if not 0 <= value <= _MAX_REMAINING:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode("utf-8")
    return _U16.pack(len(data)) + data


def connect_packet(client_id: str, *, receive_maximum: int = 65_535) -> bytes:
    """CONNECT, MQTT 5, Clean Start, Keep Alive off, Session Expiry 0 (§3.1)."""
    if not 1 <= receive_maximum <= 65_535:
        raise ValueError(f"receive_maximum must be 1..65535, got {receive_maximum}")
    properties = (
        bytes([_PROP_SESSION_EXPIRY])
        + _U32.pack(0)
        + bytes([_PROP_RECEIVE_MAXIMUM])
        + _U16.pack(receive_maximum)
    )
    variable = _utf8("MQTT") + bytes([5, 0x02]) + _U16.pack(0)
    variable += varint(len(properties)) + properties
    body = variable + _utf8(client_id)
    return bytes([0x10]) + varint(len(body)) + body


def subscribe_packet(packet_id: int, topic_filter: str, qos: int = 1) -> bytes:
    """SUBSCRIBE one filter at `qos` (§3.8); no properties."""
    if qos not in (0, 1):
        raise ValueError(f"qos must be 0 or 1, got {qos}")
    body = _U16.pack(packet_id) + b"\x00" + _utf8(topic_filter) + bytes([qos])
    return bytes([0x82]) + varint(len(body)) + body


def publish_parts(topic: str, payload: bytes, qos: int = 1) -> tuple[bytes, bytes]:
    """A PUBLISH split around its packet id: `head + id(2 bytes) + tail` for QoS 1.

    For QoS 0 there is no packet id: the packet is `head + tail`.
    """
    if qos not in (0, 1):
        raise ValueError(f"qos must be 0 or 1, got {qos}")
    topic_bytes = _utf8(topic)
    tail = b"\x00" + payload  # property length 0
    remaining = len(topic_bytes) + (2 if qos else 0) + len(tail)
    head = bytes([PUBLISH | (qos << 1)]) + varint(remaining) + topic_bytes
    return head, tail


def puback_packet(packet_id: int) -> bytes:
    """PUBACK with reason Success, in its short form (§3.4.2.1)."""
    return b"\x40\x02" + _U16.pack(packet_id)


def parse_connack(body: bytes) -> tuple[int, int]:
    """(reason code, broker's Receive Maximum) from a CONNACK body."""
    if len(body) < 2:
        raise MqttWireError("short CONNACK")
    reason = body[1]
    receive_maximum = 65_535
    if len(body) > 2:
        length, at = _read_varint(body, 2)
        end = at + length
        while at < end:
            ident = body[at]
            at += 1
            if ident == _PROP_RECEIVE_MAXIMUM:
                (receive_maximum,) = _U16.unpack_from(body, at)
            at += _property_size(ident, body, at)
    return reason, receive_maximum


def parse_puback(body: bytes) -> tuple[int, int]:
    """(packet id, reason code) of a PUBACK body; an absent reason means Success."""
    (packet_id,) = _U16.unpack_from(body, 0)
    return packet_id, body[2] if len(body) > 2 else 0


def parse_publish(first: int, body: bytes) -> tuple[bytes, int | None, bytes]:
    """(topic as bytes, packet id or None for QoS 0, payload) of an MQTT 5 PUBLISH."""
    (topic_length,) = _U16.unpack_from(body, 0)
    at = 2 + topic_length
    topic = body[2:at]
    packet_id: int | None = None
    if first & 0x06:
        (packet_id,) = _U16.unpack_from(body, at)
        at += 2
    properties, at = _read_varint(body, at)
    return topic, packet_id, body[at + properties :]


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    shift = 0
    for _ in range(4):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    raise MqttWireError("malformed variable byte integer")


def _property_size(ident: int, body: bytes, at: int) -> int:
    """Bytes of a property's value (§2.2.2.2), enough to skip any CONNACK property."""
    if ident in (0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A):
        return 1
    if ident in (0x13, 0x21, 0x22):
        return 2
    if ident in (0x02, 0x11, 0x18, 0x27):
        return 4
    if ident == 0x0B:
        _, end = _read_varint(body, at)
        return end - at
    if ident == 0x26:  # user property: two strings
        first: int = _U16.unpack_from(body, at)[0]
        second: int = _U16.unpack_from(body, at + 2 + first)[0]
        return 4 + first + second
    if ident in (0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F):
        length: int = _U16.unpack_from(body, at)[0]
        return 2 + length
    raise MqttWireError(f"unknown property 0x{ident:02x}")


class PacketReader:
    """Splits a byte stream into MQTT packets: (first byte, body) pairs."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def receive_data(self, data: bytes) -> list[tuple[int, bytes]]:
        """Every whole packet in what arrived so far; a partial one waits for more."""
        buffer = self._buffer
        buffer += data
        packets: list[tuple[int, bytes]] = []
        at = 0
        size = len(buffer)
        while size - at >= 2:
            length = 0
            shift = 0
            cursor = at + 1
            complete = False
            while cursor < size:
                byte = buffer[cursor]
                cursor += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    complete = True
                    break
                shift += 7
                if shift > 21:
                    raise MqttWireError("malformed remaining length")
            end = cursor + length
            if not complete or end > size:
                break  # wait for the rest of the packet
            packets.append((buffer[at], bytes(buffer[cursor:end])))
            at = end
        if at:
            del buffer[:at]
        return packets

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet kept for the next read."""
        return len(self._buffer)


OnPublish = Callable[[float, bytes, bytes], None]
"""(receipt time, topic bytes, payload) for every PUBLISH received."""
OnPuback = Callable[[int], None]
"""(packet id) for every PUBACK received."""


class WireProtocol(asyncio.Protocol):
    """One MQTT 5 connection: QoS 1 PUBLISHes acknowledged at once, PUBACKs reported."""

    def __init__(self, on_publish: OnPublish | None, on_puback: OnPuback | None) -> None:
        self._on_publish = on_publish
        self._on_puback = on_puback
        self._reader = PacketReader()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[tuple[int, int]] = loop.create_future()
        self.suback: asyncio.Future[bytes] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.time()
        acks: list[bytes] = []
        on_publish = self._on_publish
        on_puback = self._on_puback
        for first, body in self._reader.receive_data(data):
            kind = first & 0xF0
            if kind == PUBLISH:
                topic, packet_id, payload = parse_publish(first, body)
                if packet_id is not None:
                    acks.append(b"\x40\x02" + _U16.pack(packet_id))
                if on_publish is not None:
                    on_publish(now, topic, payload)
            elif kind == PUBACK:
                packet_id, reason = parse_puback(body)
                if reason >= 0x80:
                    self.error = f"PUBACK reason 0x{reason:02x}"
                if on_puback is not None:
                    on_puback(packet_id)
            elif kind == CONNACK and not self.connack.done():
                self.connack.set_result(parse_connack(body))
            elif kind == SUBACK and not self.suback.done():
                self.suback.set_result(body[3:])
            elif kind == DISCONNECT:
                self.error = f"server DISCONNECT 0x{body[0] if body else 0:02x}"
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None and exc is not None:
            self.error = repr(exc)
        for future in (self.connack, self.suback):
            if not future.done():
                future.set_exception(MqttWireError(self.error or "connection closed"))
                future.exception()  # retrieved: no "never retrieved" warning if unawaited
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        """Write bytes as they are (the caller joins packets)."""
        assert self.transport is not None
        self.transport.write(data)

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """SUBSCRIBE and wait for a SUBACK that grants it."""
        self.write(subscribe_packet(1, topic_filter, qos))
        granted = await asyncio.wait_for(self.suback, 10.0)
        if not granted or granted[0] >= 0x80:
            raise MqttWireError(f"subscription to {topic_filter} refused: {granted.hex()}")

    async def close(self) -> None:
        """DISCONNECT (reason 0) and close the socket."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(bytes([DISCONNECT, 0]))
        transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), 2.0)


async def open_wire(
    host: str,
    port: int,
    client_id: str,
    *,
    on_publish: OnPublish | None = None,
    on_puback: OnPuback | None = None,
    receive_maximum: int = 65_535,
) -> tuple[WireProtocol, int]:
    """Connect and wait for CONNACK; (protocol, the broker's Receive Maximum)."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: WireProtocol(on_publish, on_puback), host, port
    )
    protocol.write(connect_packet(client_id, receive_maximum=receive_maximum))
    reason, broker_maximum = await asyncio.wait_for(protocol.connack, 10.0)
    if reason != 0:
        if protocol.transport is not None:
            protocol.transport.close()
        raise MqttWireError(f"CONNACK refused: reason 0x{reason:02x}")
    return protocol, broker_maximum
