"""The base-station sender follows docs/framing.md's link protocol, in explicit time,
and drives the real gateway over a pseudo-terminal."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import random
import re
import threading
import time
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.model import Config, SerialPort
from gateway.app import Gateway
from protocols.frames import (
    AckFrame,
    DataFrame,
    FrameDecoder,
    NakCode,
    encode_ack,
    encode_data,
    encode_nak,
)
from protocols.payloads import PhoneMessage, decode_native
from protocols.reasons import Rejected
from simulators.cli import main as sim_main
from simulators.pty_driver import open_pty
from simulators.serial_driver import (
    Answered,
    NativeSender,
    Sent,
    TimedOut,
    answer_timeout,
    run_sender,
)
from tests.brokers import Mosquitto
from tests.gateway.harness import DEMO, Collector, demo_config, running


def _panic(seq: int, household: str = "h001", code: int = 120) -> PhoneMessage:
    return PhoneMessage(household, seq, 1_700_000_000.0 + seq, 1, code, 1, 1)


def _frames(data: bytes) -> list[DataFrame]:
    items = FrameDecoder().receive_data(data)
    return [item for item in items if isinstance(item, DataFrame)]


def _one(writes: list[bytes]) -> DataFrame:
    frames = _frames(b"".join(writes))
    assert len(frames) == 1
    return frames[0]


class _Scripted(random.Random):
    """A generator whose `random()` answers from a script (then 0.99: no fault)."""

    def __init__(self, values: list[float]) -> None:
        super().__init__(0)
        self.values = values

    def random(self) -> float:
        return self.values.pop(0) if self.values else 0.99

    def getrandbits(self, k: int, /) -> int:
        # Defined so that randrange() and choice() keep drawing from the real
        # generator, not from the script (random.Random.__init_subclass__).
        return super().getrandbits(k)


# ------------------------------------------------------------------ pure


def test_answer_timeout_is_one_second_plus_twice_the_wire_time() -> None:
    """docs/framing.md: T = 1 s + 2 x wire time; 70 bytes at 9600 baud is about 1.15 s."""
    assert answer_timeout(70, 9600) == pytest.approx(1 + 2 * 700 / 9600)
    assert answer_timeout(4123, 9600) == pytest.approx(1 + 2 * 41230 / 9600)
    with pytest.raises(ValueError, match="baud"):
        answer_timeout(70, 0)


def test_stop_and_wait_next_frame_only_after_ack() -> None:
    """One frame on the wire; the next takes seq + 1 once the first is acknowledged."""
    s = NativeSender()
    s.queue(_panic(1))
    s.queue(_panic(2))
    first = _one(s.poll(0.0))
    assert first.seq == 1
    assert decode_native(first.payload) == _panic(1)
    assert s.poll(0.5) == []
    s.receive(encode_ack(1), 0.6)
    second = _one(s.poll(0.6))
    assert second.seq == 2
    s.receive(encode_ack(2), 0.7)
    assert s.idle
    reports = s.take_reports()
    assert [type(r) for r in reports] == [Sent, Answered, Sent, Answered]
    answered = reports[1]
    assert isinstance(answered, Answered)
    assert answered.answer == "ack"
    assert answered.latency_s == pytest.approx(0.6)
    assert s.stats.acked == 2
    assert s.stats.sent == 2


def test_life_safety_goes_before_anything_else_due() -> None:
    """Alarms first: a due panic is sent before a burglary queued earlier."""
    s = NativeSender()
    s.queue(_panic(1, code=130), at=0.0)
    s.queue(_panic(2, code=120), at=0.0)
    assert decode_native(_one(s.poll(0.0)).payload) == _panic(2, code=120)


def test_a_frame_is_not_sent_before_it_is_due() -> None:
    """Queued sends keep their schedule; the deadline says when."""
    s = NativeSender()
    s.queue(_panic(1), at=5.0)
    assert s.poll(0.0) == []
    assert s.next_deadline() == 5.0
    assert _one(s.poll(5.0)).seq == 1


def test_silence_resends_the_same_bytes_with_doubling_waits_up_to_30_s() -> None:
    """No answer: the same frame again at T, then after 2T, 4T..., never more than 30 s apart."""
    s = NativeSender(baud=9600)
    s.queue(_panic(1))
    first = b"".join(s.poll(0.0))
    t = answer_timeout(len(first), 9600)
    assert s.next_deadline() == pytest.approx(t)
    assert s.poll(t - 0.01) == []
    now = t
    waits = []
    for _ in range(8):
        again = b"".join(s.poll(now))
        assert again == first
        deadline = s.next_deadline()
        assert deadline is not None
        waits.append(deadline - now)
        now = deadline
    assert waits[:3] == pytest.approx([2 * t, 4 * t, 8 * t])
    assert max(waits) == 30.0
    timeouts = [r for r in s.take_reports() if isinstance(r, TimedOut)]
    assert [r.attempt for r in timeouts] == list(range(1, 9))
    assert s.pending == (s.pending[0],)
    assert not s.idle


def test_nak_retry_waits_for_the_timeout_and_refused_drops_the_frame() -> None:
    """NAK RETRY does not shorten the wait; NAK REFUSED drops the frame and the next goes."""
    s = NativeSender()
    s.queue(_panic(1))
    s.queue(_panic(2))
    s.poll(0.0)
    deadline = s.next_deadline()
    s.receive(encode_nak(1, NakCode.RETRY), 0.1)
    assert s.next_deadline() == deadline
    assert s.poll(0.2) == []
    assert deadline is not None
    assert _one(s.poll(deadline)).seq == 1
    s.receive(encode_nak(1, NakCode.REFUSED), deadline + 0.1)
    assert _one(s.poll(deadline + 0.1)).seq == 2
    answers = [r.answer for r in s.take_reports() if isinstance(r, Answered)]
    assert answers == ["retry", "refused"]
    assert s.stats.refused == 1
    assert s.stats.retry_naks == 1


def test_an_unknown_nak_code_means_retry() -> None:
    """docs/framing.md: a NAK code the sender does not know means RETRY."""
    s = NativeSender()
    s.queue(_panic(1))
    s.poll(0.0)
    s.receive(encode_nak(1, 7), 0.1)
    assert not s.idle
    assert s.stats.retry_naks == 1


def test_stale_and_damaged_answers_are_ignored() -> None:
    """An answer with another seq, or a damaged one, changes nothing."""
    s = NativeSender()
    s.queue(_panic(1))
    s.poll(0.0)
    damaged = bytearray(encode_ack(1))
    damaged[4] ^= 0xFF
    s.receive(encode_ack(9) + bytes(damaged), 0.1)
    assert not s.idle
    assert s.stats.stale == 1
    assert s.stats.damaged == 1
    # Split anywhere, the right ACK still counts.
    ack = encode_ack(1)
    s.receive(ack[:5], 0.2)
    s.receive(ack[5:], 0.2)
    assert s.idle


def test_seq_wraps_after_65535() -> None:
    """The next new frame after seq 65535 takes 0."""
    s = NativeSender(seq_start=65535)
    s.queue(_panic(1))
    s.queue(_panic(2))
    assert _one(s.poll(0.0)).seq == 65535
    s.receive(encode_ack(65535), 0.1)
    assert _one(s.poll(0.1)).seq == 0


def test_corrupt_fault_damages_a_transmission_that_the_gateway_rejects() -> None:
    """A corrupted transmission fails the reader's checks; the resend is intact."""
    s = NativeSender(corrupt_rate=0.5, rng=_Scripted([0.0]))
    s.queue(_panic(1))
    damaged = b"".join(s.poll(0.0))
    items = FrameDecoder().receive_data(damaged)
    assert items
    assert all(isinstance(item, Rejected) for item in items)
    deadline = s.next_deadline()
    assert deadline is not None
    assert _one(s.poll(deadline)).seq == 1
    faults = [r.faults for r in s.take_reports() if isinstance(r, Sent)]
    assert faults == [("corrupt",), ()]


def test_split_fault_writes_one_frame_in_pieces() -> None:
    """A split frame is 2 or 3 writes that join to the intact frame."""
    s = NativeSender(split_rate=1.0, rng=random.Random(3))
    s.queue(_panic(1))
    writes = s.poll(0.0)
    assert len(writes) in (2, 3)
    assert b"".join(writes) == encode_data(1, _frames(b"".join(writes))[0].payload)
    sent = s.take_reports()[0]
    assert isinstance(sent, Sent)
    assert sent.faults == (f"split {len(writes)}",)


def test_merge_fault_writes_the_previous_frame_and_the_new_one_at_once() -> None:
    """Two frames in one write: the previous (acknowledged) frame, then the new one."""
    s = NativeSender(merge_rate=1.0)
    s.queue(_panic(1))
    s.queue(_panic(2))
    first = b"".join(s.poll(0.0))
    s.receive(encode_ack(1), 0.1)
    writes = s.poll(0.1)
    assert len(writes) == 1
    assert writes[0].startswith(first)
    assert [f.seq for f in _frames(writes[0])] == [1, 2]
    s.receive(encode_ack(1), 0.2)  # the gateway answers the old copy too: stale here
    s.receive(encode_ack(2), 0.2)
    assert s.idle
    assert s.stats.stale == 1
    assert s.stats.merged == 1


def test_bad_settings_raise() -> None:
    """Misuse of the constructor is a ValueError."""
    with pytest.raises(ValueError, match="baud"):
        NativeSender(baud=0)
    with pytest.raises(ValueError, match="seq_start"):
        NativeSender(seq_start=70000)
    with pytest.raises(ValueError, match="corrupt_rate"):
        NativeSender(corrupt_rate=2.0)
    with pytest.raises(ValueError, match="payload"):
        NativeSender().queue_payload(b"x" * 5000, label="too big")


@given(answers=st.lists(st.binary(max_size=40), max_size=12), at=st.floats(0, 100))
def test_any_answer_bytes_never_raise(answers: list[bytes], at: float) -> None:
    """Whatever the line brings back, the sender carries on, and counts stay consistent."""
    s = NativeSender()
    s.queue(_panic(1))
    s.queue(_panic(2))
    s.poll(0.0)
    for data in answers:
        s.receive(data, at)
        s.poll(at)
    stats = s.stats
    assert stats.acked + stats.refused <= stats.queued


@given(
    seed=st.integers(0, 2**32),
    corrupt=st.floats(0, 0.8),
    split=st.floats(0, 1),
    merge=st.floats(0, 1),
    lost_answers=st.lists(st.booleans(), max_size=30),
)
def test_every_event_arrives_once_in_order_over_a_lossy_line(
    seed: int, corrupt: float, split: float, merge: float, lost_answers: list[bool]
) -> None:
    """Against a receiver that ACKs each intact frame (some ACKs lost), every event gets
    through, in order, whatever the faults: stop and wait plus resend is enough."""
    s = NativeSender(
        corrupt_rate=corrupt, split_rate=split, merge_rate=merge, rng=random.Random(seed)
    )
    for seq in range(1, 6):
        s.queue(_panic(seq, code=130))
    reader = FrameDecoder()
    delivered: list[PhoneMessage] = []
    now = 0.0
    for _ in range(400):
        if s.idle:
            break
        for data in s.poll(now):
            for item in reader.receive_data(data):
                if isinstance(item, DataFrame):
                    message = decode_native(item.payload)
                    assert isinstance(message, PhoneMessage)
                    if message not in delivered:  # the gateway de-duplicates by identity
                        delivered.append(message)
                    if not (lost_answers.pop(0) if lost_answers else False):
                        s.receive(encode_ack(item.seq), now)
        deadline = s.next_deadline()
        now = max(now, deadline) if deadline is not None else now
    assert s.idle
    assert delivered == [_panic(seq, code=130) for seq in range(1, 6)]


# ------------------------------------------------------------------ against the gateway


def _native(config: Config, path: str) -> Config:
    return dataclasses.replace(config, serial=(SerialPort("bs1", path, protocol="native"),))


def _alarms(probe: Collector) -> list[dict[str, object]]:
    return [b for t, b in probe.decoded(lambda t: t.endswith("/alarms")) if isinstance(b, dict)]


@pytest.mark.broker
def test_phone_over_serial_is_acked_and_dispatched_and_a_corrupted_frame_is_resent(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Against the real gateway on a pty: every frame is ACKed and its alarm dispatched;
    the corrupted first transmission gets no answer and is resent after its timeout;
    a frame merged with the previous one is ACKed twice and dispatched once."""

    async def scenario() -> None:
        pty = open_pty()
        now = time.time()
        sender = NativeSender(
            corrupt_rate=0.5,
            split_rate=0.5,
            merge_rate=0.5,
            # first transmission corrupted; its resend clean; the next frame merged and split
            rng=_Scripted([0.0, 0.99, 0.99, 0.99, 0.99, 0.0, 0.0]),
        )
        sender.queue(PhoneMessage("h001", 11, now, 1, 120, 1), at=now)
        sender.queue(PhoneMessage("h002", 12, now, 1, 110, 4), at=now)
        reports: list[object] = []
        try:
            config = _native(demo_config(tmp_path, mosquitto.port), pty.slave_path)
            out = ("alarmgw/out/#",)
            async with running(Gateway(config)), Collector(mosquitto.port, out) as probe:
                await run_sender(
                    sender,
                    pty.master_fd,
                    duration_s=15,
                    stop_when=lambda s: s.idle,
                    on_report=reports.append,
                )
                assert sender.idle
                await probe.wait_for(lambda m: len(_alarms(probe)) >= 6)
                await asyncio.sleep(0.3)
                kinds = sorted((b["household"], b["kind"]) for b in _alarms(probe))
                assert kinds == [("h001", "panic")] * 3 + [("h002", "fire")] * 3
        finally:
            pty.close()
        sent = [r for r in reports if isinstance(r, Sent)]
        assert sent[0].faults == ("corrupt",)
        assert isinstance(reports[1], TimedOut)
        assert (sent[1].seq, sent[1].attempt, sent[1].faults) == (sent[0].seq, 2, ())
        assert "merged" in sent[2].faults
        answers = [(r.seq, r.answer) for r in reports if isinstance(r, Answered)]
        assert answers == [(sent[0].seq, "ack"), (sent[2].seq, "ack")]
        assert sender.stats.stale == 1  # the merged copy's ACK

    asyncio.run(scenario())


@pytest.mark.broker
def test_sim_phone_pty_command_reaches_the_gateway(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """`alarmgw sim phone --pty` prints the pty's path, sends native frames to the
    gateway that opens it, prints each send and ACK, and exits 0 when all are ACKed."""

    async def scenario() -> None:
        out, err = io.StringIO(), io.StringIO()
        argv = ["sim", "phone", "--config", str(DEMO), "--household", "h003",
                "--event", "fire", "--pty", "--give-up", "15", "--seed", "5"]  # fmt: skip
        codes: list[int] = []
        thread = threading.Thread(
            target=lambda: codes.append(sim_main(argv, out=out, err=err)), daemon=True
        )
        thread.start()
        async with asyncio.timeout(5):
            while not re.search(r"--serial NAME=(\S+)", out.getvalue()):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        found = re.search(r"--serial NAME=(\S+)", out.getvalue())
        assert found is not None
        config = _native(demo_config(tmp_path, mosquitto.port), found.group(1))
        async with running(Gateway(config)), Collector(mosquitto.port, ("alarmgw/out/#",)) as probe:
            await probe.wait_for(lambda m: len(_alarms(probe)) >= 3, within=15)
            await asyncio.to_thread(thread.join, 15)
        assert codes == [0], out.getvalue() + err.getvalue()
        text = out.getvalue()
        assert "→ seq 1" in text
        assert "← ACK seq 1" in text
        assert "acked 1, refused 0" in text
        body = _alarms(probe)[0]
        assert (body["household"], body["kind"]) == ("h003", "fire")

    asyncio.run(scenario())


def test_sim_phone_serial_dry_run_prints_frames() -> None:
    """`--dry-run` with `--pty` prints every frame's bytes, without opening anything."""
    out = io.StringIO()
    argv = ["sim", "phone", "--config", str(DEMO), "--household", "h001", "--event", "panic",
            "--pty", "--dry-run", "--seed", "1", "--start", "1700000000"]  # fmt: skip
    assert sim_main(argv, out=out, err=io.StringIO()) == 0
    lines = out.getvalue().splitlines()
    assert "native frames" in lines[0]
    frame = bytes.fromhex(lines[2].strip())
    (data,) = _frames(frame)
    decoded = msgpack.unpackb(data.payload)
    assert (decoded["kind"], decoded["device"], decoded["code"]) == ("phone", "h001", 120)
    assert isinstance(FrameDecoder().receive_data(encode_ack(data.seq))[0], AckFrame)


def test_sim_phone_serial_refuses_wait() -> None:
    """`--wait` listens on MQTT; with a serial line it is a usage error (exit 2)."""
    err = io.StringIO()
    argv = ["sim", "phone", "--config", str(DEMO), "--household", "h001", "--pty", "--wait"]
    assert sim_main(argv, out=io.StringIO(), err=err) == 2
    assert "--wait" in err.getvalue()
