"""The core's decisions (gateway/core/pipeline.py): accept, tick, acknowledge, next_deadline."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.model import (
    CheckpointClass,
    EscalationPolicy,
    Priority,
    RoutingPolicy,
    SerialPort,
)
from devices.events import Category, Kind, Source, Stage, Transport
from devices.supervision import DeviceClass
from gateway.core.alarms import AlarmState
from gateway.core.pipeline import (
    CONTRACT_VERSION,
    AckOutcome,
    Availability,
    Core,
    Dispatch,
    Outcome,
    TickOutcome,
    alarm_body,
)
from gateway.core.routing import Channel, Target
from protocols.payloads import CheckpointEventType
from tests.factories import (
    BUREAU,
    CP_A,
    CP_B,
    CP_C,
    GROUP,
    HOUSEHOLD,
    STATION,
    T0,
    TOWNSHIP,
    TOWNSHIP_WEST,
    VILLAGE,
    WATCHED_PLATE,
    checkpoint_event,
    make_config,
    phone_event,
    receiver_event,
)

CONFIG = make_config()
PHONE_TIMEOUT = CONFIG.supervision.phone_timeout_s
CHECKPOINT_TIMEOUT = CONFIG.supervision.checkpoint_timeout_s

VILLAGE_T = Target("village", VILLAGE)
TOWNSHIP_T = Target("township", TOWNSHIP)
GROUP_T = Target("group", GROUP)
STATION_T = Target("station", STATION)
BUREAU_T = Target("bureau", BUREAU)

# CONTRACT.md, "A dispatched alarm": every key but dispatch_ts, which the shell adds.
CONTRACT_KEYS = {
    "v",
    "alarm_id",
    "source",
    "kind",
    "priority",
    "device_id",
    "village",
    "township",
    "device_ts",
    "ingress_ts",
    "attempt",
    "escalated",
    "event",
}


def core(**changes: object) -> Core:
    return Core(make_config(**changes))


def targets(outcome: Outcome | TickOutcome) -> list[Target]:
    """The sinks of the outcome's dispatches, less interception staffing requests
    (tests/gateway/test_interception.py holds those to account)."""
    return [d.target for d in outcome.dispatches if not d.alarm_id.startswith("ic/")]


# ---------------------------------------------------------------- accept


def test_a_panic_is_dispatched_to_village_township_and_group() -> None:
    """A panic gives one dispatch per sink, each the contract's alarm map, same alarm_id."""
    c = core()
    event = phone_event(CONFIG, seq=11, ts=T0 - 0.4, ingress_ts=T0)
    outcome = c.accept(event, T0)
    assert outcome.event is event
    assert outcome.duplicate is False
    assert targets(outcome) == [VILLAGE_T, TOWNSHIP_T, GROUP_T]
    for dispatch in outcome.dispatches:
        assert dispatch == Dispatch(
            alarm_id=f"ph/{HOUSEHOLD}/11",
            target=dispatch.target,
            priority=Priority.LIFE_SAFETY,
            source=Source.PHONE,
            body=dispatch.body,
            ingress_ts=T0,
            device_ts=T0 - 0.4,
        )
        body = dispatch.body
        assert CONTRACT_KEYS | {"household"} <= body.keys()
        assert "dispatch_ts" not in body
        assert body == {
            "v": CONTRACT_VERSION,
            "alarm_id": f"ph/{HOUSEHOLD}/11",
            "source": "phone",
            "kind": "panic",
            "category": "life_safety",
            "stage": "new",
            "priority": 1,
            "device_id": HOUSEHOLD,
            "household": HOUSEHOLD,
            "group": GROUP,
            "village": VILLAGE,
            "township": TOWNSHIP,
            "device_ts": T0 - 0.4,
            "ingress_ts": T0,
            "attempt": 1,
            "escalated": False,
            "event": {"seq": 11, "q": 1, "code": 120, "zone": 1, "part": 1},
        }
        assert type(body["priority"]) is int  # a plain int on the wire, not an IntEnum


def test_first_message_brings_the_device_online() -> None:
    """A device's first message sets its availability online, with no restore dispatch."""
    c = core()
    outcome = c.accept(phone_event(CONFIG), T0)
    assert outcome.availability == Availability(DeviceClass.PHONE, HOUSEHOLD, True, T0)
    assert all(d.body["kind"] == "panic" for d in outcome.dispatches)
    assert c.accept(phone_event(CONFIG, seq=2), T0 + 1).availability is None


def test_a_duplicate_is_not_dispatched() -> None:
    """A retransmission is reported as a duplicate with nothing to dispatch."""
    c = core()
    c.accept(phone_event(CONFIG, seq=5), T0)
    outcome = c.accept(phone_event(CONFIG, seq=5), T0 + 1)
    assert outcome.duplicate is True
    assert outcome.dispatches == ()
    assert outcome.availability is None
    assert len(c.alarms) == 1


def test_the_same_panic_by_the_receiver_is_not_dispatched_again() -> None:
    """The receiver's record of a panic already dispatched from MQTT is a duplicate."""
    c = core()
    c.accept(phone_event(CONFIG), T0)
    outcome = c.accept(receiver_event(CONFIG, ingress_ts=T0 + 3), T0 + 3)
    assert (outcome.duplicate, outcome.dispatches) == (True, ())


def test_a_heartbeat_only_feeds_supervision() -> None:
    """A 602 dispatches nothing and raises no alarm, but the phone is online."""
    c = core()
    outcome = c.accept(phone_event(CONFIG, code=602), T0)
    assert (outcome.duplicate, outcome.dispatches) == (False, ())
    assert outcome.availability is not None
    assert len(c.alarms) == 0
    assert c.supervisor.is_online(DeviceClass.PHONE, HOUSEHOLD) is True


def test_info_events_raise_no_alarm() -> None:
    """An event routed nowhere raises no alarm."""
    c = core()
    assert c.accept(phone_event(CONFIG, code=401), T0).dispatches == ()
    assert len(c.alarms) == 0


def test_a_restore_is_dispatched_at_info_priority_and_never_escalates() -> None:
    """A panic restore goes where the panic went, at priority 4, and is never escalated."""
    c = core()
    outcome = c.accept(phone_event(CONFIG, q=3), T0)
    assert targets(outcome) == [VILLAGE_T, TOWNSHIP_T, GROUP_T]
    body = outcome.dispatches[0].body
    assert (body["stage"], body["priority"], body["kind"]) == ("restore", 4, "panic")
    assert c.tick(T0 + 10_000.0).escalated == ()


def test_a_checkpoint_fault_goes_to_its_unit() -> None:
    """A fault is a trouble for the managing unit, with the checkpoint in the body."""
    c = core()
    outcome = c.accept(checkpoint_event(CONFIG, CP_B, type=CheckpointEventType.FAULT), T0)
    assert targets(outcome) == [BUREAU_T]
    body = outcome.dispatches[0].body
    assert CONTRACT_KEYS | {"checkpoint"} <= body.keys()
    assert "household" not in body
    assert (body["checkpoint"], body["village"], body["township"]) == (CP_B, None, TOWNSHIP_WEST)
    assert outcome.availability == Availability(DeviceClass.CHECKPOINT, CP_B, True, T0)


def test_a_pass_is_traffic_not_an_alarm() -> None:
    """An A-class pass goes to the township's passes channel and raises no alarm."""
    c = core()
    outcome = c.accept(checkpoint_event(CONFIG, CP_A), T0)
    assert targets(outcome) == [Target("township", TOWNSHIP, Channel.PASSES, 0)]
    assert outcome.dispatches[0].priority is Priority.INFO
    assert len(c.alarms) == 0
    assert c.dispatched(outcome.dispatches[0], T0 + 0.1) is None


def test_a_watched_plate_raises_a_watchlist_alarm_as_well() -> None:
    """A pass of a watched plate is published as traffic and alarms the township and unit."""
    c = core()
    outcome = c.accept(checkpoint_event(CONFIG, CP_A, plate="苏A I2345"), T0)
    assert targets(outcome) == [
        Target("township", TOWNSHIP, Channel.PASSES, 0),
        TOWNSHIP_T,
        STATION_T,
    ]
    hit = outcome.dispatches[1]
    assert hit.alarm_id == "wl/cp/cp-a/r-1"
    assert (hit.body["kind"], hit.body["priority"]) == ("watchlist_hit", 2)
    assert c.alarms.get(hit.alarm_id) is not None
    # The rings around ring 1 are called to staff: their B and C checkpoints.
    (activation,) = outcome.activations
    assert (activation.trigger, activation.checkpoints) == (hit.alarm_id, [CP_B, CP_C])


def test_a_watched_plate_alarms_even_where_passes_are_not_published() -> None:
    """A C-class checkpoint publishes no passes, but a watchlist hit still alarms."""
    c = core()
    outcome = c.accept(checkpoint_event(CONFIG, CP_C, plate=WATCHED_PLATE), T0)
    assert targets(outcome) == [TOWNSHIP_T, STATION_T]


def test_a_duplicate_pass_does_not_alarm_twice() -> None:
    """The watchlist hit of a retransmitted pass is not raised again."""
    c = core()
    c.accept(checkpoint_event(CONFIG, plate=WATCHED_PLATE), T0)
    outcome = c.accept(checkpoint_event(CONFIG, plate=WATCHED_PLATE), T0 + 1)
    assert (outcome.duplicate, outcome.dispatches) == (True, ())


def test_without_a_watchlist_nothing_is_matched() -> None:
    """An empty watchlist raises no hits."""
    c = core(watchlist=frozenset())
    outcome = c.accept(checkpoint_event(CONFIG, plate=WATCHED_PLATE), T0)
    assert [d.target.channel for d in outcome.dispatches] == [Channel.PASSES]


# ---------------------------------------------------------------- supervision


def test_silence_is_one_offline_trouble_for_the_village() -> None:
    """A phone silent past its timeout: availability offline and a device_offline trouble."""
    c = core()
    c.accept(phone_event(CONFIG, code=602), T0)
    assert c.tick(T0 + PHONE_TIMEOUT - 0.001) == TickOutcome((), (), ())
    tick = c.tick(T0 + PHONE_TIMEOUT + 5)
    assert tick.availability == (
        Availability(DeviceClass.PHONE, HOUSEHOLD, False, T0 + PHONE_TIMEOUT),
    )
    assert targets(tick) == [VILLAGE_T]
    (trouble,) = tick.dispatches
    assert trouble.priority is Priority.TROUBLE
    assert trouble.source is Source.GATEWAY
    assert CONTRACT_KEYS | {"household"} <= trouble.body.keys()
    assert {k: trouble.body[k] for k in ("source", "kind", "stage", "priority", "device_id")} == {
        "source": "gateway",
        "kind": "device_offline",
        "stage": "new",
        "priority": 3,
        "device_id": HOUSEHOLD,
    }
    assert trouble.body["event"] == {
        "device_class": "phone",
        "last_seen": T0,
        "at": T0 + PHONE_TIMEOUT,
    }
    assert (trouble.body["device_ts"], trouble.body["ingress_ts"]) == (
        None,
        T0 + PHONE_TIMEOUT + 5,
    )
    assert c.tick(T0 + 10 * PHONE_TIMEOUT) == TickOutcome((), (), ())


def test_return_is_a_restore_and_online_again() -> None:
    """The next message brings the phone online and dispatches the offline trouble's restore."""
    c = core()
    c.accept(phone_event(CONFIG, seq=1, code=602), T0)
    offline = c.tick(T0 + PHONE_TIMEOUT).dispatches[0]
    back = T0 + 2 * PHONE_TIMEOUT
    outcome = c.accept(phone_event(CONFIG, seq=2, code=602), back)
    assert outcome.availability == Availability(DeviceClass.PHONE, HOUSEHOLD, True, back)
    (restore,) = outcome.dispatches
    assert restore.target == VILLAGE_T
    assert restore.alarm_id != offline.alarm_id
    assert (restore.body["kind"], restore.body["stage"], restore.body["priority"]) == (
        "device_offline",
        "restore",
        4,
    )
    assert restore.body["event"] == {"device_class": "phone", "last_seen": T0, "at": back}


def test_return_with_an_alarm_dispatches_both() -> None:
    """A panic from a phone that was offline: the restore first, then the panic."""
    c = core()
    c.accept(phone_event(CONFIG, seq=1, code=602), T0)
    c.tick(T0 + PHONE_TIMEOUT)
    outcome = c.accept(phone_event(CONFIG, seq=2), T0 + 1000)
    assert [d.body["kind"] for d in outcome.dispatches] == ["device_offline"] + ["panic"] * 3


def test_a_duplicate_still_proves_the_device_alive() -> None:
    """A retransmission from an offline phone is a duplicate, but the phone is back."""
    c = core()
    c.accept(phone_event(CONFIG, seq=1), T0)
    c.tick(T0 + PHONE_TIMEOUT)
    outcome = c.accept(phone_event(CONFIG, seq=1), T0 + 1000)
    assert outcome.duplicate is True
    assert outcome.availability is not None
    assert outcome.availability.online is True
    assert [d.body["stage"] for d in outcome.dispatches] == ["restore"]


def test_an_offline_checkpoint_is_a_trouble_for_its_township() -> None:
    """A checkpoint has no village room: its offline trouble falls back to the township."""
    c = core()
    c.accept(checkpoint_event(CONFIG, CP_B, type=CheckpointEventType.HEARTBEAT), T0)
    tick = c.tick(T0 + CHECKPOINT_TIMEOUT)
    assert tick.availability == (
        Availability(DeviceClass.CHECKPOINT, CP_B, False, T0 + CHECKPOINT_TIMEOUT),
    )
    assert targets(tick) == [Target("township", TOWNSHIP_WEST)]
    assert tick.dispatches[0].body["checkpoint"] == CP_B


def _lines_core() -> Core:
    ports = (
        SerialPort("rx-east", "/dev/ttyUSB0", township=TOWNSHIP),
        SerialPort("rx-any", "/dev/ttyUSB1", receiver_timeout_s=10.0),
        SerialPort("bus", "/dev/ttyUSB2", protocol="native"),
    )
    return core(serial=ports)


def test_a_silent_receiver_line_raises_a_trouble_to_its_township() -> None:
    """A receiver line whose heartbeat stops is offline: trouble to its township, or the bureau."""
    c = _lines_core()
    first = c.line_heard("rx-east", T0)
    assert first is not None
    assert first.availability is not None
    assert first.availability.online
    assert first.dispatches == ()  # first heartbeat: online, nothing to clear
    assert c.line_heard("rx-east", T0 + 1) is None
    c.line_heard("rx-any", T0)
    assert c.lines_online() == 2
    early = c.tick(T0 + 10.0)  # rx-any has its own 10 s timeout
    assert [a.device_id for a in early.availability] == ["rx-any"]
    assert targets(early) == [BUREAU_T]
    assert early.dispatches[0].body["kind"] == "device_offline"
    late = c.tick(T0 + 1 + CONFIG.supervision.receiver_timeout_s)
    assert [a.device_id for a in late.availability] == ["rx-east"]
    assert targets(late) == [TOWNSHIP_T]
    assert c.lines_online() == 0


def test_a_receiver_line_coming_back_clears_its_trouble() -> None:
    """The next heartbeat publishes online and a restore of the line's trouble."""
    c = _lines_core()
    c.line_heard("rx-east", T0)
    c.tick(T0 + CONFIG.supervision.receiver_timeout_s)
    back = c.line_heard("rx-east", T0 + 500)
    assert back is not None
    assert back.availability is not None
    assert back.availability.online
    assert targets(back) == [TOWNSHIP_T]
    assert back.dispatches[0].body["stage"] == "restore"
    assert c.next_deadline() == T0 + 500 + CONFIG.supervision.receiver_timeout_s


def test_native_lines_are_not_heartbeat_supervised() -> None:
    """Only alarm-receiver lines have heartbeats to supervise."""
    c = _lines_core()
    with pytest.raises(KeyError):
        c.line_heard("bus", T0)


def test_a_device_missing_from_the_topology_raises_no_trouble() -> None:
    """A supervised id the topology does not know gets availability but no dispatch."""
    c = core()
    ghost = dataclasses.replace(phone_event(CONFIG, code=602), device_id="h-ghost")
    c.accept(ghost, T0)
    beat = checkpoint_event(CONFIG, type=CheckpointEventType.HEARTBEAT)
    cp_ghost = dataclasses.replace(beat, device_id="cp-ghost")
    c.accept(dataclasses.replace(cp_ghost, dedup_key="cp/g/1"), T0)
    tick = c.tick(T0 + PHONE_TIMEOUT)
    assert {a.device_id for a in tick.availability} == {"h-ghost", "cp-ghost"}
    assert tick.dispatches == ()


def test_gateway_events_are_not_supervised() -> None:
    """An event the gateway raised itself does not make a device online."""
    c = core()
    own = dataclasses.replace(phone_event(CONFIG), source=Source.GATEWAY)
    assert c.accept(own, T0).availability is None


# ---------------------------------------------------------------- escalation


def test_an_unacknowledged_panic_escalates_to_the_bureau() -> None:
    """At its deadline the panic goes to the next chain level, same alarm_id, attempt 2."""
    c = core()
    outcome = c.accept(phone_event(CONFIG), T0)
    for dispatch in outcome.dispatches:
        c.dispatched(dispatch, T0 + 0.05)
    assert c.tick(T0 + 59.999).dispatches == ()
    tick = c.tick(T0 + 60.0)
    alarm_id = outcome.dispatches[0].alarm_id
    assert tick.escalated == (alarm_id,)
    (up,) = tick.dispatches
    assert (up.alarm_id, up.target) == (alarm_id, BUREAU_T)
    assert {k: up.body[k] for k in ("alarm_id", "attempt", "escalated", "kind")} == {
        "alarm_id": alarm_id,
        "attempt": 2,
        "escalated": True,
        "kind": "panic",
    }
    assert c.tick(T0 + 10_000.0).escalated == ()  # the bureau is the top


def test_a_trouble_with_a_deadline_climbs_from_the_village() -> None:
    """With a trouble deadline set, an AC-loss trouble escalates village → township → bureau."""
    deadlines = {**CONFIG.escalation.deadline_s, Priority.TROUBLE: 600.0}
    c = core(escalation=EscalationPolicy(deadline_s=deadlines))
    c.accept(phone_event(CONFIG, code=301), T0)
    assert targets(c.tick(T0 + 600.0)) == [TOWNSHIP_T]
    c.accept(phone_event(CONFIG, seq=2, code=602), T0 + 700.0)  # keep the phone online
    assert c.next_deadline() == T0 + 1200.0
    second = c.tick(T0 + 1200.0)
    assert targets(second) == [BUREAU_T]
    assert second.dispatches[0].body["attempt"] == 3


def test_an_ack_from_any_sink_stops_escalation() -> None:
    """Once acknowledged, the alarm is not escalated."""
    c = core()
    outcome = c.accept(phone_event(CONFIG), T0)
    c.acknowledge(outcome.dispatches[0].alarm_id, "group-member", T0 + 5)
    assert c.tick(T0 + 60.0) == TickOutcome((), (), ())


def test_escalation_skips_levels_that_do_not_apply() -> None:
    """A checkpoint fault unacknowledged at its deadline reaches the township at once."""
    deadlines = {**CONFIG.escalation.deadline_s, Priority.TROUBLE: 100.0}
    c = core(escalation=EscalationPolicy(deadline_s=deadlines))
    c.accept(checkpoint_event(CONFIG, CP_A, type=CheckpointEventType.FAULT), T0)
    tick = c.tick(T0 + 100.0)
    assert targets(tick) == [TOWNSHIP_T]
    assert tick.dispatches[0].body["attempt"] == 2


# ---------------------------------------------------------------- acknowledgement


def test_ack_latency_runs_from_the_first_confirmed_dispatch() -> None:
    """The first ack is timed from the first broker confirmation, not from raising."""
    c = core()
    outcome = c.accept(phone_event(CONFIG), T0)
    first, second, _ = outcome.dispatches
    assert c.dispatched(first, T0 + 0.5) is not None
    c.dispatched(second, T0 + 0.7)
    ack = c.acknowledge(first.alarm_id, "op-1", T0 + 10.5)
    assert ack == AckOutcome(first.alarm_id, known=True, first=True, latency_s=10.0)
    alarm = c.alarms.get(first.alarm_id)
    assert alarm is not None
    assert alarm.state is AlarmState.ACKNOWLEDGED


def test_a_second_ack_is_not_first() -> None:
    """Another sink acknowledging later is known, not first, and not timed."""
    c = core()
    alarm_id = c.accept(phone_event(CONFIG), T0).dispatches[0].alarm_id
    c.acknowledge(alarm_id, "village-op", T0 + 3)
    assert c.acknowledge(alarm_id, "township-op", T0 + 4) == AckOutcome(
        alarm_id, known=True, first=False, latency_s=None
    )


def test_ack_before_any_confirmation_is_timed_from_raising() -> None:
    """Without a confirmed dispatch the ack is timed from when the alarm was raised."""
    c = core()
    alarm_id = c.accept(phone_event(CONFIG), T0).dispatches[0].alarm_id
    assert c.acknowledge(alarm_id, "op", T0 + 2).latency_s == 2.0


def test_ack_latency_is_never_negative() -> None:
    """An ack processed before the confirmation's time counts as zero latency."""
    c = core()
    dispatch = c.accept(phone_event(CONFIG), T0).dispatches[0]
    c.dispatched(dispatch, T0 + 1)
    assert c.acknowledge(dispatch.alarm_id, "op", T0 + 0.5).latency_s == 0.0


def test_ack_of_an_unknown_alarm() -> None:
    """An ack for an alarm the core does not know is reported as unknown."""
    assert core().acknowledge("ph/nobody/1", "op", T0) == AckOutcome(
        "ph/nobody/1", known=False, first=False, latency_s=None
    )


# ---------------------------------------------------------------- deadlines


def test_next_deadline_is_the_earliest_of_supervision_and_escalation() -> None:
    """next_deadline is None when idle, else the earliest offline or escalation deadline."""
    c = core()
    assert c.next_deadline() is None
    c.accept(phone_event(CONFIG, code=602), T0)
    assert c.next_deadline() == T0 + PHONE_TIMEOUT
    c.accept(phone_event(CONFIG, seq=2), T0 + 1)
    assert c.next_deadline() == T0 + 61.0
    c.accept(checkpoint_event(CONFIG, type=CheckpointEventType.HEARTBEAT), T0 + 2)
    assert c.next_deadline() == T0 + 61.0
    c.acknowledge("ph/h-0001/2", "op", T0 + 3)
    c.tick(T0 + 61.0)
    assert c.next_deadline() == T0 + 2 + CHECKPOINT_TIMEOUT


def test_passes_policy_reaches_the_core() -> None:
    """The core routes passes by the configured class policy and QoS."""
    c = core(routing=RoutingPolicy(passes={CheckpointClass.C: True}, passes_qos=1))
    outcome = c.accept(checkpoint_event(CONFIG, CP_C), T0)
    assert targets(outcome) == [Target("township", TOWNSHIP, Channel.PASSES, 1)]


# ---------------------------------------------------------------- the body


def test_alarm_body_of_an_event_without_a_map() -> None:
    """An event with no ingress map still carries `event: {}`."""
    event = dataclasses.replace(phone_event(CONFIG), event=None, household=None)
    body = alarm_body(event, attempt=3, escalated=True)
    assert body["event"] == {}
    assert (body["attempt"], body["escalated"]) == (3, True)
    assert "household" not in body
    assert "checkpoint" not in body


def test_gateway_raised_event_values_are_contract_words() -> None:
    """Kinds, categories and stages in the body are their contract strings."""
    c = core()
    c.accept(phone_event(CONFIG, code=602), T0)
    body = c.tick(T0 + PHONE_TIMEOUT).dispatches[0].body
    assert body["kind"] == Kind.DEVICE_OFFLINE.value
    assert body["category"] == Category.DEVICE_OFFLINE.value
    assert body["stage"] == Stage.NEW.value


@given(st.lists(st.tuples(st.sampled_from(["mqtt", "serial", "rx"]), st.floats(0, 5)), max_size=20))
def test_one_panic_by_any_mix_of_paths_is_dispatched_once(
    arrivals: list[tuple[str, float]],
) -> None:
    """Retransmissions and receiver copies of one panic within the window: three dispatches."""
    c = core()
    now = T0
    dispatched: list[Target] = []
    for path, step in [("mqtt", 0.0), *arrivals]:
        now += step
        if path == "rx":
            event = receiver_event(CONFIG, ingress_ts=now)
        else:
            transport = Transport.MQTT if path == "mqtt" else Transport.SERIAL
            event = phone_event(CONFIG, transport=transport, ingress_ts=now)
        dispatched += targets(c.accept(event, now))
    assert dispatched == [VILLAGE_T, TOWNSHIP_T, GROUP_T]


def test_heartbeats_are_not_remembered_for_dedup() -> None:
    """A heartbeat feeds supervision only: never a duplicate, never in dedup memory."""
    c = core()
    beat = phone_event(CONFIG, code=602)
    assert not c.accept(beat, T0).duplicate
    assert not c.accept(beat, T0 + 1).duplicate
    assert len(c.dedup) == 0


def test_the_hot_path_values_are_ordinary_frozen_values() -> None:
    """Outcomes, dispatches and availabilities built without the frozen cost are still frozen."""
    c = core()
    outcome = c.accept(phone_event(CONFIG), T0)
    values = [outcome, outcome.availability, *outcome.dispatches]
    assert [type(v) for v in values] == [Outcome, Availability, Dispatch, Dispatch, Dispatch]
    assert outcome == Outcome(
        outcome.event, False, outcome.dispatches, outcome.availability, outcome.alarms
    )
    for value in values:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(value)[0].name, None)  # type: ignore[arg-type]
    beat = c.accept(phone_event(CONFIG, seq=2, code=602), T0 + 1)
    assert beat == Outcome(beat.event, duplicate=False)  # nothing else: no dispatch, no alarm
