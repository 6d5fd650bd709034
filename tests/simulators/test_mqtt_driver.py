"""The MQTT driver and `alarmgw sim` against a real mosquitto, and a fake gateway for --wait.

Every broker test runs its scenario with `asyncio.run` and bounded waits. The
`--wait` tests run the command in a worker thread (it owns its event loop, as
on a technician's laptop) while a fake gateway in the test's loop turns each
ingress message into dispatches on the alarms topics, as the contract says
the real one does (CONTRACT.md, "Egress").
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from config.loader import load_config
from config.model import Config
from gateway.adapters.embedded_broker import EmbeddedBroker
from protocols.payloads import PhoneMessage, deadletter_payload, decode_phone, encode
from protocols.reasons import Rejected
from protocols.topics import Topics
from simulators import cli
from simulators.mqtt_driver import (
    MQTT_V5,
    MQTT_V311,
    BrokerAddress,
    MqttSimError,
    Reporter,
    SimClient,
    drive,
    format_rate,
)
from simulators.scenario import PhoneScenario, Send, expected_sinks, stream
from tests.brokers import Mosquitto, free_port

pytestmark = pytest.mark.broker

DEMO = Path(__file__).resolve().parents[2] / "config" / "examples" / "demo.toml"
TOPICS = Topics()
BOUND_S = 10.0


@pytest.fixture(scope="module")
def demo() -> Config:
    """The demo deployment."""
    return load_config(DEMO)


def address(broker: Mosquitto) -> BrokerAddress:
    """The test broker as the driver addresses it."""
    return BrokerAddress("127.0.0.1", broker.port)


def url(broker: Mosquitto) -> str:
    """The test broker as a --broker URL."""
    return f"mqtt://127.0.0.1:{broker.port}"


async def listening(
    broker: BrokerAddress, filters: Sequence[str], heard: list[tuple[str, bytes]]
) -> SimClient:
    """A connected, subscribed listener that appends what it hears."""
    listener = SimClient(
        broker,
        "test-listener",
        on_message=lambda topic, payload, _at: heard.append((topic, payload)),
    )
    await listener.connect()
    await listener.subscribe(filters)
    return listener


async def until(condition: Callable[[], bool], timeout_s: float = BOUND_S) -> None:
    """Wait, bounded, until `condition` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def phone_sends(households: Sequence[str], count: int, start: float) -> list[Send]:
    """A short phone scenario, all due at once."""
    scenario = PhoneScenario(
        TOPICS, households, ["panic", "heartbeat"], start=start, count=count, interval=0.0
    )
    return list(stream(scenario, seed=1))


# ------------------------------------------------------------------ the driver


def test_a_phone_scenario_arrives_complete_and_in_order(mosquitto: Mosquitto) -> None:
    """Every send arrives on its ingress topic, byte for byte, in the order sent."""

    async def scenario() -> None:
        heard: list[tuple[str, bytes]] = []
        broker = address(mosquitto)
        listener = await listening(broker, ["alarmgw/in/phone/+"], heard)
        sends = phone_sends(["h001", "h002", "h003"], 20, time.time())
        async with SimClient(broker, "test-publisher") as client:
            assert client.version == MQTT_V5
            report = await drive(sends, client)
        await until(lambda: len(heard) >= len(sends))
        await listener.close()
        assert heard == [(s.topic, s.payload) for s in sends]
        assert report.sent == len(sends) == 120
        assert report.unacked == 0
        assert report.not_connected == 0
        assert report.by_event == {"panic": 60, "heartbeat": 60}
        assert report.payload_bytes == sum(len(s.payload) for s in sends)
        assert client.acked == 120

    asyncio.run(scenario())


def test_in_flight_publishes_stay_within_the_broker_window(mosquitto: Mosquitto) -> None:
    """A burst never exceeds the CONNACK Receive Maximum (mosquitto: 20), and all is acked."""

    async def scenario() -> None:
        async with SimClient(address(mosquitto), "test-window") as client:
            assert client.window == 19
            peak = 0
            for n in range(400):
                assert await client.publish("alarmgw/test", b"%d" % n)
                peak = max(peak, client.inflight)
            assert peak <= client.window
            assert await client.drain(BOUND_S) == 0
            assert client.published == client.acked == 400

    asyncio.run(scenario())


def test_late_sends_are_sent_and_reported_late(mosquitto: Mosquitto) -> None:
    """Open loop: sends due in the past go out at once and count as late."""

    async def scenario() -> None:
        sends = phone_sends(["h001"], 5, time.time() - 10.0)
        async with SimClient(address(mosquitto), "test-late") as client:
            report = await drive(sends, client)
        assert report.sent == 10
        assert report.late == 10
        assert report.late_max_s >= 10.0
        assert "late 10" in report.summary()

    asyncio.run(scenario())


def test_stop_ends_a_run_early(mosquitto: Mosquitto) -> None:
    """A set stop event ends the drive before the next send, marked interrupted."""

    async def scenario() -> None:
        scenario_ = PhoneScenario(
            TOPICS, ["h001"], ["heartbeat"], start=time.time() + 3600, count=5
        )
        stop = asyncio.Event()
        stop.set()
        async with SimClient(address(mosquitto), "test-stop") as client:
            report = await drive(stream(scenario_, seed=1), client, stop=stop)
        assert report.interrupted
        assert report.sent == 0
        assert "interrupted" in report.summary()

    asyncio.run(scenario())


def test_sends_while_the_broker_is_down_are_counted_not_lost_silently(
    mosquitto: Mosquitto,
) -> None:
    """With the broker gone, sends are counted as not sent and the run still ends."""

    async def scenario() -> None:
        client = SimClient(address(mosquitto), "test-down")
        await client.connect()
        mosquitto.kill()
        await until(lambda: not client.connected)
        report = await drive(phone_sends(["h001"], 3, time.time()), client, drain_timeout_s=0.5)
        await client.close()
        assert report.sent == 0
        assert report.not_connected == 6
        assert "NOT SENT" in report.summary()

    asyncio.run(scenario())


def test_nobody_listening_is_a_clear_error() -> None:
    """Connection refused is an MqttSimError naming the broker."""

    async def scenario() -> None:
        port = free_port()
        with pytest.raises(MqttSimError, match=f"127.0.0.1:{port}"):
            await SimClient(BrokerAddress("127.0.0.1", port), "test-refused").connect()

    asyncio.run(scenario())


def test_a_silent_broker_times_out_on_both_protocols() -> None:
    """No CONNACK for MQTT 5 nor 3.1.1 within the timeout: an error that says so."""

    async def scenario() -> None:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            broker = BrokerAddress("127.0.0.1", server.getsockname()[1])
            client = SimClient(broker, "test-silent", connect_timeout_s=0.3)
            with pytest.raises(MqttSimError, match=r"MQTT 5: .*; MQTT 3\.1\.1: "):
                await client.connect()

    asyncio.run(scenario())


def test_falls_back_to_mqtt_311_on_the_embedded_broker() -> None:
    """amqtt refuses MQTT 5; the simulator speaks 3.1.1 to it and everything arrives."""

    async def scenario() -> None:
        async with EmbeddedBroker() as embedded:
            broker = BrokerAddress("127.0.0.1", embedded.port)
            heard: list[tuple[str, bytes]] = []
            listener = await listening(broker, ["alarmgw/in/phone/+"], heard)
            sends = phone_sends(["h001", "h002"], 5, time.time())
            async with SimClient(broker, "test-amqtt", connect_timeout_s=2.0) as client:
                assert client.version == MQTT_V311
                report = await drive(sends, client)
            await until(lambda: len(heard) >= len(sends))
            await listener.close()
            assert report.unacked == 0
            assert heard == [(s.topic, s.payload) for s in sends]

    asyncio.run(scenario())


# ------------------------------------------------------------------ reporting


def test_plain_reporter_prints_stats_every_so_often() -> None:
    """Without a terminal, the stats line is printed at most every `every_s` seconds."""
    now = [0.0]
    out = io.StringIO()
    reporter = Reporter(out, every_s=5.0, clock=lambda: now[0])
    assert not reporter.live
    reporter.print("a send")
    reporter.status("stats 1")
    now[0] = 6.0
    reporter.status("stats 2")
    reporter.status("stats 3")
    reporter.status("final", force=True)
    reporter.close()
    assert out.getvalue() == "a send\nstats 2\nfinal\n"


def test_live_reporter_prints_lines_through_rich() -> None:
    """On a terminal the stats line is a rich live line; printed lines still appear."""
    out = io.StringIO()
    with Reporter(out, live=True) as reporter:
        assert reporter.live
        reporter.print("苏A12345 pass")
        reporter.status("sent 1")
    assert "苏A12345 pass" in out.getvalue()


def test_rates_read_well() -> None:
    """Rates: one decimal when small, thousands separators when large, '-' at time zero."""
    assert format_rate(5, 2.0) == "2.5/s"
    assert format_rate(123_456, 10.0) == "12,346/s"
    assert format_rate(5, 0.0) == "-"


# ------------------------------------------------------------------ --wait, with a fake gateway


class FakeGateway:
    """Dispatches each phone event to the sinks the config routes it to, or dead-letters it.

    `drop` sinks are never dispatched to, to make a `--wait` fail.
    """

    def __init__(self, config: Config, broker: BrokerAddress, drop: frozenset[str]) -> None:
        self.config = config
        self.broker = broker
        self.drop = drop
        self.queue: asyncio.Queue[tuple[str, bytes, float]] = asyncio.Queue()
        self.ready = threading.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set."""
        inbound = SimClient(
            self.broker,
            "fake-gateway-in",
            on_message=lambda topic, payload, at: self.queue.put_nowait((topic, payload, at)),
        )
        outbound = SimClient(self.broker, "fake-gateway-out")
        await inbound.connect()
        await outbound.connect()
        await inbound.subscribe(["alarmgw/in/phone/+"])
        self.ready.set()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    topic, payload, at = await asyncio.wait_for(self.queue.get(), 0.1)
                    await self.handle(outbound, topic, payload, at)
        finally:
            await inbound.close()
            await outbound.close()

    async def handle(self, outbound: SimClient, topic: str, payload: bytes, at: float) -> None:
        """One ingress message: dead letter, or one dispatch per routed sink."""
        household = topic.rsplit("/", 1)[1]
        message = decode_phone(household, payload)
        if isinstance(message, Rejected):
            body = deadletter_payload(message, topic, at)
            await outbound.publish(TOPICS.deadletter, encode(body))
            return
        assert isinstance(message, PhoneMessage)
        for sink in expected_sinks(self.config, household, message.code):
            if sink in self.drop:
                continue
            kind, sink_id = sink.split("/")
            body = {
                "v": 1,
                "alarm_id": f"ph/{household}/{message.seq}",
                "source": "phone",
                "household": household,
                "device_ts": message.ts,
                "ingress_ts": at,
                "dispatch_ts": time.time(),
                "attempt": 1,
                "escalated": False,
                "event": {"seq": message.seq, "q": message.q, "code": message.code},
            }
            await outbound.publish(TOPICS.alarms(kind, sink_id), encode(body))


def run_with_gateway(
    config: Config, broker: Mosquitto, argv: list[str], drop: frozenset[str] = frozenset()
) -> tuple[int, str, str]:
    """Run `alarmgw sim ...` in a thread while a fake gateway serves; (exit, out, err)."""
    gateway = FakeGateway(config, address(broker), drop)
    out, err = io.StringIO(), io.StringIO()

    async def scenario() -> int:
        stop = asyncio.Event()
        serving = asyncio.ensure_future(gateway.run(stop))
        await until(gateway.ready.is_set)
        try:
            return await asyncio.to_thread(cli.main, argv, out=out, err=err)
        finally:
            stop.set()
            await serving

    code = asyncio.run(scenario())
    return code, out.getvalue(), err.getvalue()


def phone_argv(broker: Mosquitto, *extra: str) -> list[str]:
    """`alarmgw sim phone` against the test broker."""
    return ["sim", "phone", "--config", str(DEMO), "--broker", url(broker), "--seed", "1", *extra]


def test_wait_prints_every_sink_and_hop(demo: Config, mosquitto: Mosquitto) -> None:
    """--wait reports each expected sink with device, ingress, dispatch and here; exit 0."""
    code, out, err = run_with_gateway(
        demo,
        mosquitto,
        phone_argv(
            mosquitto,
            "--household",
            "h001,h012",
            "--event",
            "panic,tamper,heartbeat",
            "--interval",
            "0.1",
            "--duplicate",
            "1",
            "--wait",
        ),
    )
    assert code == 0, out + err
    assert "panic h001" in out
    assert out.count("reached 3/3 sinks") == 2
    assert out.count("reached 1/1 sinks") == 2
    for sink in ("village/v01", "township/t01", "group/g11", "group/g12"):
        assert sink in out
    assert "device→ingress" in out
    assert "dispatch→here" in out
    assert "not dispatched (periodic test" in out
    assert "[duplicate]" in out
    assert "wait: all 6 event(s) arrived where they should" in out


def test_wait_fails_when_a_sink_never_gets_it(demo: Config, mosquitto: Mosquitto) -> None:
    """A sink that never receives the alarm is named, and the exit code is 1."""
    code, out, _ = run_with_gateway(
        demo,
        mosquitto,
        phone_argv(
            mosquitto, "--household", "h001", "--event", "fire", "--wait", "--wait-timeout", "1"
        ),
        drop=frozenset({"group/g11"}),
    )
    assert code == 1
    assert "reached 2/3 sinks" in out
    assert "group/g11" in out
    assert "MISSING" in out
    assert "did not arrive everywhere within 1 s" in out


def test_wait_expects_corrupted_sends_in_the_dead_letter(
    demo: Config, mosquitto: Mosquitto
) -> None:
    """A corrupted send is matched to its dead letter, not to a dispatch."""
    code, out, err = run_with_gateway(
        demo,
        mosquitto,
        phone_argv(
            mosquitto,
            "--household",
            "h003",
            "--event",
            "burglary",
            "--corrupt",
            "1",
            "--format",
            "json",
            "--wait",
        ),
    )
    assert code == 0, out + err
    assert "[corrupt]: dead-lettered (bad_encoding), as it should be" in out


def test_wait_without_a_gateway_times_out_clearly(mosquitto: Mosquitto) -> None:
    """Nobody dispatches: a clear timeout message and exit 1."""
    out, err = io.StringIO(), io.StringIO()
    argv = phone_argv(
        mosquitto, "--household", "h001", "--event", "panic", "--wait", "--wait-timeout", "0.5"
    )
    assert cli.main(argv, out=out, err=err) == 1
    assert "MISSING: nothing within 0.5 s" in out.getvalue()
    assert "Is the gateway running" in out.getvalue()


def test_checkpoint_and_district_commands_publish(mosquitto: Mosquitto) -> None:
    """`sim checkpoint` and `sim district` publish contract records and exit 0."""

    async def scenario() -> list[tuple[str, bytes]]:
        heard: list[tuple[str, bytes]] = []
        listener = await listening(address(mosquitto), ["alarmgw/in/#"], heard)
        base = ["--config", str(DEMO), "--broker", url(mosquitto), "--seed", "3"]
        for argv in (
            ["sim", "checkpoint", *base, "--all", "--duration", "1", "--rate-scale", "20"],
            ["sim", "district", *base, "--speed", "40", "--duration", "1"],
        ):
            out, err = io.StringIO(), io.StringIO()
            code = await asyncio.to_thread(cli.main, argv, out=out, err=err)
            assert code == 0, out.getvalue() + err.getvalue()
            assert "sent " in out.getvalue()
        await asyncio.sleep(0.2)
        await listener.close()
        return heard

    heard = asyncio.run(scenario())
    topics = {topic.rsplit("/", 2)[1] for topic, _ in heard}
    assert topics == {"checkpoint", "phone"}


# ------------------------------------------------------------------ the command line, offline


def dry_run(*extra: str) -> tuple[int, str, str]:
    """`alarmgw sim ... --dry-run` with a fixed seed and start."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        [*extra, "--config", str(DEMO), "--dry-run", "--seed", "7", "--start", "1700000000"],
        out=out,
        err=err,
    )
    return code, out.getvalue(), err.getvalue()


def test_dry_run_is_reproducible() -> None:
    """The same seed and start print the same sends, without a broker."""
    for command in (
        ["sim", "phone", "--all", "--event", "panic,restore", "--spread", "1", "--corrupt", "0.1"],
        ["sim", "checkpoint", "--all", "--duration", "30", "--clock-skew", "k1=60"],
        ["sim", "district", "--speed", "50", "--duration", "5", "--duplicate", "0.1"],
    ):
        first, again = dry_run(*command), dry_run(*command)
        assert first == again
        code, out, _ = first
        assert code == 0
        assert "seed 7" in out
        assert out.count("\n") > 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sim", "phone", "--household", "nobody"], "unknown household"),
        (["sim", "phone", "--household", "h001", "--event", "bogus"], "unknown phone event"),
        (["sim", "phone", "--household", "h001", "--zone", "1000"], "zone"),
        (["sim", "checkpoint", "--checkpoint", "k9"], "unknown checkpoint"),
        (["sim", "checkpoint", "--all", "--duration", "0"], "--dry-run needs a --duration"),
        (["sim", "phone", "--household", "h001", "--silence", "@5"], "names no device"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unknown ids and events, bad values: a message and exit code 2."""
    code, out, err = dry_run(*argv)
    assert code == 2
    assert message in out + err + capsys.readouterr().err  # argparse writes to sys.stderr


def test_config_problems_exit_2(tmp_path: Path) -> None:
    """A broken deployment file is refused with its problems, exit 2."""
    broken = tmp_path / "broken.toml"
    broken.write_text("[district]\nid = 'x'\nbogus = 1\n", encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        ["sim", "phone", "--config", str(broken), "--all", "--dry-run"], out=out, err=err
    )
    assert code == 2
    assert "refusing configuration" in err.getvalue()
    code = cli.main(
        ["sim", "phone", "--config", str(DEMO), "--all", "--broker", "http://x"], out=out, err=err
    )
    assert code == 2
    assert "--broker" in err.getvalue()


@pytest.mark.parametrize("device", ["phone", "checkpoint", "district", "receiver"])
def test_help_reads_like_a_field_manual(device: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every --help has a description and examples."""
    assert cli.main(["sim", device, "--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text
    assert f"alarmgw sim {device}" in text


def test_receiver_command_over_a_pty(capsys: pytest.CaptureFixture[str]) -> None:
    """`sim receiver --pty` prints its port and sends each event until acknowledged, exit 0."""
    out, err = io.StringIO(), io.StringIO()
    argv = [
        "sim", "receiver", "--config", str(DEMO), "--pty", "--household", "h001,h002",
        "--event", "panic,restore", "--seed", "1",
    ]  # fmt: skip
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(cli.main(argv, out=out, err=err)))
    worker.start()
    records: list[bytes] = []
    deadline = time.monotonic() + BOUND_S
    fd = -1
    try:
        while "/dev/pts/" not in out.getvalue():
            assert time.monotonic() < deadline, err.getvalue()
            time.sleep(0.01)
        path = out.getvalue().split(" on ", 1)[1].split(":", 1)[0]
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        buffer = b""
        while worker.is_alive() and time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], 0.05)
            if not readable:
                continue
            with contextlib.suppress(BlockingIOError, OSError):
                buffer += os.read(fd, 1024)
            while b"\x14" in buffer:
                record, buffer = buffer.split(b"\x14", 1)
                records.append(record)
                os.write(fd, b"\x06")  # ACK: stored
    finally:
        worker.join(BOUND_S)
        if fd >= 0:
            os.close(fd)
    assert result == [0], out.getvalue() + err.getvalue() + capsys.readouterr().err
    assert records == [
        b"501100 181001E12001001",
        b"501100 181001R12001001",
        b"501100 181002E12001001",
        b"501100 181002R12001001",
    ]
    assert "acked 4" in out.getvalue()
