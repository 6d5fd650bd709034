"""Interception rings (gateway/core/interception.py), through the core's own doors.

The test district (tests/factories.py) has an A checkpoint on ring 1 (cp-a), a B
on ring 2 in the west township, managed by the bureau (cp-b), and a C on ring 2
in the east township, managed by the east station (cp-c). These tests add a B
on ring 1 (cp-d, the east station's) and a ring-3 bridge (cp-e, C, the east
station's) where they need them.
"""

from __future__ import annotations

import dataclasses

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from config.model import (
    Checkpoint,
    CheckpointClass,
    Config,
    InterceptionPolicy,
    SinkRef,
)
from devices.events import Kind
from gateway.core.alarms import AlarmState
from gateway.core.interception import ActivationState
from gateway.core.pipeline import Core, Dispatch, Outcome, TickOutcome
from gateway.core.records import activation_from_record, activation_record
from gateway.core.routing import Target
from tests.factories import (
    BUREAU,
    CP_A,
    CP_B,
    CP_C,
    HOUSEHOLD,
    STATION,
    T0,
    TOWNSHIP,
    WATCHED_PLATE,
    checkpoint_event,
    make_config,
    phone_event,
)

CP_D = "cp-d"
CP_E = "cp-e"
DEADLINE = 120.0
DURATION = 1800.0
STATION_T = Target("station", STATION)
BUREAU_T = Target("bureau", BUREAU)


def config(**policy: object) -> Config:
    base = make_config()
    checkpoints = (
        *base.checkpoints,
        Checkpoint(
            CP_D, "Ring 1 east", CheckpointClass.B, 1, TOWNSHIP, SinkRef("station", STATION)
        ),
        Checkpoint(
            CP_E, "South bridge", CheckpointClass.C, 3, TOWNSHIP, SinkRef("station", STATION)
        ),
    )
    interception = InterceptionPolicy(
        **{"staff_deadline_s": DEADLINE, "duration_s": DURATION, **policy}  # type: ignore[arg-type]
    )
    return dataclasses.replace(base, checkpoints=checkpoints, interception=interception)


CONFIG = config()


def hit(core: Core, checkpoint: str = CP_A, at: float = T0, record: str = "r-1") -> Outcome:
    """A pass of the watched plate at `checkpoint`."""
    event = checkpoint_event(CONFIG, checkpoint, record_id=record, plate=WATCHED_PLATE)
    return core.accept(event, at)


def requests(outcome: Outcome | TickOutcome) -> list[Dispatch]:
    return [d for d in outcome.dispatches if d.alarm_id.startswith("ic/")]


def commands(outcome: Outcome | TickOutcome) -> dict[str, dict[str, object]]:
    return {c.checkpoint: dict(c.body) for c in outcome.commands}


# ---------------------------------------------------------------- activation
def test_a_hit_on_ring_1_calls_the_b_and_c_checkpoints_of_the_rings_around_it() -> None:
    """Ring 1's hit: ring 1's own B (cp-d), ring 2's B and C, ring 3's bridge; never
    an A-class checkpoint, never the one that saw the car."""
    core = Core(CONFIG)
    outcome = hit(core)
    (activation,) = outcome.activations
    hit_id = f"wl/cp/{CP_A}/r-1"
    assert activation.activation_id == f"ic/{hit_id}"
    assert activation.checkpoints == [CP_D, CP_B, CP_C, CP_E]
    assert activation.rings == [1, 2, 3]
    assert activation.until == T0 + DURATION
    assert activation.look_for["plate"] == WATCHED_PLATE
    assert (activation.look_for["seen_at"], activation.look_for["hit"]) == (CP_A, hit_id)
    # A retained order to each checkpoint, and a staffing request to its unit.
    orders = commands(outcome)
    assert set(orders) == {CP_D, CP_B, CP_C, CP_E}
    order = orders[CP_B]
    assert order["command"] == "activate"
    assert order["alarm_id"] == f"ic/{hit_id}/{CP_B}"
    assert order["until"] == T0 + DURATION
    assert order["look_for"] == dict(activation.look_for)
    units = {d.alarm_id.rsplit("/", 1)[1]: d.target for d in requests(outcome)}
    assert units == {CP_D: STATION_T, CP_B: BUREAU_T, CP_C: STATION_T, CP_E: STATION_T}
    body = requests(outcome)[0].body
    assert (body["kind"], body["escalated"], body["checkpoint"]) == ("interception", False, CP_D)
    assert body["event"]["activation_id"] == activation.activation_id  # type: ignore[index]
    # Every request is written down with the activation.
    assert {a.event.alarm_id for a in outcome.alarms} >= {d.alarm_id for d in requests(outcome)}


def test_a_hit_on_ring_2_calls_ring_2_and_the_bridges() -> None:
    """The default policy: a ring and every ring outside it; the seer is left out."""
    core = Core(CONFIG)
    (activation,) = hit(core, CP_C).activations
    assert activation.checkpoints == [CP_B, CP_E]


def test_the_policy_decides_which_rings_close_around_a_hit() -> None:
    """`on_hit` per ring; a ring with no B or C checkpoint calls nobody: no activation."""
    core = Core(config(on_hit={1: (2,), 2: (), 3: (3,)}))
    (activation,) = hit(core).activations
    assert activation.checkpoints == [CP_B, CP_C]
    assert hit(core, CP_C, record="r-2").activations == ()
    assert (
        Core(config(enabled=False))
        .accept(checkpoint_event(CONFIG, CP_A, plate=WATCHED_PLATE), T0)
        .activations
        == ()
    )


def test_a_second_sighting_extends_the_running_activation() -> None:
    """The same plate seen again: one activation, a later end, the new rings added;
    the checkpoints already called get the new end, nobody is asked twice."""
    core = Core(config(on_hit={1: (2,), 2: (2, 3), 3: (3,)}))
    first = hit(core).activations[0]
    assert first.checkpoints == [CP_B, CP_C]
    later = T0 + 600
    outcome = core.accept(
        checkpoint_event(CONFIG, CP_C, record_id="r-9", plate=WATCHED_PLATE, ingress_ts=later),
        later,
    )
    (again,) = outcome.activations
    assert again is first
    assert again.checkpoints == [CP_B, CP_C, CP_E]
    assert again.until == later + DURATION
    assert len(again.triggers) == 2
    assert [d.alarm_id.rsplit("/", 1)[1] for d in requests(outcome)] == [CP_E]
    assert set(commands(outcome)) == {CP_B, CP_C, CP_E}
    assert commands(outcome)[CP_B]["until"] == later + DURATION


def test_a_household_alarm_activates_the_rings_that_enclose_it_by_policy() -> None:
    """A panic (a robbery in progress) inside ring 1's townships; a fire does not."""
    core = Core(config(alarm_kinds=frozenset({"panic"}), encloses={1: frozenset({TOWNSHIP})}))
    outcome = core.accept(phone_event(CONFIG), T0)
    (activation,) = outcome.activations
    assert activation.checkpoints == [CP_D]
    assert activation.look_for["household"] == HOUSEHOLD
    assert activation.look_for["what"] == "alarm"
    fire = core.accept(phone_event(CONFIG, seq=8, code=110), T0 + 1)
    assert fire.event.kind is Kind.FIRE
    assert fire.activations == ()
    assert Core(CONFIG).accept(phone_event(CONFIG, seq=9), T0).activations == ()


# ---------------------------------------------------------------- confirmation
def test_a_unit_confirms_by_acknowledging_and_nothing_escalates() -> None:
    core = Core(CONFIG)
    activation = hit(core).activations[0]
    request_id = activation.staffing_id(CP_C)
    acked = core.acknowledge(request_id, "王警官", T0 + 30)
    assert (acked.known, acked.first, acked.latency_s) == (True, True, 30.0)
    assert core.find_alarm(request_id) is not None
    summary = core.interception.summary(activation)
    posts = summary["checkpoints"]
    assert posts[CP_C] == {"state": "confirmed", "escalations": 0, "by": "王警官", "at": T0 + 30}  # type: ignore[index]
    assert posts[CP_B]["state"] == "waiting"  # type: ignore[index]
    assert core.interception.standing() == {"confirmed": 1, "waiting": 3}
    tick = core.tick(T0 + DEADLINE + 1)
    assert request_id not in tick.escalated


def test_an_unconfirmed_checkpoint_climbs_the_chain_each_level_once() -> None:
    """unit → station → bureau: cp-c's unit is the east station, so its request goes
    to the bureau next (the station is the same sink); cp-b's unit is the bureau,
    the top: it never climbs."""
    core = Core(CONFIG)
    activation = hit(core).activations[0]
    for checkpoint in (CP_D, CP_E):
        core.acknowledge(activation.staffing_id(checkpoint), "li", T0 + 5)
    tick = core.tick(T0 + DEADLINE)
    assert tick.escalated == (activation.staffing_id(CP_C),)
    (climb,) = requests(tick)
    assert (climb.target, climb.body["escalated"], climb.body["attempt"]) == (BUREAU_T, True, 2)
    assert core.find_alarm(climb.alarm_id).state is AlarmState.ESCALATED  # type: ignore[union-attr]
    later = core.tick(T0 + 10 * DEADLINE).escalated  # the hit itself climbs its own chain
    assert [a for a in later if a.startswith("ic/")] == []
    assert core.interception.standing() == {"confirmed": 2, "escalated": 1, "waiting": 1}


# ---------------------------------------------------------------- the end
def test_an_activation_expires_and_stands_its_checkpoints_down() -> None:
    core = Core(CONFIG)
    activation = hit(core).activations[0]
    assert core.next_deadline() == T0 + min(DEADLINE, 300.0)
    tick = core.tick(T0 + DURATION)
    assert activation in tick.activations
    assert activation.state is ActivationState.EXPIRED
    orders = commands(tick)
    assert set(orders) == set(activation.checkpoints)
    assert {o["command"] for o in orders.values()} == {"deactivate"}
    assert {o["reason"] for o in orders.values()} == {"expired"}
    # Open requests are cleared: no escalation after the end.
    assert core.interception.requests.next_deadline() is None
    assert core.interception.active() == []
    assert core.tick(T0 + 10 * DURATION).commands == ()


def test_the_request_api_lists_gets_and_ends() -> None:
    core = Core(CONFIG)
    activation = hit(core).activations[0]
    listed, change = core.request("interception", "list", {}, T0 + 1)
    assert change is None
    assert listed["status"] == "ok"
    assert [a["activation_id"] for a in listed["data"]] == [activation.activation_id]  # type: ignore[attr-defined]
    got, _ = core.request("interception", "get", {"activation_id": activation.activation_id}, T0)
    assert got["data"]["look_for"]["plate"] == WATCHED_PLATE  # type: ignore[index]
    for fields, error in (
        ({}, "'activation_id' (a string) is required"),
        ({"activation_id": "ic/nope"}, "no running activation 'ic/nope'"),
        ({"activation_id": activation.activation_id}, "'by' (who ends it) is required"),
    ):
        answer, change = core.request("interception", "end", fields, T0 + 2)
        assert (answer, change) == ({"status": "error", "error": error}, None)
    unknown, _ = core.request("interception", "pause", {}, T0)
    assert unknown["status"] == "error"
    answer, ended = core.request(
        "interception", "end", {"activation_id": activation.activation_id, "by": "zhao"}, T0 + 60
    )
    assert answer["status"] == "ok"
    assert ended is not None
    assert activation.state is ActivationState.ENDED
    assert (activation.ended_by, activation.ended_at) == ("zhao", T0 + 60)
    assert {c.body["command"] for c in ended.commands} == {"deactivate"}
    assert core.request("interception", "list", {}, T0 + 61)[0]["data"] == []


def test_only_a_listed_operator_may_end_an_activation_where_operators_are_listed() -> None:
    core = Core(dataclasses.replace(CONFIG, operators={"township/t-east": frozenset({"zhao"})}))
    activation = hit(core).activations[0]
    fields = {"activation_id": activation.activation_id, "by": "mallory"}
    answer, change = core.request("interception", "end", fields, T0 + 1)
    assert (answer["status"], change) == ("error", None)
    assert "not an operator" in str(answer["error"])
    answer, change = core.request("interception", "end", {**fields, "by": "zhao"}, T0 + 1)
    assert answer["status"] == "ok"


# ---------------------------------------------------------------- restart
def test_an_activation_and_its_requests_survive_a_restart() -> None:
    """Written down as records, read back into a new core: the same standing, the
    same deadlines, and it still ends on time."""
    core = Core(CONFIG)
    outcome = hit(core)
    activation = outcome.activations[0]
    core.acknowledge(activation.staffing_id(CP_D), "li", T0 + 5)
    record = msgpack.unpackb(msgpack.packb(activation_record(activation)), raw=False)
    again = Core(CONFIG)
    again.interception.restore(activation_from_record(record))
    for alarm in outcome.alarms:
        if alarm.event.alarm_id.startswith("ic/"):
            again.interception.restore_request(alarm)
    restored = again.interception.get(activation.activation_id)
    assert restored is not None
    assert again.interception.summary(restored) == core.interception.summary(activation)
    assert again.next_deadline() == core.next_deadline()
    assert again.tick(T0 + DURATION).activations[0].state is ActivationState.EXPIRED


def test_an_activation_whose_hit_was_not_stored_is_undone() -> None:
    """The store refused the batch: the camera sends the pass again, which must start
    the activation afresh, not find a ghost of it."""
    core = Core(CONFIG)
    outcome = hit(core)
    core.rollback(outcome)
    assert core.interception.active() == []
    assert core.interception.requests.next_deadline() is None
    again = hit(core)
    assert len(again.activations) == 1
    assert len(requests(again)) == 4


# ---------------------------------------------------------------- properties
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("hit"), st.sampled_from([CP_A, CP_B, CP_C, CP_D, CP_E])),
            st.tuples(st.just("ack"), st.sampled_from([CP_B, CP_C, CP_D, CP_E])),
            st.tuples(st.just("wait"), st.floats(0, 2 * DURATION)),
        ),
        max_size=30,
    )
)
def test_any_history_keeps_the_books_straight(steps: list[tuple[str, object]]) -> None:
    """Whatever happens, in any order: one activation per plate, each checkpoint
    called once and B or C only, each request climbs at most to the top once, and
    when nothing runs nothing is left to wake for."""
    core = Core(CONFIG)
    now = T0
    records = 0
    sites = CONFIG.topology.checkpoints
    for action, value in steps:
        if action == "hit":
            records += 1
            core.accept(
                checkpoint_event(
                    CONFIG,
                    str(value),
                    record_id=f"r-{records}",
                    plate=WATCHED_PLATE,
                    ingress_ts=now,
                ),
                now,
            )
        elif action == "ack":
            for activation in core.interception.active():
                core.acknowledge(activation.staffing_id(str(value)), "li", now)
        else:
            now += float(value)  # type: ignore[arg-type]
            core.tick(now)
        active = core.interception.active()
        assert len(active) <= 1  # one plate: at most one activation at a time
        for activation in active:
            assert len(set(activation.checkpoints)) == len(activation.checkpoints)
            assert all(
                sites[c].cls in (CheckpointClass.B, CheckpointClass.C)
                for c in activation.checkpoints
            )
            assert activation.until > now
            for checkpoint in activation.checkpoints:
                request = core.find_alarm(activation.staffing_id(checkpoint))
                assert request is not None
                assert request.escalations <= 1  # unit, then the bureau: one climb at most
        if not active:
            assert core.interception.next_deadline() is None
