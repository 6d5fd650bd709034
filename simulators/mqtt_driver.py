"""The thin MQTT transport for simulators: publish a scenario on schedule, listen for dispatches.

Theory of operation (DESIGN.md, "simulators/": a pure core and thin drivers):

**Open loop.** `drive` walks a scenario's stream (`simulators.scenario.Send`)
and publishes each send at its scheduled wall-clock time, whatever the
broker's or the gateway's speed: a real district does not slow its phones down
because the gateway is busy. When the driver cannot keep up (the broker's
flow control, a slow machine), sends go out late, never dropped, and the
lateness is measured and reported (`late` in the stats line), so a benchmark
knows when it measured the simulator instead of the gateway.

**QoS 1, bounded in flight.** Devices publish at QoS 1 (CONTRACT.md, "Ingress").
The broker's CONNACK Receive Maximum (MQTT 5 §3.2.2.3.3; mosquitto says 20)
bounds the publishes awaiting PUBACK: gmqtt's packet id allocator raises
instead of waiting, so `SimClient.publish` waits for a free slot. PUBACKs are
seen through gmqtt's in-flight store (`_Storage`), which gmqtt empties on each
PUBACK. At the end, `drain` waits (bounded) until every publish is acknowledged.

**MQTT 5, then 3.1.1.** A broker that refuses MQTT 5 (CONNACK 0x01, as the
embedded amqtt broker answers through the gateway's front, or 0x84), closes,
or does not answer within `connect_timeout_s` (bare amqtt hangs on a v5
CONNECT) is retried at once with MQTT 3.1.1 on a fresh client. This is a
small client of its own: simulators never import the gateway (DESIGN.md), and
the gateway's link (ack-after-handler, confirmed publishes) is more than a
stand-in device needs.

**Listening.** `SimClient(on_message=...)` with `subscribe` hears the egress
(`<base>/out/+/+/alarms`, `<base>/deadletter`) for `--wait`: every message is
handed, with the time it was received, to a callback (the pure
`DispatchMatcher` does the matching). A separate connection from the
publisher's, so subscription packet ids never compete with the send window.

**Reporting.** `Reporter` prints lines and a live stats line: a `rich.live`
line at the bottom of a terminal, plain periodic lines when stdout is a file
or a pipe (a CI log must stay readable).

gmqtt internals used (checked against gmqtt 0.8): the in-flight store
(`persistent_storage=`), `_package_handler.id_generator._max` (the window the
allocator enforces, from the CONNACK's Receive Maximum) and
`_connection_state.protocol_version` (which version the connection speaks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Final

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.storage import PersistentStorage
from rich.console import Console
from rich.live import Live
from rich.text import Text

from config.model import MqttSettings
from simulators.scenario import Send

__all__ = [
    "MQTT_V5",
    "MQTT_V311",
    "BrokerAddress",
    "DriveReport",
    "MqttSimError",
    "Reporter",
    "SimClient",
    "drive",
    "format_rate",
]

MQTT_V5: Final = 5
"""Protocol level of MQTT 5."""
MQTT_V311: Final = 4
"""Protocol level of MQTT 3.1.1."""

_DEFAULT_WINDOW: Final = 20  # mosquitto's default Receive Maximum
_SLOT_POLL_S: Final = 0.5  # re-check the connection while waiting for a send slot
_YIELD_EVERY: Final = 64  # sends between forced loop turns when behind schedule
_MIN_SLEEP_S: Final = 0.0005

# gmqtt logs every refused CONNACK at WARNING, the 3.1.1 fallback included: an
# expected step here, so its logger is quiet unless the application chose a level.
_GMQTT_LOG: Final = logging.getLogger("simulators.gmqtt")
if _GMQTT_LOG.level == logging.NOTSET:
    _GMQTT_LOG.setLevel(logging.ERROR)

MessageHandler = Callable[[str, bytes, float], None]
"""`(topic, payload, received_at)` for every message a listening client hears."""


class MqttSimError(Exception):
    """The simulator could not reach or use the broker (the text says why)."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the simulator connects; credentials stay out of `repr`."""

    host: str
    port: int
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, mqtt: MqttSettings) -> BrokerAddress:
        """The broker of a loaded config (`embedded` is 127.0.0.1:1883 unless set)."""
        return cls(
            mqtt.host,
            mqtt.port,
            mqtt.tls,
            mqtt.tls_ca,
            mqtt.tls_cert,
            mqtt.tls_key,
            mqtt.username,
            mqtt.password,
        )

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | bool:
        """A TLS context for `mqtts://` (the config's CA, else the system's), else False."""
        if not self.tls:
            return False
        context = ssl.create_default_context(cafile=self.ca)
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key)
        return context


class _Storage(PersistentStorage):  # type: ignore[misc]  # gmqtt ships no type hints
    """gmqtt's in-flight store, also telling the client when a PUBACK freed a slot."""

    def __init__(self, on_freed: Callable[[], None]) -> None:
        super().__init__()
        self._on_freed = on_freed
        self.acked = 0
        """Publishes removed by their PUBACK."""

    def __bool__(self) -> bool:
        # gmqtt takes `persistent_storage or PersistentStorage()`: never look empty there.
        return True

    @property
    def size(self) -> int:
        """Publishes awaiting their PUBACK."""
        return len(self._messages)

    def remove_message_by_mid(self, mid: int) -> None:
        before = len(self._messages)
        super().remove_message_by_mid(mid)
        self.acked += before - len(self._messages)
        self._on_freed()

    def clear(self) -> None:
        super().clear()
        self._on_freed()


class SimClient:
    """One MQTT connection of a simulator: QoS 1 publishes within the window, or listening."""

    def __init__(
        self,
        broker: BrokerAddress,
        client_id: str,
        *,
        on_message: MessageHandler | None = None,
        clock: Callable[[], float] = time.time,
        connect_timeout_s: float = 5.0,
        keepalive_s: int = 30,
        mqtt_version: int | None = None,
    ) -> None:
        if mqtt_version not in (None, MQTT_V5, MQTT_V311):
            raise ValueError(f"mqtt_version must be None, 4 or 5, got {mqtt_version!r}")
        self._broker = broker
        self._client_id = client_id
        self._on_message = on_message
        self._clock = clock
        self._connect_timeout = connect_timeout_s
        self._keepalive = keepalive_s
        self._forced_version = mqtt_version
        self._client: gmqtt.Client | None = None
        self._storage: _Storage | None = None
        self._slot = asyncio.Event()
        self._subscribed: dict[int, asyncio.Future[None]] = {}
        self._version: int | None = None
        self.published = 0
        """Publishes handed to the connection."""

    # ------------------------------------------------------------ state

    @property
    def version(self) -> int | None:
        """4 (MQTT 3.1.1) or 5 once connected."""
        return self._version

    @property
    def connected(self) -> bool:
        """Whether the connection is up (CONNACK received, transport open)."""
        client = self._client
        if client is None:
            return False
        with contextlib.suppress(AttributeError):
            return bool(client.is_connected)
        return False

    @property
    def acked(self) -> int:
        """PUBACKs received on the current connection."""
        return 0 if self._storage is None else self._storage.acked

    @property
    def inflight(self) -> int:
        """QoS 1 publishes awaiting their PUBACK."""
        return 0 if self._storage is None else self._storage.size

    @property
    def window(self) -> int:
        """How many publishes may await a PUBACK at once (the broker's Receive Maximum - 1)."""
        client = self._client
        try:
            maximum = int(client._package_handler.id_generator._max)  # type: ignore[union-attr]
        except (AttributeError, TypeError, ValueError):
            maximum = _DEFAULT_WINDOW
        # gmqtt's allocator refuses the id that would fill the last slot.
        return max(1, maximum - 1)

    # ------------------------------------------------------------ connect

    async def connect(self) -> int:
        """Connect with MQTT 5, else 3.1.1; returns the protocol level. Raises MqttSimError."""
        versions = (
            (self._forced_version,) if self._forced_version is not None else (MQTT_V5, MQTT_V311)
        )
        problems: list[str] = []
        for version in versions:
            client = self._new_client()
            try:
                await asyncio.wait_for(
                    client.connect(
                        self._broker.host,
                        self._broker.port,
                        ssl=self._broker.ssl_context(),
                        keepalive=self._keepalive,
                        version=MQTTv50 if version == MQTT_V5 else MQTTv311,
                    ),
                    self._connect_timeout,
                )
            except (TimeoutError, OSError, gmqtt.mqtt.handler.MQTTConnectError) as error:
                problems.append(f"MQTT {'5' if version == MQTT_V5 else '3.1.1'}: {_why(error)}")
                await self._abandon(client)
                if isinstance(error, ConnectionRefusedError):
                    break  # nobody listens: a second protocol will not help
                continue
            # gmqtt downgrades by itself when a broker answers CONNACK 0x01.
            self._version = _protocol_level(client, version)
            self._client = client
            client.set_config({"reconnect_delay": 2, "reconnect_retries": -1})
            return self._version
        raise MqttSimError(f"cannot connect to {self._broker}: " + "; ".join(problems))

    def _new_client(self) -> gmqtt.Client:
        storage = _Storage(self._freed)
        client = gmqtt.Client(
            self._client_id, clean_session=True, persistent_storage=storage, logger=_GMQTT_LOG
        )
        # No reconnect churn while probing: a refused attempt fails this attempt only.
        # reconnect_delay 0 lets gmqtt's own downgrade on CONNACK 0x01 happen at once.
        client.set_config({"reconnect_delay": 0, "reconnect_retries": 1})
        if self._broker.username is not None:
            client.set_auth_credentials(self._broker.username, self._broker.password)
        client.on_message = self._message
        client.on_subscribe = self._suback
        self._storage = storage
        return client

    async def _abandon(self, client: gmqtt.Client) -> None:
        with contextlib.suppress(Exception):  # a half-open client may fail any way it likes
            await asyncio.wait_for(client.disconnect(), 1.0)

    # ------------------------------------------------------------ callbacks

    def _freed(self) -> None:
        self._slot.set()

    def _message(
        self, _client: object, topic: str | bytes, payload: bytes, _qos: int, _props: object
    ) -> int:
        if self._on_message is not None:
            name = topic if isinstance(topic, str) else topic.decode("utf-8", "replace")
            self._on_message(name, bytes(payload), self._clock())
        return 0  # PUBACK reason "success" (MQTT 5 §3.4.2.1)

    def _suback(self, _client: object, mid: int, _qos: object, _props: object) -> None:
        waiter = self._subscribed.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------ use

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> bool:
        """Publish once a send slot is free; False when the connection is down."""
        client = self._client
        if client is None:
            raise RuntimeError("publish before connect")
        if qos:
            while self.inflight >= self.window:
                if not self.connected:
                    return False
                self._slot.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot.wait(), _SLOT_POLL_S)
        if not self.connected:
            return False
        client.publish(topic, payload, qos=qos)
        self.published += 1
        return True

    async def subscribe(self, filters: Sequence[str], *, timeout_s: float = 5.0) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK. Raises MqttSimError on timeout."""
        client = self._client
        if client is None:
            raise RuntimeError("subscribe before connect")
        mid = client.subscribe([gmqtt.Subscription(f, qos=1) for f in filters])
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._subscribed[mid] = waiter
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            raise MqttSimError(
                f"no SUBACK from {self._broker} within {timeout_s:g} s for {', '.join(filters)}"
            ) from None

    async def drain(self, timeout_s: float) -> int:
        """Wait until every publish is acknowledged; returns how many still are not."""
        deadline = self._clock() + timeout_s
        while self.inflight and self.connected:
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            self._slot.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot.wait(), min(remaining, _SLOT_POLL_S))
        return self.inflight

    async def close(self) -> None:
        """Disconnect cleanly (no reconnects afterwards)."""
        client, self._client = self._client, None
        if client is not None:
            await self._abandon(client)

    async def __aenter__(self) -> SimClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _why(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no CONNACK in time"
    return str(error) or type(error).__name__


def _protocol_level(client: gmqtt.Client, asked: int) -> int:
    try:
        level = int(client._connection_state.protocol_version)
    except (AttributeError, TypeError, ValueError):
        return asked
    return MQTT_V5 if level == MQTTv50 else MQTT_V311


# ------------------------------------------------------------------ reporting


def format_rate(count: int, seconds: float) -> str:
    """`count / seconds` as a short rate text, `-` before any time has passed."""
    if seconds <= 0:
        return "-"
    rate = count / seconds
    return f"{rate:,.0f}/s" if rate >= 100 else f"{rate:.1f}/s"


class Reporter:
    """Lines for the reader, plus a live stats line (rich on a terminal, plain otherwise)."""

    def __init__(
        self,
        out: IO[str],
        *,
        live: bool | None = None,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out
        self._clock = clock
        self._every = every_s
        self._last = clock()
        is_tty = False
        with contextlib.suppress(AttributeError, ValueError):
            is_tty = out.isatty()
        self._live: Live | None = None
        if is_tty if live is None else live:
            console = Console(file=out, highlight=False, markup=False, emoji=False)
            self._live = Live(Text(""), console=console, refresh_per_second=4, transient=True)
            self._live.start()

    @property
    def live(self) -> bool:
        """Whether the stats line is a rich live line."""
        return self._live is not None

    def print(self, text: str) -> None:
        """One line of output, above the live stats line."""
        if self._live is not None:
            self._live.console.print(Text(text))
        else:
            self._out.write(text + "\n")

    def status(self, text: str, *, force: bool = False) -> None:
        """Replace the live line; without a terminal, print it every `every_s` seconds."""
        if self._live is not None:
            self._live.update(Text(text))
            return
        now = self._clock()
        if force or now - self._last >= self._every:
            self._last = now
            self._out.write(text + "\n")
            self._out.flush()

    def close(self) -> None:
        """Stop the live line (it disappears; print a summary afterwards)."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def __enter__(self) -> Reporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ------------------------------------------------------------------ driving


@dataclass(frozen=True, slots=True)
class DriveReport:
    """What a drive did."""

    sent: int
    """Sends handed to the broker connection."""
    payload_bytes: int
    not_connected: int
    """Sends skipped because the connection was down at their time."""
    unacked: int
    """Publishes still without PUBACK when the drive ended."""
    late: int
    """Sends published more than `late_threshold_s` after their scheduled time."""
    late_max_s: float
    elapsed_s: float
    interrupted: bool
    by_event: Mapping[str, int]

    def summary(self) -> str:
        """One line for the end of a run."""
        kinds = ", ".join(f"{name} {count:,}" for name, count in sorted(self.by_event.items()))
        parts = [
            f"sent {self.sent:,} ({kinds})" if kinds else f"sent {self.sent:,}",
            f"in {self.elapsed_s:.1f} s ({format_rate(self.sent, self.elapsed_s)})",
            f"late {self.late:,} (max {self.late_max_s * 1000:.1f} ms)",
        ]
        if self.not_connected:
            parts.append(f"NOT SENT (broker down) {self.not_connected:,}")
        if self.unacked:
            parts.append(f"UNACKNOWLEDGED {self.unacked:,}")
        if self.interrupted:
            parts.append("interrupted")
        return " · ".join(parts)


@dataclass(slots=True)
class _Stats:
    started: float
    sent: int = 0
    payload_bytes: int = 0
    not_connected: int = 0
    late: int = 0
    late_max: float = 0.0
    by_event: Counter[str] = field(default_factory=Counter)

    def line(self, now: float, client: SimClient, total_s: float | None) -> str:
        elapsed = now - self.started
        clock = _clock_text(elapsed) + (f" / {_clock_text(total_s)}" if total_s else "")
        parts = [
            f"sent {self.sent:,}",
            format_rate(self.sent, elapsed),
            f"in flight {client.inflight}",
            f"late {self.late:,} (max {self.late_max * 1000:.0f} ms)",
        ]
        if self.not_connected:
            parts.append(f"broker down: {self.not_connected:,} not sent")
        parts.append(clock)
        return " · ".join(parts)


def _clock_text(seconds: float) -> str:
    whole = int(max(0.0, seconds))
    return f"{whole // 3600:d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


async def drive(
    sends: Iterable[Send],
    client: SimClient,
    *,
    clock: Callable[[], float] = time.time,
    on_sent: Callable[[Send, float], None] | None = None,
    reporter: Reporter | None = None,
    stop: asyncio.Event | None = None,
    total_s: float | None = None,
    late_threshold_s: float = 0.05,
    drain_timeout_s: float = 10.0,
    refresh_s: float = 0.25,
) -> DriveReport:
    """Publish every send at its time (open loop), then wait for the PUBACKs.

    `on_sent(send, lateness_s)` is called after each publish; `stop` ends the run
    early (Ctrl-C); `reporter` gets the stats line every `refresh_s`.
    """
    stats = _Stats(started=clock())
    stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
    refresher = (
        asyncio.ensure_future(
            _refresh(reporter, stats, client, clock=clock, total_s=total_s, every_s=refresh_s)
        )
        if reporter is not None
        else None
    )
    interrupted = False
    try:
        for send in sends:
            if stopper is not None and stopper.done():
                interrupted = True
                break
            delay = send.at - clock()
            if delay > _MIN_SLEEP_S:
                if stopper is None:
                    await asyncio.sleep(delay)
                else:
                    await asyncio.wait({stopper}, timeout=delay)
                    if stopper.done():
                        interrupted = True
                        break
            elif stats.sent % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # behind schedule: still let PUBACKs and the UI in
            if not await client.publish(send.topic, send.payload):
                stats.not_connected += 1
                continue
            lateness = clock() - send.at
            stats.sent += 1
            stats.payload_bytes += len(send.payload)
            stats.by_event[send.meta.event] += 1
            if lateness > late_threshold_s:
                stats.late += 1
            stats.late_max = max(stats.late_max, lateness)
            if on_sent is not None:
                on_sent(send, lateness)
        # Interrupted: still give the PUBACKs in flight a moment, not the full wait.
        unacked = await client.drain(min(drain_timeout_s, 2.0) if interrupted else drain_timeout_s)
    finally:
        for task in (stopper, refresher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if reporter is not None:
        reporter.status(stats.line(clock(), client, total_s))
    return DriveReport(
        sent=stats.sent,
        payload_bytes=stats.payload_bytes,
        not_connected=stats.not_connected,
        unacked=unacked,
        late=stats.late,
        late_max_s=stats.late_max,
        elapsed_s=clock() - stats.started,
        interrupted=interrupted,
        by_event=dict(stats.by_event),
    )


async def _refresh(
    reporter: Reporter,
    stats: _Stats,
    client: SimClient,
    *,
    clock: Callable[[], float],
    total_s: float | None,
    every_s: float,
) -> None:
    while True:
        await asyncio.sleep(every_s)
        reporter.status(stats.line(clock(), client, total_s))
