"""The MQTT link against a real mosquitto: ack after the handler, confirmed publish, reconnect.

Every broker test runs its scenario with `asyncio.run` and waits with bounded
timeouts, never with sleeps whose length decides the outcome: where a test
must show that something did NOT happen, the broker is frozen (SIGSTOP), so
nothing can happen, or a later marker message proves the order.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.embedded_broker import EmbeddedBroker
from gateway.adapters.mqtt import (
    MQTT_V5,
    MQTT_V311,
    Backoff,
    MqttError,
    MqttLink,
    MqttNotConnected,
    MqttPublishError,
    OutgoingMessage,
    Will,
)
from tests.brokers import Mosquitto, write_password_file, write_tls_files

pytestmark = pytest.mark.broker

_WAIT_S = 10.0


# -- helpers ------------------------------------------------------------------------
class Inbox:
    """An `on_message` handler that records messages and lets a test await them."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    async def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))
        self._changed.set()

    async def wait(self, count: int) -> list[tuple[str, bytes]]:
        async with asyncio.timeout(_WAIT_S):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages


class Counter:
    """An `on_connected` callback that counts calls and lets a test await the n-th."""

    def __init__(self) -> None:
        self.calls = 0
        self._changed = asyncio.Event()

    async def __call__(self) -> None:
        self.calls += 1
        self._changed.set()

    async def wait(self, calls: int) -> None:
        async with asyncio.timeout(_WAIT_S):
            while self.calls < calls:
                self._changed.clear()
                await self._changed.wait()


class RecordingLog:
    """A logger that keeps (level, event, fields) for assertions."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, object]]] = []

    def debug(self, event: str, /, **kw: object) -> None:
        self.records.append(("debug", event, kw))

    def info(self, event: str, /, **kw: object) -> None:
        self.records.append(("info", event, kw))

    def warning(self, event: str, /, **kw: object) -> None:
        self.records.append(("warning", event, kw))

    def error(self, event: str, /, **kw: object) -> None:
        self.records.append(("error", event, kw))

    def events(self, level: str) -> list[str]:
        return [event for lvl, event, _ in self.records if lvl == level]


def link(
    port: int,
    client_id: str,
    on_message: Callable[[str, bytes], Awaitable[None]] | None = None,
    **options: Any,
) -> MqttLink:
    """A link with test-sized backoff (50 ms doubling to 0.5 s) and a seeded rng."""

    async def ignore(_topic: str, _payload: bytes) -> None:
        return None

    options.setdefault("backoff", Backoff(0.05, 0.5))
    options.setdefault("rng", random.Random(7))
    return MqttLink(
        host="127.0.0.1",
        port=port,
        client_id=client_id,
        on_message=on_message if on_message is not None else ignore,
        **options,
    )


async def publish_eventually(sender: MqttLink, topic: str, payload: bytes) -> None:
    """Publish, retrying while the sender (re)connects; bounded."""
    async with asyncio.timeout(_WAIT_S):
        while True:
            try:
                await sender.publish(topic, payload)
            except MqttError:
                await sender.wait_connected()
            else:
                return


def up(link: MqttLink) -> bool:
    """`link.connected`, read through a call so mypy does not keep an earlier narrowing."""
    return link.connected


async def no_tasks_left() -> None:
    """After stop(), nothing the links started may still be running."""
    for _ in range(3):
        await asyncio.sleep(0)
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, others


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


# -- pure parts -----------------------------------------------------------------------
@given(
    st.floats(1e-3, 5.0),
    st.floats(1.0, 60.0),
    st.integers(0, 2000),
    st.integers(0, 2**32),
)
def test_backoff_delay_stays_within_its_ceiling(
    initial: float, cap_extra: float, failures: int, seed: int
) -> None:
    """Full jitter: each delay is in [0, min(cap, initial * 2**failures)], even for huge counts."""
    backoff = Backoff(initial, initial * cap_extra)
    ceiling = backoff.ceiling(failures)
    assert ceiling == min(backoff.cap_s, initial * 2.0 ** min(failures, 64))
    assert 0.0 <= backoff.delay(failures, random.Random(seed)) <= ceiling


@given(st.integers(0, 200))
def test_backoff_ceiling_grows_then_caps(failures: int) -> None:
    """The ceiling never shrinks as failures mount and never passes the cap."""
    backoff = Backoff()
    assert backoff.ceiling(failures) <= backoff.ceiling(failures + 1) <= backoff.cap_s
    assert backoff.ceiling(0) == 0.1
    assert backoff.ceiling(200) == 10.0


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    """Randomness is an input: the same seed gives the same delays."""
    backoff = Backoff()
    first = [backoff.delay(n, random.Random(3)) for n in range(10)]
    assert first == [backoff.delay(n, random.Random(3)) for n in range(10)]


@pytest.mark.parametrize(("initial", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_backoff_rejects_nonsense(initial: float, cap: float) -> None:
    """A backoff needs 0 < initial <= cap."""
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial, cap)
    with pytest.raises(ValueError, match="failures"):
        Backoff().ceiling(-1)


@pytest.mark.parametrize(
    "options",
    [
        {"client_id": ""},
        {"mqtt_version": 3},
        {"keepalive_s": -1},
        {"session_expiry_s": 2**32},
        {"connect_timeout_s": 0},
        {"max_inflight": 1},
        {"receive_maximum": 0},
        {"subscriptions": ["in/#", ""]},
        {"will": Will("state", b"offline", qos=3)},
    ],
)
def test_constructor_rejects_misuse(options: dict[str, Any]) -> None:
    """Bad settings are our own bug: ValueError at construction, before any I/O."""
    settings: dict[str, Any] = {"port": 1883, "client_id": "gw"} | options
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        link(**settings)


def test_a_will_may_be_a_topic_payload_pair() -> None:
    """(topic, payload) is shorthand for a retained QoS 1 Will."""
    assert link(1883, "gw", will=("gw/state", b"offline")).will == Will("gw/state", b"offline")


def test_publish_checks_its_arguments_first() -> None:
    """Wildcards, QoS 2 and str payloads are refused before the connection is looked at."""

    async def scenario() -> None:
        idle = link(1883, "gw")
        with pytest.raises(ValueError, match="wildcards"):
            await idle.publish("out/#", b"x")
        with pytest.raises(ValueError, match="qos"):
            await idle.publish("out/x", b"x", qos=2)
        with pytest.raises(TypeError, match="bytes"):
            await idle.publish("out/x", "x")  # type: ignore[arg-type]
        with pytest.raises(MqttNotConnected):
            await idle.publish("out/x", b"x")
        with pytest.raises(MqttNotConnected):
            await idle.publish_many([OutgoingMessage("out/x", b"x")])
        assert not idle.connected
        assert idle.protocol_version is None
        assert not idle.ack_after_handler
        assert not idle.tcp_nodelay

    run(scenario)


# -- against mosquitto ------------------------------------------------------------------
def test_connect_subscribe_receive(mosquitto: Mosquitto) -> None:
    """MQTT 5, subscribed, TCP_NODELAY on, on_connected once, and messages arrive."""

    async def scenario() -> None:
        inbox, connected = Inbox(), Counter()
        gateway = link(mosquitto.port, "gw", inbox, subscriptions=["in/#"], on_connected=connected)
        sender = link(mosquitto.port, "sender")
        async with gateway, sender:
            assert gateway.connected
            assert gateway.protocol_version == MQTT_V5
            assert gateway.ack_after_handler
            assert gateway.tcp_nodelay
            assert connected.calls == 1
            await sender.publish("elsewhere", b"not for us")
            await sender.publish("in/phone/h1", b"\x81\xa1v\x01")
            assert await inbox.wait(1) == [("in/phone/h1", b"\x81\xa1v\x01")]
        assert not up(gateway)
        await no_tasks_left()

    run(scenario)


def test_confirmed_publish_waits_for_the_puback(mosquitto: Mosquitto) -> None:
    """With the broker frozen no PUBACK can come and publish() waits; it returns once it does."""

    async def scenario() -> None:
        async with link(mosquitto.port, "gw") as gateway:
            mosquitto.pause()
            try:
                pending = asyncio.create_task(gateway.publish("out/r", b"kept", retain=True))
                for _ in range(20):
                    await asyncio.sleep(0)
                assert not pending.done()
            finally:
                mosquitto.resume()
            async with asyncio.timeout(_WAIT_S):
                await pending
            # Confirmed means stored at the broker: a newcomer gets the retained copy.
            inbox = Inbox()
            async with link(mosquitto.port, "late", inbox, subscriptions=["out/r"]):
                assert await inbox.wait(1) == [("out/r", b"kept")]
        await no_tasks_left()

    run(scenario)


def test_many_concurrent_publishes_respect_the_broker_window(mosquitto: Mosquitto) -> None:
    """200 concurrent QoS 1 publishes all confirm, though mosquitto allows 20 in flight."""

    async def scenario() -> None:
        inbox = Inbox()
        async with (
            link(mosquitto.port, "gw") as gateway,
            link(mosquitto.port, "sink", inbox, subscriptions=["out/#"]),
        ):
            await asyncio.gather(*(gateway.publish("out/n", b"%d" % n) for n in range(200)))
            received = await inbox.wait(200)
            assert sorted(int(p) for _, p in received) == list(range(200))

    run(scenario)


def test_publishes_waiting_on_a_dead_connection_all_fail(mosquitto: Mosquitto) -> None:
    """In flight or waiting for a window slot: every publish fails when the broker dies."""

    async def scenario() -> None:
        async with link(mosquitto.port, "gw") as gateway:
            mosquitto.pause()
            publishes = [asyncio.create_task(gateway.publish("out/n", b"n")) for _ in range(50)]
            for _ in range(20):
                await asyncio.sleep(0)
            mosquitto.kill()
            async with asyncio.timeout(_WAIT_S):
                results = await asyncio.gather(*publishes, return_exceptions=True)
            assert all(isinstance(r, MqttPublishError) for r in results), results
        await no_tasks_left()

    run(scenario)


def test_a_publisher_that_gives_up_does_not_leak_its_slot(mosquitto: Mosquitto) -> None:
    """Cancelled publishers keep their slot until the PUBACK; then it serves others again."""

    async def scenario() -> None:
        async with link(mosquitto.port, "gw") as gateway:
            mosquitto.pause()
            try:
                publishes = [asyncio.create_task(gateway.publish("out/n", b"n")) for _ in range(40)]
                for _ in range(20):
                    await asyncio.sleep(0)
                for publish in publishes[5:]:
                    publish.cancel()
            finally:
                mosquitto.resume()
            async with asyncio.timeout(_WAIT_S):
                await asyncio.gather(*publishes[:5])
                # Forty more than the window: only possible if every slot came back.
                await asyncio.gather(*(gateway.publish("out/m", b"m") for _ in range(40)))
            assert all(p.cancelled() for p in publishes[5:])

    run(scenario)


def test_receive_maximum_bounds_concurrent_handlers(mosquitto: Mosquitto) -> None:
    """With receive_maximum=5 the broker has at most 5 unacknowledged messages out to us."""

    async def scenario() -> None:
        entered: list[bytes] = []
        release, finished = asyncio.Event(), Inbox()

        async def slow(topic: str, payload: bytes) -> None:
            entered.append(payload)
            await release.wait()
            await finished(topic, payload)

        async with (
            link(mosquitto.port, "sender") as sender,
            link(mosquitto.port, "gw", slow, subscriptions=["in/#"], receive_maximum=5) as gw,
        ):
            await asyncio.gather(*(sender.publish("in/n", b"%d" % n) for n in range(20)))
            # Our own round trip: the broker wrote everything it meant to send
            # us before this PUBACK, and those handlers started before we resume.
            await gw.publish("out/sync", b"")
            assert len(entered) == 5
            release.set()
            await finished.wait(20)
            assert sorted(entered) == sorted(b"%d" % n for n in range(20))

    run(scenario)


def test_session_takeover_is_survived(mosquitto: Mosquitto) -> None:
    """Another client taking our client id (DISCONNECT 0x8E) makes the link reconnect."""

    async def scenario() -> None:
        connected = Counter()
        log = RecordingLog()
        async with link(mosquitto.port, "gw", on_connected=connected, logger=log):
            # A bare MQTT 5 CONNECT with client id "gw" (MQTT 5 §3.1).
            reader, writer = await asyncio.open_connection("127.0.0.1", mosquitto.port)
            writer.write(bytes.fromhex("100f00044d5154540502003c00" + "0002") + b"gw")
            await connected.wait(2)  # and now the intruder is the one taken over
            async with asyncio.timeout(_WAIT_S):
                while await reader.read(1024):
                    pass
            writer.close()
            await writer.wait_closed()
        assert log.events("warning") == ["mqtt.connection_lost"]

    run(scenario)


def test_a_refused_subscription_is_logged_and_the_link_stays_up() -> None:
    """SUBACK failure codes are an error in the log, not a crash or a reconnect loop."""

    async def fake_v5_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def packet() -> tuple[int, bytes]:
            kind, length, shift = (await reader.readexactly(1))[0], 0, 0
            while True:  # variable byte integer (MQTT 5 §1.5.5)
                byte = (await reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    return kind, await reader.readexactly(length)

        await packet()  # CONNECT
        writer.write(bytes.fromhex("2003000000"))  # CONNACK: accepted, no properties
        _, subscribe = await packet()
        # SUBACK: same packet id, no properties, granted QoS 1, then 0x87 not authorised.
        writer.write(b"\x90\x05" + subscribe[:2] + b"\x00\x01\x87")
        await reader.read()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(fake_v5_broker, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        log = RecordingLog()
        try:
            async with link(
                port, "gw", subscriptions=["in/#", "forbidden/#"], logger=log
            ) as gateway:
                assert gateway.connected
                assert gateway.ack_after_handler
        finally:
            server.close()
            await server.wait_closed()
        refused = [kw for _, event, kw in log.records if event == "mqtt.subscription_refused"]
        assert refused == [{"topics": ["forbidden/#"], "codes": [1, 0x87]}]

    run(scenario)


def test_publish_many_and_qos0(mosquitto: Mosquitto) -> None:
    """A batch is confirmed message by message, in order; QoS 0 arrives too."""

    async def scenario() -> None:
        inbox = Inbox()
        async with (
            link(mosquitto.port, "gw") as gateway,
            link(mosquitto.port, "sink", inbox, subscriptions=["out/#"]),
        ):
            batch = [OutgoingMessage("out/b", b"%d" % n) for n in range(50)]
            batch.append(OutgoingMessage("out/q0", b"fast", qos=0))
            assert await gateway.publish_many(batch) == [None] * 51
            await gateway.publish("out/q0", b"single", qos=0)
            received = await inbox.wait(52)
            assert [p for t, p in received if t == "out/b"] == [b"%d" % n for n in range(50)]
            assert [p for t, p in received if t == "out/q0"] == [b"fast", b"single"]

    run(scenario)


def test_publish_while_broker_down_raises_and_the_link_keeps_trying(
    mosquitto: Mosquitto,
) -> None:
    """start() returns with the broker down; publish raises MqttNotConnected until it is back."""

    async def scenario() -> None:
        mosquitto.stop()
        connected = Counter()
        gateway = link(mosquitto.port, "gw", on_connected=connected)
        await gateway.start()
        try:
            assert not gateway.connected
            with pytest.raises(MqttNotConnected):
                await gateway.publish("out/x", b"x")
            mosquitto.start()
            async with asyncio.timeout(_WAIT_S):
                await gateway.wait_connected()
            await gateway.publish("out/x", b"x")
            assert connected.calls == 1
        finally:
            await gateway.stop()
        await no_tasks_left()

    run(scenario)


def test_connection_lost_before_the_puback_raises_publish_error(mosquitto: Mosquitto) -> None:
    """A broker that dies holding our PUBLISH fails the publish with MqttPublishError."""

    async def scenario() -> None:
        async with link(mosquitto.port, "gw") as gateway:
            mosquitto.pause()
            pending = asyncio.create_task(gateway.publish("out/x", b"x"))
            for _ in range(20):
                await asyncio.sleep(0)
            mosquitto.kill()
            with pytest.raises(MqttPublishError) as caught:
                async with asyncio.timeout(_WAIT_S):
                    await pending
            assert caught.value.reason_code is None
            assert not gateway.connected
        await no_tasks_left()

    run(scenario)


def test_broker_restart_reconnects_resubscribes_and_calls_on_connected(
    mosquitto: Mosquitto,
) -> None:
    """After a broker restart (sessions gone) the link is back, subscribed, and said so."""

    async def scenario() -> None:
        inbox, connected = Inbox(), Counter()
        gateway = link(mosquitto.port, "gw", inbox, subscriptions=["in/#"], on_connected=connected)
        sender = link(mosquitto.port, "sender")
        async with gateway, sender:
            mosquitto.stop()
            mosquitto.start()
            await connected.wait(2)
            assert gateway.connections == 2
            await publish_eventually(sender, "in/after", b"restart")
            assert await inbox.wait(1) == [("in/after", b"restart")]
        await no_tasks_left()

    run(scenario)


def test_unacknowledged_message_is_redelivered_after_a_crash(mosquitto: Mosquitto) -> None:
    """A handler that never returned means no PUBACK: the next session gets the message again."""

    async def scenario() -> None:
        entered = asyncio.Event()

        async def stuck(_topic: str, _payload: bytes) -> None:
            entered.set()
            await asyncio.Event().wait()  # the store never answers: the gateway dies here

        first = link(mosquitto.port, "gw", stuck, subscriptions=["in/#"])
        async with link(mosquitto.port, "sender") as sender:
            await first.start()
            await sender.publish("in/phone/h1", b"panic")
            async with asyncio.timeout(_WAIT_S):
                await entered.wait()
            await first.stop(clean=False)  # like kill -9: no DISCONNECT, handler gone
            inbox = Inbox()
            async with link(mosquitto.port, "gw", inbox, subscriptions=["in/#"]):
                assert await inbox.wait(1) == [("in/phone/h1", b"panic")]
        await no_tasks_left()

    run(scenario)


def test_messages_queued_for_the_session_meet_a_connected_link(mosquitto: Mosquitto) -> None:
    """What the broker held for us arrives after subscribe: handlers that publish succeed."""

    async def scenario() -> None:
        async with link(mosquitto.port, "sender") as sender:
            first = link(mosquitto.port, "gw", subscriptions=["in/#"])
            await first.start()
            await first.stop()  # the session stays; messages queue for it
            for n in range(5):
                await sender.publish("in/queued", b"%d" % n)
            echoed, connected = Inbox(), Counter()

            async def echo(topic: str, payload: bytes) -> None:
                await gateway.publish("out/echo", payload)  # needs a connected link
                await echoed(topic, payload)

            gateway = link(
                mosquitto.port, "gw", echo, subscriptions=["in/#"], on_connected=connected
            )
            async with gateway:
                assert sorted(p for _, p in await echoed.wait(5)) == [b"%d" % n for n in range(5)]
                assert connected.calls == 1  # no handler failed, no reconnect
        await no_tasks_left()

    run(scenario)


def test_acknowledged_message_is_not_redelivered(mosquitto: Mosquitto) -> None:
    """A handler that returned was acknowledged: the next session sees only newer messages."""

    async def scenario() -> None:
        first_inbox = Inbox()
        first = link(mosquitto.port, "gw", first_inbox, subscriptions=["in/#"])
        async with link(mosquitto.port, "sender") as sender:
            await first.start()
            await sender.publish("in/phone/h1", b"panic")
            await first_inbox.wait(1)
            # A confirmed round trip on the same connection: the broker has read
            # every packet we wrote before it, our PUBACK included.
            await first.publish("out/sync", b"")
            await first.stop(clean=False)
            inbox = Inbox()
            async with link(mosquitto.port, "gw", inbox, subscriptions=["in/#"]):
                await sender.publish("in/phone/h1", b"marker")
                assert await inbox.wait(1) == [("in/phone/h1", b"marker")]
        await no_tasks_left()

    run(scenario)


def test_failing_handler_withholds_the_puback_and_the_message_comes_back(
    mosquitto: Mosquitto,
) -> None:
    """A handler that raises is not acked; the link reconnects and the broker redelivers."""

    async def scenario() -> None:
        seen: list[bytes] = []
        done = asyncio.Event()

        async def flaky(_topic: str, payload: bytes) -> None:
            seen.append(payload)
            if len(seen) == 1:
                raise OSError("disk full")  # the store failed: not stored
            done.set()

        connected = Counter()
        async with (
            link(mosquitto.port, "sender") as sender,
            link(mosquitto.port, "gw", flaky, subscriptions=["in/#"], on_connected=connected),
        ):
            await sender.publish("in/phone/h1", b"fire")
            async with asyncio.timeout(_WAIT_S):
                await done.wait()
            assert seen == [b"fire", b"fire"]
            await connected.wait(2)  # the second copy came on a new connection
        await no_tasks_left()

    run(scenario)


def test_broker_refusal_reason_code_raises_publish_error(tmp_path: Path) -> None:
    """A PUBACK with an error code (0x87, ACL denied) is a failed publish, not a confirmation."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite #\ntopic deny forbidden/#\n", encoding="utf-8")
    broker = Mosquitto(tmp_path, extra_config=[f"acl_file {acl}"])
    broker.start()

    async def scenario() -> None:
        async with link(broker.port, "gw") as gateway:
            with pytest.raises(MqttPublishError) as caught:
                await gateway.publish("forbidden/x", b"x")
            assert caught.value.reason_code == 0x87
            # mosquitto 2.0.11 also drops the connection; the link comes back.
            await publish_eventually(gateway, "allowed/x", b"x")

    try:
        run(scenario)
    finally:
        broker.kill()


def test_will_is_published_only_when_the_link_vanishes(mosquitto: Mosquitto) -> None:
    """stop() is a clean DISCONNECT (no Will); stop(clean=False) lets the broker send it."""

    async def scenario() -> None:
        inbox = Inbox()
        async with link(mosquitto.port, "observer", inbox, subscriptions=["gw/state"]) as observer:
            gateway = link(mosquitto.port, "gw", will=Will("gw/state", b"offline", retain=False))
            await gateway.start()
            await gateway.stop()
            await observer.publish("gw/state", b"marker")
            assert await inbox.wait(1) == [("gw/state", b"marker")]
            await gateway.start()
            await gateway.stop(clean=False)
            assert await inbox.wait(2) == [("gw/state", b"marker"), ("gw/state", b"offline")]
        await no_tasks_left()

    run(scenario)


def test_tls_and_credentials_pass_through(tmp_path: Path) -> None:
    """TLS with the given context and username/password reach the broker; wrong ones do not."""
    cert, key = write_tls_files(tmp_path)
    passwords = write_password_file(tmp_path, "gateway", "s3cret")
    broker = Mosquitto(
        tmp_path,
        extra_config=[f"certfile {cert}", f"keyfile {key}", f"password_file {passwords}"],
        anonymous=False,
    )
    broker.start()
    context = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> None:
        inbox = Inbox()
        options: dict[str, Any] = {"ssl_context": context, "username": "gateway"}
        async with link(
            broker.port, "gw", inbox, subscriptions=["in/#"], password="s3cret", **options
        ) as gateway:
            assert gateway.connected
            assert gateway.tcp_nodelay
            await gateway.publish("in/self", b"over tls")
            assert await inbox.wait(1) == [("in/self", b"over tls")]
        refused = link(broker.port, "intruder", password="wrong", **options)
        await refused.start()
        assert not refused.connected  # refused, still trying, never raising
        await refused.stop()
        await no_tasks_left()

    try:
        run(scenario)
    finally:
        broker.kill()


def test_on_connected_failure_does_not_stop_the_link(mosquitto: Mosquitto) -> None:
    """A failing on_connected is logged; the link stays up and publishes."""

    async def scenario() -> None:
        async def broken() -> None:
            raise RuntimeError("boom")

        async with link(mosquitto.port, "gw", on_connected=broken) as gateway:
            await gateway.publish("out/x", b"x")
            assert gateway.connected

    run(scenario)


def test_forced_mqtt_311_gives_up_the_guarantee(mosquitto: Mosquitto) -> None:
    """mqtt_version=4 connects with 3.1.1 and says ack-after-handler is not guaranteed."""

    async def scenario() -> None:
        inbox = Inbox()
        async with link(
            mosquitto.port, "gw", inbox, subscriptions=["in/#"], mqtt_version=MQTT_V311
        ) as gateway:
            assert gateway.protocol_version == MQTT_V311
            assert not gateway.ack_after_handler
            await gateway.publish("in/x", b"x")
            assert await inbox.wait(1) == [("in/x", b"x")]

    run(scenario)


def test_runs_in_an_anyio_task_group(mosquitto: Mosquitto) -> None:
    """`await tg.start(link.run)` returns once connected; cancelling the group stops it."""

    async def scenario() -> None:
        gateway = link(mosquitto.port, "gw")
        async with anyio.create_task_group() as tg:
            await tg.start(gateway.run)
            assert gateway.connected
            await gateway.publish("out/x", b"x")
            tg.cancel_scope.cancel()
        assert not up(gateway)
        await no_tasks_left()

    run(scenario)


# -- MQTT 3.1.1 fallback -------------------------------------------------------------
def test_falls_back_to_311_against_the_embedded_broker() -> None:
    """amqtt refuses MQTT 5: the link connects with 3.1.1, pub/sub works, no ack guarantee."""

    async def scenario() -> None:
        async with EmbeddedBroker() as broker:
            inbox = Inbox()
            async with link(broker.port, "gw", inbox, subscriptions=["in/#"]) as gateway:
                assert gateway.connected
                assert gateway.protocol_version == MQTT_V311
                assert not gateway.ack_after_handler
                await gateway.publish("in/phone/h1", b"panic")
                assert await inbox.wait(1) == [("in/phone/h1", b"panic")]
        await no_tasks_left()

    run(scenario)


def test_a_server_silent_to_every_version_is_retried_alternately() -> None:
    """Neither version answered: the link alternates its probes, never raises, never connects."""
    levels: list[int] = []
    three = asyncio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(9)
        levels.append(head[8])
        if len(levels) >= 3:
            three.set()
        await reader.read()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            gateway = link(port, "gw", connect_timeout_s=0.1, backoff=Backoff(0.01, 0.02))
            await gateway.start()
            assert not gateway.connected
            async with asyncio.timeout(_WAIT_S):
                await three.wait()
            await gateway.stop()
            assert levels[:3] == [MQTT_V5, MQTT_V311, MQTT_V5]
        finally:
            server.close()
            await server.wait_closed()

    run(scenario)


def test_a_broker_silent_to_mqtt5_is_probed_with_311() -> None:
    """No CONNACK to a v5 CONNECT within the timeout: 3.1.1 is tried at once and kept."""
    levels: list[int] = []

    async def fake_311_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Enough of a CONNECT to see the protocol level: type, 1-byte length, "MQTT", level.
        head = await reader.readexactly(9)
        levels.append(head[8])
        if head[8] == MQTT_V311:
            writer.write(b"\x20\x02\x00\x00")  # CONNACK accepted
        await reader.read()  # silent to anything else, until the client leaves
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(fake_311_broker, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            gateway = link(port, "gw", connect_timeout_s=0.3)
            await gateway.start()
            assert gateway.connected
            assert gateway.protocol_version == MQTT_V311
            assert levels == [MQTT_V5, MQTT_V311]
            await gateway.stop()
        finally:
            server.close()
            await server.wait_closed()

    run(scenario)
