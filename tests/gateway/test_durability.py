"""Accepted means stored: acknowledgement after commit, restart-safe outbox and escalation.

Real processes on a real mosquitto: the gateway is `alarmgw run` in a child
process, killed with SIGKILL by its pid, and started again on the same store.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgpack
import pytest

from gateway.adapters.mqtt import MqttError
from gateway.app import Gateway
from tests.brokers import Mosquitto, free_port
from tests.gateway.harness import (
    Collector,
    GatewayProcess,
    demo_config,
    eventually,
    panic,
    running,
    write_config,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

OUT = ("alarmgw/out/+/+/alarms",)
HOUSEHOLDS = [f"h{n:03d}" for n in range(1, 61)]
SINKS_OF = {  # demo.toml: household → its village and group (all in township t01)
    h: {f"village/v0{(n - 1) // 20 + 1}", f"group/g{(n - 1) // 20 + 1}{(n - 1) // 10 % 2 + 1}"}
    | {"township/t01"}
    for n, h in ((int(h[1:]), h) for h in HOUSEHOLDS)
}


def _delivered(probe: Collector) -> dict[str, set[str]]:
    """alarm_id → the sinks ("kind/id") it reached."""
    seen: dict[str, set[str]] = {}
    for topic, body in probe.decoded(lambda t: t.endswith("/alarms")):
        _, _, kind, sink, _ = topic.split("/")
        seen.setdefault(body["alarm_id"], set()).add(f"{kind}/{sink}")
    return seen


async def _all_delivered(probe: Collector, acked: list[tuple[str, str]]) -> None:
    """Wait until every acknowledged alarm reached every sink it is routed to."""

    def missing() -> list[tuple[str, str]]:
        got = _delivered(probe)
        return [(h, a) for h, a in acked if not SINKS_OF[h] <= got.get(a, set())]

    try:
        await probe.wait_for(lambda _m: not missing(), within=30)
    except TimeoutError:
        lost = missing()
        raise AssertionError(f"{len(lost)} lost, e.g. {lost[:5]}") from None


async def _stream(
    publisher: Collector, acked: list[tuple[str, str]], count: int, rate: float, seq0: int = 0
) -> None:
    """Publish `count` panics round-robin over the households at `rate`/s; remember the
    ones the broker acknowledged (PUBACK) — those the gateway must never lose."""
    for n in range(count):
        household = HOUSEHOLDS[n % len(HOUSEHOLDS)]
        seq = seq0 + n
        try:
            await publisher.publish(f"alarmgw/in/phone/{household}", panic(seq))
        except MqttError:  # the broker is down: this one was never accepted
            await asyncio.sleep(1 / rate)
            continue
        acked.append((household, f"ph/{household}/{seq}"))
        await asyncio.sleep(1 / rate)


def test_kill_9_mid_stream_loses_no_acknowledged_alarm(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """SIGKILL the gateway while alarms flow; after a restart every alarm the
    publisher got a PUBACK for reaches every sink it is routed to."""
    http = free_port()
    gateway = GatewayProcess(
        write_config(tmp_path, mosquitto.port, http), http, tmp_path / "gateway.log"
    )

    async def scenario() -> None:
        acked: list[tuple[str, str]] = []
        async with (
            Collector(mosquitto.port, OUT, "sinks") as probe,
            Collector(mosquitto.port, (), "phones") as publisher,
        ):
            gateway.start()
            stream = asyncio.create_task(_stream(publisher, acked, count=300, rate=150))
            await asyncio.sleep(0.8)
            gateway.kill()
            await asyncio.sleep(0.5)
            await asyncio.to_thread(gateway.start)
            await stream

            await _all_delivered(probe, acked)
            assert len(acked) >= 250

    try:
        asyncio.run(scenario())
    finally:
        gateway.kill()


def test_broker_outage_under_load_loses_nothing(tmp_path: Path) -> None:
    """The broker stops for seconds while alarms flow: every alarm the broker took
    reaches every sink once it is back (the outbox held the backlog)."""
    directory = tmp_path / "broker"
    directory.mkdir()
    broker = Mosquitto(directory, persistence=True)
    broker.start()

    async def scenario() -> None:
        acked: list[tuple[str, str]] = []
        gateway = Gateway(demo_config(tmp_path, broker.port))
        async with (
            running(gateway),
            Collector(broker.port, OUT, "sinks", persistent=True) as probe,
            Collector(broker.port, (), "phones") as publisher,
        ):
            stream = asyncio.create_task(_stream(publisher, acked, count=500, rate=200))
            # The outage begins once enough alarms were taken (not after a fixed
            # second: a slow machine takes fewer in it).
            await eventually(lambda: len(acked) >= 150, within=20.0)
            broker.stop()
            await asyncio.sleep(3.0)
            broker.start()
            await stream

            await _all_delivered(probe, acked)
            assert len(acked) >= 150  # before, during (none) and after the outage
            store = gateway.journal.store
            assert store is not None
            await eventually(lambda: store.pending_count() == 0)

    try:
        asyncio.run(scenario())
    finally:
        broker.kill()


def test_escalation_survives_a_crash_and_an_ack_before_a_crash_is_kept(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Crash between dispatch and deadline: the escalation still happens, once, on
    time. Crash after an ack: no escalation."""
    http = free_port()
    deadline_s = 2.5
    gateway = GatewayProcess(
        write_config(tmp_path, mosquitto.port, http, life_safety_deadline_s=deadline_s),
        http,
        tmp_path / "gateway.log",
    )

    async def scenario() -> None:
        async with Collector(mosquitto.port, OUT, "sinks") as probe:
            gateway.start()
            raised = time.time()
            await probe.publish("alarmgw/in/phone/h011", panic(1))
            await probe.publish("alarmgw/in/phone/h012", panic(1))
            await probe.wait_for(lambda m: len(_delivered(probe)) == 2)
            ack = {"alarm_id": "ph/h012/1", "by": "operator-li", "ts": time.time()}
            await probe.publish("alarmgw/ack/village/v01", msgpack.packb(ack))
            await asyncio.sleep(0.3)  # the ack is stored before its PUBACK; be sure it landed
            gateway.kill()
            await asyncio.sleep(0.5)
            await asyncio.to_thread(gateway.start)
            await probe.wait_for(
                lambda m: "bureau/county" in _delivered(probe).get("ph/h011/1", set()),
                within=10,
            )
            escalated_at = next(
                at
                for topic, payload, at in probe.messages
                if topic == "alarmgw/out/bureau/county/alarms"
            )
            assert escalated_at >= raised + deadline_s - 0.1
            assert escalated_at <= raised + deadline_s + 2.0
            await asyncio.sleep(deadline_s)  # h012's deadline has passed too
            bureau = [
                body
                for topic, body in probe.decoded(lambda t: t == "alarmgw/out/bureau/county/alarms")
            ]
            assert [b["alarm_id"] for b in bureau] == ["ph/h011/1"]
            assert bureau[0]["escalated"] is True

    try:
        asyncio.run(scenario())
    finally:
        gateway.kill()


def test_unwritable_store_withholds_acknowledgement_until_it_recovers(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """While the store cannot be written the gateway withholds its PUBACK (the broker
    keeps redelivering) and /readyz says so; once writable the alarm is delivered."""

    async def scenario() -> None:
        gateway = Gateway(demo_config(tmp_path, mosquitto.port))
        registry = gateway.metrics.registry
        async with running(gateway), Collector(mosquitto.port, OUT, "sinks") as probe:
            store = gateway.journal.store
            assert store is not None
            store.call(lambda conn: conn.execute("PRAGMA query_only=ON"))
            await probe.publish("alarmgw/in/phone/h030", panic(5))
            await eventually(lambda: registry.get_sample_value("alarmgw_unacknowledged_total"))
            assert not store.writable
            checks = {name: (ok, detail) for name, ok, detail in gateway._readiness()}
            assert checks["outbox"][0] is False
            assert "not writable" in checks["outbox"][1]
            assert registry.get_sample_value("alarmgw_store_writable") == 0.0
            commits = registry.get_sample_value("alarmgw_store_commits_total")
            assert commits is not None
            assert commits == store.commits  # what failed was not counted
            await asyncio.sleep(0.5)
            assert _delivered(probe) == {}
            store.call(lambda conn: conn.execute("PRAGMA query_only=OFF"))
            # The broker redelivers what was never acknowledged; now it is stored.
            await probe.wait_for(
                lambda m: len(_delivered(probe).get("ph/h030/5", ())) == 3, within=20
            )
            assert registry.get_sample_value("alarmgw_store_writable") == 1.0
            # The panic's identity, its three dispatches and its alarm: one commit or more.
            assert (registry.get_sample_value("alarmgw_store_commits_total") or 0) > commits
            assert (registry.get_sample_value("alarmgw_store_ops_total") or 0) >= 5

    asyncio.run(scenario())
