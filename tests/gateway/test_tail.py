"""`alarmgw tail`: the board folds copies, the keys map to acks, and against a real
gateway the view shows a dispatched alarm and its acknowledgement reaches the gateway."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import io
import json
import os
import re
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from rich.console import Console

import gateway.tail as tail_module
from gateway.app import Gateway
from gateway.core.alarms import AlarmState
from gateway.tail import (
    AckAction,
    AlarmBoard,
    Controls,
    QuitAction,
    Update,
    add_tail_parser,
    json_record,
    parse_sink,
    plain_line,
    render,
    run_tail,
)
from protocols.topics import Topics
from tests.brokers import Mosquitto
from tests.gateway.harness import demo_config, eventually, panic, running

ROOT = Path(__file__).resolve().parents[2]
TOPICS = Topics("alarmgw")
UP, DOWN = b"\x1b[A", b"\x1b[B"


def _alarm(alarm_id: str = "ph/h001/1", **changes: object) -> bytes:
    body: dict[str, object] = {
        "v": 1, "alarm_id": alarm_id, "source": "phone", "kind": "panic", "priority": 1,
        "device_id": "h001", "household": "h001", "group": "g11", "village": "v01",
        "township": "t01", "device_ts": 100.0, "ingress_ts": 100.25, "dispatch_ts": 100.5,
        "attempt": 1, "escalated": False, "event": {"seq": 1, "code": 120},
    }  # fmt: skip
    body.update(changes)
    return msgpack.packb(body)


def _update(board: AlarmBoard, sink: str, payload: bytes, at: float = 101.0) -> Update | None:
    return board.message(f"alarmgw/out/{sink}/alarms", payload, at)


# ------------------------------------------------------------------ the board


def test_copies_of_one_alarm_fold_into_one_row_with_every_sink() -> None:
    """The same alarm_id at three sinks is one row listing the three, once."""
    board = AlarmBoard(TOPICS)
    first = _update(board, "village/v01", _alarm())
    assert first is not None
    assert first.what == "new"
    second = _update(board, "township/t01", _alarm(dispatch_ts=100.6), at=101.5)
    assert second is not None
    assert second.what == "copy"
    _update(board, "township/t01", _alarm())  # a redelivery changes nothing
    (row,) = board.rows()
    assert row.sinks == ("village/v01", "township/t01")
    assert row.number == 1
    assert row.device_to_ingress_s == pytest.approx(0.25)
    assert row.ingress_to_dispatch_s == pytest.approx(0.25)
    assert row.dispatch_to_received_s == pytest.approx(0.5)  # the first copy's


def test_an_escalated_copy_marks_the_row_escalated_with_its_attempt() -> None:
    """An escalation is reported once as `escalated` and raises the attempt shown."""
    board = AlarmBoard(TOPICS)
    _update(board, "village/v01", _alarm())
    update = _update(board, "bureau/county", _alarm(escalated=True, attempt=2))
    assert update is not None
    assert update.what == "escalated"
    row = update.row
    assert (row.escalated, row.attempt, row.sinks[-1]) == (True, 2, "bureau/county")
    again = _update(board, "station/s01", _alarm(escalated=True, attempt=2))
    assert again is not None
    assert again.what == "copy"


def test_rows_are_newest_first_numbered_stably_and_bounded() -> None:
    """Numbers follow arrival and never move; the oldest rows leave a full board."""
    board = AlarmBoard(TOPICS, capacity=3)
    for n in range(1, 6):
        _update(board, "village/v01", _alarm(f"ph/h001/{n}"))
    assert [row.number for row in board.rows()] == [5, 4, 3]
    assert board.by_number(1) is None
    row = board.by_number(4)
    assert row is not None
    assert row.alarm_id == "ph/h001/4"
    assert len(board) == 3


def test_availability_state_and_garbage() -> None:
    """Retained availability and gateway state are kept; unreadable messages are counted."""
    board = AlarmBoard(TOPICS)
    board.message("alarmgw/availability/h001", b"online", 1.0)
    board.message("alarmgw/availability/k2", b"offline", 1.0)
    board.message("alarmgw/availability/h002", b"online", 1.0)
    board.message("alarmgw/state", b"online", 1.0)
    assert board.devices() == (2, ["k2"])
    assert board.gateway_state == "online"
    assert _update(board, "village/v01", b"\xc1garbage") is None
    assert _update(board, "village/v01", msgpack.packb({"kind": "panic"})) is None
    assert board.message("alarmgw/out/village/alarms", _alarm(), 1.0) is None
    assert board.unreadable == 3
    assert len(board) == 0


def test_json_payloads_and_missing_times_are_shown_without_latency() -> None:
    """A JSON alarm is read too; a hop whose times are missing has no latency."""
    board = AlarmBoard(TOPICS)
    fields = {"alarm_id": "gw/offline/k2", "priority": 3, "kind": "device_offline",
              "checkpoint": "k2", "device_ts": None, "ingress_ts": 5.0}  # fmt: skip
    body = json.dumps(fields).encode()
    update = _update(board, "unit/s01", body)
    assert update is not None
    assert update.row.device_to_ingress_s is None
    assert update.row.ingress_to_dispatch_s is None
    assert "gw/offline/k2" in plain_line(update)


def test_mark_acked() -> None:
    """A confirmed ack marks the row with who, when and where."""
    board = AlarmBoard(TOPICS)
    _update(board, "village/v01", _alarm())
    row = board.mark_acked("ph/h001/1", "li", 200.0, "village/v01")
    assert row is not None
    assert (row.acked, row.acked_by, row.acked_sink) == (True, "li", "village/v01")
    assert board.unacknowledged == 0
    assert board.mark_acked("nope", "li", 200.0, "village/v01") is None


@given(topic=st.text(max_size=60), payload=st.binary(max_size=200))
def test_the_board_takes_any_message(topic: str, payload: bytes) -> None:
    """Whatever arrives, the board never raises."""
    board = AlarmBoard(TOPICS)
    board.message(topic, payload, 0.0)
    board.message("alarmgw/out/village/v01/alarms", payload, 0.0)


# ------------------------------------------------------------------ the keys


def test_arrows_select_and_a_acknowledges_the_selected_row() -> None:
    """↓ selects the newest, ↓ again the next; a acknowledges the selected row."""
    keys = Controls()
    numbers = [3, 2, 1]
    assert keys.feed(DOWN, numbers) == []
    assert keys.selected == 3
    keys.feed(DOWN + DOWN + DOWN, numbers)
    assert keys.selected == 1
    keys.feed(UP + b"k", numbers)
    assert keys.selected == 3
    assert keys.feed(b"a", numbers) == [AckAction(number=3)]


def test_a_typed_number_then_a_acknowledges_that_row() -> None:
    """`12a` acknowledges #12; Enter after a number selects it; Backspace edits."""
    keys = Controls()
    assert keys.feed(b"13\x7f2a", [12, 11]) == [AckAction(number=12)]
    keys.feed(b"11\r", [12, 11])
    assert keys.selected == 11
    keys.feed(b"99\r", [12, 11])
    assert "no alarm #99" in keys.message


def test_a_without_selection_says_what_to_do() -> None:
    """Pressing a with nothing selected acknowledges nothing and explains."""
    keys = Controls()
    assert keys.feed(b"a", [1]) == []
    assert "select" in keys.message


def test_command_line_ack_and_quit() -> None:
    """`:ack 7`, `:ack ALARM_ID` and `:q`; Esc leaves the command line; q quits."""
    keys = Controls()
    assert keys.feed(b":ack 7\r", [7]) == [AckAction(number=7)]
    assert keys.feed(b":ack ph/h001/5\r", [7]) == [AckAction(alarm_id="ph/h001/5")]
    assert keys.feed(b":nonsense\r", [7]) == []
    assert "unknown command" in keys.message
    assert keys.feed(b":ack 7\x1b", [7]) == []
    assert keys.command is None
    assert keys.feed(b":q\r", []) == [QuitAction()]
    assert keys.feed(b"q", []) == [QuitAction()]


@given(data=st.lists(st.binary(max_size=12), max_size=10))
def test_any_keys_never_raise(data: list[bytes]) -> None:
    """Whatever the terminal sends, the controls carry on."""
    keys = Controls()
    for chunk in data:
        keys.feed(chunk, [3, 2, 1])


# ------------------------------------------------------------------ output


def test_render_shows_the_row_hops_escalation_and_availability() -> None:
    """The screen has the alarm, its sinks, hop latencies, escalation and the footer."""
    board = AlarmBoard(TOPICS)
    _update(board, "village/v01", _alarm())
    _update(board, "bureau/county", _alarm(escalated=True, attempt=2))
    board.message("alarmgw/availability/k2", b"offline", 1.0)
    board.message("alarmgw/state", b"online", 1.0)
    console = Console(file=io.StringIO(), width=240, record=True, color_system=None)
    console.print(render(board, Controls(), title="test view", connected=True))
    text = console.export_text()
    assert "ph/h001/1" in text
    assert "village/v01, bureau/county" in text
    assert "↑ 2" in text
    assert "250" in text  # device→ingress and ingress→dispatch, ms
    assert "1 offline (k2)" in text
    assert "gateway online" in text


def test_json_record_has_the_hop_latencies_in_ms() -> None:
    """`--json` lines carry the contract's times and each hop in milliseconds."""
    board = AlarmBoard(TOPICS)
    update = _update(board, "village/v01", _alarm())
    assert update is not None
    record = json_record(update)
    assert record["alarm_id"] == "ph/h001/1"
    assert record["device_to_ingress_ms"] == 250.0
    assert record["dispatch_to_received_ms"] == 500.0
    assert record["sinks"] == ["village/v01"]


def test_hits_and_staffing_requests_say_what_to_look_for() -> None:
    """A watchlist hit shows its plate (read and listed); an interception's staffing
    request the checkpoint, its ring, the plate and until when, in every view."""
    board = AlarmBoard(TOPICS)
    hit = _alarm(
        "wl/cp/k1/r-1",
        kind="watchlist_hit",
        priority=1,
        event={"plate": "苏A1234S", "listed_plate": "苏A12345", "reason": "stolen"},
    )
    update = _update(board, "township/t01", hit)
    assert update is not None
    assert update.row.detail == "苏A1234S → 苏A12345 (stolen)"
    request = _alarm(
        "ic/wl/cp/k1/r-1/k3",
        kind="interception",
        priority=2,
        household=None,
        checkpoint="k3",
        event={"checkpoint": "k3", "ring": 2, "look_for": {"plate": "苏A12345"}, "until": 160.0},
    )
    update = _update(board, "station/s01", request)
    assert update is not None
    assert update.row.detail.startswith("staff k3 (ring 2): 苏A12345 until ")
    assert f"[{update.row.detail}]" in plain_line(update)
    assert json_record(update)["detail"] == update.row.detail
    console = Console(file=io.StringIO(), width=240, record=True, color_system=None)
    console.print(render(board, Controls(), title="test view", connected=True))
    assert "staff k3 (ring 2)" in console.export_text()
    assert _update(board, "village/v01", _alarm("ph/h001/2")).row.detail == ""  # type: ignore[union-attr]


def test_parse_sink() -> None:
    """KIND/ID with valid ids; anything else is an argparse error."""
    assert parse_sink("township/t01") == ("township", "t01")
    for bad in ("township", "a/b/c", "/x", "x/"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_sink(bad)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_tail_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["tail", *argv])


def test_ack_needs_a_sink() -> None:
    """`--ack` without `--sink` is a usage error (exit 2)."""
    err = io.StringIO()
    assert run_tail(_args("--ack", "ph/h001/1"), io.StringIO(), err) == 2
    assert "--sink" in err.getvalue()


def test_an_operator_logs_in_with_their_own_account(tmp_path: Path) -> None:
    """--username, --password-file (first line) and --tls-ca override the config's:
    a console on a secured broker logs in as its room (`op-village-v01`)."""
    secret = tmp_path / "op.pw"
    secret.write_text("s3cret-Pw\n", encoding="utf-8")
    args = _args(
        "--broker", "mqtts://127.0.0.1:8883", "--username", "op-village-v01",
        "--password-file", str(secret), "--tls-ca", str(tmp_path / "ca.pem"),
    )  # fmt: skip
    mqtt = tail_module._locate(args).mqtt
    assert (mqtt.username, mqtt.password, mqtt.tls_ca) == (
        "op-village-v01",
        "s3cret-Pw",
        str(tmp_path / "ca.pem"),
    )
    assert mqtt.tls
    assert "s3cret" not in repr(mqtt)  # secrets stay out of reprs (and so of logs)
    plain = tail_module._locate(_args("--broker", "mqtt://127.0.0.1:1883")).mqtt
    assert (plain.username, plain.password) == (None, None)


@pytest.mark.parametrize("content", [None, "", "\nsecond line"])
def test_an_unreadable_or_empty_password_file_is_a_usage_error(
    tmp_path: Path, content: str | None
) -> None:
    """Exit 2 with the file named; the rest of the file is never shown."""
    secret = tmp_path / "op.pw"
    if content is not None:
        secret.write_text(content, encoding="utf-8")
    err = io.StringIO()
    args = _args("--broker", "mqtt://127.0.0.1:1", "--password-file", str(secret), "--plain")
    assert run_tail(args, io.StringIO(), err) == 2
    assert "--password-file" in err.getvalue()
    assert str(secret) in err.getvalue()
    assert "second line" not in err.getvalue()


# ------------------------------------------------------------------ against a gateway


@contextlib.contextmanager
def _in_thread(function: Callable[[], int]) -> Iterator[list[int]]:
    """Run a blocking command (its own event loop) beside the test's loop."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(function()), daemon=True)
    thread.start()
    try:
        yield result
    finally:
        thread.join(15)


async def _until(predicate: Callable[[], object], within: float = 10.0) -> None:
    await eventually(predicate, within)


@pytest.mark.broker
def test_plain_json_prints_a_dispatched_alarm_and_ack_reaches_the_gateway(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """`--plain --json --count 1` prints the alarm with its hop latencies; `--ack` then
    acknowledges it at the gateway (alarm state and the acks metric)."""

    async def scenario() -> None:
        registry = CollectorRegistry()
        gateway = Gateway(demo_config(tmp_path, mosquitto.port), registry=registry)
        broker = f"mqtt://127.0.0.1:{mosquitto.port}"
        async with running(gateway):
            out, err = io.StringIO(), io.StringIO()
            args = _args("--broker", broker, "--plain", "--json", "--count", "1",
                         "--duration", "10")  # fmt: skip
            with _in_thread(lambda: run_tail(args, out, err)) as code:
                await _until(lambda: "listening" in err.getvalue())
                assert gateway.link is not None
                await gateway.link.publish("alarmgw/in/phone/h001", panic(7), qos=1)
                await _until(lambda: code)
            assert code == [0], err.getvalue()
            (line,) = out.getvalue().splitlines()
            record = json.loads(line)
            assert record["alarm_id"] == "ph/h001/7"
            assert record["kind"] == "panic"
            assert record["household"] == "h001"
            for hop in (
                "device_to_ingress_ms",
                "ingress_to_dispatch_ms",
                "dispatch_to_received_ms",
            ):
                assert isinstance(record[hop], float)
            ack = _args("--broker", broker, "--ack", "ph/h001/7", "--sink", "township/t01",
                        "--operator", "王警官")  # fmt: skip
            out = io.StringIO()
            with _in_thread(lambda: run_tail(ack, out, err)) as code:
                await _until(lambda: code)
            assert code == [0], err.getvalue()
            assert "acknowledged ph/h001/7 at township/t01" in out.getvalue()

            def acknowledged() -> bool:
                alarm = gateway.alarm("ph/h001/7")
                return alarm is not None and alarm.state is AlarmState.ACKNOWLEDGED

            await _until(acknowledged)
            alarm = gateway.alarm("ph/h001/7")
            assert alarm is not None
            assert alarm.acknowledged_by == "王警官"
            acks = registry.get_sample_value(
                "alarmgw_acks_total", {"sink_kind": "township", "known": "yes"}
            )
            assert acks == 1.0

    asyncio.run(scenario())


@pytest.mark.broker
def test_ack_fails_cleanly_without_a_broker(free_port: int) -> None:
    """No broker: `--ack` says so and exits 1 (bounded by its connect timeout)."""
    err = io.StringIO()
    broker = f"mqtt://127.0.0.1:{free_port}"
    args = _args("--broker", broker, "--ack", "x", "--sink", "village/v01", "--timeout", "0.5")
    with _in_thread(lambda: run_tail(args, io.StringIO(), err)) as code:
        pass
    assert code == [1]
    assert "cannot reach the broker" in err.getvalue()


_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


class _Screen:
    """What a child process wrote to its terminal, escape sequences removed.

    The pty is drained all the time (the event loop's reader): a child whose
    terminal output is not read blocks in write() and stops reading its keys.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.raw = b""

    def __enter__(self) -> _Screen:
        asyncio.get_running_loop().add_reader(self.fd, self._drain)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self.raw += os.read(self.fd, 65536)

    def text(self) -> str:
        return _ANSI.sub(b"", self.raw).decode("utf-8", "replace")

    async def wait_for(self, needle: str, within: float = 10.0) -> None:
        try:
            await eventually(lambda: needle in self.text(), within)
        except TimeoutError:
            raise AssertionError(f"{needle!r} not on the screen:\n{self.text()[-3000:]}") from None


@pytest.mark.broker
def test_interactive_view_shows_the_alarm_and_the_ack_key_acknowledges_it(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Under a pseudo-terminal: the view shows the dispatched alarm; typing its number and
    `a` acknowledges it at the gateway and marks the row; `q` leaves, exit 0."""

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 220, 0, 0))
    os.set_blocking(master, False)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "220", "LINES": "40"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.tail", "--broker",
         f"mqtt://127.0.0.1:{mosquitto.port}", "--operator", "tester", "--duration", "18"],
        stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(slave)

    async def scenario() -> None:
        gateway = Gateway(demo_config(tmp_path, mosquitto.port))
        with _Screen(master) as screen:
            async with running(gateway):
                await screen.wait_for("broker connected")
                assert gateway.link is not None
                await gateway.link.publish("alarmgw/in/phone/h002", panic(9, code=110), qos=1)
                await screen.wait_for("ph/h002/9")
                await screen.wait_for("village/v01, township/t01, group/g11")
                os.write(master, b"1a")

                def acknowledged() -> bool:
                    alarm = gateway.alarm("ph/h002/9")
                    return alarm is not None and alarm.state is AlarmState.ACKNOWLEDGED

                await _until(acknowledged)
                await screen.wait_for("✓ tester")
                await screen.wait_for("acknowledged #1 ph/h002/9 at village/v01 as tester")
                os.write(master, b"q")
                await eventually(lambda: process.poll() is not None)
            assert process.returncode == 0, screen.text()[-3000:]
            alarm = gateway.alarm("ph/h002/9")
            assert alarm is not None
            assert alarm.acknowledged_by == "tester"

    try:
        asyncio.run(scenario())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(master)
