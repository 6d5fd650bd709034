"""Interception rings end to end, on a real mosquitto (issue 14).

A listed car passes k1 (ring 1, A-class) in the demo district: the B and C
checkpoints of the rings around it (k2 on ring 1, k3 on ring 2) get a retained
`activate` order and their managing unit a staffing request. k2's unit confirms;
the gateway restarts; k3's request, still unconfirmed, climbs to the bureau once
its deadline passes, and only it; an operator ends the activation over the
request API and both checkpoints are stood down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from gateway.app import Gateway
from tests.brokers import Mosquitto
from tests.gateway.harness import Collector, demo_config, running

pytestmark = [pytest.mark.broker, pytest.mark.slow]

HIT = "wl/cp/k1/r-77"
ACTIVATION = f"ic/{HIT}"
DEADLINE_S = 1.5


def _pass(record: str, plate: str) -> bytes:
    return msgpack.packb(
        {"v": 1, "id": record, "type": "pass", "ts": time.time(), "plate": plate, "conf": 0.91,
         "lane": 2, "dir": "out"}
    )  # fmt: skip


def _bodies(probe: Collector, topic: str) -> list[Any]:
    return [body for _, body in probe.decoded(lambda t: t == topic)]


def _orders(probe: Collector, checkpoint: str) -> list[str]:
    return [b["command"] for b in _bodies(probe, f"alarmgw/out/checkpoint/{checkpoint}/commands")]


def _requests(probe: Collector, sink: str) -> list[Any]:
    return [
        b
        for b in _bodies(probe, f"alarmgw/out/{sink}/alarms")
        if str(b["alarm_id"]).startswith("ic/")
    ]


def test_a_listed_car_on_ring_1_calls_the_rings_out_and_it_survives_a_restart(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    config = demo_config(tmp_path, mosquitto.port)
    config = dataclasses.replace(
        config,
        interception=dataclasses.replace(config.interception, staff_deadline_s=DEADLINE_S),
    )

    async def scenario() -> None:
        async with Collector(mosquitto.port, ("alarmgw/out/#", "alarmgw/interception/#")) as probe:
            first = Gateway(config)
            registry = first.metrics.registry
            async with running(first):
                await probe.publish("alarmgw/in/checkpoint/k1", _pass("r-77", "苏A12345"))
                await probe.wait_for(
                    lambda m: (
                        _orders(probe, "k2") == ["activate"]
                        and _orders(probe, "k3") == ["activate"]
                        and len(_requests(probe, "station/s01")) == 2
                    )
                )
                order = _bodies(probe, "alarmgw/out/checkpoint/k3/commands")[0]
                assert order["activation_id"] == ACTIVATION
                assert order["look_for"]["plate"] == "苏A12345"
                assert (order["look_for"]["seen_at"], order["look_for"]["dir"]) == ("k1", "out")
                assert order["alarm_id"] == f"{ACTIVATION}/k3"
                assert registry.get_sample_value("alarmgw_interceptions_active") == 1.0
                started = {"trigger": "watchlist_hit"}
                assert registry.get_sample_value("alarmgw_interceptions_total", started) == 1.0
                # k2's unit confirms its post is staffed.
                ack = {"alarm_id": f"{ACTIVATION}/k2", "by": "城关所-李", "ts": time.time()}
                await probe.publish("alarmgw/ack/station/s01", msgpack.packb(ack))
                waiting = {"state": "confirmed"}
                for _ in range(100):
                    if registry.get_sample_value("alarmgw_interception_checkpoints", waiting):
                        break
                    await asyncio.sleep(0.05)
                assert registry.get_sample_value("alarmgw_interception_checkpoints", waiting) == 1
            # A restart before k3's deadline: the new instance knows the activation.
            second = Gateway(config)
            async with running(second):
                assert second.core.interception.get(ACTIVATION) is not None
                await probe.wait_for(lambda m: len(_requests(probe, "bureau/county")) >= 1)
                (climbed,) = _requests(probe, "bureau/county")
                assert (climbed["alarm_id"], climbed["escalated"]) == (f"{ACTIVATION}/k3", True)
                # The API: list it, then end it (the answer echoes the transaction).
                await probe.publish("alarmgw/interception/request/list", b"")
                end = {"activation_id": ACTIVATION, "by": "zhao", "transaction": "t-1"}
                await probe.publish("alarmgw/interception/request/end", msgpack.packb(end))
                await probe.wait_for(
                    lambda m: (
                        _orders(probe, "k2")[-1:] == ["deactivate"]
                        and _orders(probe, "k3")[-1:] == ["deactivate"]
                        and bool(_bodies(probe, "alarmgw/interception/response/end"))
                    )
                )
                (listed,) = _bodies(probe, "alarmgw/interception/response/list")
                assert [a["activation_id"] for a in listed["data"]] == [ACTIVATION]
                posts = listed["data"][0]["checkpoints"]
                assert (posts["k2"]["state"], posts["k3"]["state"]) == ("confirmed", "escalated")
                (answer,) = _bodies(probe, "alarmgw/interception/response/end")
                assert (answer["status"], answer["transaction"]) == ("ok", "t-1")
                assert answer["data"]["state"] == "ended"
                reg = second.metrics.registry
                assert reg.get_sample_value("alarmgw_interceptions_active") == 0.0
                await asyncio.sleep(DEADLINE_S)  # nothing more climbs once it has ended
            assert len(_requests(probe, "bureau/county")) == 1
            assert len(_requests(probe, "station/s01")) == 2  # each asked once, restart or not

        # The orders are retained: a checkpoint box that connects now is stood down.
        async with Collector(mosquitto.port, ("alarmgw/out/checkpoint/+/commands",)) as late:
            await late.wait_for(lambda m: len(m) >= 2)
            assert _orders(late, "k2") == ["deactivate"]
            assert _orders(late, "k3") == ["deactivate"]

    asyncio.run(scenario())


def test_a_bad_request_gets_an_answer_that_says_why(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Garbage, an unknown operation, an unknown activation: each an error response."""
    config = demo_config(tmp_path, mosquitto.port)

    async def scenario() -> None:
        responses = ("alarmgw/interception/response/#",)
        async with Collector(mosquitto.port, responses) as probe, running(Gateway(config)):
            await probe.publish("alarmgw/interception/request/end", b"\xc1 not msgpack")
            await probe.publish("alarmgw/interception/request/pause", b"{}")
            get = msgpack.packb({"activation_id": "ic/none", "transaction": 7})
            await probe.publish("alarmgw/interception/request/get", get)
            await probe.wait_for(lambda m: len(m) == 3)
        answers = {topic.rsplit("/", 1)[1]: body for topic, body in probe.decoded(lambda t: True)}
        assert {a["status"] for a in answers.values()} == {"error"}
        assert answers["end"]["error"].startswith("bad_encoding")
        assert "unknown operation 'pause'" in answers["pause"]["error"]
        assert answers["get"] == {
            "status": "error",
            "error": "no running activation 'ic/none'",
            "transaction": 7,
        }

    asyncio.run(scenario())
