"""The alarm-receiver stand-in behaves as PROTOCOLS.md describes a receiver, in explicit time."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.contact_id import Qualifier
from protocols.receiver import (
    ACK,
    DC4,
    NAK,
    ReceiverDecoder,
    ReceiverEvent,
    ReceiverHeartbeat,
    build_heartbeat,
    build_record,
)
from simulators.receiver import ReceiverStandIn, Signal, StandInStats


def _signal(zone: int, account: str = "1234") -> Signal:
    return Signal(account, Qualifier.NEW, 130, 1, zone)


def _record(zone: int, account: str = "1234") -> bytes:
    return build_record("01", "100", account, Qualifier.NEW, 130, 1, zone)


HEARTBEAT = build_heartbeat("01")


def _link_up(s: ReceiverStandIn) -> bool:
    """Read the property afresh (mypy would narrow a repeated `s.link_up`)."""
    return s.link_up


def test_sends_one_record_at_a_time_and_the_next_after_ack() -> None:
    """Stop and wait: the second record goes only once the first is acknowledged."""
    s = ReceiverStandIn()
    s.queue(_signal(1))
    s.queue(_signal(2))
    assert s.poll(0.0) == _record(1)
    assert s.poll(1.0) == b""
    s.receive(ACK, 1.0)
    assert s.poll(1.0) == _record(2)
    s.receive(ACK, 1.1)
    assert s.idle
    assert s.stats == StandInStats(sent=2, acked=2)


def test_nak_resends_at_once_and_silence_resends_at_the_deadline() -> None:
    """NAK means "send again" now; no answer within answer_timeout_s means resend then."""
    s = ReceiverStandIn(answer_timeout_s=4.0)
    s.queue(_signal(1))
    assert s.poll(0.0) == _record(1)
    s.receive(NAK, 0.5)
    assert s.next_deadline() == 0.5
    assert s.poll(0.5) == _record(1)
    assert s.next_deadline() == 4.5
    assert s.poll(4.4) == b""
    assert s.poll(4.5) == _record(1)
    assert s.stats.retries == 2
    assert s.stats.naks == 1
    assert s.stats.timeouts == 1


def test_three_more_tries_then_buffer_then_replay_after_heartbeat_ack() -> None:
    """After 1 + 3 unanswered sends the link is down; a heartbeat ACK replays the buffer."""
    s = ReceiverStandIn(heartbeat_s=30.0, answer_timeout_s=4.0, retries=3)
    s.queue(_signal(1))
    now = 0.0
    for _ in range(4):
        assert s.poll(now) == _record(1)
        now += 4.0
    assert s.poll(now) == b""  # the fourth attempt expired: link down, nothing sent
    assert not s.link_up
    s.queue(_signal(2))  # held while the link is down
    assert s.next_deadline() == 30.0
    assert s.poll(29.0) == b""
    assert s.poll(30.0) == HEARTBEAT
    s.receive(ACK, 30.1)
    assert _link_up(s)
    assert s.poll(30.1) == _record(1)
    s.receive(ACK, 30.2)
    assert s.poll(30.2) == _record(2)
    s.receive(ACK, 30.3)
    assert s.stats == StandInStats(
        sent=6,
        acked=2,
        retries=3,
        timeouts=4,
        buffered=2,
        heartbeats=1,
        heartbeats_acked=1,
        link_downs=1,
    )


def test_an_unanswered_heartbeat_takes_the_link_down() -> None:
    """A heartbeat without ACK (silence or NAK) takes the link down; records wait for the next."""
    s = ReceiverStandIn(heartbeat_s=10.0, answer_timeout_s=4.0)
    assert s.poll(0.0) == b""
    assert s.poll(10.0) == HEARTBEAT
    s.receive(NAK, 10.5)
    assert not s.link_up
    s.queue(_signal(1))
    assert s.poll(11.0) == b""
    assert s.poll(20.0) == HEARTBEAT
    assert s.poll(24.0) == b""  # expired: still down
    assert s.poll(30.0) == HEARTBEAT
    s.receive(ACK, 30.1)
    assert s.poll(30.1) == _record(1)


def test_heartbeats_are_sent_when_idle_and_acknowledged() -> None:
    """With nothing to send, a heartbeat goes every heartbeat_s."""
    s = ReceiverStandIn(heartbeat_s=30.0)
    assert s.poll(0.0) == b""
    assert s.next_deadline() == 30.0
    assert s.poll(30.0) == HEARTBEAT
    s.receive(ACK, 30.2)
    assert s.next_deadline() == 60.0
    assert s.stats.heartbeats_acked == 1


def test_a_full_buffer_drops_the_oldest_record_not_on_the_wire() -> None:
    """The buffer is bounded; the record awaiting its answer is never the one dropped."""
    s = ReceiverStandIn(buffer_size=3)
    for zone in range(3):
        s.queue(_signal(zone))
    assert s.poll(0.0) == _record(0)
    s.queue(_signal(3))
    assert s.pending == (_signal(0), _signal(2), _signal(3))
    assert s.stats.dropped == 1


def test_line_hits_read_as_nul_on_a_parity_line() -> None:
    """With parity, a hit byte arrives as NUL (the UART's parity-error reading), never another."""
    s = ReceiverStandIn(corrupt_rate=0.5, rng=random.Random(7))
    s.queue(_signal(1))
    sent = s.poll(0.0)
    good = _record(1)
    assert len(sent) == len(good)
    assert all(a in {b, 0} for a, b in zip(sent, good, strict=True))
    assert sent.count(0) == s.stats.corrupted > 0


def test_line_hits_flip_one_bit_without_parity() -> None:
    """On 8N1 a hit byte arrives with exactly one bit flipped."""
    s = ReceiverStandIn(corrupt_rate=1.0, line_parity=False, rng=random.Random(3))
    s.queue(_signal(1))
    sent = s.poll(0.0)
    assert all(bin(a ^ b).count("1") == 1 for a, b in zip(sent, _record(1), strict=True))


def test_the_same_seed_replays_the_same_faults() -> None:
    """Faults come from the seeded random.Random only: a run can be replayed."""

    def run() -> bytes:
        s = ReceiverStandIn(corrupt_rate=0.2, rng=random.Random(42))
        s.queue(_signal(1))
        return s.poll(0.0)

    assert run() == run()


def test_duplicate_fault_sends_an_acknowledged_record_once_more() -> None:
    """duplicate_rate resends the record after its ACK; it counts as acknowledged once."""
    s = ReceiverStandIn(duplicate_rate=1.0)
    s.queue(_signal(1))
    assert s.poll(0.0) == _record(1)
    s.receive(ACK, 0.1)
    assert s.poll(0.1) == _record(1)
    s.receive(ACK, 0.2)
    assert s.idle
    assert (s.stats.acked, s.stats.duplicates, s.stats.sent) == (1, 1, 2)


def test_queue_raw_sends_exact_bytes_with_dc4() -> None:
    """queue_raw sends garbage as given, ending it with DC4 when missing."""
    s = ReceiverStandIn()
    s.queue_raw(b"hello")
    assert s.poll(0.0) == b"hello" + DC4
    assert s.pending == (None,)


def test_stray_answers_and_other_bytes_are_ignored() -> None:
    """An ACK with nothing on the wire, and bytes other than ACK/NAK, change nothing."""
    s = ReceiverStandIn()
    s.receive(ACK + b"xyz" + NAK, 0.0)
    assert s.stats == StandInStats()
    assert s.link_up


def test_misuse_raises() -> None:
    """Bad settings, unprintable signals and time going backwards are ValueError/TypeError."""
    with pytest.raises(ValueError, match="receiver"):
        ReceiverStandIn(receiver="1")
    with pytest.raises(ValueError, match="positive"):
        ReceiverStandIn(heartbeat_s=0)
    with pytest.raises(ValueError, match="retries"):
        ReceiverStandIn(buffer_size=0)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        ReceiverStandIn(corrupt_rate=2.0)
    with pytest.raises(ValueError, match="account"):
        ReceiverStandIn().queue(_signal(1, account="12A4"))
    with pytest.raises(TypeError):
        ReceiverStandIn().queue_raw("text")  # type: ignore[arg-type]
    s = ReceiverStandIn()
    s.poll(5.0)
    with pytest.raises(ValueError, match="backwards"):
        s.poll(4.0)


def test_next_deadline_is_none_before_the_first_poll() -> None:
    """The heartbeat clock starts at the first poll."""
    assert ReceiverStandIn().next_deadline() is None


_ANSWERS = st.sampled_from([ACK, NAK, b""])


@given(
    zones=st.lists(st.integers(0, 999), min_size=1, max_size=8, unique=True),
    script=st.lists(st.tuples(_ANSWERS, st.floats(0.0, 40.0)), max_size=40),
    duplicate_rate=st.sampled_from([0.0, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_every_event_is_delivered_in_order_whatever_the_answers(
    zones: list[int], script: list[tuple[bytes, float]], duplicate_rate: float, seed: int
) -> None:
    """Any mix of ACK, NAK and silence, then a healthy link: every event arrives, in order."""
    s = ReceiverStandIn(heartbeat_s=30.0, duplicate_rate=duplicate_rate, rng=random.Random(seed))
    for zone in zones:
        s.queue(_signal(zone))
    decoder = ReceiverDecoder()
    stored: list[int] = []
    now = 0.0

    def step(answer: bytes) -> None:
        sent = s.poll(now)
        for item in decoder.receive_data(sent) if sent else []:
            assert isinstance(item, ReceiverEvent | ReceiverHeartbeat)
            if isinstance(item, ReceiverEvent) and answer == ACK and item.zone not in stored:
                stored.append(item.zone)  # dedup by content, as the gateway does
            s.receive(answer, now)

    for answer, dt in script:
        step(answer)
        now += dt
    for _ in range(10 * len(zones) + 10):  # a healthy gateway from now on
        if s.idle:
            break
        step(ACK)
        now = max(now, s.next_deadline() or now)
    assert s.idle
    assert stored == zones
    assert s.stats.acked == len(zones)
    assert s.stats.dropped == 0
