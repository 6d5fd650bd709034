"""Duplicates across retransmissions and paths (gateway/core/dedup.py), with bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.events import Transport
from gateway.core.dedup import Deduplicator
from tests.factories import T0, checkpoint_event, make_config, phone_event, receiver_event

CONFIG = make_config()
WINDOW = 3600.0
CROSS = 120.0


def make(max_entries: int = 1000) -> Deduplicator:
    return Deduplicator(window_s=WINDOW, max_entries=max_entries, cross_path_window_s=CROSS)


def test_first_sight_is_not_a_duplicate_and_is_remembered() -> None:
    """A new event is not a duplicate, and is then remembered."""
    dedup = make()
    assert dedup.is_duplicate(phone_event(CONFIG, seq=1), T0) is False
    assert len(dedup) == 1


def test_same_identity_is_a_duplicate() -> None:
    """A retransmission (same dedup_key) is a duplicate, on any transport and at any time."""
    dedup = make()
    assert not dedup.is_duplicate(phone_event(CONFIG, seq=7), T0)
    assert dedup.is_duplicate(phone_event(CONFIG, seq=7), T0 + 1)
    assert dedup.is_duplicate(phone_event(CONFIG, seq=7, transport=Transport.SERIAL), T0 + 2)
    assert dedup.is_duplicate(phone_event(CONFIG, seq=7), T0 + WINDOW)
    assert len(dedup) == 1


def test_same_checkpoint_record_is_a_duplicate() -> None:
    """A checkpoint record id repeated is a duplicate; another record id is not."""
    dedup = make()
    assert not dedup.is_duplicate(checkpoint_event(CONFIG, record_id="r-1"), T0)
    assert dedup.is_duplicate(checkpoint_event(CONFIG, record_id="r-1"), T0 + 1)
    assert not dedup.is_duplicate(checkpoint_event(CONFIG, record_id="r-2"), T0 + 1)


def test_identity_is_forgotten_after_the_window() -> None:
    """Past window_s an identity is evicted: the same key is new again."""
    dedup = make()
    dedup.is_duplicate(checkpoint_event(CONFIG, record_id="r-1"), T0)
    assert not dedup.is_duplicate(checkpoint_event(CONFIG, record_id="r-1"), T0 + WINDOW + 0.001)


def test_another_sequence_number_with_the_same_content_is_a_new_alarm() -> None:
    """A second press on the same path (new seq, same content) is not a duplicate."""
    dedup = make()
    assert not dedup.is_duplicate(phone_event(CONFIG, seq=1), T0)
    assert not dedup.is_duplicate(phone_event(CONFIG, seq=2), T0 + 5)


@pytest.mark.parametrize("first_by_receiver", [True, False])
def test_same_content_on_another_path_within_the_window_is_a_duplicate(
    first_by_receiver: bool,
) -> None:
    """The same alarm by MQTT and by the receiver, in either order, within the window, is one."""
    dedup = make()
    mqtt = phone_event(CONFIG, seq=3, ingress_ts=T0)
    rx = receiver_event(CONFIG, ingress_ts=T0)
    first, second = (rx, mqtt) if first_by_receiver else (mqtt, rx)
    assert not dedup.is_duplicate(first, T0)
    assert dedup.is_duplicate(second, T0 + CROSS)


def test_same_content_on_another_path_after_the_window_is_not_a_duplicate() -> None:
    """Past the cross-path window the same content by another path is a new alarm."""
    dedup = make()
    assert not dedup.is_duplicate(phone_event(CONFIG, seq=3), T0)
    assert not dedup.is_duplicate(receiver_event(CONFIG, ingress_ts=T0 + CROSS + 1), T0 + CROSS + 1)


def test_native_serial_and_mqtt_are_two_paths() -> None:
    """A phone's MQTT message and its native serial frame with a new seq are one alarm."""
    dedup = make()
    assert not dedup.is_duplicate(phone_event(CONFIG, seq=1), T0)
    assert dedup.is_duplicate(phone_event(CONFIG, seq=2, transport=Transport.SERIAL), T0 + 1)


def test_receiver_replay_on_the_same_path_is_a_duplicate() -> None:
    """An unsequenced receiver record repeated on the same serial path is a duplicate."""
    dedup = make()
    assert not dedup.is_duplicate(receiver_event(CONFIG, ingress_ts=T0), T0)
    assert dedup.is_duplicate(receiver_event(CONFIG, ingress_ts=T0 + 30), T0 + 30)
    assert not dedup.is_duplicate(receiver_event(CONFIG, ingress_ts=T0 + CROSS + 1), T0 + CROSS + 1)


def test_different_content_is_never_a_cross_path_duplicate() -> None:
    """A restore, another zone or another code is not the same alarm."""
    dedup = make()
    assert not dedup.is_duplicate(receiver_event(CONFIG, ingress_ts=T0), T0)
    assert not dedup.is_duplicate(receiver_event(CONFIG, q=3, ingress_ts=T0 + 1), T0 + 1)
    assert not dedup.is_duplicate(receiver_event(CONFIG, zone=2, ingress_ts=T0 + 2), T0 + 2)
    assert not dedup.is_duplicate(receiver_event(CONFIG, code=110, ingress_ts=T0 + 3), T0 + 3)


def test_remember_restores_an_identity() -> None:
    """An identity restored from the store is a duplicate when it arrives again."""
    dedup = make()
    dedup.remember("ph/h-0001/9", T0 - 10)
    assert dedup.is_duplicate(phone_event(CONFIG, seq=9), T0)


def test_memory_is_bounded_and_the_oldest_go_first() -> None:
    """With max_entries N the last N identities are remembered and no more are kept."""
    dedup = make(max_entries=3)
    for seq in range(5):
        assert not dedup.is_duplicate(checkpoint_event(CONFIG, record_id=f"r-{seq}"), T0 + seq)
    assert len(dedup) == 3
    assert not dedup.is_duplicate(checkpoint_event(CONFIG, record_id="r-0"), T0 + 5)
    assert dedup.is_duplicate(checkpoint_event(CONFIG, record_id="r-3"), T0 + 5)
    assert dedup.is_duplicate(checkpoint_event(CONFIG, record_id="r-4"), T0 + 5)
    assert len(dedup) == 3


def test_content_memory_is_bounded_too() -> None:
    """The content index keeps only the last N contents."""
    dedup = make(max_entries=2)
    for zone in range(3):
        dedup.is_duplicate(receiver_event(CONFIG, zone=zone, ingress_ts=T0 + zone), T0 + zone)
    assert not dedup.is_duplicate(receiver_event(CONFIG, zone=0, ingress_ts=T0 + 3), T0 + 3)
    assert dedup.is_duplicate(receiver_event(CONFIG, zone=2, ingress_ts=T0 + 3), T0 + 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_s": 0.0, "max_entries": 1},
        {"window_s": 1.0, "max_entries": 0},
        {"window_s": 1.0, "max_entries": 1, "cross_path_window_s": -1.0},
    ],
)
def test_non_positive_settings_are_misuse(kwargs: dict[str, float]) -> None:
    """Windows and size must be positive: ValueError."""
    with pytest.raises(ValueError, match="positive"):
        Deduplicator(**kwargs)  # type: ignore[arg-type]


@given(st.lists(st.integers(0, 20), max_size=60), st.integers(1, 8))
def test_never_more_than_max_entries(seqs: list[int], max_entries: int) -> None:
    """Whatever arrives, memory stays within max_entries and a repeat of the last one is caught."""
    dedup = make(max_entries=max_entries)
    for i, seq in enumerate(seqs):
        event = phone_event(CONFIG, seq=seq, zone=seq)
        dedup.is_duplicate(event, T0 + i)
        assert len(dedup) <= max_entries
        assert dedup.is_duplicate(event, T0 + i)


def test_a_cross_path_duplicate_retransmitted_later_is_still_a_duplicate() -> None:
    """MQTT seq 5 judged a duplicate of a receiver record stays one when redelivered later."""
    dedup = make()
    assert not dedup.is_duplicate(receiver_event(CONFIG, ingress_ts=T0), T0)
    assert dedup.is_duplicate(phone_event(CONFIG, seq=5), T0 + 1)
    # The phone (or the broker) redelivers seq 5 after the cross-path window.
    assert dedup.is_duplicate(phone_event(CONFIG, seq=5), T0 + CROSS + 60)


def test_a_flood_of_plate_reads_never_pushes_an_alarm_out() -> None:
    """Checkpoint traffic is bounded apart: max_entries passes later, the panic is still known."""
    dedup = make(max_entries=10)
    panic_ = phone_event(CONFIG, seq=1)
    assert not dedup.is_duplicate(panic_, T0)
    for n in range(100):
        passed = checkpoint_event(CONFIG, record_id=f"r-{n}")
        assert not dedup.is_duplicate(passed, T0 + n * 0.01)
    assert dedup.is_duplicate(panic_, T0 + 2)
    assert len(dedup) == 11  # 10 plate reads (the newest) + the panic


def test_a_large_memory_is_sharded_and_still_bounded() -> None:
    """At district size the maps are split into shards no rebuild of which walks
    more than a slice (a FIFO dict of 500,000 stalled the loop 45-200 ms); the
    bound, the recent identities and the window hold as before."""
    max_entries = 50_000
    dedup = make(max_entries=max_entries)
    first = checkpoint_event(CONFIG, record_id="r-first")
    assert not dedup.is_duplicate(first, T0)
    total = 2 * max_entries
    for n in range(total):
        assert not dedup.is_duplicate(checkpoint_event(CONFIG, record_id=f"r-{n}"), T0 + 1)
    recent = dedup._traffic  # the shards are the point here
    assert len(recent.shards) == max_entries // 8192
    assert recent.cap * len(recent.shards) <= max_entries
    assert all(len(shard) == recent.cap <= 2 * 8192 for shard in recent.shards)
    assert len(dedup) == recent.cap * len(recent.shards)
    # The newest are remembered, the first is long gone.
    for n in range(total - 100, total):
        assert dedup.is_duplicate(checkpoint_event(CONFIG, record_id=f"r-{n}"), T0 + 2)
    assert not dedup.is_duplicate(first, T0 + 2)


def test_a_large_memory_keeps_the_window_exact() -> None:
    """Age is judged on the identity's own shard at lookup: remembered up to the
    window's end, new again just after it, whatever the other shards hold."""
    dedup = make(max_entries=100_000)
    panic_ = phone_event(CONFIG, seq=1)
    assert not dedup.is_duplicate(panic_, T0)
    for n in range(2000):
        dedup.is_duplicate(phone_event(CONFIG, seq=1000 + n), T0 + 1)
    assert dedup.is_duplicate(panic_, T0 + WINDOW)
    assert dedup.is_duplicate(phone_event(CONFIG, seq=1500), T0 + WINDOW)
    assert not dedup.is_duplicate(panic_, T0 + WINDOW + 2)
