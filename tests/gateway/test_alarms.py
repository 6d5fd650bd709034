"""The alarm lifecycle and escalation (gateway/core/alarms.py), time given explicitly."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.model import Priority
from gateway.core.alarms import (
    _TRANSITIONS,
    Alarm,
    AlarmBook,
    AlarmState,
    AlarmStateError,
    Due,
    _Input,
)
from tests.factories import T0, make_config, phone_event

CONFIG = make_config()
DEADLINES: dict[Priority, float | None] = {
    Priority.LIFE_SAFETY: 60.0,
    Priority.PROPERTY: 300.0,
    Priority.TROUBLE: None,
    Priority.INFO: None,
}
CHAIN = 3  # village → township → bureau
VILLAGE, TOWNSHIP, BUREAU = 0, 1, 2
SINK = ("village", "v-east-1")


def make(
    deadlines: dict[Priority, float | None] | None = None, max_alarms: int = 200_000
) -> AlarmBook:
    return AlarmBook(
        DEADLINES if deadlines is None else deadlines, chain_length=CHAIN, max_alarms=max_alarms
    )


def panic(seq: int = 1) -> Alarm:
    """A life-safety alarm raised at T0 at township level on a fresh book."""
    return make().raised(phone_event(CONFIG, seq=seq), TOWNSHIP, T0)


# ---------------------------------------------------------------- the table

EXPECTED = {
    (AlarmState.RAISED, _Input.DISPATCHED): AlarmState.DISPATCHED,
    (AlarmState.RAISED, _Input.ACK): AlarmState.ACKNOWLEDGED,
    (AlarmState.RAISED, _Input.DEADLINE): AlarmState.ESCALATED,
    (AlarmState.DISPATCHED, _Input.DISPATCHED): AlarmState.DISPATCHED,
    (AlarmState.DISPATCHED, _Input.DEADLINE): AlarmState.ESCALATED,
    (AlarmState.DISPATCHED, _Input.ACK): AlarmState.ACKNOWLEDGED,
    (AlarmState.ESCALATED, _Input.DISPATCHED): AlarmState.ESCALATED,
    (AlarmState.ESCALATED, _Input.DEADLINE): AlarmState.ESCALATED,
    (AlarmState.ESCALATED, _Input.ACK): AlarmState.ACKNOWLEDGED,
    (AlarmState.ACKNOWLEDGED, _Input.DISPATCHED): AlarmState.ACKNOWLEDGED,
    (AlarmState.ACKNOWLEDGED, _Input.ACK): AlarmState.ACKNOWLEDGED,
    (AlarmState.ACKNOWLEDGED, _Input.CLEAR): AlarmState.ACKNOWLEDGED,
    (AlarmState.RAISED, _Input.CLEAR): AlarmState.CLEARED,
    (AlarmState.DISPATCHED, _Input.CLEAR): AlarmState.CLEARED,
    (AlarmState.ESCALATED, _Input.CLEAR): AlarmState.CLEARED,
    (AlarmState.CLEARED, _Input.CLEAR): AlarmState.CLEARED,
    (AlarmState.CLEARED, _Input.DISPATCHED): AlarmState.CLEARED,
    (AlarmState.CLEARED, _Input.ACK): AlarmState.ACKNOWLEDGED,
}


def test_the_lifecycle_table() -> None:
    """raised → dispatched → acknowledged | escalated; a deadline after the ack is not a row."""
    assert dict(_TRANSITIONS) == EXPECTED


@pytest.mark.parametrize(("state", "what"), list(itertools.product(AlarmState, _Input)))
def test_every_step_follows_the_table(state: AlarmState, what: _Input) -> None:
    """A step moves to the table's state; a step the table lacks is an AlarmStateError."""
    alarm = panic()
    alarm.state = state
    if (state, what) in EXPECTED:
        alarm._step(what)
        assert alarm.state is EXPECTED[state, what]
    else:
        with pytest.raises(AlarmStateError, match=f"{what.value} in {state.value}"):
            alarm._step(what)
        assert alarm.state is state


# ---------------------------------------------------------------- raising and dispatching


def test_raised_alarm_is_armed_for_its_priority() -> None:
    """A raised alarm is RAISED, attempt 1, with its priority's deadline from now."""
    book = make()
    event = phone_event(CONFIG)
    alarm = book.raised(event, TOWNSHIP, T0)
    assert (alarm.state, alarm.attempt, alarm.level, alarm.escalations) == (
        AlarmState.RAISED,
        1,
        TOWNSHIP,
        0,
    )
    assert (alarm.raised_at, alarm.deadline_s, alarm.deadline) == (T0, 60.0, T0 + 60.0)
    assert book.get(event.alarm_id) is alarm
    assert len(book) == 1
    assert book.next_deadline() == T0 + 60.0


def test_confirmed_dispatches_start_the_ack_clock_once() -> None:
    """The first confirmed dispatch sets dispatched_at; each sink is listed once."""
    book = make()
    alarm = book.raised(phone_event(CONFIG), TOWNSHIP, T0)
    assert book.dispatched(alarm.event.alarm_id, SINK, T0 + 0.1) is alarm
    book.dispatched(alarm.event.alarm_id, ("township", "t-east"), T0 + 0.2)
    book.dispatched(alarm.event.alarm_id, SINK, T0 + 0.3)
    assert alarm.state is AlarmState.DISPATCHED
    assert alarm.dispatched_at == T0 + 0.1
    assert alarm.sinks == [SINK, ("township", "t-east")]


def test_unknown_alarm_ids_are_ignored() -> None:
    """A dispatch confirmation or an ack for an alarm not remembered returns None."""
    book = make()
    assert book.get("nope") is None
    assert book.dispatched("nope", SINK, T0) is None
    assert book.acknowledge("nope", "op", T0) is None


# ---------------------------------------------------------------- escalation


def test_escalates_at_the_deadline_exactly_not_a_tick_before() -> None:
    """Nothing is due a moment before the deadline; at the deadline the alarm climbs one level."""
    book = make()
    alarm = book.raised(phone_event(CONFIG), TOWNSHIP, T0)
    book.dispatched(alarm.event.alarm_id, SINK, T0 + 0.1)
    assert book.due(T0 + 59.999) == []
    assert alarm.state is AlarmState.DISPATCHED
    assert book.due(T0 + 60.0) == [Due(alarm, BUREAU)]
    assert (alarm.state, alarm.attempt, alarm.level, alarm.escalations) == (
        AlarmState.ESCALATED,
        2,
        BUREAU,
        1,
    )
    assert alarm.event.alarm_id == phone_event(CONFIG).alarm_id  # same alarm, same id


def test_an_undispatched_alarm_escalates_too() -> None:
    """An alarm whose dispatch was never confirmed still escalates at its deadline."""
    book = make()
    alarm = book.raised(phone_event(CONFIG), TOWNSHIP, T0)
    assert book.due(T0 + 60.0) == [Due(alarm, BUREAU)]


def test_each_level_gets_its_own_deadline_up_to_the_top() -> None:
    """From below the chain it climbs level by level, a deadline each, and stops at the top."""
    book = make()
    alarm = book.raised(phone_event(CONFIG), -1, T0)
    assert [d.level for d in book.due(T0 + 60.0)] == [VILLAGE]
    assert book.next_deadline() == T0 + 120.0
    assert book.due(T0 + 119.0) == []
    assert [d.level for d in book.due(T0 + 120.0)] == [TOWNSHIP]
    assert [d.level for d in book.due(T0 + 180.0)] == [BUREAU]
    assert (alarm.attempt, alarm.escalations, alarm.deadline) == (4, 3, None)
    assert book.next_deadline() is None
    assert book.due(T0 + 10_000.0) == []
    assert alarm.state is AlarmState.ESCALATED


def test_a_late_tick_escalates_once() -> None:
    """A tick long after the deadline escalates one level, and re-arms from that tick."""
    book = make()
    alarm = book.raised(phone_event(CONFIG), VILLAGE, T0)
    assert [d.level for d in book.due(T0 + 500.0)] == [TOWNSHIP]
    assert alarm.deadline == T0 + 560.0


def test_an_alarm_already_at_the_top_never_escalates() -> None:
    """An alarm first sent to the top of the chain has nowhere to climb."""
    book = make()
    alarm = book.raised(phone_event(CONFIG), BUREAU, T0)
    assert alarm.deadline is None
    assert book.next_deadline() is None
    assert book.due(T0 + 10_000.0) == []


def test_ack_stops_escalation() -> None:
    """An ack before the deadline: nothing is ever due."""
    book = make()
    alarm = book.raised(phone_event(CONFIG), TOWNSHIP, T0)
    book.dispatched(alarm.event.alarm_id, SINK, T0 + 0.1)
    assert book.acknowledge(alarm.event.alarm_id, "op-1", T0 + 30.0) == (alarm, True)
    assert (alarm.state, alarm.acknowledged_at, alarm.acknowledged_by) == (
        AlarmState.ACKNOWLEDGED,
        T0 + 30.0,
        "op-1",
    )
    assert alarm.deadline is None
    # Its old deadline is no reason to wake up: nothing is pending.
    assert book.next_deadline() is None
    assert book.due(T0 + 60.0) == []
    assert book.next_deadline() is None


def test_acknowledged_alarms_never_bring_a_wake_up() -> None:
    """With every alarm acknowledged in time, the next deadline is the first one
    still pending, not the old deadline of an acknowledged alarm before it."""
    book = make()
    raised = [book.raised(phone_event(CONFIG, seq=n), TOWNSHIP, T0 + n) for n in range(5)]
    for alarm in raised[:4]:
        book.acknowledge(alarm.event.alarm_id, "op-1", T0 + 10.0)
    assert book.next_deadline() == T0 + 4 + 60.0  # the one left, not T0 + 60
    book.acknowledge(raised[4].event.alarm_id, "op-1", T0 + 10.0)
    assert book.next_deadline() is None


def test_ack_after_an_escalation_stops_the_next_one() -> None:
    """An escalated alarm acknowledged stops climbing."""
    book = make()
    alarm = book.raised(phone_event(CONFIG), VILLAGE, T0)
    book.due(T0 + 60.0)
    book.acknowledge(alarm.event.alarm_id, "op-1", T0 + 61.0)
    assert book.due(T0 + 1000.0) == []
    assert alarm.state is AlarmState.ACKNOWLEDGED


def test_a_second_ack_is_not_the_first() -> None:
    """The second ack is known but not first, and does not change who or when."""
    book = make()
    alarm = book.raised(phone_event(CONFIG), TOWNSHIP, T0)
    book.acknowledge(alarm.event.alarm_id, "op-1", T0 + 10.0)
    assert book.acknowledge(alarm.event.alarm_id, "op-2", T0 + 20.0) == (alarm, False)
    assert (alarm.acknowledged_at, alarm.acknowledged_by) == (T0 + 10.0, "op-1")


def test_dispatch_confirmed_after_the_ack_keeps_it_acknowledged() -> None:
    """A late broker confirmation does not reopen an acknowledged alarm."""
    book = make()
    alarm = book.raised(phone_event(CONFIG), TOWNSHIP, T0)
    book.acknowledge(alarm.event.alarm_id, "op-1", T0 + 1.0)
    book.dispatched(alarm.event.alarm_id, SINK, T0 + 2.0)
    assert alarm.state is AlarmState.ACKNOWLEDGED


@pytest.mark.parametrize(
    ("code", "deadlines"),
    [
        (401, DEADLINES),  # info: None
        (301, DEADLINES),  # trouble: None
        (120, {**DEADLINES, Priority.LIFE_SAFETY: 0.0}),
        (120, {**DEADLINES, Priority.LIFE_SAFETY: -5.0}),
        (120, {Priority.PROPERTY: 300.0}),  # no entry for the priority
    ],
)
def test_no_deadline_never_escalates(code: int, deadlines: dict[Priority, float | None]) -> None:
    """INFO and TROUBLE by default, a deadline of 0 or less, or none at all: never escalates."""
    book = make(deadlines)
    alarm = book.raised(phone_event(CONFIG, code=code), VILLAGE, T0)
    assert (alarm.deadline_s, alarm.deadline) == (None, None)
    assert book.next_deadline() is None
    assert book.due(T0 + 1e9) == []


def test_a_restore_never_escalates() -> None:
    """A restore is INFO priority, so even a life-safety restore is never escalated."""
    book = make({**DEADLINES, Priority.INFO: None})
    alarm = book.raised(phone_event(CONFIG, q=3), VILLAGE, T0)
    assert alarm.deadline is None


def test_due_alarms_come_in_deadline_order_across_priorities() -> None:
    """Deadlines of different priorities are kept in order; next_deadline is the earliest."""
    book = make()
    burglary = book.raised(phone_event(CONFIG, seq=1, code=130), VILLAGE, T0)
    panic_ = book.raised(phone_event(CONFIG, seq=2, code=120), VILLAGE, T0 + 10.0)
    assert book.next_deadline() == T0 + 70.0
    assert [d.alarm for d in book.due(T0 + 70.0)] == [panic_]
    assert book.next_deadline() == T0 + 130.0  # the panic's next level
    assert [d.alarm for d in book.due(T0 + 300.0)] == [panic_, burglary]


def test_memory_is_bounded_by_forgetting_closed_alarms_first() -> None:
    """Past max_alarms the oldest closed alarm is forgotten; one still waiting for
    its deadline never is, so no escalation is lost to the bound."""
    book = make(max_alarms=2)
    first = book.raised(phone_event(CONFIG, seq=1), VILLAGE, T0)
    second = book.raised(phone_event(CONFIG, seq=2), VILLAGE, T0 + 1.0)
    book.acknowledge(second.event.alarm_id, "op", T0 + 1.5)
    third = book.raised(phone_event(CONFIG, seq=3), VILLAGE, T0 + 2.0)
    assert len(book) == 2
    assert book.get(second.event.alarm_id) is None  # closed: forgotten first
    assert book.get(first.event.alarm_id) is first  # open: kept though oldest
    assert [d.alarm.event.alarm_id for d in book.due(T0 + 62.0)] == [
        first.event.alarm_id,
        third.event.alarm_id,
    ]


def test_a_book_of_open_alarms_grows_rather_than_loses_one() -> None:
    """When every alarm is still open the bound yields: all of them escalate."""
    book = make(max_alarms=2)
    raised = [book.raised(phone_event(CONFIG, seq=n), VILLAGE, T0) for n in range(5)]
    assert len(book) == 5
    assert len(book.due(T0 + 60.0)) == len(raised)
    for alarm in raised:
        book.acknowledge(alarm.event.alarm_id, "op", T0 + 61.0)
    book.raised(phone_event(CONFIG, seq=99), VILLAGE, T0 + 62.0)
    assert len(book) == 2  # closed alarms are forgotten again as new ones come


@given(st.lists(st.sampled_from(["tick", "ack", "dispatched"]), max_size=30))
def test_escalations_never_exceed_the_chain_and_stop_at_the_ack(steps: list[str]) -> None:
    """Whatever happens, an alarm climbs at most to the top, once per level, never after an ack."""
    book = make()
    alarm = book.raised(phone_event(CONFIG), -1, T0)
    now = T0
    acked = False
    levels: list[int] = []
    for step in steps:
        now += 61.0
        if step == "tick":
            due = book.due(now)
            assert not (acked and due)
            levels += [d.level for d in due]
        elif step == "ack":
            acked = True
            book.acknowledge(alarm.event.alarm_id, "op", now)
        else:
            book.dispatched(alarm.event.alarm_id, SINK, now)
    assert levels == list(range(len(levels)))
    assert len(levels) <= CHAIN
    assert alarm.attempt == 1 + len(levels)
