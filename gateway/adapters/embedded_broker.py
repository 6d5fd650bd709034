"""An in-process MQTT broker for the demo: amqtt, on 127.0.0.1 only.

DESIGN.md ("Dependencies"): mosquitto is the broker for tests and production;
amqtt can serve the demo. It speaks MQTT 3.1.1 only and costs about 11x
mosquitto's CPU per message (PROTOCOLS.md: a relay with amqtt in its own loop
peaks near 600 events/s), and it does not resend unacknowledged messages when
a client reconnects, so acknowledgement after store is not available on it:
the gateway says so at start (`MqttLink.ack_after_handler` is False).

Theory of operation
-------------------
amqtt runs in the caller's event loop with one "external" listener: this
module owns the listening socket (`asyncio.start_server` on 127.0.0.1, port 0
= any free port, read back as `.port`) and hands each accepted stream to
`Broker.external_connected`, amqtt's public entry point for connections it
did not accept itself. Owning the socket buys three things:

1. the port is known without reaching into amqtt;
2. every connection task is tracked and ended on `stop()`, so no transport is
   left for the garbage collector (tests run with warnings as errors);
3. an MQTT 5 CONNECT gets the answer MQTT 3.1.1 requires (MQTT-3.1.2-2: CONNACK
   0x01 "unacceptable protocol version", then close). amqtt itself reads a v5
   CONNECT's property block as if it were the client id and waits forever for
   bytes that never come; answering here lets `MqttLink` fall back to 3.1.1 at
   once instead of after its connect timeout.

amqtt logs every connection at INFO and its state machine (`transitions`)
chatters too: both loggers are set to WARNING unless the application already
chose a level for them. No warnings are raised by amqtt 0.12 on import, start
or shutdown (checked with warnings as errors), so none are filtered here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Final

from amqtt.adapters import ReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker

__all__ = ["EmbeddedBroker"]

_HOST: Final = "127.0.0.1"
_LISTENER: Final = "default"
_CONNECT: Final = 0x10
_MQTT_311: Final = 4
# CONNACK, remaining length 2, session present 0, return code 0x01 (MQTT 3.1.1 §3.2.2.3).
_CONNACK_BAD_VERSION: Final = b"\x20\x02\x00\x01"
# A CONNECT bigger than this is handed to amqtt unread (it will judge it).
_PEEK_LIMIT: Final = 64 * 1024
_FIRST_PACKET_TIMEOUT_S: Final = 10.0
_NOISY_LOGGERS: Final = ("amqtt", "transitions")


class _PrefixedReader(ReaderAdapter):  # type: ignore[misc]  # amqtt's adapter base is untyped here
    """amqtt's reader adapter over a stream whose first bytes were already read."""

    def __init__(self, prefix: bytes, reader: asyncio.StreamReader) -> None:
        self._prefix = prefix
        self._reader = reader

    async def read(self, n: int = -1) -> bytes:
        # Same contract as amqtt's StreamReaderAdapter: n == -1 reads to EOF,
        # n > 0 reads exactly n bytes (IncompleteReadError at EOF).
        if n == -1:
            data, self._prefix = self._prefix + await self._reader.read(-1), b""
            return data
        if len(self._prefix) >= n:
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        head, self._prefix = self._prefix, b""
        return head + await self._reader.readexactly(n - len(head))

    def feed_eof(self) -> None:
        self._reader.feed_eof()


async def _read_first_packet(reader: asyncio.StreamReader) -> tuple[bytes, int | None]:
    """Read the fixed header and (if small) the body of the first packet.

    Returns the bytes read and the protocol level if it is a CONNECT we could
    parse, else None (amqtt then judges the bytes itself). Raises ValueError
    if the first packet is not a CONNECT at all.
    """
    head = await reader.readexactly(1)
    remaining = 0
    for shift in range(0, 28, 7):  # variable byte integer, at most 4 bytes (MQTT §1.5.5)
        byte = await reader.readexactly(1)
        head += byte
        remaining |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            break
    if head[0] & 0xF0 != _CONNECT:
        # MQTT-3.1.0-1: the first packet must be CONNECT; the server closes
        # otherwise (amqtt would wait for one forever).
        raise ValueError(f"first packet is type {head[0] >> 4}, not CONNECT")
    if remaining > _PEEK_LIMIT:
        return head, None
    body = await reader.readexactly(remaining)
    # Variable header: protocol name (2-byte length + "MQTT"), protocol level.
    name_length = int.from_bytes(body[:2], "big") if len(body) >= 2 else -1
    if name_length < 0 or len(body) < 3 + name_length:
        return head + body, None
    return head + body, body[2 + name_length]


class EmbeddedBroker:
    """amqtt on 127.0.0.1:`port` (0 = any free port) for the demo; MQTT 3.1.1 only."""

    mqtt_version: Final = _MQTT_311
    """The only protocol level amqtt speaks; `MqttLink(mqtt_version=...)` may skip its v5 probe."""

    def __init__(self, port: int = 0) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        self._requested_port = port
        self._port: int | None = None
        self._broker: Broker | None = None
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._log = logging.getLogger(__name__)

    @property
    def port(self) -> int:
        """The bound port (after `start()`)."""
        if self._port is None:
            raise RuntimeError("EmbeddedBroker is not started")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the listening socket, read from the socket itself."""
        if self._server is None:
            raise RuntimeError("EmbeddedBroker is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def running(self) -> bool:
        """Whether the broker is accepting connections."""
        return self._server is not None

    async def start(self) -> None:
        """Start amqtt and listen on 127.0.0.1."""
        if self._server is not None:
            return
        _quiet_amqtt()
        broker = Broker(
            {
                # "bind" is required by amqtt's config even for an external
                # listener; it is not used: the socket is ours.
                "listeners": {_LISTENER: {"type": "external", "bind": f"{_HOST}:0"}},
                # Only what the demo needs: anonymous clients. amqtt's default
                # plugin set adds $SYS publishing and per-packet event logging.
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )
        await broker.start()
        try:
            server = await asyncio.start_server(self._on_client, _HOST, self._requested_port)
        except BaseException:
            await broker.shutdown()
            raise
        self._broker = broker
        self._server = server
        self._port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, shut amqtt down, end every connection."""
        server, self._server = self._server, None
        broker, self._broker = self._broker, None
        if server is not None:
            server.close()
        if broker is not None:
            await broker.shutdown()
        for writer in list(self._writers):
            writer.transport.abort()
        clients = list(self._clients)
        for client in clients:
            client.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (OSError, EOFError, TimeoutError, ValueError) as error:
            # A client that vanished mid-handshake, or sent no CONNECT: just close.
            self._log.debug("embedded broker: connection ended: %r", error)
        except Exception:  # noqa: BLE001 - logged with its traceback; the broker goes on
            # amqtt raising out of a connection must not take the demo down.
            self._log.exception("embedded broker: connection failed")
        finally:
            self._writers.discard(writer)
            self._clients.discard(task)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async with asyncio.timeout(_FIRST_PACKET_TIMEOUT_S):
            first, level = await _read_first_packet(reader)
        if level is not None and level != _MQTT_311:
            writer.write(_CONNACK_BAD_VERSION)
            with contextlib.suppress(OSError):
                await writer.drain()
            return
        broker = self._broker
        if broker is None:
            return
        await broker.external_connected(
            _PrefixedReader(first, reader), StreamWriterAdapter(writer), _LISTENER
        )


def _quiet_amqtt() -> None:
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
