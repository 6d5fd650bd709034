"""The gateway end to end over MQTT, on a real mosquitto (CONTRACT.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import time
import urllib.request
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import msgpack
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from config.model import Priority
from gateway.app import Gateway
from gateway.logbudget import LogBudget
from tests.brokers import Mosquitto
from tests.gateway.harness import Collector, demo_config, panic, running

pytestmark = pytest.mark.broker

OUT = ("alarmgw/out/#", "alarmgw/deadletter", "alarmgw/availability/+", "alarmgw/state")
CONTRACT_KEYS = {
    "v", "alarm_id", "source", "kind", "priority", "device_id", "household", "village",
    "township", "device_ts", "ingress_ts", "dispatch_ts", "attempt", "escalated", "event",
}  # fmt: skip


def alarms(c: Collector) -> list[tuple[str, dict[str, object]]]:
    return [(t, b) for t, b in c.decoded(lambda t: t.endswith("/alarms")) if isinstance(b, dict)]


def test_panic_reaches_village_township_and_group_once(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A panic from h001 arrives once on v01, t01 and g11 with every contract key."""

    async def scenario() -> None:
        config = demo_config(tmp_path, mosquitto.port)
        async with running(Gateway(config)), Collector(mosquitto.port, OUT) as probe:
            sent = time.time()
            await probe.publish("alarmgw/in/phone/h001", panic(7, ts=sent - 0.5))
            await probe.wait_for(lambda m: len(alarms(probe)) >= 3)
            await asyncio.sleep(0.3)  # anything extra would arrive now
            got = alarms(probe)
            assert sorted(t for t, _ in got) == [
                "alarmgw/out/group/g11/alarms",
                "alarmgw/out/township/t01/alarms",
                "alarmgw/out/village/v01/alarms",
            ]
            for _, body in got:
                assert body.keys() >= CONTRACT_KEYS
                assert body["alarm_id"] == "ph/h001/7"
                assert body["kind"] == "panic"
                assert body["priority"] == 1
                assert body["source"] == "phone"
                assert body["household"] == "h001"
                assert (body["village"], body["township"]) == ("v01", "t01")
                assert body["escalated"] is False
                assert body["attempt"] == 1
                assert body["event"] == {"seq": 7, "q": 1, "code": 120, "zone": 1, "part": 1}
                device_ts, ingress, dispatch = (
                    body["device_ts"], body["ingress_ts"], body["dispatch_ts"],
                )  # fmt: skip
                assert isinstance(ingress, float)
                assert isinstance(dispatch, float)
                assert device_ts == pytest.approx(sent - 0.5)
                assert sent <= ingress <= dispatch <= time.time()

    asyncio.run(scenario())


def test_json_payload_and_duplicates(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A JSON payload works like MessagePack; its retransmission is suppressed and counted."""

    async def scenario() -> None:
        registry = CollectorRegistry()
        config = demo_config(tmp_path, mosquitto.port)
        gateway = Gateway(config, registry=registry)
        async with running(gateway), Collector(mosquitto.port, OUT) as probe:
            body = json.dumps({"v": 1, "seq": 1, "ts": time.time(), "q": 1, "code": 110, "zone": 3})
            await probe.publish("alarmgw/in/phone/h015", body.encode())
            await probe.publish("alarmgw/in/phone/h015", body.encode())
            await probe.wait_for(lambda m: len(alarms(probe)) >= 3)
            await asyncio.sleep(0.3)
            got = alarms(probe)
            assert len(got) == 3
            assert {b["kind"] for _, b in got} == {"fire"}
            dup = registry.get_sample_value("alarmgw_duplicates_total", {"source": "phone"})
            assert dup == 1.0

    asyncio.run(scenario())


def test_bad_input_goes_to_the_dead_letter_and_the_gateway_carries_on(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Garbage, a missing key and an unknown household are dead-lettered with their reasons."""

    async def scenario() -> None:
        registry = CollectorRegistry()
        gateway = Gateway(demo_config(tmp_path, mosquitto.port), registry=registry)
        async with running(gateway), Collector(mosquitto.port, OUT) as probe:
            await probe.publish("alarmgw/in/phone/h001", b"\xc1garbage")
            await probe.publish("alarmgw/in/phone/h001", msgpack.packb({"v": 1, "seq": 1}))
            await probe.publish("alarmgw/in/phone/nobody", panic(1))
            await probe.publish("alarmgw/in/phone/h002", panic(1))
            await probe.wait_for(
                lambda m: (
                    len(alarms(probe)) >= 3
                    and len(probe.decoded(lambda t: t == "alarmgw/deadletter")) >= 3
                )
            )
            letters = [b for _, b in probe.decoded(lambda t: t == "alarmgw/deadletter")]
            assert [d["reason"] for d in letters] == [
                "bad_encoding",
                "missing_key",
                "unknown_device",
            ]
            assert letters[0]["raw"] == b"\xc1garbage"
            assert letters[0]["topic"] == "alarmgw/in/phone/h001"
            assert all(isinstance(d["ts"], float) for d in letters)
            rejected = registry.get_sample_value(
                "alarmgw_events_rejected_total", {"source": "phone", "reason": "unknown_device"}
            )
            assert rejected == 1.0

    asyncio.run(scenario())


def test_broker_restart_mid_stream_is_survived(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The gateway reconnects by itself after a broker restart and keeps dispatching."""

    async def scenario() -> None:
        gateway = Gateway(demo_config(tmp_path, mosquitto.port))
        async with running(gateway):
            async with Collector(mosquitto.port, OUT) as probe:
                await probe.publish("alarmgw/in/phone/h003", panic(1))
                await probe.wait_for(lambda m: len(alarms(probe)) >= 3)
            mosquitto.stop()
            await asyncio.sleep(0.5)
            mosquitto.start()
            assert gateway.link is not None
            await asyncio.wait_for(gateway.link.wait_connected(), 15)
            async with Collector(mosquitto.port, OUT) as probe:
                await probe.publish("alarmgw/in/phone/h004", panic(2))
                await probe.wait_for(lambda m: len(alarms(probe)) >= 3, within=15)
                assert {b["household"] for _, b in alarms(probe)} == {"h004"}

    asyncio.run(scenario())


def test_escalation_fires_at_the_deadline_and_stops_on_ack(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Unacknowledged, a panic reaches the bureau escalated; an acked one does not."""

    async def scenario() -> None:
        registry = CollectorRegistry()
        deadlines = {Priority.LIFE_SAFETY: 0.6, Priority.PROPERTY: 0.6}
        config = demo_config(tmp_path, mosquitto.port, deadlines=deadlines)
        gateway = Gateway(config, registry=registry)
        async with running(gateway), Collector(mosquitto.port, OUT) as probe:
            await probe.publish("alarmgw/in/phone/h005", panic(1))
            await probe.publish("alarmgw/in/phone/h006", panic(1))
            await probe.wait_for(lambda m: len(alarms(probe)) >= 6)
            ack = {"alarm_id": "ph/h006/1", "by": "operator-wang", "ts": time.time()}
            await probe.publish("alarmgw/ack/village/v01", msgpack.packb(ack))
            await probe.wait_for(
                lambda m: any(t.startswith("alarmgw/out/bureau/") for t, _ in alarms(probe))
            )
            await asyncio.sleep(1.0)  # h006's deadline passes too
            escalated = [(t, b) for t, b in alarms(probe) if b["escalated"]]
            assert [t for t, _ in escalated] == ["alarmgw/out/bureau/county/alarms"]
            body = escalated[0][1]
            assert body["alarm_id"] == "ph/h005/1"
            assert body["attempt"] == 2
            assert registry.get_sample_value("alarmgw_escalations_total") == 1.0
            ack_count = registry.get_sample_value(
                "alarmgw_ack_latency_seconds_count", {"sink_kind": "village"}
            )
            assert ack_count == 1.0

    asyncio.run(scenario())


def test_supervision_raises_and_clears_offline(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A phone silent past its timeout goes offline (trouble, retained state); return clears it."""

    async def scenario() -> None:
        config = demo_config(tmp_path, mosquitto.port, phone_timeout_s=0.6)
        async with running(Gateway(config)), Collector(mosquitto.port, OUT) as probe:
            heartbeat = panic(1, code=602)
            await probe.publish("alarmgw/in/phone/h007", heartbeat)

            def availability() -> list[object]:
                return [b for _, b in probe.decoded(lambda t: t == "alarmgw/availability/h007")]

            await probe.wait_for(lambda m: availability()[-1:] == [b"online"])
            await probe.wait_for(lambda m: availability()[-1:] == [b"offline"], within=5)
            await probe.wait_for(
                lambda m: any(b["kind"] == "device_offline" for _, b in alarms(probe))
            )
            offline = [b for _, b in alarms(probe) if b["kind"] == "device_offline"]
            assert offline[0]["stage"] == "new"
            assert offline[0]["device_id"] == "h007"
            await probe.publish("alarmgw/in/phone/h007", panic(2, code=602))
            await probe.wait_for(lambda m: availability()[-1:] == [b"online"])
            await probe.wait_for(
                lambda m: any(
                    b["kind"] == "device_offline" and b["stage"] == "restore"
                    for _, b in alarms(probe)
                )
            )

    asyncio.run(scenario())


def test_metrics_and_health_endpoints_follow_the_contract(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """/metrics carries every contract metric; /healthz and /readyz answer."""

    async def scenario() -> None:
        gateway = Gateway(demo_config(tmp_path, mosquitto.port))
        async with running(gateway), Collector(mosquitto.port, OUT) as probe:
            await probe.publish("alarmgw/in/phone/h008", panic(1))
            await probe.wait_for(lambda m: len(alarms(probe)) >= 3)
            assert gateway.http is not None
            base = f"http://127.0.0.1:{gateway.http.port}"

            def get(path: str) -> tuple[int, str]:
                try:
                    with urllib.request.urlopen(base + path, timeout=5) as response:
                        return response.status, response.read().decode()
                except urllib.error.HTTPError as error:
                    return error.code, error.read().decode()

            status, text = await asyncio.to_thread(get, "/metrics")
            assert status == 200
            for name in (
                'alarmgw_events_received_total{source="phone",transport="mqtt"} 1.0',
                "alarmgw_events_rejected_total",
                'alarmgw_duplicates_total{source="phone"} 0.0',
                'alarmgw_dispatched_total{priority="1",sink_kind="village"} 1.0',
                'alarmgw_dispatch_latency_seconds_count{sink_kind="township",source="phone"} 1.0',
                'alarmgw_device_to_dispatch_seconds_count{source="phone"} 3.0',
                "alarmgw_ack_latency_seconds",
                "alarmgw_escalations_total 0.0",
                "alarmgw_outbox_pending",
                'alarmgw_devices_online{kind="phone"} 1.0',
                f"alarmgw_gc_frozen_objects {float(gc.get_freeze_count())}",
            ):
                assert name in text, name
            assert await asyncio.to_thread(get, "/healthz") == (200, "ok\n")
            status, text = await asyncio.to_thread(get, "/readyz")
            assert status == 200
            assert "ok broker: connected" in text

    asyncio.run(scenario())


def test_embedded_broker_serves_the_demo(tmp_path: Path, free_port: int) -> None:
    """`broker = "embedded"`: the demo runs on amqtt with nothing installed."""

    async def scenario() -> None:
        config = demo_config(tmp_path, free_port)
        config = dataclasses.replace(
            config, mqtt=dataclasses.replace(config.mqtt, embedded=True, port=free_port)
        )
        gateway = Gateway(config)
        async with running(gateway), Collector(free_port, OUT) as probe:
            await probe.publish("alarmgw/in/phone/h009", panic(1))
            await probe.wait_for(lambda m: len(alarms(probe)) >= 3)
            assert gateway.link is not None
            assert not gateway.link.ack_after_handler  # MQTT 3.1.1: said at start and in /readyz

    asyncio.run(scenario())


def test_a_panic_storm_logs_within_its_budget_and_counts_the_rest(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """In a storm each kind of per-alarm line has a budget; what it holds back is
    counted in one "log lines held back" line a second, so written + held is
    every alarm, and every panic is still dispatched to all its sinks."""

    async def scenario() -> list[MutableMapping[str, Any]]:
        config = demo_config(tmp_path, mosquitto.port)
        households = [h.id for h in config.households][:20]
        with capture_logs() as logs:
            gateway = Gateway(config)
            gateway.log_budget = LogBudget(rate=0.5, burst=3.0)
            async with running(gateway), Collector(mosquitto.port, OUT) as probe:
                for seq, household in enumerate(households, start=1):
                    await probe.publish(f"alarmgw/in/phone/{household}", panic(seq))
                await probe.wait_for(lambda m: len(alarms(probe)) >= 3 * len(households))
                await asyncio.sleep(1.5)  # one summary of what was held back
                assert len({b["alarm_id"] for _, b in alarms(probe)}) == len(households)
        return logs

    logs = asyncio.run(scenario())
    accepted = [e for e in logs if e["event"] == "alarm accepted"]
    dispatched = [e for e in logs if e["event"] == "alarm dispatched"]
    held: dict[str, int] = {}
    for entry in logs:
        if str(entry["event"]).startswith("log lines held back"):
            for kind, count in entry["held"].items():
                held[kind] = held.get(kind, 0) + count
    assert 3 <= len(accepted) <= 4  # the burst, and maybe one refilled token
    assert 3 <= len(dispatched) <= 4
    assert len(accepted) + held.get("alarm accepted", 0) == 20
    assert len(dispatched) + held.get("alarm dispatched", 0) == 60
