"""The way of an event up to the core's decision (gateway/core/intake.py), for every path."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.events import Kind, Transport
from gateway.core.intake import Acked, Intake, Refused, Requested
from gateway.core.pipeline import AckOutcome, Core, Outcome
from gateway.core.routing import Channel
from protocols.payloads import (
    AckMessage,
    CheckpointEventType,
    CheckpointMessage,
    PhoneMessage,
    ack_payload,
    checkpoint_payload,
    encode,
    native_payload,
    phone_payload,
)
from protocols.reasons import Reason
from protocols.topics import Topics
from tests.factories import (
    ACCOUNT,
    CP_A,
    CP_B,
    CP_C,
    HOUSEHOLD,
    HOUSEHOLD_WEST,
    T0,
    WATCHED_PLATE,
    checkpoint_message,
    make_config,
    phone_message,
    receiver_record,
)

TOPICS = Topics()
PORT = "ttyUSB0"


def as_json(m: Mapping[str, object]) -> bytes:
    return json.dumps(m, ensure_ascii=False).encode()


ENCODINGS: dict[str, Callable[[Mapping[str, object]], bytes]] = {
    "msgpack": encode,
    "json": as_json,
}


def intake() -> Intake:
    return Intake(Core(make_config()), TOPICS)


def accepted(result: object) -> Outcome:
    assert isinstance(result, Outcome), result
    return result


def refused(result: object) -> Refused:
    assert isinstance(result, Refused), result
    return result


# ---------------------------------------------------------------- MQTT ingress


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_phone_panic_over_mqtt(encoding: str) -> None:
    """A panic on alarmgw/in/phone/<id>, MessagePack or JSON, becomes three dispatches."""
    payload = ENCODINGS[encoding](phone_payload(phone_message(seq=4)))
    outcome = accepted(intake().mqtt(TOPICS.phone_in(HOUSEHOLD), payload, T0))
    assert outcome.duplicate is False
    assert (outcome.event.kind, outcome.event.transport) == (Kind.PANIC, Transport.MQTT)
    assert outcome.event.ingress_ts == T0
    assert [d.target.sink_kind for d in outcome.dispatches] == ["village", "township", "group"]
    assert outcome.dispatches[0].body["event"] == {
        "seq": 4,
        "q": 1,
        "code": 120,
        "zone": 1,
        "part": 1,
    }


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_checkpoint_pass_over_mqtt(encoding: str) -> None:
    """A watched pass on alarmgw/in/checkpoint/<id> becomes a pass and a watchlist alarm."""
    message = checkpoint_message(CP_A, plate=WATCHED_PLATE)
    payload = ENCODINGS[encoding](checkpoint_payload(message))
    outcome = accepted(intake().mqtt(TOPICS.checkpoint_in(CP_A), payload, T0))
    assert (outcome.event.kind, outcome.event.transport) == (Kind.PASS, Transport.MQTT)
    own = [d for d in outcome.dispatches if not d.alarm_id.startswith("ic/")]
    assert [d.target.channel for d in own] == [Channel.PASSES, Channel.ALARMS, Channel.ALARMS]
    assert own[1].body["kind"] == "watchlist_hit"
    # ... which calls the rings around the checkpoint to staff (test_interception.py).
    assert len(outcome.activations) == 1


def test_a_retransmission_over_mqtt_is_a_duplicate() -> None:
    """The same (household, seq) published twice is accepted once."""
    gate = intake()
    payload = encode(phone_payload(phone_message(seq=9)))
    accepted(gate.mqtt(TOPICS.phone_in(HOUSEHOLD), payload, T0))
    assert accepted(gate.mqtt(TOPICS.phone_in(HOUSEHOLD), payload, T0 + 1)).duplicate is True


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("alarmgw/in/pager/h-0001", Reason.BAD_TOPIC),
        ("other/in/phone/h-0001", Reason.BAD_TOPIC),
        ("alarmgw/in/phone/h-0001/extra", Reason.BAD_TOPIC),
        ("alarmgw/in/phone/", Reason.BAD_ID),
        ("alarmgw/in/checkpoint/ cp-a", Reason.BAD_ID),
        ("alarmgw/ack/village", Reason.BAD_TOPIC),
    ],
)
def test_a_topic_outside_the_contract_is_refused(topic: str, reason: Reason) -> None:
    """A bad topic is Refused with source `unknown`, its reason, and the topic."""
    result = refused(intake().mqtt(topic, encode(phone_payload(phone_message())), T0))
    assert (result.source, result.rejected.reason, result.topic) == ("unknown", reason, topic)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", Reason.BAD_ENCODING),
        (b"\xc1", Reason.BAD_ENCODING),
        (b"{not json", Reason.BAD_ENCODING),
        (b"\x93\x01\x02\x03", Reason.NOT_A_MAP),
        (encode({"v": 1}), Reason.MISSING_KEY),
        (encode({**phone_payload(phone_message()), "v": 2}), Reason.UNKNOWN_VERSION),
        (encode({**phone_payload(phone_message()), "q": 2}), Reason.OUT_OF_RANGE),
        (encode({**phone_payload(phone_message()), "code": "120"}), Reason.WRONG_TYPE),
        (b"\x80" * 9000, Reason.TOO_LARGE),
    ],
)
def test_a_bad_phone_payload_is_refused_as_phone(payload: bytes, reason: Reason) -> None:
    """A phone payload the decoder rejects is Refused with source `phone` and its reason."""
    topic = TOPICS.phone_in(HOUSEHOLD)
    result = refused(intake().mqtt(topic, payload, T0))
    assert (result.source, result.rejected.reason, result.topic) == ("phone", reason, topic)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x90", Reason.NOT_A_MAP),  # an empty MessagePack array
        (encode({"v": 1, "id": "r-1", "type": "party", "ts": T0}), Reason.OUT_OF_RANGE),
        (encode({"v": 1, "id": "r-1", "type": "pass", "ts": T0}), Reason.MISSING_KEY),
    ],
)
def test_a_bad_checkpoint_payload_is_refused_as_checkpoint(payload: bytes, reason: Reason) -> None:
    """A checkpoint payload the decoder rejects is Refused with source `checkpoint`."""
    topic = TOPICS.checkpoint_in(CP_A)
    result = refused(intake().mqtt(topic, payload, T0))
    assert (result.source, result.rejected.reason) == ("checkpoint", reason)


def test_an_unknown_household_is_refused() -> None:
    """A well-formed message from an unknown household is Refused(UNKNOWN_DEVICE) as `phone`."""
    topic = TOPICS.phone_in("h-9999")
    result = refused(intake().mqtt(topic, encode(phone_payload(phone_message("h-9999"))), T0))
    assert (result.source, result.rejected.reason, result.topic) == (
        "phone",
        Reason.UNKNOWN_DEVICE,
        topic,
    )


def test_an_unknown_checkpoint_is_refused() -> None:
    """A well-formed message from an unknown checkpoint is Refused(UNKNOWN_DEVICE)."""
    topic = TOPICS.checkpoint_in("cp-zz")
    payload = encode(checkpoint_payload(checkpoint_message("cp-zz")))
    result = refused(intake().mqtt(topic, payload, T0))
    assert (result.source, result.rejected.reason) == ("checkpoint", Reason.UNKNOWN_DEVICE)


# ---------------------------------------------------------------- acknowledgements


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_an_ack_is_judged(encoding: str) -> None:
    """An ack on alarmgw/ack/<kind>/<id> stops the alarm and reports its first-ack latency."""
    gate = intake()
    outcome = accepted(
        gate.mqtt(TOPICS.phone_in(HOUSEHOLD), encode(phone_payload(phone_message())), T0)
    )
    dispatch = outcome.dispatches[0]
    gate.core.dispatched(dispatch, T0 + 0.5)
    payload = ENCODINGS[encoding](ack_payload(AckMessage(dispatch.alarm_id, "李警官", T0 + 9)))
    result = gate.mqtt(TOPICS.ack("village", "v-east-1"), payload, T0 + 8.5)
    assert result == Acked(
        "village",
        "v-east-1",
        "李警官",
        AckOutcome(dispatch.alarm_id, known=True, first=True, latency_s=8.0),
    )
    again = gate.mqtt(TOPICS.ack("township", "t-east"), payload, T0 + 9)
    assert isinstance(again, Acked)
    assert (again.sink_kind, again.outcome.first) == ("township", False)


def test_an_ack_for_an_unknown_alarm_is_acked_as_unknown() -> None:
    """An ack naming no known alarm is still an Acked, with known False."""
    payload = encode(ack_payload(AckMessage("ph/none/1", "op", T0)))
    result = intake().mqtt(TOPICS.ack("village", "v-east-1"), payload, T0)
    assert isinstance(result, Acked)
    assert result.outcome.known is False


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1", Reason.BAD_ENCODING),
        (encode({"alarm_id": "x", "ts": T0}), Reason.MISSING_KEY),
        (encode({"alarm_id": "x", "by": "", "ts": T0}), Reason.OUT_OF_RANGE),
    ],
)
def test_a_bad_ack_is_refused_as_ack(payload: bytes, reason: Reason) -> None:
    """An ack payload the decoder rejects is Refused with source `ack`."""
    topic = TOPICS.ack("village", "v-east-1")
    result = refused(intake().mqtt(topic, payload, T0))
    assert (result.source, result.rejected.reason, result.topic) == ("ack", reason, topic)


def test_with_operators_listed_only_a_sinks_own_operator_may_acknowledge() -> None:
    """With `[operators]`, an ack names an operator of the sink it came on, or it is
    refused as unknown_operator (dead-lettered and counted by the shell) and stops
    nothing: a phone, or another room's operator, cannot silence an alarm."""
    config = dataclasses.replace(
        make_config(),
        operators={
            "village/v-east-1": frozenset({"李警官"}),
            "township/t-east": frozenset({"zhao"}),
        },
    )
    gate = Intake(Core(config), TOPICS)
    outcome = accepted(
        gate.mqtt(TOPICS.phone_in(HOUSEHOLD), encode(phone_payload(phone_message())), T0)
    )
    alarm_id = outcome.dispatches[0].alarm_id

    def ack(sink: tuple[str, str], by: str) -> Acked | Refused | Outcome | Requested:
        payload = encode(ack_payload(AckMessage(alarm_id, by, T0 + 5)))
        return gate.mqtt(TOPICS.ack(*sink), payload, T0 + 5)

    for sink, by in ((("village", "v-east-1"), "zhao"), (("group", "g-east-1"), "李警官")):
        result = refused(ack(sink, by))
        assert (result.source, result.rejected.reason) == ("ack", Reason.UNKNOWN_OPERATOR)
        assert by in result.rejected.detail
    alarm = gate.core.alarms.get(alarm_id)
    assert alarm is not None
    assert alarm.acknowledged_at is None
    good = ack(("village", "v-east-1"), "李警官")
    assert isinstance(good, Acked)
    assert good.outcome.first


def test_without_operators_any_name_may_acknowledge() -> None:
    """No `[operators]` table: names are not checked (the broker's ACL decides who
    may publish on a sink's ack topic)."""
    assert not make_config().operators
    payload = encode(ack_payload(AckMessage("ph/none/1", "anyone", T0)))
    assert isinstance(intake().mqtt(TOPICS.ack("village", "v-east-1"), payload, T0), Acked)


# ---------------------------------------------------------------- native serial frames


def test_a_native_phone_frame() -> None:
    """A native frame's phone map is normalised as a serial event and accepted."""
    payload = encode(native_payload(phone_message(seq=3, code=110)))
    outcome = accepted(intake().native_frame(payload, T0, PORT))
    assert (outcome.event.kind, outcome.event.transport) == (Kind.FIRE, Transport.SERIAL)
    assert len(outcome.dispatches) == 3


def test_a_native_checkpoint_frame() -> None:
    """A native frame's checkpoint map is normalised as a serial event and accepted."""
    message = checkpoint_message(CP_A, type=CheckpointEventType.FAULT)
    outcome = accepted(intake().native_frame(encode(native_payload(message)), T0, PORT))
    assert (outcome.event.kind, outcome.event.transport) == (
        Kind.CHECKPOINT_FAULT,
        Transport.SERIAL,
    )


def test_a_native_frame_and_mqtt_carry_one_alarm_once() -> None:
    """The same panic by MQTT and by a native frame (another seq) is dispatched once."""
    gate = intake()
    accepted(gate.mqtt(TOPICS.phone_in(HOUSEHOLD), encode(phone_payload(phone_message(seq=1))), T0))
    frame = encode(native_payload(phone_message(seq=2)))
    assert accepted(gate.native_frame(frame, T0 + 1, PORT)).duplicate is True


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1", Reason.BAD_ENCODING),
        (encode(phone_payload(phone_message())), Reason.MISSING_KEY),  # no kind
        (encode({**native_payload(phone_message()), "kind": "pager"}), Reason.OUT_OF_RANGE),
        (encode({**native_payload(phone_message()), "device": "a/b"}), Reason.BAD_ID),
    ],
)
def test_a_bad_native_frame_is_refused_as_unknown(payload: bytes, reason: Reason) -> None:
    """A frame payload that names no valid device kind and id is Refused as `unknown`."""
    result = refused(intake().native_frame(payload, T0, PORT))
    assert (result.source, result.rejected.reason, result.topic) == (
        "unknown",
        reason,
        f"serial:{PORT}",
    )


def test_a_bad_native_phone_map_is_refused_as_unknown() -> None:
    """A frame whose phone map is invalid is Refused as `unknown` (decode_native names no kind)."""
    payload = encode({**native_payload(phone_message()), "zone": 1000})
    result = refused(intake().native_frame(payload, T0, PORT))
    assert (result.source, result.rejected.reason) == ("unknown", Reason.OUT_OF_RANGE)


@pytest.mark.parametrize(
    ("message", "source"),
    [(phone_message("h-9999"), "phone"), (checkpoint_message("cp-zz"), "checkpoint")],
)
def test_a_native_frame_from_an_unknown_device_is_refused(
    message: PhoneMessage | CheckpointMessage, source: str
) -> None:
    """A valid frame from a device the config does not know is Refused(UNKNOWN_DEVICE)."""
    result = refused(intake().native_frame(encode(native_payload(message)), T0, PORT))
    assert (result.source, result.rejected.reason, result.topic) == (
        source,
        Reason.UNKNOWN_DEVICE,
        f"serial:{PORT}",
    )


# ---------------------------------------------------------------- alarm receivers


def test_a_receiver_record_is_accepted() -> None:
    """A receiver's Contact ID record is an event for the account's household."""
    outcome = accepted(intake().receiver_record(receiver_record(ACCOUNT, code=121), T0, PORT))
    assert outcome.event.household == HOUSEHOLD
    assert outcome.event.kind is Kind.DURESS
    assert len(outcome.dispatches) == 3


def test_a_receiver_record_after_mqtt_is_a_duplicate() -> None:
    """The receiver's copy of an alarm the phone already sent over MQTT is not dispatched."""
    gate = intake()
    accepted(gate.mqtt(TOPICS.phone_in(HOUSEHOLD), encode(phone_payload(phone_message())), T0))
    outcome = accepted(gate.receiver_record(receiver_record(ACCOUNT), T0 + 2, PORT))
    assert (outcome.duplicate, outcome.dispatches) == (True, ())


def test_a_receiver_record_for_an_unknown_account_is_refused() -> None:
    """An account no household owns is Refused(UNKNOWN_ACCOUNT) as `phone` on its port."""
    record = receiver_record("5678")
    result = refused(intake().receiver_record(record, T0, PORT))
    assert (result.source, result.rejected.reason, result.topic) == (
        "phone",
        Reason.UNKNOWN_ACCOUNT,
        f"serial:{PORT}",
    )
    assert result.rejected.raw == record.raw


# ---------------------------------------------------------------- never raises


@given(st.binary(max_size=200))
def test_any_payload_on_any_ingress_topic_never_raises(payload: bytes) -> None:
    """Whatever bytes arrive, the intake answers with a value."""
    gate = intake()
    for topic in (TOPICS.phone_in(HOUSEHOLD), TOPICS.checkpoint_in(CP_A), TOPICS.ack("v", "x")):
        assert isinstance(gate.mqtt(topic, payload, T0), Outcome | Refused | Acked)
    assert isinstance(gate.native_frame(payload, T0, PORT), Outcome | Refused)


# ---------------------------------------------------------------- the shortcut

# A household whose id is not a topic level: its config turns the shortcut off
# (gateway/core/intake.py), so the intake built from it takes the general path.
_NOT_A_LEVEL = "h/odd"


def _general_intake() -> Intake:
    config = make_config()
    odd = dataclasses.replace(config.households[0], id=_NOT_A_LEVEL, accounts=())
    return Intake(Core(make_config(households=(*config.households, odd))), TOPICS)


def test_a_configured_id_that_is_not_a_topic_level_is_refused_by_its_topic() -> None:
    """Such an id turns the shortcut off: its topic is still parsed, and refused."""
    payload = encode(phone_payload(phone_message(_NOT_A_LEVEL)))
    result = refused(_general_intake().mqtt(f"alarmgw/in/phone/{_NOT_A_LEVEL}", payload, T0))
    assert result.rejected.reason is Reason.BAD_TOPIC


_phone_maps = st.builds(
    lambda seq, q, code, zone, extra: {
        "v": 1, "seq": seq, "ts": T0, "q": q, "code": code, "zone": zone, "part": 1, **extra
    },
    st.integers(0, 5),
    st.sampled_from([1, 3, 6]),
    st.sampled_from([602, 120, 130, 301, 137, 401]),
    st.integers(0, 3),
    st.dictionaries(st.sampled_from(["v", "seq", "ts", "q", "part", "x"]),
                    st.none() | st.integers(-1, 2) | st.text(max_size=2), max_size=2),
)  # fmt: skip
_pass_maps = st.builds(
    lambda record, plate, kind, extra: {
        "v": 1, "id": record, "type": kind, "ts": T0, "plate": plate, "conf": 0.9, **extra
    },
    st.sampled_from(["r-1", "r-2", ""]),
    st.sampled_from(["苏B67890", WATCHED_PLATE, "苏a 12345"]),
    st.sampled_from(["pass", "heartbeat", "fault"]),
    st.dictionaries(st.sampled_from(["v", "lane", "dir", "conf", "fault", "img"]),
                    st.none() | st.integers(-1, 2) | st.sampled_from(["in", "up", "x"]),
                    max_size=2),
)  # fmt: skip
_ingress_topics = st.sampled_from(
    [TOPICS.phone_in(h) for h in (HOUSEHOLD, HOUSEHOLD_WEST, "h-unknown")]
    + [TOPICS.checkpoint_in(c) for c in (CP_A, CP_B, CP_C, "cp-unknown")]
    + [f"alarmgw/in/phone/{HOUSEHOLD}/x", "alarmgw/in/phone/", f"alarmgw/in/checkpoint/{CP_A}/"]
)
_payloads = st.one_of(_phone_maps, _pass_maps).flatmap(
    lambda m: st.sampled_from([encode(m), json.dumps(m, ensure_ascii=False).encode()])
) | st.binary(max_size=40)


@given(st.lists(st.tuples(_ingress_topics, _payloads), max_size=12))
def test_the_shortcut_and_the_general_path_give_the_same_results(
    messages: list[tuple[str, bytes]],
) -> None:
    """For any sequence of MQTT messages, the shortcut answers exactly as the general path."""
    fast, general = intake(), _general_intake()
    assert fast._shortcut  # the two intakes must really differ
    assert not general._shortcut
    for n, (topic, payload) in enumerate(messages):
        now = T0 + n
        assert fast.mqtt(topic, payload, now) == general.mqtt(topic, payload, now)
    assert fast.core.tick(T0 + 10**6) == general.core.tick(T0 + 10**6)
