"""Serial ingress through the whole gateway: alarm receivers and native frames on ptys."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import time
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry

from config.model import Config, SerialPort
from gateway.app import Gateway
from protocols.contact_id import Qualifier
from protocols.frames import AckFrame, FrameDecoder, NakFrame, encode_data
from protocols.payloads import encode
from simulators.pty_driver import open_pty, run_receiver, write_all
from simulators.receiver import ReceiverStandIn, Signal
from tests.brokers import Mosquitto
from tests.gateway.harness import Collector, demo_config, panic, running

pytestmark = pytest.mark.broker

OUT = ("alarmgw/out/#", "alarmgw/deadletter", "alarmgw/availability/+")


def _with_lines(config: Config, *ports: SerialPort) -> Config:
    return dataclasses.replace(config, serial=ports)


def _alarms(probe: Collector) -> list[dict[str, object]]:
    return [b for t, b in probe.decoded(lambda t: t.endswith("/alarms")) if isinstance(b, dict)]


def test_receiver_records_are_dispatched_once_acked_and_supervised(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Receiver records become alarms; the same panic also sent over MQTT is dispatched once;
    an unknown account is ACKed and dead-lettered; garbage is NAKed; the line's heartbeat
    is supervised (online, then offline with a trouble to its township)."""

    async def scenario() -> None:
        pty = open_pty()
        registry = CollectorRegistry()
        config = _with_lines(
            demo_config(tmp_path, mosquitto.port),
            SerialPort("rx1", pty.slave_path, township="t01", receiver_timeout_s=1.5),
        )
        gateway = Gateway(config, registry=registry)
        standin = ReceiverStandIn(heartbeat_s=0.3, answer_timeout_s=1.0)
        try:
            async with running(gateway), Collector(mosquitto.port, OUT) as probe:
                # The phone h001 (account 1001) reports a panic over 4G first...
                await probe.publish("alarmgw/in/phone/h001", panic(1))
                await probe.wait_for(lambda m: len(_alarms(probe)) >= 3)
                # ...and through the receiver: the same alarm, a fire, and a stranger.
                standin.queue(Signal("1001", Qualifier.NEW, 120, 1, 1))
                standin.queue(Signal("1002", Qualifier.NEW, 110, 1, 4))
                standin.queue(Signal("9999", Qualifier.NEW, 120, 1, 1))
                standin.queue_raw(b"501100 18garbage\x14")
                await run_receiver(
                    standin,
                    pty.master_fd,
                    duration_s=8,
                    stop_when=lambda s: s.idle and s.stats.heartbeats_acked >= 2,
                )
                await probe.wait_for(lambda m: len(_alarms(probe)) >= 6)
                await asyncio.sleep(0.3)
                kinds = sorted((b["household"], b["kind"]) for b in _alarms(probe))
                assert kinds == [("h001", "panic")] * 3 + [("h002", "fire")] * 3
                stats = standin.stats
                assert stats.acked == 3  # panic, fire, and the unknown account (ACKed)
                assert stats.naks >= 1  # the garbage record, every time it is sent
                letters = [b for _, b in probe.decoded(lambda t: t == "alarmgw/deadletter")]
                reasons = sorted(d["reason"] for d in letters)
                assert "unknown_account" in reasons
                assert any(r.startswith("bad_") for r in reasons)
                duplicates = registry.get_sample_value(
                    "alarmgw_duplicates_total", {"source": "phone"}
                )
                assert duplicates == 1.0
                # The line goes silent: offline availability and a trouble to t01.
                await probe.wait_for(
                    lambda m: any(
                        b["kind"] == "device_offline" and b["device_id"] == "rx1"
                        for b in _alarms(probe)
                    ),
                    within=6,
                )

                def states() -> list[object]:
                    return [b for _, b in probe.decoded(lambda t: t == "alarmgw/availability/rx1")]

                await probe.wait_for(lambda m: states()[-1:] == [b"offline"])
                assert states()[0] == b"online"
                offline = [b for b in _alarms(probe) if b["kind"] == "device_offline"]
                assert offline[0]["township"] == "t01"
        finally:
            pty.close()

    asyncio.run(scenario())


def test_native_frames_are_acked_after_acceptance(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A base station's frames: ACK per seq for accepted events, NAK REFUSED for an
    unknown device, nothing for a corrupted frame; the events are dispatched."""

    async def scenario() -> None:
        pty = open_pty()
        config = _with_lines(
            demo_config(tmp_path, mosquitto.port),
            SerialPort("bus1", pty.slave_path, protocol="native"),
        )
        now = time.time()
        good = encode(
            {"v": 1, "kind": "phone", "device": "h020", "seq": 4, "ts": now, "q": 1,
             "code": 100, "zone": 2}
        )  # fmt: skip
        stranger = encode(
            {"v": 1, "kind": "phone", "device": "nobody", "seq": 1, "ts": now, "q": 1,
             "code": 120, "zone": 1}
        )  # fmt: skip
        corrupted = bytearray(encode_data(3, good))
        corrupted[8] ^= 0x10
        try:
            async with running(Gateway(config)), Collector(mosquitto.port, OUT) as probe:
                await write_all(pty.master_fd, encode_data(1, good) + encode_data(2, stranger))
                await write_all(pty.master_fd, bytes(corrupted))
                decoder = FrameDecoder()
                answers: list[object] = []
                with anyio.fail_after(5):
                    while len(answers) < 2:
                        await anyio.wait_readable(pty.master_fd)
                        answers.extend(decoder.receive_data(os.read(pty.master_fd, 4096)))
                assert answers[0] == AckFrame(1)
                assert isinstance(answers[1], NakFrame)
                assert (answers[1].seq, answers[1].code) == (2, 1)
                await probe.wait_for(lambda m: len(_alarms(probe)) >= 3)
                assert {b["kind"] for b in _alarms(probe)} == {"medical"}
                await asyncio.sleep(0.3)
                # The corrupted frame got no answer at all.
                with pytest.raises(BlockingIOError):
                    os.read(pty.master_fd, 4096)
                states = [b for _, b in probe.decoded(lambda t: t == "alarmgw/availability/bus1")]
                assert states == [b"online"]
        finally:
            pty.close()

    asyncio.run(scenario())


def test_line_noise_never_dispatches_a_wrong_event(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """With 1 % of the receiver's bytes hit on a 7E1 line, every event is delivered,
    once, and nothing that was not sent is ever dispatched."""

    async def scenario() -> None:
        pty = open_pty()
        config = _with_lines(
            demo_config(tmp_path, mosquitto.port),
            SerialPort("rx1", pty.slave_path, parity="E", bytesize=7, township="t01"),
        )
        standin = ReceiverStandIn(
            heartbeat_s=5.0, answer_timeout_s=0.5, corrupt_rate=0.01, rng=random.Random(7)
        )
        expected = set()
        for n in range(1, 61):
            zone = n % 7 + 1
            standin.queue(Signal(f"{1000 + n}", Qualifier.NEW, 130, 1, zone))
            expected.add((f"h{n:03d}", zone))
        try:
            async with running(Gateway(config)), Collector(mosquitto.port, OUT) as probe:
                await run_receiver(standin, pty.master_fd, duration_s=25, stop_when=_drained)
                assert standin.stats.corrupted > 0  # the noise really happened
                await probe.wait_for(lambda m: len(_alarms(probe)) >= 2 * len(expected))
                await asyncio.sleep(0.3)
                got = _alarms(probe)
                assert len(got) == 2 * len(expected)  # village and township, once each
                seen = {(b["household"], b["event"]["zone"]) for b in got}  # type: ignore[index]
                assert seen == expected
                assert {(b["kind"], b["event"]["code"]) for b in got} == {("burglary", 130)}  # type: ignore[index]
        finally:
            pty.close()

    asyncio.run(scenario())


def _drained(standin: ReceiverStandIn) -> bool:
    return standin.idle and standin.stats.acked >= 60
