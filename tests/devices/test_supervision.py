"""Heartbeat supervision (devices/supervision.py): transitions, deadlines, exactly-once expiry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.supervision import DeviceClass, Supervisor, Transition
from tests.factories import T0

PHONE = DeviceClass.PHONE
CHECKPOINT = DeviceClass.CHECKPOINT
TIMEOUTS = {PHONE: 900.0, CHECKPOINT: 180.0}


def make() -> Supervisor:
    return Supervisor(TIMEOUTS)


def test_first_message_brings_a_device_online_with_no_last_seen() -> None:
    """The first message since start is an online transition with last_seen None."""
    sup = make()
    assert sup.is_online(PHONE, "h-1") is None
    assert sup.seen(PHONE, "h-1", T0) == Transition(PHONE, "h-1", True, T0, None)
    assert sup.is_online(PHONE, "h-1") is True
    assert sup.online_count(PHONE) == 1


def test_later_messages_are_not_transitions() -> None:
    """A message from a device already online reports nothing."""
    sup = make()
    sup.seen(PHONE, "h-1", T0)
    assert sup.seen(PHONE, "h-1", T0 + 10) is None


def test_an_unheard_device_is_not_offline() -> None:
    """Before its first message a device is unknown, never reported offline."""
    sup = make()
    assert sup.expire(T0 + 1e6) == []
    assert sup.next_deadline() is None
    assert sup.offline_count(PHONE) == 0


def test_silence_past_the_timeout_is_one_offline_transition() -> None:
    """Exactly one offline transition, at last + timeout, and only from that instant on."""
    sup = make()
    sup.seen(PHONE, "h-1", T0)
    assert sup.expire(T0 + 899.999) == []
    assert sup.expire(T0 + 900.0) == [Transition(PHONE, "h-1", False, T0 + 900.0, T0)]
    assert sup.expire(T0 + 5000.0) == []
    assert sup.is_online(PHONE, "h-1") is False
    assert (sup.online_count(PHONE), sup.offline_count(PHONE)) == (0, 1)


def test_late_expiry_still_reports_the_deadline() -> None:
    """An expiry noticed late is stamped with when the deadline passed, not when noticed."""
    sup = make()
    sup.seen(PHONE, "h-1", T0)
    (gone,) = sup.expire(T0 + 3000.0)
    assert gone.at == T0 + 900.0


def test_return_is_an_online_transition_with_last_seen() -> None:
    """A message after going offline brings the device back, carrying when it was last heard."""
    sup = make()
    sup.seen(PHONE, "h-1", T0)
    sup.expire(T0 + 1000.0)
    assert sup.seen(PHONE, "h-1", T0 + 2000.0) == Transition(PHONE, "h-1", True, T0 + 2000.0, T0)
    assert sup.is_online(PHONE, "h-1") is True
    assert sup.offline_count(PHONE) == 0


def test_a_message_resets_the_deadline() -> None:
    """Each message pushes the device's deadline to its time + timeout."""
    sup = make()
    sup.seen(PHONE, "h-1", T0)
    sup.seen(PHONE, "h-1", T0 + 600.0)
    assert sup.next_deadline() == T0 + 1500.0
    assert sup.expire(T0 + 1000.0) == []


def test_next_deadline_is_the_earliest_across_devices_and_classes() -> None:
    """next_deadline is the earliest last + timeout of any online device of any class."""
    sup = make()
    sup.seen(PHONE, "h-1", T0)
    sup.seen(PHONE, "h-2", T0 + 10.0)
    assert sup.next_deadline() == T0 + 900.0
    sup.seen(CHECKPOINT, "cp-1", T0 + 20.0)
    assert sup.next_deadline() == T0 + 200.0
    sup.seen(PHONE, "h-1", T0 + 30.0)  # h-1 moves behind h-2
    sup.seen(CHECKPOINT, "cp-1", T0 + 800.0)
    assert sup.next_deadline() == T0 + 910.0
    assert [t.device_id for t in sup.expire(T0 + 930.0)] == ["h-2", "h-1"]
    assert sup.next_deadline() == T0 + 980.0


def test_expiry_reports_in_deadline_order_and_stops_at_the_first_not_due() -> None:
    """Several due devices are all reported; those not yet due stay online."""
    sup = make()
    for i in range(5):
        sup.seen(PHONE, f"h-{i}", T0 + i)
    gone = sup.expire(T0 + 902.5)
    assert [t.device_id for t in gone] == ["h-0", "h-1", "h-2"]
    assert [t.at for t in gone] == [T0 + 900.0, T0 + 901.0, T0 + 902.0]
    assert sup.online_count(PHONE) == 2


def test_classes_are_independent() -> None:
    """The same id in two classes is two devices, each with its class's timeout."""
    sup = make()
    sup.seen(PHONE, "x", T0)
    sup.seen(CHECKPOINT, "x", T0)
    assert sup.expire(T0 + 180.0) == [Transition(CHECKPOINT, "x", False, T0 + 180.0, T0)]
    assert sup.is_online(PHONE, "x") is True


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_timeout_is_misuse(bad: float) -> None:
    """A timeout of zero or less is a configuration bug: ValueError."""
    with pytest.raises(ValueError, match="positive"):
        Supervisor({PHONE: bad})


def test_unsupervised_class_is_misuse() -> None:
    """A device class without a timeout is a caller's bug (KeyError)."""
    with pytest.raises(KeyError):
        make().seen(DeviceClass.SERIAL_PORT, "ttyS0", T0)


# ---------------------------------------------------------------- the property

DEVICES = ("a", "b", "c")
TIMEOUT = 10


@given(
    st.lists(
        st.tuples(st.sampled_from(DEVICES), st.integers(0, 2 * TIMEOUT)),
        max_size=40,
    ),
    st.integers(0, 3 * TIMEOUT),
)
def test_expire_reports_exactly_the_gaps_past_the_timeout(
    messages: list[tuple[str, int]], tail: int
) -> None:
    """expire() reports each silence of at least the timeout once, at last + timeout."""
    # Messages come at non-decreasing times, with expire() before each and at the end;
    # each gap also brings one online transition carrying that last_seen.
    sup = Supervisor({PHONE: float(TIMEOUT)})
    now = 0
    last: dict[str, int] = {}
    expected_off: list[tuple[str, float, float]] = []
    expected_on: list[tuple[str, float, float | None]] = []
    got_off: list[Transition] = []
    got_on: list[Transition] = []
    for device, step in messages:
        now += step
        batch = sup.expire(float(now))
        assert [t.at for t in batch] == sorted(t.at for t in batch)
        got_off += batch
        before = last.get(device)
        if before is None:
            expected_on.append((device, float(now), None))
        elif now - before >= TIMEOUT:
            expected_off.append((device, float(before + TIMEOUT), float(before)))
            expected_on.append((device, float(now), float(before)))
        change = sup.seen(PHONE, device, float(now))
        if change is not None:
            got_on.append(change)
        last[device] = now
    end = now + tail
    got_off += sup.expire(float(end))
    expected_off += [
        (device, float(at + TIMEOUT), float(at))
        for device, at in last.items()
        if end - at >= TIMEOUT
    ]
    assert all(not t.online for t in got_off)
    assert all(t.online for t in got_on)
    assert sorted((t.device_id, t.at, t.last_seen) for t in got_off) == sorted(expected_off)
    assert [(t.device_id, t.at, t.last_seen) for t in got_on] == expected_on
    # Never twice.
    assert len({(t.device_id, t.at) for t in got_off}) == len(got_off)
    for device in DEVICES:
        state = sup.is_online(PHONE, device)
        if device not in last:
            assert state is None
        else:
            assert state is (end - last[device] < TIMEOUT)
