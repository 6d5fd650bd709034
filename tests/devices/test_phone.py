"""What a phone's message means (devices/phone.py): classification, stage, identity, place."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.model import Priority
from devices.events import Category, Event, Kind, Source, Stage, Transport
from devices.phone import (
    HEARTBEAT_CODE,
    classify,
    content_key,
    normalise_phone,
    normalise_receiver_event,
)
from devices.phone import phone_event as hot_phone_event
from protocols.reasons import Reason, Rejected
from tests.factories import (
    ACCOUNT,
    GROUP,
    HOUSEHOLD,
    HOUSEHOLD_WEST,
    T0,
    TOWNSHIP,
    TOWNSHIP_WEST,
    VILLAGE,
    VILLAGE_WEST,
    make_config,
    phone_event,
    phone_message,
    receiver_event,
    receiver_record,
)

CONFIG = make_config()

LIFE = (Category.LIFE_SAFETY, Priority.LIFE_SAFETY)
PROPERTY = (Category.PROPERTY, Priority.PROPERTY)
TROUBLE = (Category.TROUBLE, Priority.TROUBLE)
INFO = (Category.INFO, Priority.INFO)


# ---------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("code", "kind", "where"),
    [
        (100, Kind.MEDICAL, LIFE),
        (101, Kind.MEDICAL, LIFE),
        (102, Kind.ALARM, LIFE),
        (110, Kind.FIRE, LIFE),
        (114, Kind.FIRE, LIFE),
        (118, Kind.FIRE, LIFE),
        (119, Kind.ALARM, LIFE),
        (120, Kind.PANIC, LIFE),
        (121, Kind.DURESS, LIFE),
        (122, Kind.PANIC, LIFE),
        (123, Kind.PANIC, LIFE),
        (129, Kind.ALARM, LIFE),
        (130, Kind.BURGLARY, PROPERTY),
        (136, Kind.BURGLARY, PROPERTY),
        (138, Kind.BURGLARY, PROPERTY),
        (139, Kind.BURGLARY, PROPERTY),
        (140, Kind.ALARM, PROPERTY),
        (149, Kind.ALARM, PROPERTY),
        (150, Kind.ALARM, PROPERTY),
        (151, Kind.GAS, LIFE),
        (162, Kind.CARBON_MONOXIDE, LIFE),
        (199, Kind.ALARM, PROPERTY),
        (200, Kind.TROUBLE, TROUBLE),
        (301, Kind.TROUBLE, TROUBLE),
        (302, Kind.TROUBLE, TROUBLE),
        (350, Kind.TROUBLE, TROUBLE),
        (401, Kind.OPEN_CLOSE, INFO),
        (570, Kind.BYPASS, INFO),
        (601, Kind.TEST, INFO),
        (603, Kind.TEST, INFO),
        (700, Kind.OTHER, INFO),
        (999, Kind.OTHER, INFO),
    ],
)
def test_classify_follows_the_code_families(
    code: int, kind: Kind, where: tuple[Category, Priority]
) -> None:
    """Each Contact ID code gets the kind, category and priority of PROTOCOLS.md's policy."""
    assert classify(code) == (kind, *where)


def test_tamper_is_a_trouble_not_a_burglary() -> None:
    """137 tamper sits among the burglary codes but is routed as a trouble."""
    assert classify(137) == (Kind.TAMPER, Category.TROUBLE, Priority.TROUBLE)


def test_periodic_test_is_the_heartbeat() -> None:
    """602 periodic test only feeds supervision: heartbeat category, info priority."""
    assert HEARTBEAT_CODE == 602
    assert classify(602) == (Kind.HEARTBEAT, Category.HEARTBEAT, Priority.INFO)


@given(st.integers(100, 999))
def test_life_safety_is_exactly_the_policy(code: int) -> None:
    """Life safety is exactly 100-129, 151 and 162; property exactly 130-199 less those and 137."""
    _, category, priority = classify(code)
    life = code <= 129 or code in {151, 162}
    assert (category is Category.LIFE_SAFETY) == life
    assert (priority is Priority.LIFE_SAFETY) == life
    assert (category is Category.PROPERTY) == (130 <= code <= 199 and not life and code != 137)
    if 300 <= code <= 399:
        assert category is Category.TROUBLE


def test_classify_outside_the_code_range_is_misuse() -> None:
    """A code outside 100-999 is a caller's bug: the decoder already refused it."""
    with pytest.raises(ValueError, match="code"):
        classify(99)


# ---------------------------------------------------------------- normalise_phone


def test_panic_is_placed_in_the_district() -> None:
    """A panic carries the household's village, township and group, and its identity."""
    event = phone_event(CONFIG, seq=42, ts=T0 - 1.0, ingress_ts=T0)
    assert event == Event(
        source=Source.PHONE,
        transport=Transport.MQTT,
        device_id=HOUSEHOLD,
        kind=Kind.PANIC,
        category=Category.LIFE_SAFETY,
        priority=Priority.LIFE_SAFETY,
        stage=Stage.NEW,
        dedup_key=f"ph/{HOUSEHOLD}/42",
        content_key=f"{HOUSEHOLD}/1/120/1/1",
        device_ts=T0 - 1.0,
        ingress_ts=T0,
        township=TOWNSHIP,
        village=VILLAGE,
        group=GROUP,
        household=HOUSEHOLD,
        event={"seq": 42, "q": 1, "code": 120, "zone": 1, "part": 1},
        sequenced=True,
    )
    assert event.alarm_id == event.dedup_key


def test_township_comes_from_the_village() -> None:
    """Another household is placed in its own village and township."""
    event = phone_event(CONFIG, HOUSEHOLD_WEST)
    assert (event.village, event.township) == (VILLAGE_WEST, TOWNSHIP_WEST)


def test_transport_is_kept() -> None:
    """The native serial path gives the same event but for its transport."""
    mqtt = phone_event(CONFIG, transport=Transport.MQTT)
    serial = phone_event(CONFIG, transport=Transport.SERIAL)
    assert serial.transport is Transport.SERIAL
    assert (serial.dedup_key, serial.content_key) == (mqtt.dedup_key, mqtt.content_key)


@pytest.mark.parametrize(("q", "stage"), [(3, Stage.RESTORE), (6, Stage.STATUS)])
@pytest.mark.parametrize("code", [120, 121, 110, 130, 137, 301])
def test_restore_and_status_are_info_and_keep_their_family(q: int, stage: Stage, code: int) -> None:
    """Qualifier 3/6 gives a restore/status at INFO priority, routed like its family."""
    event = phone_event(CONFIG, q=q, code=code)
    kind, category, _ = classify(code)
    assert (event.stage, event.priority) == (stage, Priority.INFO)
    assert (event.kind, event.category) == (kind, category)


def test_new_event_keeps_its_priority() -> None:
    """Qualifier 1 is a new event at its family's priority."""
    event = phone_event(CONFIG, q=1, code=130)
    assert (event.stage, event.priority) == (Stage.NEW, Priority.PROPERTY)


@pytest.mark.parametrize("q", [1, 3, 6])
def test_heartbeat_stays_a_heartbeat_whatever_the_qualifier(q: int) -> None:
    """602 with any qualifier is a heartbeat at INFO."""
    event = phone_event(CONFIG, q=q, code=602)
    assert (event.kind, event.category, event.priority) == (
        Kind.HEARTBEAT,
        Category.HEARTBEAT,
        Priority.INFO,
    )


def test_unknown_household_is_rejected() -> None:
    """A household the configuration does not know is Rejected(UNKNOWN_DEVICE), not raised."""
    result = normalise_phone(
        phone_message("h-9999"), CONFIG.topology, transport=Transport.MQTT, ingress_ts=T0
    )
    assert isinstance(result, Rejected)
    assert result.reason is Reason.UNKNOWN_DEVICE
    assert result.raw == b"h-9999"
    assert "h-9999" in result.detail


# ---------------------------------------------------------------- receiver path


def test_receiver_record_is_the_same_alarm_as_the_mqtt_one() -> None:
    """A receiver record and the phone's MQTT message give the same content_key and meaning."""
    rx = receiver_event(CONFIG, ACCOUNT, q=1, code=120, group=1, zone=1, ingress_ts=T0 + 2)
    mqtt = phone_event(CONFIG, q=1, code=120, zone=1, part=1)
    assert rx.content_key == mqtt.content_key == content_key(HOUSEHOLD, 1, 120, 1, 1)
    for field in ("source", "device_id", "kind", "category", "priority", "stage", "township"):
        assert getattr(rx, field) == getattr(mqtt, field), field
    assert (rx.village, rx.group, rx.household) == (mqtt.village, mqtt.group, mqtt.household)


def test_receiver_event_has_no_device_clock_and_no_sequence() -> None:
    """A receiver record: serial, unsequenced, no device_ts, identified by content and arrival."""
    rx = receiver_event(CONFIG, ACCOUNT, code=121, zone=12, ingress_ts=T0 + 0.25)
    assert rx.transport is Transport.SERIAL
    assert rx.sequenced is False
    assert rx.device_ts is None
    assert rx.dedup_key == f"rx/{HOUSEHOLD}/1/121/12/1@{round((T0 + 0.25) * 1000)}"
    assert rx.event == {
        "account": ACCOUNT,
        "receiver": "01",
        "line": "100",
        "q": 1,
        "code": 121,
        "zone": 12,
        "part": 1,
    }
    assert rx.kind is Kind.DURESS


def test_receiver_records_arriving_apart_have_distinct_identities() -> None:
    """Two arrivals of the same record differ in dedup_key but not in content_key."""
    first = receiver_event(CONFIG, ingress_ts=T0)
    second = receiver_event(CONFIG, ingress_ts=T0 + 0.001)
    assert first.dedup_key != second.dedup_key
    assert first.content_key == second.content_key


def test_receiver_restore_is_info() -> None:
    """A receiver restore (R) is a restore stage at INFO, like the MQTT q=3."""
    rx = receiver_event(CONFIG, q=3)
    assert (rx.stage, rx.priority) == (Stage.RESTORE, Priority.INFO)


def test_receiver_account_with_hex_digits_maps_to_its_household() -> None:
    """A B-F account maps to its household like any other."""
    rx = receiver_event(CONFIG, "BEEF")
    assert rx.household == HOUSEHOLD_WEST


def test_unknown_account_is_rejected() -> None:
    """An account no household owns is Rejected(UNKNOWN_ACCOUNT) with the record as raw."""
    record = receiver_record("5678")
    result = normalise_receiver_event(record, CONFIG.topology, ingress_ts=T0)
    assert isinstance(result, Rejected)
    assert result.reason is Reason.UNKNOWN_ACCOUNT
    assert result.raw == record.raw
    assert "5678" in result.detail


@given(
    q=st.sampled_from([1, 3, 6]),
    code=st.integers(100, 999),
    zone=st.integers(0, 999),
    part=st.integers(0, 99),
)
def test_both_paths_agree_on_what_happened(q: int, code: int, zone: int, part: int) -> None:
    """For any Contact ID content the MQTT and receiver paths give the same content and meaning."""
    mqtt = phone_event(CONFIG, q=q, code=code, zone=zone, part=part)
    rx = receiver_event(CONFIG, q=q, code=code, zone=zone, group=part)
    assert rx.content_key == mqtt.content_key
    assert (rx.kind, rx.category, rx.priority, rx.stage) == (
        mqtt.kind,
        mqtt.category,
        mqtt.priority,
        mqtt.stage,
    )


_STAGE_OF = {1: Stage.NEW, 3: Stage.RESTORE, 6: Stage.STATUS}


@given(
    household=st.sampled_from([HOUSEHOLD, HOUSEHOLD_WEST]),
    seq=st.integers(0, 2**63 - 1),
    ts=st.floats(allow_nan=False, allow_infinity=False),
    q=st.sampled_from([1, 3, 6]),
    code=st.integers(100, 999),
    zone=st.integers(0, 999),
    part=st.integers(0, 99),
    transport=st.sampled_from([Transport.MQTT, Transport.SERIAL]),
)
def test_the_hot_path_builds_the_event_the_rules_describe(
    household: str,
    seq: int,
    ts: float,
    q: int,
    code: int,
    zone: int,
    part: int,
    transport: Transport,
) -> None:
    """`phone_event` (the MQTT hot path) and `normalise_phone` give the Event the rules say."""
    message = phone_message(household, seq=seq, ts=ts, q=q, code=code, zone=zone, part=part)
    topology = CONFIG.topology
    home = topology.households[household]
    kind, category, priority = classify(code)
    stage = _STAGE_OF[q]
    if stage is not Stage.NEW and category is not Category.HEARTBEAT:
        priority = Priority.INFO
    expected = Event(
        source=Source.PHONE,
        transport=transport,
        device_id=household,
        kind=kind,
        category=category,
        priority=priority,
        stage=stage,
        dedup_key=f"ph/{household}/{seq}",
        content_key=content_key(household, q, code, zone, part),
        device_ts=ts,
        ingress_ts=T0,
        township=topology.villages[home.village].township,
        village=home.village,
        group=home.group,
        household=household,
        event={"seq": seq, "q": q, "code": code, "zone": zone, "part": part},
    )
    fast = hot_phone_event(home, (seq, ts, q, code, zone, part), topology, transport, T0)
    general = normalise_phone(message, topology, transport=transport, ingress_ts=T0)
    assert fast == general == expected
    assert list(fast.event or {}) == ["seq", "q", "code", "zone", "part"]
    assert type(fast) is Event
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.device_id = "h-other"  # type: ignore[misc]
