"""What a checkpoint's message means (devices/checkpoint.py): categories, plates, watchlist."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.model import Priority
from devices.checkpoint import checkpoint_event as checkpoint_event_of
from devices.checkpoint import normalise_checkpoint, normalise_plate, watchlist_event
from devices.events import Category, Event, Kind, Source, Stage, Transport
from protocols.payloads import CheckpointEventType, CheckpointMessage, checkpoint_payload
from protocols.reasons import Reason, Rejected
from tests.factories import (
    CP_A,
    CP_B,
    T0,
    TOWNSHIP,
    TOWNSHIP_WEST,
    WATCHED_PLATE,
    checkpoint_event,
    checkpoint_message,
    make_config,
    phone_event,
)
from tests.protocols.test_payloads import checkpoint_messages

CONFIG = make_config()
WATCHLIST = frozenset({WATCHED_PLATE})


# ---------------------------------------------------------------- categories


def test_pass_is_traffic() -> None:
    """A pass is an INFO-priority PASS, placed by the config, with the contract map less `v`."""
    event = checkpoint_event(CONFIG, CP_A, record_id="r-9", plate="苏B67890")
    assert event == Event(
        source=Source.CHECKPOINT,
        transport=Transport.MQTT,
        device_id=CP_A,
        kind=Kind.PASS,
        category=Category.PASS,
        priority=Priority.INFO,
        stage=Stage.NEW,
        dedup_key=f"cp/{CP_A}/r-9",
        content_key=None,
        device_ts=T0 - 0.2,
        ingress_ts=T0,
        township=TOWNSHIP,
        checkpoint=CP_A,
        event={"id": "r-9", "type": "pass", "ts": T0 - 0.2, "plate": "苏B67890", "conf": 0.93},
    )
    assert event.village is None
    assert event.group is None


def test_heartbeat_only_feeds_supervision() -> None:
    """A checkpoint heartbeat is the HEARTBEAT category at INFO."""
    event = checkpoint_event(CONFIG, type=CheckpointEventType.HEARTBEAT)
    assert (event.kind, event.category, event.priority) == (
        Kind.HEARTBEAT,
        Category.HEARTBEAT,
        Priority.INFO,
    )


def test_fault_is_a_trouble_for_the_unit() -> None:
    """A fault is a CHECKPOINT_FAULT at TROUBLE priority, carrying its text."""
    event = checkpoint_event(CONFIG, CP_B, type=CheckpointEventType.FAULT)
    assert (event.kind, event.category, event.priority) == (
        Kind.CHECKPOINT_FAULT,
        Category.CHECKPOINT_FAULT,
        Priority.TROUBLE,
    )
    assert event.township == TOWNSHIP_WEST
    assert event.event is not None
    assert event.event["fault"] == "lens obscured"


def test_transport_is_kept() -> None:
    """A native serial frame gives the same event but for its transport."""
    event = checkpoint_event(CONFIG, transport=Transport.SERIAL)
    assert event.transport is Transport.SERIAL


def test_unknown_checkpoint_is_rejected() -> None:
    """A checkpoint the configuration does not know is Rejected(UNKNOWN_DEVICE)."""
    result = normalise_checkpoint(
        checkpoint_message("cp-zz"), CONFIG.topology, transport=Transport.MQTT, ingress_ts=T0
    )
    assert isinstance(result, Rejected)
    assert result.reason is Reason.UNKNOWN_DEVICE
    assert result.raw == b"cp-zz"
    assert "cp-zz" in result.detail


# ---------------------------------------------------------------- plates


@pytest.mark.parametrize(
    ("read", "normal"),
    [
        ("苏A12345", "苏A12345"),
        ("苏a12345", "苏A12345"),
        ("苏A 12345", "苏A12345"),
        ("苏A·12345", "苏A12345"),
        ("苏A-123.45", "苏A12345"),
        ("苏AI2O45", "苏A12045"),
        ("苏ai2o45", "苏A12045"),
        ("京O I23O5", "京O12305"),  # the city letter O is kept, serial O and I fixed
        ("苏I", "苏I"),
        ("", ""),
    ],
)
def test_normalise_plate(read: str, normal: str) -> None:
    """Upper case, no separators, I→1 and O→0 only after the province and city letter."""
    assert normalise_plate(read) == normal


@given(st.text(max_size=12))
def test_normalise_plate_is_idempotent(plate: str) -> None:
    """Normalising twice changes nothing more."""
    once = normalise_plate(plate)
    assert normalise_plate(once) == once


# ---------------------------------------------------------------- watchlist


@pytest.mark.parametrize("read", ["苏A12345", "苏a 12345", "苏AI2345", "苏A·I2345"])
def test_watchlist_hit_on_the_normalised_plate(read: str) -> None:
    """A pass whose normalised plate is watched raises a WATCHLIST_HIT of its own identity."""
    passed = checkpoint_event(CONFIG, plate=read)
    hit = watchlist_event(passed, WATCHLIST)
    assert hit is not None
    assert (hit.kind, hit.category, hit.priority, hit.stage) == (
        Kind.WATCHLIST_HIT,
        Category.WATCHLIST,
        Priority.PROPERTY,
        Stage.NEW,
    )
    assert hit.dedup_key == f"wl/{passed.dedup_key}"
    assert hit.alarm_id != passed.alarm_id
    assert hit.event == {**(passed.event or {}), "match": "exact"}
    assert (hit.checkpoint, hit.township, hit.device_ts, hit.ingress_ts) == (
        passed.checkpoint,
        passed.township,
        passed.device_ts,
        passed.ingress_ts,
    )


def test_no_hit_on_another_plate() -> None:
    """An unwatched plate raises nothing."""
    assert watchlist_event(checkpoint_event(CONFIG, plate="苏B67890"), WATCHLIST) is None


def test_no_hit_on_an_unread_plate() -> None:
    """An unread plate ("") never matches, even a watchlist holding ""."""
    passed = checkpoint_event(CONFIG, plate="")
    assert watchlist_event(passed, WATCHLIST | {""}) is None


def test_province_misread_is_not_corrected() -> None:
    """Matching is exact: a different province character does not hit."""
    assert watchlist_event(checkpoint_event(CONFIG, plate="浙A12345"), WATCHLIST) is None


def test_only_passes_are_matched() -> None:
    """A fault, a heartbeat or a phone event never raises a watchlist hit."""
    fault = checkpoint_event(CONFIG, type=CheckpointEventType.FAULT)
    beat = checkpoint_event(CONFIG, type=CheckpointEventType.HEARTBEAT)
    assert watchlist_event(fault, WATCHLIST) is None
    assert watchlist_event(beat, WATCHLIST) is None
    assert watchlist_event(phone_event(CONFIG), WATCHLIST) is None


def test_a_pass_without_a_plate_map_raises_nothing() -> None:
    """A pass carrying no event map, or no plate in it, is never a hit."""
    passed = checkpoint_event(CONFIG, plate=WATCHED_PLATE)
    assert watchlist_event(dataclasses.replace(passed, event=None), WATCHLIST) is None
    assert watchlist_event(dataclasses.replace(passed, event={"id": "r-1"}), WATCHLIST) is None


# ---------------------------------------------------------------- the hot path


def _separators_dropped_the_slow_way(plate: str) -> str:
    """The first implementation of `normalise_plate`, kept as the oracle of the fast one."""
    compact = "".join(ch for ch in plate.upper() if ch not in " ·.-")
    if len(compact) <= 2:
        return compact
    return compact[:2] + compact[2:].translate(str.maketrans("OI", "01"))


@given(st.text(alphabet=st.sampled_from("苏京aAoOiI1 ·.-ßﬁ") | st.characters(), max_size=12))
def test_normalise_plate_matches_the_character_filter(plate: str) -> None:
    """Dropping separators with `str.translate` is dropping them one character at a time."""
    assert normalise_plate(plate) == _separators_dropped_the_slow_way(plate)


@given(checkpoint_messages(), st.sampled_from([CP_A, CP_B]))
def test_checkpoint_event_map_is_the_contract_map_less_v(
    message: CheckpointMessage, checkpoint: str
) -> None:
    """The event map has `checkpoint_payload`'s keys, values and order, without `v`."""
    message = dataclasses.replace(message, checkpoint=checkpoint)
    event = normalise_checkpoint(
        message, CONFIG.topology, transport=Transport.SERIAL, ingress_ts=T0
    )
    assert isinstance(event, Event)
    site = CONFIG.topology.checkpoints[checkpoint]
    assert checkpoint_event_of(message, site, Transport.SERIAL, T0) == event
    expected = {k: v for k, v in checkpoint_payload(message).items() if k != "v"}
    assert list((event.event or {}).items()) == list(expected.items())
    assert (event.device_id, event.checkpoint, event.township) == (
        checkpoint,
        checkpoint,
        site.township,
    )
    assert event.dedup_key == f"cp/{checkpoint}/{message.id}"
