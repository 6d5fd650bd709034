"""The gateway's MQTT link: PUBACK after the handler, confirmed publishes, reconnect forever.

This is the only module that imports gmqtt (DESIGN.md, "Dependencies"), so the
client can be swapped by rewriting one file. It leans on gmqtt internals on
purpose, and checks at import that the hooks it needs are still there.

Theory of operation
-------------------
**One connection, one gmqtt client.** Every connection attempt builds a fresh
`gmqtt.Client`. Nothing survives a reconnect inside gmqtt: packet ids, the
CONNACK flags and handler state all belong to one connection, so a PUBACK for a
message received on a dead connection can never go out on its replacement
(MQTT 5 §4.4: packet ids are scoped to the network connection's session
state, and the broker resends unacknowledged messages itself). gmqtt's own
reconnect policy is switched off: gmqtt calls `Client.reconnect()` on every
loss (socket closed, server DISCONNECT, refused CONNACK, protocol downgrade);
our subclass only reports the loss. The link's supervisor task reconnects
forever with capped, full-jitter exponential backoff (`Backoff`), resubscribes,
and then calls `on_connected` (where the gateway republishes its retained
`online` state, PROTOCOLS.md "MQTT facts that bite").

**PUBACK after the handler (DESIGN.md principle 1).** MQTT 5 with Clean Start 0
and a Session Expiry Interval: the broker keeps our session while we are away,
and a QoS 1 message we have not acknowledged is resent (DUP=1) when we
reconnect (MQTT 5 §4.4, mosquitto 2 does so: a message whose handler never
returned because the gateway was killed comes back). The link takes over
gmqtt's inbound QoS 1 path (`MqttPackageHandler._handle_qos_1_publish_packet`)
and sends the PUBACK itself, only when the async handler has returned. What
gmqtt does by itself with `optimistic_acknowledgement=False` (which the link
still sets) was checked against its source and mosquitto 2.0.11:

- it runs the handler as an untracked task and sends the PUBACK from a done
  callback, with the handler's *return value* as the reason code: a handler that
  returns None makes the callback raise ValueError and no PUBACK is ever sent;
- a handler that raises (or is cancelled) sends no PUBACK, and the exception
  surfaces as "Exception in callback" in the loop's error handler;
- a reason code >= 0x80 is sent as given, and mosquitto deletes the message on
  any PUBACK whatever its reason code: an error PUBACK is a silent loss.

So this link never sends an error PUBACK. A handler that raises means "not
stored": no PUBACK, and because an unacknowledged message holds one of the
broker's in-flight slots (mosquitto's `max_inflight_messages`, 20 by default,
is also its Receive Maximum towards us), the link recycles the connection with
a clean DISCONNECT (reason 0: no Will, session kept) after backoff, and the
broker redelivers. A cancelled handler (`stop()`) is not acknowledged either.
With `on_message`, handlers run concurrently, one task per message, bounded
by the broker's in-flight window (our `receive_maximum`; without it mosquitto
uses its `max_inflight_messages`, 20). Measured: mosquitto 2.0.11 overshoots
that window once PUBACKs flow while handlers are slow (181 concurrent handlers
for a window of 100; known bookkeeping bugs, eclipse-mosquitto/mosquitto#2301),
so handlers should be quick (decide, enqueue, return) and publish elsewhere.

**Batches (`on_batch`, what the gateway uses).** A task per message was a fifth
of the gateway's time under load, and nothing bounded how many plate reads the
broker could push into memory (1.2 GB in the overload benchmark). So a batched
link collects what one socket read brought and hands it to one `on_batch` call:
at most `max_batch` messages, at most one new batch per event-loop turn, at
most `max_batches` running; returning acknowledges the whole batch (PUBACKs in
one write), raising none of it. gmqtt's read loop is given a gate
(`_Connection.gate_reads`): it parses at most 16 KiB per loop turn, and stops
reading while `max_unacked` messages are received and unacknowledged, so TCP
pushes back and the backlog waits in the broker. A flood on one session then
takes one short batch per loop turn, and the other session's messages (the
gateway's alarms) get a turn in between.

PUBACKs go out in completion order (MQTT-4.6.0-2 asks for receive order;
mosquitto and EMQX match PUBACKs by packet id, and ordering them would put a
slow handler in front of every later acknowledgement). Messages that arrive
during the handshake (the broker resends the session's unacknowledged ones
right after CONNACK) are held until the link is subscribed and `connected`, so
a handler never meets a half-open link.

**MQTT 3.1.1 fallback.** A broker that refuses MQTT 5 (CONNACK 0x01 or 0x84,
closing before CONNACK, or no CONNACK within `connect_timeout_s`: amqtt
hangs on a v5 CONNECT) is retried at once with 3.1.1, and the link stays on
3.1.1 once that works. PUBACKs are still sent after the handler, but the
guarantee is gone: amqtt does not resend unacknowledged messages on reconnect
(checked), and 3.1.1 sessions cannot expire. `ack_after_handler` is False and
a warning is logged.

**Confirmed publish.** `publish()` at QoS 1 returns when the broker's PUBACK
for that packet id arrived with a success reason code (< 0x80; 0x10 "no
matching subscribers" is success). The link hooks gmqtt's
`_handle_puback_packet` (gmqtt ignores the reason code) and keeps one future
per packet id; the id returns to gmqtt's allocator only on PUBACK, so it cannot
be reused while its message is in flight. In-flight publishes are bounded by
the broker's Receive Maximum (MQTT 5 §4.9; gmqtt's allocator would raise
OverflowError instead of waiting). If the link is down `MqttNotConnected` is
raised; if the connection drops before the PUBACK, or the broker answers with
an error code (e.g. 0x87 not authorised, which mosquitto 2.0.11 follows by
dropping the connection), `MqttPublishError`. The caller (the
outbox) keeps the message and publishes it again: it is the one retry policy.
gmqtt's own replay of unacknowledged publishes on reconnect is never armed
(the link does not use `Client.publish`, which is what fills gmqtt's replay
store), so an outage cannot double every in-flight message. The resend uses a
new packet id; for QoS 1 the broker keeps no per-id state for inbound
messages, and consumers dedup by alarm id anyway.

**Loss reasons.** A server DISCONNECT (e.g. 0x8E, session taken over) is
logged as a plain "connection closed": gmqtt reports the socket's close before
it parses the DISCONNECT packet buffered ahead of it.

**Batched writes.** Packets (PUBLISH and our PUBACKs) written in one event-loop
iteration are joined and handed to the transport in one `write()`: one syscall
and usually one TCP segment instead of one each. `publish_many` writes a batch
at once. TCP_NODELAY is set explicitly on the socket (PROTOCOLS.md: Nagle costs
~20 ms per hop here).

**Shutdown.** `stop()` sends DISCONNECT with reason 0, so the broker does NOT
publish the Will: publish the retained `offline` state first (the caller's
job). `stop(clean=False)` drops the socket as a crash would: the broker
publishes the Will and keeps unacknowledged messages for the next session.
Mosquitto queues QoS 1 messages for an offline persistent session up to
`max_queued_messages` (1000 by default, then drops silently): production
brokers should raise it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import anyio
import gmqtt
import structlog
from anyio.abc import TaskStatus
from gmqtt.mqtt.connection import MQTTConnection
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError, MqttPackageHandler
from gmqtt.mqtt.package import Package
from gmqtt.mqtt.protocol import MQTTProtocol

from gateway.adapters.backoff import Backoff

__all__ = [
    "MQTT_V5",
    "MQTT_V311",
    "Backoff",
    "MqttError",
    "MqttLink",
    "MqttNotConnected",
    "MqttPublishError",
    "OutgoingMessage",
    "Will",
]

MQTT_V5: Final = 5
"""Protocol level of MQTT 5.0 (the CONNECT packet's protocol level byte)."""
MQTT_V311: Final = 4
"""Protocol level of MQTT 3.1.1."""

_T = TypeVar("_T")

# MQTT 5 §3.4: a PUBACK with Remaining Length 2 means reason 0x00 (Success), no
# properties; MQTT 3.1.1 §3.4 has only this form. One encoding serves both.
_PUBACK: Final = struct.Struct("!BBH")
_PUBACK_TYPE: Final = 0x40
# Reason codes >= 0x80 are failures (MQTT 5 §2.4).
_FAILURE: Final = 0x80
# CONNACK refusals that mean "this protocol version is not spoken here":
# 0x01 is 3.1.1's "unacceptable protocol version" (what a 3.1.1 broker must send,
# MQTT-3.1.2-2), 0x84 is MQTT 5's "unsupported protocol version".
_VERSION_REFUSED: Final = frozenset({0x01, 0x84})
# CONNACK refusals that mean "these credentials may not connect" (3.1.1: 4 bad user
# name or password, 5 not authorised; MQTT 5: 0x86, 0x87): retrying will not help
# until someone fixes the credentials, so they are said loudly and kept for /readyz.
_AUTH_REFUSED: Final = frozenset({0x04, 0x05, 0x86, 0x87})
# Joined writes go out at the end of the loop iteration, or at once past this size.
_FLUSH_BYTES: Final = 256 * 1024
# QoS 0 publishers wait when the transport buffers more than this.
_HIGH_WATER: Final = 1024 * 1024
_CLOSE_TIMEOUT_S: Final = 2.0
# Bytes gmqtt parses per read (it asks for 64 KiB) on a batched link: about 150
# messages of the benchmark's size, a couple of milliseconds of parsing.
_READ_BYTES: Final = 16 * 1024


def _check_gmqtt() -> None:
    """Fail at import if a gmqtt upgrade moved what this module hooks."""
    missing = [
        f"{owner.__name__}.{name}"
        for owner, name in (
            (MqttPackageHandler, "_handle_qos_1_publish_packet"),
            (MqttPackageHandler, "_handle_puback_packet"),
            (gmqtt.Client, "reconnect"),
            (MQTTConnection, "put_package"),
            (MQTTProtocol, "read"),
            (MQTTProtocol, "_read_loop"),
        )
        if not hasattr(owner, name)
    ]
    # Instance attributes, set in __init__: look for their names in its code.
    assigned = MqttPackageHandler.__init__.__code__.co_names
    missing += [
        f"MqttPackageHandler.{name}"
        for name in ("_connack_properties", "id_generator")
        if name not in assigned
    ]
    if missing:
        raise RuntimeError(
            f"gmqtt {gmqtt.__version__} lacks {', '.join(missing)}: gateway/adapters/mqtt.py "
            "hooks these to hold PUBACKs and confirm publishes; pin a compatible gmqtt"
        )


_check_gmqtt()


class MqttError(Exception):
    """Base of the link's errors."""


class MqttNotConnected(MqttError):  # noqa: N818 - the name the composition root uses
    """The link has no usable connection right now; keep the message and retry."""


class MqttPublishError(MqttError):
    """The broker did not confirm a publish: connection lost first, or an error reason code."""

    def __init__(self, message: str, *, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        """The PUBACK's MQTT 5 reason code (>= 0x80), or None if the connection was lost."""


@dataclass(frozen=True, slots=True)
class Will:
    """The Last Will: published by the broker if we vanish without a clean DISCONNECT."""

    topic: str
    payload: bytes
    retain: bool = True
    qos: int = 1


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message for `MqttLink.publish_many`."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class _Logger(Protocol):
    """What the link needs of a structlog logger."""

    def debug(self, event: str, /, **kw: object) -> object: ...
    def info(self, event: str, /, **kw: object) -> object: ...
    def warning(self, event: str, /, **kw: object) -> object: ...
    def error(self, event: str, /, **kw: object) -> object: ...


class _LostError(Exception):
    """The connection went away while an attempt was waiting on it."""


class _Window:
    """In-flight QoS 1 publishes, bounded by the broker's Receive Maximum (MQTT 5 §4.9).

    A slot is taken before a PUBLISH is written and given back when its PUBACK
    arrives (not when the publisher gives up waiting: the broker still counts
    it). A lost connection breaks the window and wakes every waiter with an error.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._room_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._broken = False

    async def acquire(self) -> None:
        if self._broken:
            raise MqttPublishError("connection lost")
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # a result means release() handed its slot straight to us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # handed a slot, but we are leaving: pass it on
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    @property
    def room(self) -> int:
        """Slots free now for `try_acquire` (0 once broken)."""
        return 0 if self._broken or self._waiters else self._free

    def try_acquire(self) -> bool:
        """Take a slot without waiting; False if none is free."""
        if self.room <= 0:
            return False
        self._free -= 1
        return True

    async def wait_room(self, at_least: int = 1) -> None:
        """Return once `at_least` slots are free (capped at the window's size), taking
        none; raise if the window breaks."""
        need = max(1, min(at_least, self.size))
        while self.room < need:
            if self._broken:
                raise MqttPublishError("connection lost")
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (need, waiter)
            self._room_waiters.append(entry)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._room_waiters.remove(entry)

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free = min(self.size, self._free + 1)
        self._wake_room()

    def _wake_room(self) -> None:
        if not self._room_waiters:  # the usual case, once per PUBACK
            return
        room = self.room
        for need, waiter in list(self._room_waiters):
            if (need <= room or self._broken) and not waiter.done():
                waiter.set_result(None)

    def break_(self) -> None:
        self._broken = True
        self._wake_room()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(
                    MqttPublishError("connection lost before the publish was sent")
                )


class _GmqttClient(gmqtt.Client):  # type: ignore[misc]  # gmqtt ships no type hints
    """gmqtt's client with its reconnect policy replaced: it reports a loss, never reconnects."""

    def __init__(self, on_lost: Callable[[str], None], *args: object, **kwargs: object) -> None:
        self._alarmgw_on_lost = on_lost
        super().__init__(*args, **kwargs)

    async def reconnect(self, delay: bool = False) -> None:
        # gmqtt calls this on every loss and refusal (handler.py); the link's
        # supervisor is the one reconnect policy.
        self._alarmgw_on_lost("connection closed")


class _Connection:
    """One network connection: one gmqtt client, its in-flight publishes, its write buffer."""

    def __init__(self, link: MqttLink, version: int) -> None:
        self.link = link
        self.version = version
        self.loop = asyncio.get_running_loop()
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self.connack_seen = False
        self.session_present = False
        self.established = False
        self.handler_failed = False
        self.connected_at = 0.0
        self.window = _Window(1)
        # QoS 1 publishes awaiting their PUBACK: a future, or a callback that is
        # called with None (confirmed) or the error (`MqttLink.send_nowait`).
        self.pending: dict[int, asyncio.Future[None] | Callable[[MqttError | None], None]] = {}
        self._suback: dict[int, asyncio.Future[tuple[int, ...]]] = {}
        # Messages that arrive before the connection is established (the broker
        # resends a session's unacknowledged messages right after CONNACK) wait
        # here, unacknowledged: a handler that publishes must find the link up.
        self._held: list[tuple[str, bytes, int | None]] | None = []
        # Batch ingress (`on_batch`): messages not yet handed to a batch, how many
        # are unacknowledged in all (inbox plus running batches), the scheduled
        # start of the next batch, and the gate gmqtt's read loop waits at.
        self.inbox: deque[tuple[str, bytes, int | None]] = deque()
        self.unacked = 0
        self.batches = 0
        self.batch_handle: asyncio.Handle | None = None
        self.read_gate = asyncio.Event()
        self.read_gate.set()
        self._out: list[bytes | bytearray] = []
        self._out_size = 0
        self._flush_handle: asyncio.Handle | None = None
        self._transport: asyncio.Transport | None = None
        self._protocol: Any = None

        will = link.will
        properties: dict[str, int] = {"session_expiry_interval": link.session_expiry_s}
        if link.receive_maximum is not None:
            properties["receive_maximum"] = link.receive_maximum
        client = _GmqttClient(
            self._signal_lost,
            link.client_id,
            clean_session=False,
            # Kept False so that, were a hook below ever bypassed, gmqtt itself
            # would still hold the PUBACK until the handler returns.
            optimistic_acknowledgement=False,
            will_message=None
            if will is None
            else gmqtt.Message(will.topic, will.payload, qos=will.qos, retain=will.retain),
            **properties,
        )
        if link.username is not None:
            client.set_auth_credentials(link.username, link.password)
        handler = client._package_handler
        handler._handle_qos_1_publish_packet = self._on_qos1_publish
        handler._handle_puback_packet = self._on_puback
        client.on_message = self._on_qos0_message
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        self.client = client

    # -- opening --------------------------------------------------------------------
    async def open(self) -> None:
        """CONNECT, CONNACK, TCP_NODELAY, SUBSCRIBE, SUBACK; raises on any failure."""
        link = self.link
        await self._race(
            self.client.connect(
                link.host,
                link.port,
                ssl=link.ssl_context if link.ssl_context is not None else False,
                keepalive=link.keepalive_s,
                version=MQTTv50 if self.version == MQTT_V5 else MQTTv311,
                raise_exc=True,
            )
        )
        connection = self.client._connection
        self._transport = connection._transport
        self._protocol = connection._protocol
        _set_nodelay(self._transport)
        self._take_publishes(connection)
        if link.batched:
            self.gate_reads()
        # MQTT 5 §3.2.2.3.3: absent Receive Maximum means 65535. gmqtt's id
        # allocator hands out at most Receive Maximum - 1 ids at once.
        connack = self.client._package_handler._connack_properties
        receive_maximum = int(connack.get("receive_maximum", [65535])[0])
        self.window = _Window(max(1, min(receive_maximum, link.max_inflight) - 1))
        if link.subscriptions:
            # Retain Handling 1 (MQTT 5 §3.8.3.1): retained messages only for a
            # subscription the session did not already have, so resubscribing on
            # every reconnect does not replay them. 3.1.1 must send those bits as 0.
            retain_handling = 1 if self.version == MQTT_V5 else 0
            subscriptions = [
                gmqtt.Subscription(topic, qos=1, retain_handling_options=retain_handling)
                for topic in link.subscriptions
            ]
            mid = self.client.subscribe(subscriptions)
            granted_waiter: asyncio.Future[tuple[int, ...]] = self.loop.create_future()
            self._suback[mid] = granted_waiter
            granted = await self._race(granted_waiter)
            refused = [
                t for t, code in zip(link.subscriptions, granted, strict=False) if code >= 0x80
            ]
            if refused:
                link.log.error("mqtt.subscription_refused", topics=refused, codes=list(granted))
        self.established = True
        self.connected_at = time.monotonic()

    async def _race(self, awaitable: Awaitable[_T]) -> _T:
        """Await `awaitable` unless the connection is lost first (then raise _LostError)."""
        task = asyncio.ensure_future(awaitable)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not task.done():
                task.cancel()
            # Let the cancellations land: no task outlives the attempt.
            await asyncio.gather(task, lost, return_exceptions=True)
        if task.done() and not task.cancelled():
            return task.result()
        raise _LostError(self.lost_reason or "connection lost")

    # -- gmqtt callbacks ------------------------------------------------------------
    def _on_connect(self, _client: object, flags: int, _rc: int, _properties: object) -> None:
        self.connack_seen = True
        self.session_present = bool(flags)

    def _on_subscribe(
        self, _client: object, mid: int, granted: Sequence[int], _properties: object
    ) -> None:
        waiter = self._suback.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(tuple(int(code) for code in granted))

    def _on_disconnect(self, _client: object, packet: object, _exc: object = None) -> None:
        # A server DISCONNECT carries a reason code (MQTT 5 §3.14.2.1), e.g. 0x8E
        # "session taken over"; gmqtt's synthetic one for a closed socket is b"".
        if isinstance(packet, bytes | bytearray) and packet:
            self._signal_lost(f"server disconnect, reason 0x{packet[0]:02x}")
        else:
            self._signal_lost("connection closed")

    def _signal_lost(self, reason: str) -> None:
        """Idempotent: fail what waits on this connection; the supervisor takes it from here."""
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        self.read_gate.set()  # gmqtt's read loop must see the close, not wait at the gate
        if self.link._conn is self:
            self.link._connected.clear()  # wait_connected() must not return a dead link
        self.window.break_()
        pending, self.pending = self.pending, {}
        for publish_waiter in pending.values():
            error = MqttPublishError(f"{reason} before the PUBACK")
            if isinstance(publish_waiter, asyncio.Future):
                if not publish_waiter.done():
                    publish_waiter.set_exception(error)
            else:
                # Not from inside gmqtt's packet handling, and in send order.
                self.loop.call_soon(_settle_callback, publish_waiter, error)
        for suback_waiter in self._suback.values():
            if not suback_waiter.done():
                suback_waiter.cancel()
        self._suback.clear()

    def _on_qos1_publish(
        self, mid: int, payload: bytes, topic: str | bytes, _properties: object
    ) -> None:
        # Replaces MqttPackageHandler._handle_qos_1_publish_packet: no PUBACK here.
        self._deliver(_topic_str(topic), bytes(payload), mid)

    def _on_qos0_message(
        self, _client: object, topic: str | bytes, payload: bytes, _qos: int, _properties: object
    ) -> None:
        # A plain function on purpose: gmqtt then calls it directly and does not
        # spawn an untracked task of its own. Only QoS 0 arrives here (we never
        # subscribe above QoS 1, so the broker never sends QoS 2).
        self._deliver(_topic_str(topic), bytes(payload), None)

    def _deliver(self, topic: str, payload: bytes, mid: int | None) -> None:
        if self._held is not None:
            self._held.append((topic, payload, mid))
        else:
            self.link._accept(self, topic, payload, mid)

    def release_held(self) -> None:
        """Established: hand what arrived during the handshake to the handlers, in order."""
        held, self._held = self._held, None
        for topic, payload, mid in held or ():
            self.link._accept(self, topic, payload, mid)

    def _take_publishes(self, connection: MQTTConnection) -> None:
        """Parse inbound PUBLISH packets here, the rest in gmqtt.

        gmqtt hands each packet through five calls, a debug log, format strings
        built per packet and a properties dict: about a tenth of the gateway's
        time under load. A QoS 0/1 PUBLISH without properties (what mosquitto
        sends us) is parsed here in a few slices; anything else (properties such
        as a topic alias, QoS 2, other packets) takes gmqtt's own path.
        """
        original = connection.put_package
        v5 = self.version == MQTT_V5
        deliver = self._deliver
        monotonic = time.monotonic

        def put_package(package: Package) -> None:
            cmd = package.cmd
            if cmd & 0xF0 != 0x30 or cmd & 0x06 == 0x04:
                original(package)
                return
            raw = package.data
            try:
                end = 2 + ((raw[0] << 8) | raw[1])
                name = raw[2:end].decode("utf-8")
                mid = None
                if cmd & 0x06:
                    mid = (raw[end] << 8) | raw[end + 1]
                    end += 2
                # A properties block (v5) or an empty topic (a topic alias): gmqtt.
                simple = not (v5 and raw[end]) and bool(name)
            except (IndexError, UnicodeDecodeError):
                simple = False  # a short or odd packet: gmqtt reports it its own way
            if not simple:
                original(package)
                return
            if v5:
                end += 1
            connection._last_data_in = monotonic()  # gmqtt's keepalive watches this
            deliver(name, raw[end:], mid)

        connection.put_package = put_package

    def gate_reads(self) -> None:
        """Make gmqtt's read loop wait at `read_gate` before each socket read.

        gmqtt reads in a loop (64 KiB at a time) and hands every packet over at
        once. While the gate is shut it parses nothing more; its StreamReader
        fills and pauses the transport, TCP pushes back, and the backlog waits in
        the broker rather than in our memory (mosquitto overshoots the Receive
        Maximum, eclipse-mosquitto/mosquitto#2301).
        """
        protocol = self._protocol
        read = protocol.read
        gate = self.read_gate
        link = self.link

        async def gated_read(n: int = -1) -> bytes:
            # gmqtt comes back here once every packet of its last read was handed
            # over: the read's messages start their batch now, not a loop turn
            # later, and the loop gets a turn before the next read is parsed (a
            # buffered read returns without yielding), so one flooded session
            # parses at most `_READ_BYTES` per turn.
            if self.inbox:
                link._start_batch(self)
                await asyncio.sleep(0)
            if not gate.is_set():
                await gate.wait()
            data: bytes = await read(_READ_BYTES if n < 0 else min(n, _READ_BYTES))
            return data

        protocol.read = gated_read

    def _on_puback(self, _cmd: int, packet: bytes) -> None:
        # Replaces MqttPackageHandler._handle_puback_packet, which ignores the
        # MQTT 5 reason code (§3.4.2.1: absent means 0x00).
        (mid,) = struct.unpack_from("!H", packet)
        reason = packet[2] if len(packet) > 2 else 0
        # The id goes back to gmqtt's allocator only now: it cannot be reused
        # while its message is in flight.
        self.client._package_handler.id_generator.free_id(mid)
        waiter = self.pending.pop(mid, None)
        if waiter is None:
            return
        self.window.release()
        error = (
            MqttPublishError(
                f"broker refused the publish, reason 0x{reason:02x}", reason_code=reason
            )
            if reason >= _FAILURE
            else None
        )
        if not isinstance(waiter, asyncio.Future):
            _settle_callback(waiter, error)
        elif waiter.done():
            return
        elif error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(None)

    # -- writing --------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        transport = self._transport
        return transport is not None and not transport.is_closing()

    def write(self, data: bytes | bytearray) -> None:
        """Queue bytes; they go out joined at the end of this loop iteration."""
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= _FLUSH_BYTES:
            self.flush()
        elif self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self.flush)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            # gmqtt's keepalive pings only after 0.8 x keepalive without traffic.
            self.client._connection._last_data_out = time.monotonic()

    def send_puback(self, mid: int) -> None:
        if self.writable:
            self.write(_PUBACK.pack(_PUBACK_TYPE, 2, mid))

    def send_publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        on_done: Callable[[MqttError | None], None] | None = None,
    ) -> asyncio.Future[None] | None:
        """Write one PUBLISH; for QoS 1 the future (or `on_done`) settles on its PUBACK."""
        if self.lost.is_set() or not self.writable:
            raise MqttPublishError("connection lost before the publish was sent")
        # Built here (MQTT 5 §3.3, 3.1.1 §3.3): gmqtt's builder makes a Message,
        # a properties block and two debug log calls per packet. The packet id
        # comes from gmqtt's allocator, which `_on_puback` returns it to.
        mid = self._protocol.id_generator.next_id() if qos else 0
        self.write(_publish_packet(topic, payload, qos, retain, mid, v5=self.version == MQTT_V5))
        if qos == 0:
            return None
        if on_done is not None:
            self.pending[mid] = on_done
            return None
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.pending[mid] = waiter
        return waiter

    def send_in_slot(
        self,
        topic: str,
        payload: bytes,
        retain: bool,
        on_done: Callable[[MqttError | None], None] | None = None,
    ) -> asyncio.Future[None] | None:
        """A QoS 1 PUBLISH in a window slot the caller took; the slot goes back if
        the send fails. The future, or None when `on_done` settles it instead."""
        try:
            return self.send_publish(topic, payload, 1, retain, on_done)
        except BaseException:
            self.window.release()
            raise

    async def drain(self) -> None:
        """Wait while the transport holds more than the high-water mark (QoS 0 backpressure)."""
        transport = self._transport
        if transport is None or transport.get_write_buffer_size() <= _HIGH_WATER:
            return
        # asyncio's own flow control (what StreamWriter.drain awaits).
        with contextlib.suppress(ConnectionError):
            await self._protocol._drain_helper()

    # -- closing --------------------------------------------------------------------
    async def close(self, *, clean: bool) -> None:
        """Close: DISCONNECT (reason 0) first if `clean` and still open, else drop the socket."""
        self._signal_lost("closed by us")
        self.client._is_active = False
        connection = self.client._connection
        if connection is None:
            return
        transport = connection._transport
        if clean and self.established and not transport.is_closing():
            self.flush()
            with contextlib.suppress(OSError):
                connection.send_disconnect(reason_code=0)
        elif not transport.is_closing():
            transport.abort()
        # asyncio.timeout, not wait_for: on 3.11 wait_for returns the inner result
        # and swallows a cancellation that lands as the inner future completes
        # (gh-86296), and here `closed` is often already done: stop() would hang.
        try:
            # A peer that stopped reading could hold a graceful close forever.
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await connection.close()
        except (TimeoutError, OSError):
            transport.abort()
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await connection.close()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    @property
    def nodelay(self) -> bool:
        sock = self._transport.get_extra_info("socket") if self._transport is not None else None
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def _publish_packet(
    topic: str, payload: bytes, qos: int, retain: bool, mid: int, *, v5: bool
) -> bytes:
    """One PUBLISH packet, no properties; `mid` is ignored at QoS 0."""
    name = topic.encode("utf-8")
    head = struct.pack("!H", len(name)) + name
    if qos:
        head += struct.pack("!H", mid)
    if v5:
        head += b"\x00"  # property length 0
    fixed = 0x30 | (qos << 1) | (1 if retain else 0)
    return bytes((fixed, *_varint(len(head) + len(payload)))) + head + payload


def _settle_callback(on_done: Callable[[MqttError | None], None], error: MqttError | None) -> None:
    try:
        on_done(error)
    except Exception:  # noqa: BLE001 - a sender's bug must not break the link's reading
        structlog.get_logger("alarmgw.mqtt").exception("mqtt.publish_callback_failed")


def _varint(value: int) -> list[int]:
    """MQTT's Variable Byte Integer (§1.5.5): 7 bits a byte, low first."""
    out = []
    while True:
        value, byte = divmod(value, 128)
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return out


def _set_nodelay(transport: asyncio.Transport) -> None:
    # asyncio sets TCP_NODELAY on its TCP sockets already; set it anyway so the
    # property does not hang on an implementation detail (PROTOCOLS.md: Nagle
    # turned a 0.9 ms p50 into 21 ms).
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _topic_str(topic: str | bytes) -> str:
    # gmqtt hands over bytes only for a topic that is not UTF-8, which a broker
    # must never forward (MQTT §1.5.4); keep going rather than crash the loop.
    return topic if isinstance(topic, str) else topic.decode("utf-8", errors="replace")


def _check_publish(topic: str, payload: bytes, qos: int) -> None:
    if not isinstance(topic, str) or not topic or "+" in topic or "#" in topic:
        raise ValueError(f"publish needs a topic name without wildcards, got {topic!r}")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
    if qos not in (0, 1):
        raise ValueError(f"qos must be 0 or 1, got {qos!r}")


class MqttLink:
    """A self-healing MQTT connection that acknowledges after the handler and confirms publishes.

    `on_message(topic, payload)` is awaited for every message on `subscriptions`
    (QoS 1), one task each; returning means "stored", raising means "not stored"
    (no PUBACK, redelivery). Or `on_batch(messages)` is awaited once for a batch
    of (topic, payload) in arrival order: returning acknowledges them all,
    raising none. `on_connected()` is awaited after every (re)connect, once
    resubscribed. Start with `start()` / `stop()`, `async with`, or
    `await task_group.start(link.run)`.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        on_message: Callable[[str, bytes], Awaitable[None]] | None = None,
        on_batch: Callable[[Sequence[tuple[str, bytes]]], Awaitable[None]] | None = None,
        max_batch: int = 256,
        max_unacked: int | None = None,
        max_batches: int | None = None,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        subscriptions: Sequence[str] = (),
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_s: int = 30,
        session_expiry_s: int = 86_400,
        will: Will | tuple[str, bytes] | None = None,
        logger: _Logger | None = None,
        mqtt_version: int | None = None,
        connect_timeout_s: float = 5.0,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        receive_maximum: int | None = None,
        max_inflight: int = 65_535,
    ) -> None:
        """Plain values only. `mqtt_version` None probes MQTT 5 then falls back to 3.1.1.

        Batches (`on_batch`): each event-loop turn starts at most one batch of at
        most `max_batch` messages, the oldest first, so one busy link cannot
        hold the loop for longer than one batch takes; `max_batches` bounds the
        batches running at once (None: no bound), which paces a link to what
        its handler finishes instead of all the CPU it can take; with more than
        `max_unacked` messages received and not yet acknowledged the link stops
        reading its socket until batches bring it down to half (default 4 x
        `max_batch`). A gate shut for 2 x `keepalive_s` makes gmqtt drop the
        connection (it hears nothing meanwhile): the broker then redelivers.

        `receive_maximum` (MQTT 5) bounds how many unacknowledged messages the
        broker may have in flight to us, i.e. concurrent handlers; None leaves
        the protocol default (65535; mosquitto caps it at its
        `max_inflight_messages`). `max_inflight` bounds our unconfirmed publishes
        below the broker's own Receive Maximum.
        """
        if not client_id:
            raise ValueError("a persistent session needs a client_id")
        if (on_message is None) == (on_batch is None):
            raise ValueError("give exactly one of on_message and on_batch")
        if max_batch < 1 or (max_unacked is not None and max_unacked < max_batch):
            raise ValueError("max_batch must be >= 1 and max_unacked >= max_batch")
        if max_batches is not None and max_batches < 1:
            raise ValueError("max_batches must be >= 1")
        if mqtt_version not in (None, MQTT_V5, MQTT_V311):
            raise ValueError(f"mqtt_version must be None, 4 or 5, got {mqtt_version!r}")
        if keepalive_s < 0 or not 0 <= session_expiry_s <= 0xFFFFFFFF:
            raise ValueError("keepalive_s and session_expiry_s must be >= 0 (expiry <= 2**32-1)")
        if connect_timeout_s <= 0 or max_inflight < 2:
            raise ValueError("connect_timeout_s must be > 0 and max_inflight >= 2")
        if receive_maximum is not None and not 1 <= receive_maximum <= 65_535:
            raise ValueError(f"receive_maximum must be 1..65535, got {receive_maximum}")
        for topic_filter in subscriptions:
            if not isinstance(topic_filter, str) or not topic_filter:
                raise ValueError(f"bad topic filter {topic_filter!r}")
        if isinstance(will, tuple):
            will = Will(will[0], will[1])
        if will is not None and will.qos not in (0, 1, 2):
            raise ValueError(f"will qos must be 0..2, got {will.qos}")
        self.host = host
        self.port = port
        self.client_id = client_id
        self.username = username
        self.password = password
        self.ssl_context = ssl_context
        self.keepalive_s = keepalive_s
        self.session_expiry_s = session_expiry_s
        self.will = will
        self.subscriptions: tuple[str, ...] = tuple(subscriptions)
        self.receive_maximum = receive_maximum
        self.max_inflight = max_inflight
        self.log: _Logger = logger if logger is not None else structlog.get_logger("alarmgw.mqtt")
        self._on_message = on_message
        self._on_batch = on_batch
        self.max_batch = max_batch
        self.max_unacked = max_unacked if max_unacked is not None else 4 * max_batch
        self.max_batches = max_batches
        self._on_connected = on_connected
        self._forced_version = mqtt_version
        self._connect_timeout_s = connect_timeout_s
        self._backoff = backoff if backoff is not None else Backoff()
        self._rng = rng if rng is not None else random.Random()
        self._use_v311 = False
        self._v311_confirmed = False
        self._version: int | None = None
        self._conn: _Connection | None = None
        self._connected = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop_clean = True
        self._handlers: set[asyncio.Task[None]] = set()
        self.connections = 0
        """How many times the link has connected (1 after the first connection)."""
        self.refused: str | None = None
        """Why the broker refused our credentials at the last attempt (None once connected,
        or when the last failure was something else)."""

    # -- state ----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Connected, subscribed, and not lost: a publish now has a chance."""
        conn = self._conn
        return conn is not None and conn.established and not conn.lost.is_set()

    @property
    def protocol_version(self) -> int | None:
        """4 (3.1.1) or 5 for the current or last connection; None before the first."""
        return self._version

    @property
    def ack_after_handler(self) -> bool:
        """True on MQTT 5: PUBACK after the handler, and redelivery if it never returns."""
        return self._version == MQTT_V5

    @property
    def tcp_nodelay(self) -> bool:
        """Whether the live socket has TCP_NODELAY on (False when not connected)."""
        conn = self._conn
        return conn is not None and conn.nodelay

    async def wait_connected(self) -> None:
        """Return once the link is connected and subscribed (immediately if it is)."""
        await self._connected.wait()

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Start the supervisor; return after the first connection attempt, successful or not."""
        if self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"mqtt-link:{self.client_id}"
        )
        waiter = asyncio.ensure_future(self._first_attempt.wait())
        try:
            await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        if self._task.done():
            self._task.result()  # the supervisor never ends by itself: surface the bug

    async def stop(self, *, clean: bool = True) -> None:
        """Disconnect and end every task the link started.

        `clean=True` sends DISCONNECT (reason 0): the broker keeps the session
        and does NOT publish the Will, so publish the retained `offline` state
        before. `clean=False` drops the socket as a crash would: the broker
        publishes the Will, and unacknowledged messages wait for the next session.
        Handlers still running are cancelled, so their messages are not acknowledged.
        """
        me = asyncio.current_task()
        task, self._task = self._task, None
        if task is not None:
            self._stop_clean = clean
            task.cancel()
            if task is not me:  # stop() from on_connected: the cancellation ends us
                await asyncio.gather(task, return_exceptions=True)
        handlers = [handler for handler in self._handlers if handler is not me]
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        self._first_attempt.clear()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled, for `await task_group.start(link.run)`; stops cleanly."""
        await self.start()
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await self.stop()

    async def __aenter__(self) -> MqttLink:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # -- publishing -----------------------------------------------------------------
    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish; at QoS 1 return only once the broker's PUBACK arrived with success.

        Raises `MqttNotConnected` if the link is down now, `MqttPublishError` if
        the connection drops before the PUBACK or the broker refuses the message.
        QoS 0 returns once the packet was written to the socket.
        """
        _check_publish(topic, payload, qos)
        conn = self._ready()
        if qos == 0:
            conn.send_publish(topic, bytes(payload), 0, retain)
            # The joined write is scheduled with call_soon, so it runs before we resume.
            await asyncio.sleep(0)
            await conn.drain()
            return
        await conn.window.acquire()
        waiter = conn.send_in_slot(topic, bytes(payload), retain)
        assert waiter is not None
        await waiter

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> list[MqttError | None]:
        """Publish a batch in as few writes as the window allows; one result per message.

        Each result is None (confirmed, or written for QoS 0) or the error for that
        message. Raises `MqttNotConnected` if the link is down at the start.
        """
        for message in messages:
            _check_publish(message.topic, message.payload, message.qos)
        conn = self._ready()
        outcomes: list[MqttError | asyncio.Future[None] | None] = []
        for message in messages:
            try:
                if message.qos == 1:
                    await conn.window.acquire()
                    outcomes.append(
                        conn.send_in_slot(message.topic, bytes(message.payload), message.retain)
                    )
                else:
                    conn.send_publish(message.topic, bytes(message.payload), 0, message.retain)
                    outcomes.append(None)
            except MqttError as error:
                outcomes.append(error)
        await asyncio.sleep(0)  # let the joined write go out
        results: list[MqttError | None] = []
        for outcome in outcomes:
            if isinstance(outcome, asyncio.Future):
                try:
                    await outcome
                except MqttError as error:
                    results.append(error)
                else:
                    results.append(None)
            else:
                results.append(outcome)
        return results

    @property
    def room(self) -> int:
        """QoS 1 publishes `try_publish` can send now (0 while not connected)."""
        conn = self._conn
        if conn is None or not conn.established or conn.lost.is_set():
            return 0
        return conn.window.room

    async def wait_room(self, at_least: int = 1) -> None:
        """Return once `try_publish` can send `at_least` QoS 1 messages (at most
        the window's size): a sender that waits for a few slots at a time wakes
        once per burst of PUBACKs, not once for each.

        Raises `MqttNotConnected` if the link is down now, `MqttPublishError` if
        the connection is lost while waiting.
        """
        await self._ready().window.wait_room(at_least)

    def try_publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None] | None:
        """Publish now, without waiting; None (nothing sent) if the window is full.

        The future resolves as `publish()` returns or raises: on the broker's
        PUBACK for QoS 1, at once for QoS 0. For a sender that keeps many
        messages in flight without one task each (the gateway's outbox pump).
        Raises `MqttNotConnected` if the link is down now.
        """
        _check_publish(topic, payload, qos)
        conn = self._ready()
        if qos == 0:
            conn.send_publish(topic, bytes(payload), 0, retain)
            done: asyncio.Future[None] = conn.loop.create_future()
            done.set_result(None)
            return done
        if not conn.window.try_acquire():
            return None
        return conn.send_in_slot(topic, bytes(payload), retain)

    def send_nowait(
        self,
        topic: str,
        payload: bytes,
        on_done: Callable[[MqttError | None], None],
        *,
        qos: int = 1,
        retain: bool = False,
    ) -> bool:
        """`try_publish` without a future: `on_done(None)` on the PUBACK, or
        `on_done(error)` if the broker refuses or the connection goes first.

        False (nothing sent, `on_done` never called) if the window is full. The
        callback runs from the link's packet handling: keep it short, never
        raise. QoS 0 calls it on the next loop turn. Raises `MqttNotConnected`
        if the link is down now.
        """
        _check_publish(topic, payload, qos)
        conn = self._ready()
        if qos == 0:
            conn.send_publish(topic, bytes(payload), 0, retain)
            conn.loop.call_soon(on_done, None)
            return True
        if not conn.window.try_acquire():
            return False
        conn.send_in_slot(topic, bytes(payload), retain, on_done)
        return True

    def _ready(self) -> _Connection:
        conn = self._conn
        if conn is None or not conn.established or conn.lost.is_set():
            raise MqttNotConnected(f"not connected to {self.host}:{self.port}")
        return conn

    # -- receiving ------------------------------------------------------------------
    @property
    def batched(self) -> bool:
        """Whether messages go to `on_batch` (else one `on_message` task each)."""
        return self._on_batch is not None

    def _accept(self, conn: _Connection, topic: str, payload: bytes, mid: int | None) -> None:
        if self._on_batch is None:
            self._spawn_handler(conn, topic, payload, mid)
            return
        conn.inbox.append((topic, payload, mid))
        conn.unacked += 1
        if conn.unacked >= self.max_unacked:
            conn.read_gate.clear()
        if conn.batch_handle is None:
            conn.batch_handle = conn.loop.call_soon(self._start_batch, conn)

    def _start_batch(self, conn: _Connection) -> None:
        """Hand the oldest `max_batch` messages to one batch; the rest wait a loop turn."""
        if conn.batch_handle is not None:
            conn.batch_handle.cancel()
            conn.batch_handle = None
        inbox = conn.inbox
        if conn.lost.is_set():
            # Never acknowledged: the broker resends them on the next connection.
            inbox.clear()
            return
        if not inbox or (self.max_batches is not None and conn.batches >= self.max_batches):
            return  # the next batch to finish starts the next one
        conn.batches += 1
        batch = [inbox.popleft() for _ in range(min(len(inbox), self.max_batch))]
        if inbox:
            conn.batch_handle = conn.loop.call_soon(self._start_batch, conn)
        task = conn.loop.create_task(self._handle_batch(conn, batch))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle_batch(
        self, conn: _Connection, batch: list[tuple[str, bytes, int | None]]
    ) -> None:
        assert self._on_batch is not None
        try:
            await self._on_batch([(topic, payload) for topic, payload, _ in batch])
        except Exception as error:  # noqa: BLE001 - any failure means "not stored": no PUBACK
            self.log.error(
                "mqtt.handler_failed",
                messages=len(batch),
                first_topic=batch[0][0],
                error=repr(error),
                action="not acknowledged; reconnecting so the broker redelivers",
            )
            if not conn.handler_failed:
                conn.handler_failed = True
                conn._signal_lost("message handler failed")
            return
        finally:
            conn.unacked -= len(batch)
            conn.batches -= 1
            if conn.unacked <= self.max_unacked // 2:
                conn.read_gate.set()
            if conn.inbox and conn.batch_handle is None:
                conn.batch_handle = conn.loop.call_soon(self._start_batch, conn)
        for _, _, mid in batch:
            if mid is not None:
                conn.send_puback(mid)

    def _spawn_handler(
        self, conn: _Connection, topic: str, payload: bytes, mid: int | None
    ) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(conn, topic, payload, mid))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle(self, conn: _Connection, topic: str, payload: bytes, mid: int | None) -> None:
        assert self._on_message is not None
        try:
            await self._on_message(topic, payload)
        except Exception as error:  # noqa: BLE001 - any failure means "not stored": no PUBACK
            self.log.error(
                "mqtt.handler_failed",
                topic=topic,
                error=repr(error),
                action="not acknowledged; reconnecting so the broker redelivers",
            )
            if mid is not None and not conn.handler_failed:
                conn.handler_failed = True
                conn._signal_lost("message handler failed")
            return
        if mid is not None:
            # Only on the connection it arrived on; after a reconnect the broker
            # redelivers it instead (and the handler's dedup sees a repeat).
            conn.send_puback(mid)

    # -- the supervisor ---------------------------------------------------------------
    def _next_version(self) -> int:
        if self._forced_version is not None:
            return self._forced_version
        return MQTT_V311 if self._use_v311 else MQTT_V5

    async def _supervise(self) -> None:
        failures = 0
        try:
            while True:
                conn, retry_now = await self._attempt()
                if conn is None:
                    if retry_now:
                        continue
                    self._first_attempt.set()
                    await asyncio.sleep(self._backoff.delay(failures, self._rng))
                    failures += 1
                    continue
                self._first_attempt.set()
                await self._serve(conn)
                # A connection that lived long and did not fail a handler earns a
                # fresh start; a flapping one (takeover ping-pong, poison message,
                # failing store) keeps climbing the backoff.
                healthy = time.monotonic() - conn.connected_at >= self._backoff.cap_s
                failures = 0 if healthy and not conn.handler_failed else failures + 1
                await asyncio.sleep(self._backoff.delay(failures, self._rng))
        finally:
            conn = self._conn
            self._conn = None
            self._connected.clear()
            if conn is not None:
                await conn.close(clean=self._stop_clean)

    async def _serve(self, conn: _Connection) -> None:
        self._conn = conn
        self._version = conn.version
        self.connections += 1
        self.refused = None
        self._connected.set()
        conn.release_held()
        self.log.info(
            "mqtt.connected",
            broker=f"{self.host}:{self.port}",
            client_id=self.client_id,
            mqtt_version="5" if conn.version == MQTT_V5 else "3.1.1",
            session_present=conn.session_present,
            window=conn.window.size,
        )
        if self._on_connected is not None:
            try:
                await self._on_connected()
            except Exception as error:  # noqa: BLE001 - the link outlives a failed callback
                self.log.error("mqtt.on_connected_failed", error=repr(error))
        await conn.lost.wait()
        self._connected.clear()
        self.log.warning(
            "mqtt.connection_lost", broker=f"{self.host}:{self.port}", reason=conn.lost_reason
        )
        await conn.close(clean=True)
        self._conn = None

    async def _attempt(self) -> tuple[_Connection | None, bool]:
        """One connection attempt: (connection, _) on success, (None, retry_now) on failure."""
        version = self._next_version()
        conn = _Connection(self, version)
        kept = False
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await conn.open()
            kept = True
        except (OSError, TimeoutError, MQTTConnectError, _LostError) as error:
            return None, self._failed(version, conn, error)
        finally:
            if not kept:
                await conn.close(clean=False)
        if version == MQTT_V311 and self._forced_version is None and not self._v311_confirmed:
            self._v311_confirmed = True
            self.log.warning(
                "mqtt.mqtt5_refused",
                broker=f"{self.host}:{self.port}",
                detail="connected with MQTT 3.1.1: PUBACKs still follow the handler, but the "
                "broker need not redeliver unacknowledged messages (amqtt does not), so "
                "acknowledgement after store is NOT guaranteed",
            )
        return conn, False

    def _failed(self, version: int, conn: _Connection, error: BaseException) -> bool:
        """Log a failed attempt; True if the next should follow at once (version probe)."""
        code = getattr(error, "_code", None) if isinstance(error, MQTTConnectError) else None
        # Closed or silent after TCP connected, before any CONNACK: what a broker
        # that cannot parse a v5 CONNECT does (amqtt reads it as 3.1.1 and hangs).
        tcp_up = conn.client._connection is not None
        version_refused = code in _VERSION_REFUSED or (
            tcp_up and not conn.connack_seen and isinstance(error, _LostError | TimeoutError)
        )
        detail = repr(error) if not isinstance(error, MQTTConnectError) else str(error)
        if code in _AUTH_REFUSED:
            self.refused = f"{detail} (CONNACK 0x{code:02x}) as user {self.username!r}"
            self.log.error(
                "mqtt.connect_refused",
                broker=f"{self.host}:{self.port}",
                mqtt_version="5" if version == MQTT_V5 else "3.1.1",
                user=self.username,
                error=detail,
                hint="the broker refused these credentials: check [mqtt] username_env and "
                "password_env / password_file (alarmgw broker-config writes them)",
            )
            return False
        self.refused = None
        self.log.info(
            "mqtt.connect_failed",
            broker=f"{self.host}:{self.port}",
            mqtt_version="5" if version == MQTT_V5 else "3.1.1",
            error=detail,
        )
        if self._forced_version is not None:
            return False
        if version == MQTT_V5 and version_refused:
            self._use_v311 = True
            return True
        if version == MQTT_V311 and version_refused and not self._v311_confirmed:
            self._use_v311 = False  # 3.1.1 did no better: probe MQTT 5 again after backoff
        return False
