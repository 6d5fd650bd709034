"""`alarmgw broker-config` at district scale: 130,000 phones, 207 checkpoints, 13,310 sinks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from config.generate import main as generate_district
from config.loader import load_config
from gateway.adapters.mqtt import MQTT_V5, MqttPublishError
from gateway.broker_config import Role
from tests.gateway.harness import panic
from tests.gateway.secured import Client, SecuredBroker, logged_in

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_district_files_are_made_in_seconds_and_mosquitto_loads_them(tmp_path: Path) -> None:
    """All 143,500 accounts hashed in well under a minute; mosquitto starts on them
    within its 10 s readiness bound; a phone chosen at random logs in and is held
    to its own topic."""
    district = tmp_path / "district"
    assert generate_district(["--out", str(district)]) == 0
    config = load_config(district / "district.toml", environ={})
    started = time.perf_counter()
    broker = SecuredBroker(tmp_path, config)  # generates the files
    took = time.perf_counter() - started
    result = broker.result
    assert result.by_role[Role.PHONE] == 130_000
    assert result.by_role[Role.CHECKPOINT] == 207
    assert result.by_role[Role.OPERATOR] == len(config.sinks)
    assert took < 60, f"broker-config took {took:.1f} s"
    loading = time.perf_counter()
    broker.start()
    try:
        loaded = time.perf_counter() - loading
        assert loaded < 10

        async def scenario() -> None:
            async with logged_in(Client(broker, "h065432", mqtt_version=MQTT_V5)) as phone:
                await phone.link.publish("alarmgw/in/phone/h065432", panic(1))
                with pytest.raises(MqttPublishError) as refused:
                    await phone.link.publish("alarmgw/in/phone/h065433", panic(1))
                assert refused.value.reason_code == 0x87
            group = config.households[65_431].group
            async with logged_in(Client(broker, f"op-group-{group}", mqtt_version=MQTT_V5)) as op:
                await op.link.publish(f"alarmgw/ack/group/{group}", b"{}")

        asyncio.run(scenario())
    finally:
        broker.kill()
    print(
        f"broker-config {took:.2f} s (hashing {result.hash_s:.2f} s); mosquitto up {loaded:.2f} s"
    )
