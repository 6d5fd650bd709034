"""Serial ingress on pseudo-terminals, under asyncio and trio (CONTRACT.md, "Serial ingress").

A `ReceiverStandIn` (simulators/receiver.py) plays the alarm receiver on the
master side of a pty; `SerialLine` opens the slave side through a symlink, as
the gateway opens ``/dev/serial/by-id/...``, so that "the port vanishes and
returns" is the pty closed and the symlink re-pointed at a new one. A fake
gateway answers as the real one must: ACK after storing (dedup by content),
ACK and dead-letter for an unknown account, NAK for a rejected record, and
silence while its store is down. Every test is bounded by `anyio.fail_after`.
"""

from __future__ import annotations

import os
import random
import termios
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.model import SerialPort
from gateway.adapters.serial_port import (
    Answer,
    Backoff,
    LineState,
    Opener,
    PortIO,
    SerialLine,
    open_serial,
)
from protocols.contact_id import Qualifier
from protocols.frames import (
    AckFrame,
    FrameDecoder,
    FrameItem,
    NakCode,
    NakFrame,
    encode_ack,
    encode_data,
    encode_nak,
)
from protocols.reasons import Reason, Rejected
from protocols.receiver import (
    ACK,
    NAK,
    ReceiverEvent,
    ReceiverHeartbeat,
    ReceiverItem,
    build_heartbeat,
    build_record,
)
from simulators.pty_driver import Pty, open_pty, run_receiver, write_all
from simulators.receiver import ReceiverStandIn, Signal

BOUND_S = 12.0  # every test finishes well within this, or fails
KNOWN = frozenset({"1234", "5678"})

EventKey = tuple[str, Qualifier, int, int, int]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every serial test runs on both backends: the line is anyio code."""
    return str(request.param)


@pytest.fixture
def ptys() -> Iterator[list[Pty]]:
    """Pseudo-terminals opened by a test, closed at teardown (closing is idempotent)."""
    opened: list[Pty] = []
    yield opened
    for pty in opened:
        pty.close()


def _new_pty(ptys: list[Pty]) -> Pty:
    pty = open_pty()
    ptys.append(pty)
    return pty


def _point(link: Path, target: str) -> None:
    """Atomically (re)point the port's symlink, as udev does for /dev/serial/by-id."""
    tmp = link.with_suffix(".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


class FakeGateway:
    """Answers as CONTRACT.md asks of the gateway, recording what it stored."""

    def __init__(self) -> None:
        self.stored: list[EventKey] = []  # unique events, in arrival order
        self.deliveries = 0  # every event record, duplicates included
        self.duplicates = 0
        self.dead_letters: list[ReceiverItem] = []
        self.rejected: list[Rejected] = []  # unanswerable (on_rejected)
        self.heartbeats = 0
        self.store_down = False  # say nothing: the receiver retries and buffers
        self.calls = 0

    async def on_receiver(self, name: str, item: ReceiverItem) -> Answer:
        assert name == "rx"
        self.calls += 1
        if self.store_down:
            return None
        if isinstance(item, ReceiverHeartbeat):
            self.heartbeats += 1
            return ACK
        if isinstance(item, Rejected):
            self.dead_letters.append(item)
            return NAK
        self.deliveries += 1
        if item.account not in KNOWN:
            self.dead_letters.append(item)  # dead-lettered and counted, but acknowledged
            return ACK
        key = (item.account, item.qualifier, item.code, item.group, item.zone)
        if key in self.stored:
            self.duplicates += 1
        else:
            self.stored.append(key)
        return ACK

    async def on_rejected(self, name: str, rejected: Rejected) -> None:
        self.rejected.append(rejected)


class States:
    """Records every state change and lets a test await one."""

    def __init__(self) -> None:
        self.seen: list[LineState] = []
        self._changed = anyio.Event()

    def __call__(self, name: str, state: LineState) -> None:
        self.seen.append(state)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self, state: LineState) -> None:
        """Return once the latest state is `state`."""
        while not self.seen or self.seen[-1] is not state:
            await self._changed.wait()


def _signal(zone: int, account: str = "1234") -> Signal:
    return Signal(account, Qualifier.NEW, 130, 1, zone)


def _key(signal: Signal) -> EventKey:
    return (signal.account, signal.qualifier, signal.code, signal.group, signal.zone)


def _line(
    device: str | Path,
    gw: FakeGateway,
    states: States | None = None,
    *,
    bytesize: int = 8,
    parity: str = "N",
    opener: Opener = open_serial,
) -> SerialLine:
    return SerialLine(
        SerialPort("rx", str(device), bytesize=bytesize, parity=parity),
        on_receiver=gw.on_receiver,
        on_rejected=gw.on_rejected,
        on_state=states,
        opener=opener,
        backoff=Backoff(initial_s=0.01, cap_s=0.05),
        rng=random.Random(1),
    )


def _standin(duplicate_rate: float = 0.0) -> ReceiverStandIn:
    return ReceiverStandIn(
        heartbeat_s=0.3, answer_timeout_s=0.3, duplicate_rate=duplicate_rate, rng=random.Random(5)
    )


def _idle(standin: ReceiverStandIn) -> bool:
    return standin.idle


class Tap:
    """An opener that records what the line reads, so a test can await a read."""

    def __init__(self) -> None:
        self.read = bytearray()
        self._wanted = b""
        self._arrived = anyio.Event()

    def __call__(self, settings: SerialPort) -> PortIO:
        return _TappedPort(open_serial(settings), self)

    def saw(self, data: bytes) -> None:
        self.read += data
        if self._wanted and self.read.endswith(self._wanted):
            self._arrived.set()

    async def wait_for(self, tail: bytes) -> None:
        """Return once the line has read bytes ending with `tail`."""
        self._wanted = tail
        if not self.read.endswith(tail):
            await self._arrived.wait()
        self._arrived = anyio.Event()


class _TappedPort:
    def __init__(self, port: PortIO, tap: Tap) -> None:
        self._port = port
        self._tap = tap

    def fileno(self) -> int:
        return self._port.fileno()

    @property
    def in_waiting(self) -> int:
        return self._port.in_waiting

    def read(self, size: int = 1, /) -> bytes:
        data = self._port.read(size)
        self._tap.saw(data)
        return data

    def write(self, b: bytes, /) -> int | None:
        return self._port.write(b)

    def close(self) -> None:
        self._port.close()


async def _answer(fd: int, size: int = 1) -> bytes:
    """The next `size` bytes the gateway writes back."""
    out = b""
    while len(out) < size:
        await anyio.wait_readable(fd)
        try:
            out += os.read(fd, size - len(out))
        except BlockingIOError:
            continue
    return out


# ----------------------------------------------------------------- receiver


@pytest.mark.anyio
async def test_every_event_is_delivered_once(ptys: list[Pty]) -> None:
    """Stand-in to line: every event stored once, in order, duplicates (lost ACKs) absorbed."""
    pty = _new_pty(ptys)
    gw = FakeGateway()
    standin = _standin(duplicate_rate=0.2)
    signals = [_signal(zone) for zone in range(100)]
    for signal in signals:
        standin.queue(signal)
    line = _line(pty.slave_path, gw)
    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            await tg.start(line.run)
            await run_receiver(standin, pty.master_fd, duration_s=BOUND_S, stop_when=_idle)
            tg.cancel_scope.cancel()
    assert gw.stored == [_key(s) for s in signals]
    assert gw.duplicates >= standin.stats.duplicates > 0
    assert standin.stats.acked == len(signals)


@pytest.mark.anyio
async def test_one_percent_corruption_never_stores_a_wrong_event(ptys: list[Pty]) -> None:
    """1 % of bytes hit on a 7E1 line: no wrong event is stored and every event gets through."""
    pty = _new_pty(ptys)
    gw = FakeGateway()
    standin = ReceiverStandIn(
        heartbeat_s=0.25, answer_timeout_s=0.25, corrupt_rate=0.01, rng=random.Random(2024)
    )
    signals = [_signal(zone % 1000, "1234" if zone % 2 else "5678") for zone in range(300)]
    for signal in signals:
        standin.queue(signal)
    line = _line(pty.slave_path, gw, bytesize=7, parity="E")
    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            await tg.start(line.run)
            await run_receiver(standin, pty.master_fd, duration_s=BOUND_S, stop_when=_idle)
            tg.cancel_scope.cancel()
    expected = [_key(s) for s in signals]
    assert set(gw.stored) <= set(expected)  # nothing wrong, ever
    assert gw.stored == expected  # and everything, in order
    assert standin.stats.corrupted > 0
    assert gw.dead_letters  # the hits were refused (NAK) and retried
    assert all(isinstance(d, Rejected) for d in gw.dead_letters)


@pytest.mark.anyio
async def test_reading_resumes_after_the_port_vanishes_and_returns(
    ptys: list[Pty], tmp_path: Path
) -> None:
    """USB unplugged (pty closed) and replugged (symlink re-pointed): ERROR, then OPEN again."""
    link = tmp_path / "ttyRX"
    first = _new_pty(ptys)
    _point(link, first.slave_path)
    gw = FakeGateway()
    states = States()
    standin = _standin()
    signals = [_signal(zone) for zone in range(20)]
    for signal in signals[:10]:
        standin.queue(signal)
    tap = Tap()
    line = _line(link, gw, states, opener=tap)
    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            await tg.start(line.run)
            await run_receiver(standin, first.master_fd, duration_s=BOUND_S, stop_when=_idle)
            await write_all(first.master_fd, b"501100 1812")  # half a record, then unplugged
            await tap.wait_for(b"501100 1812")
            link.unlink()  # udev removes the by-id link (first: no reopening a reused pts)
            first.close()
            await states.wait(LineState.ERROR)
            for signal in signals[10:]:
                standin.queue(signal)
            second = _new_pty(ptys)
            _point(link, second.slave_path)
            await run_receiver(standin, second.master_fd, duration_s=BOUND_S, stop_when=_idle)
            tg.cancel_scope.cancel()
    assert gw.stored == [_key(s) for s in signals]
    assert states.seen[:3] == [LineState.OPEN, LineState.ERROR, LineState.OPEN]
    assert states.seen[-1] is LineState.CLOSED
    assert line.opens >= 2
    assert [r.reason for r in gw.rejected] == [Reason.TRUNCATED]


@pytest.mark.anyio
async def test_documented_answers_for_each_kind_of_record(ptys: list[Pty]) -> None:
    """Known account ACK; unknown account ACK but dead-lettered; garbage and bad fields NAK."""
    pty = _new_pty(ptys)
    gw = FakeGateway()
    latencies: list[float] = []
    line = SerialLine(
        SerialPort("rx", pty.slave_path),
        on_receiver=gw.on_receiver,
        on_answer=lambda name, s: latencies.append(s),
    )
    cases = [
        (build_record("01", "100", "1234", Qualifier.NEW, 120, 1, 2), ACK),
        (build_record("01", "100", "9999", Qualifier.NEW, 120, 1, 2), ACK),
        (b"hello, automation\x14", NAK),
        (b"501100 1812A4E12101001\x14", NAK),  # 'A' never occurs in an account
        (b"501100 181234E12\x00101001\x14", NAK),  # a parity hit reads as NUL
        (build_heartbeat("01"), ACK),
        (b"5011 181234R12101001\x14", ACK),  # older 1-digit line
    ]
    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            await tg.start(line.run)
            for record, expected in cases:
                await write_all(pty.master_fd, record)
                assert await _answer(pty.master_fd) == expected, record
            tg.cancel_scope.cancel()
    assert [type(d) for d in gw.dead_letters] == [ReceiverEvent, Rejected, Rejected, Rejected]
    assert gw.stored == [("1234", Qualifier.NEW, 120, 1, 2), ("1234", Qualifier.RESTORE, 121, 1, 1)]
    assert gw.heartbeats == 1
    assert len(latencies) == len(cases)


@pytest.mark.anyio
async def test_silence_makes_the_receiver_retry_buffer_and_replay(ptys: list[Pty]) -> None:
    """Store down (no answer): 3 more tries, link down, then replay after a heartbeat ACK."""
    pty = _new_pty(ptys)
    gw = FakeGateway()
    gw.store_down = True
    standin = ReceiverStandIn(heartbeat_s=0.2, answer_timeout_s=0.15, rng=random.Random(9))
    standin.queue(_signal(7))
    line = _line(pty.slave_path, gw)
    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            await tg.start(line.run)
            await run_receiver(
                standin, pty.master_fd, duration_s=BOUND_S, stop_when=lambda s: not s.link_up
            )
            assert standin.stats.sent == 4
            assert standin.stats.retries == 3
            gw.store_down = False
            await run_receiver(standin, pty.master_fd, duration_s=BOUND_S, stop_when=_idle)
            tg.cancel_scope.cancel()
    assert gw.stored == [_key(_signal(7))]
    assert standin.stats.buffered == 1
    assert standin.stats.heartbeats_acked >= 1
    assert standin.stats.sent == 5  # the replay


@pytest.mark.anyio
async def test_a_port_that_cannot_open_is_retried_with_backoff(tmp_path: Path) -> None:
    """No such device: ERROR, reopen attempts with backoff, never an exception; CLOSED on stop."""
    attempts: list[float] = []
    states = States()
    fifth = anyio.Event()

    def opener(settings: SerialPort) -> PortIO:
        attempts.append(anyio.current_time())
        if len(attempts) == 5:
            fifth.set()
        raise OSError(2, "no such device", settings.device)

    gw = FakeGateway()
    line = SerialLine(
        SerialPort("rx", str(tmp_path / "absent")),
        on_receiver=gw.on_receiver,
        on_state=states,
        opener=opener,
        backoff=Backoff(initial_s=0.001, cap_s=0.004),
        rng=random.Random(3),
    )
    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            await tg.start(line.run)
            assert line.state is LineState.ERROR  # readiness comes after the first attempt
            await fifth.wait()
            tg.cancel_scope.cancel()
    assert states.seen == [LineState.ERROR, LineState.CLOSED]
    assert line.opens == 0


def test_open_serial_turns_on_parity_checking(ptys: list[Pty]) -> None:
    """On a parity line the default opener sets INPCK (pyserial leaves it off)."""
    pty = _new_pty(ptys)
    port = open_serial(SerialPort("rx", pty.slave_path, baud=1200, bytesize=7, parity="E"))
    try:
        iflag = termios.tcgetattr(port.fileno())[0]
        assert iflag & termios.INPCK
        assert not iflag & (termios.IGNPAR | termios.PARMRK)
    finally:
        port.close()


# ------------------------------------------------------------------- native


class FrameGateway:
    """Acknowledges DATA frames, refusing a payload it cannot use."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.rejected: list[Rejected] = []

    async def on_frame(self, name: str, seq: int, payload: bytes) -> Answer:
        self.frames.append((seq, payload))
        if payload == b"refuse me":
            return encode_nak(seq, NakCode.REFUSED)
        return encode_ack(seq)

    async def on_rejected(self, name: str, rejected: Rejected) -> None:
        self.rejected.append(rejected)


async def _frame_answer(fd: int, decoder: FrameDecoder) -> FrameItem:
    while True:
        await anyio.wait_readable(fd)
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            continue
        items = decoder.receive_data(data)
        if items:
            assert len(items) == 1
            return items[0]


@pytest.mark.anyio
async def test_native_frames_are_answered_per_seq_and_damage_is_not(ptys: list[Pty]) -> None:
    """ACK per seq; a damaged frame gets no answer and costs nothing; device ACKs are ignored."""
    pty = _new_pty(ptys)
    fgw = FrameGateway()
    line = SerialLine(
        SerialPort("bus", pty.slave_path, protocol="native"),
        on_frame=fgw.on_frame,
        on_rejected=fgw.on_rejected,
    )
    damaged = bytearray(encode_data(2, b"payload two"))
    damaged[damaged.index(b"payload") + 3] ^= 0x01  # COBS copies payload bytes verbatim
    decoder = FrameDecoder()
    fd = pty.master_fd
    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            await tg.start(line.run)
            await write_all(fd, encode_data(1, b"payload one"))
            assert await _frame_answer(fd, decoder) == AckFrame(1)
            await write_all(fd, bytes(damaged) + encode_data(3, b"payload three"))
            assert await _frame_answer(fd, decoder) == AckFrame(3)
            await write_all(fd, encode_ack(9) + b"\x00noise\x00" + encode_data(4, b"four"))
            assert await _frame_answer(fd, decoder) == AckFrame(4)
            await write_all(fd, encode_data(5, b"refuse me"))
            assert await _frame_answer(fd, decoder) == NakFrame(5, NakCode.REFUSED)
            tg.cancel_scope.cancel()
    assert [seq for seq, _ in fgw.frames] == [1, 3, 4, 5]
    assert [r.reason for r in fgw.rejected] == [Reason.BAD_CRC, Reason.BAD_FRAME]


@pytest.mark.anyio
async def test_native_line_survives_replug(ptys: list[Pty], tmp_path: Path) -> None:
    """A native line reopens too, and a frame cut by the unplug is reported as truncated."""
    link = tmp_path / "ttyBUS"
    first = _new_pty(ptys)
    _point(link, first.slave_path)
    fgw = FrameGateway()
    states = States()
    tap = Tap()
    line = SerialLine(
        SerialPort("bus", str(link), protocol="native"),
        on_frame=fgw.on_frame,
        on_rejected=fgw.on_rejected,
        on_state=states,
        opener=tap,
        backoff=Backoff(initial_s=0.01, cap_s=0.05),
        rng=random.Random(4),
    )
    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            await tg.start(line.run)
            await write_all(first.master_fd, encode_data(1, b"one"))
            assert await _frame_answer(first.master_fd, FrameDecoder()) == AckFrame(1)
            cut = encode_data(2, b"two")[:7]
            await write_all(first.master_fd, cut)
            await tap.wait_for(cut)
            link.unlink()  # udev removes the by-id link (first: no reopening a reused pts)
            first.close()
            await states.wait(LineState.ERROR)
            second = _new_pty(ptys)
            _point(link, second.slave_path)
            await states.wait(LineState.OPEN)
            await write_all(second.master_fd, encode_data(2, b"two"))
            assert await _frame_answer(second.master_fd, FrameDecoder()) == AckFrame(2)
            tg.cancel_scope.cancel()
    assert [r.reason for r in fgw.rejected] == [Reason.TRUNCATED]


# -------------------------------------------------------------------- misc


def test_a_line_needs_the_callback_of_its_protocol() -> None:
    """Misconfiguration is refused at construction, not discovered at the first record."""
    gw = FakeGateway()
    with pytest.raises(ValueError, match="on_receiver"):
        SerialLine(SerialPort("rx", "/dev/null"))
    with pytest.raises(ValueError, match="on_frame"):
        SerialLine(SerialPort("rx", "/dev/null", protocol="native"), on_receiver=gw.on_receiver)
    with pytest.raises(ValueError, match="receiver or native"):
        SerialLine(SerialPort("rx", "/dev/null", protocol="modbus"), on_receiver=gw.on_receiver)


@given(failures=st.integers(0, 10_000), seed=st.integers(0, 2**32))
def test_backoff_is_capped_exponential_with_jitter(failures: int, seed: int) -> None:
    """The delay lies in [0, min(cap, initial * 2**n)], never above the cap."""
    backoff = Backoff(initial_s=0.5, cap_s=30.0)
    ceiling = backoff.ceiling(failures)
    assert ceiling == min(30.0, 0.5 * 2.0 ** min(failures, 64))
    assert 0.0 <= backoff.delay(failures, random.Random(seed)) <= ceiling


def test_backoff_refuses_nonsense() -> None:
    """A zero initial delay or a cap below it is misuse."""
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=0.0)
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=2.0, cap_s=1.0)
    with pytest.raises(ValueError, match="failures"):
        Backoff().ceiling(-1)
