"""Who gets an event (gateway/core/routing.py): the default policy, roles, fallback, chain."""

from __future__ import annotations

import dataclasses

import pytest

from config.model import CheckpointClass, Config, EscalationPolicy, RoutingPolicy
from devices.checkpoint import watchlist_event
from devices.events import Category, Event, Kind
from gateway.core.routing import Channel, Router, Target
from protocols.payloads import CheckpointEventType
from tests.factories import (
    BUREAU,
    CP_A,
    CP_B,
    CP_C,
    GROUP,
    HOUSEHOLD_WEST,
    STATION,
    TOWNSHIP,
    TOWNSHIP_WEST,
    VILLAGE,
    VILLAGE_WEST,
    WATCHED_PLATE,
    checkpoint_event,
    make_config,
    phone_event,
)

CONFIG = make_config()
ROUTER = Router(CONFIG)

VILLAGE_T = Target("village", VILLAGE)
TOWNSHIP_T = Target("township", TOWNSHIP)
GROUP_T = Target("group", GROUP)
STATION_T = Target("station", STATION)
BUREAU_T = Target("bureau", BUREAU)


def with_routes(**routes: tuple[str, ...]) -> Router:
    """A router whose policy differs from the defaults in `routes`."""
    targets = {**CONFIG.routing.targets, **routes}
    return Router(make_config(routing=RoutingPolicy(targets=targets)))


def offline(event: Event) -> Event:
    """The device_offline trouble the gateway raises for this event's device."""
    return dataclasses.replace(event, kind=Kind.DEVICE_OFFLINE, category=Category.DEVICE_OFFLINE)


# ---------------------------------------------------------------- the defaults


@pytest.mark.parametrize("code", [100, 110, 120, 121, 151, 162])
def test_life_safety_goes_to_village_township_and_group(code: int) -> None:
    """Life-safety alarms go to the village room, township centre and joint-defence group."""
    assert ROUTER.targets(phone_event(CONFIG, code=code)) == (VILLAGE_T, TOWNSHIP_T, GROUP_T)


@pytest.mark.parametrize("code", [130, 140])
def test_property_goes_to_village_and_township(code: int) -> None:
    """Property alarms go to the village room and the township centre."""
    assert ROUTER.targets(phone_event(CONFIG, code=code)) == (VILLAGE_T, TOWNSHIP_T)


@pytest.mark.parametrize("code", [137, 301, 302, 200])
def test_troubles_go_to_the_village(code: int) -> None:
    """Troubles (tamper, AC loss, low battery, supervisory) go to the village room only."""
    assert ROUTER.targets(phone_event(CONFIG, code=code)) == (VILLAGE_T,)


@pytest.mark.parametrize("code", [401, 570, 601, 700])
def test_info_goes_nowhere_by_default(code: int) -> None:
    """Info events (open/close, bypass, manual test) have no targets and no fallback."""
    assert ROUTER.targets(phone_event(CONFIG, code=code)) == ()


def test_heartbeats_are_never_dispatched() -> None:
    """A 602 or a checkpoint heartbeat goes nowhere, whatever the policy says."""
    router = with_routes(info=("township",))
    assert router.targets(phone_event(CONFIG, code=602)) == ()
    beat = checkpoint_event(CONFIG, type=CheckpointEventType.HEARTBEAT)
    assert router.targets(beat) == ()


@pytest.mark.parametrize(("q", "code"), [(3, 120), (6, 120), (3, 130), (3, 301), (3, 137)])
def test_restore_is_routed_like_its_family(q: int, code: int) -> None:
    """A restore or status goes where the new event of its code went."""
    assert ROUTER.targets(phone_event(CONFIG, q=q, code=code)) == ROUTER.targets(
        phone_event(CONFIG, q=1, code=code)
    )


def test_household_is_routed_to_its_own_place() -> None:
    """Another household's alarm goes to its own village, township and group."""
    event = phone_event(CONFIG, HOUSEHOLD_WEST)
    assert ROUTER.targets(event) == (
        Target("village", VILLAGE_WEST),
        Target("township", TOWNSHIP_WEST),
        Target("group", "g-west-1"),
    )


@pytest.mark.parametrize(
    ("checkpoint", "unit"), [(CP_A, STATION_T), (CP_B, BUREAU_T), (CP_C, STATION_T)]
)
def test_checkpoint_fault_goes_to_the_managing_unit(checkpoint: str, unit: Target) -> None:
    """A checkpoint fault goes to the unit the config names for that checkpoint."""
    fault = checkpoint_event(CONFIG, checkpoint, type=CheckpointEventType.FAULT)
    assert ROUTER.targets(fault) == (unit,)


def test_phone_offline_goes_to_the_village() -> None:
    """A phone gone silent is a trouble for its village room."""
    assert ROUTER.targets(offline(phone_event(CONFIG))) == (VILLAGE_T,)


def test_checkpoint_offline_falls_back_to_the_township() -> None:
    """A checkpoint has no village: its offline trouble falls back to its township centre."""
    event = offline(checkpoint_event(CONFIG, CP_B))
    assert ROUTER.targets(event) == (Target("township", TOWNSHIP_WEST),)


def test_watchlist_hit_goes_to_the_township_and_the_unit() -> None:
    """A watchlist hit alarms the township centre and the checkpoint's unit by default."""
    hit = watchlist_event(checkpoint_event(CONFIG, plate=WATCHED_PLATE), {WATCHED_PLATE})
    assert hit is not None
    assert ROUTER.targets(hit) == (TOWNSHIP_T, STATION_T)


# ---------------------------------------------------------------- passes


@pytest.mark.parametrize(("checkpoint", "township"), [(CP_A, TOWNSHIP), (CP_B, TOWNSHIP_WEST)])
def test_passes_of_a_and_b_checkpoints_go_to_the_township_passes_topic(
    checkpoint: str, township: str
) -> None:
    """A- and B-class passes go to the township's passes channel at the configured QoS."""
    assert ROUTER.targets(checkpoint_event(CONFIG, checkpoint)) == (
        Target("township", township, Channel.PASSES, 0),
    )


def test_passes_of_c_checkpoints_are_not_published_by_default() -> None:
    """C-class passes are not published unless the policy says so."""
    assert ROUTER.targets(checkpoint_event(CONFIG, CP_C)) == ()


def test_passes_policy_is_per_class() -> None:
    """The policy picks the classes and the QoS of passes."""
    policy = RoutingPolicy(passes={CheckpointClass.A: False, CheckpointClass.C: True}, passes_qos=1)
    router = Router(make_config(routing=policy))
    assert router.targets(checkpoint_event(CONFIG, CP_A)) == ()
    assert router.targets(checkpoint_event(CONFIG, CP_B)) == ()  # a class the policy omits
    assert router.targets(checkpoint_event(CONFIG, CP_C)) == (
        Target("township", TOWNSHIP, Channel.PASSES, 1),
    )


def test_pass_targets_are_remembered_per_checkpoint_and_township() -> None:
    """The remembered pass targets of a checkpoint are only reused for the same township."""
    router = Router(CONFIG)
    passed = checkpoint_event(CONFIG, CP_A)
    first = router.targets(passed)
    assert router.targets(passed) is first
    moved = dataclasses.replace(passed, township=TOWNSHIP_WEST)
    assert router.targets(moved) == (Target("township", TOWNSHIP_WEST, Channel.PASSES, 0),)
    assert router.targets(passed) == first


# ---------------------------------------------------------------- roles


def test_roles_resolve_to_the_events_place() -> None:
    """Each role names one concrete sink for this event, or None where it does not apply."""
    panic = phone_event(CONFIG)
    west = phone_event(CONFIG, HOUSEHOLD_WEST)
    fault = checkpoint_event(CONFIG, CP_B, type=CheckpointEventType.FAULT)
    assert ROUTER.resolve("village", panic) == VILLAGE_T
    assert ROUTER.resolve("township", panic) == TOWNSHIP_T
    assert ROUTER.resolve("group", panic) == GROUP_T
    assert ROUTER.resolve("station", panic) == STATION_T
    assert ROUTER.resolve("station", west) is None  # t-west has no station
    assert ROUTER.resolve("bureau", panic) == BUREAU_T
    assert ROUTER.resolve("unit", panic) is None  # a phone has no managing unit
    assert ROUTER.resolve("unit", fault) == BUREAU_T
    assert ROUTER.resolve("village", fault) is None
    assert ROUTER.resolve("group", fault) is None
    assert ROUTER.resolve("no-such-role", panic) is None


def test_roles_that_do_not_apply_are_skipped() -> None:
    """Inapplicable roles are skipped; the rest keep their policy order."""
    router = with_routes(checkpoint_fault=("village", "group", "unit", "bureau"))
    fault = checkpoint_event(CONFIG, CP_A, type=CheckpointEventType.FAULT)
    assert router.targets(fault) == (STATION_T, BUREAU_T)


def test_empty_resolution_falls_back_to_the_township() -> None:
    """When no role applies the event still goes to its township centre."""
    router = with_routes(life_safety=("station",))
    assert router.targets(phone_event(CONFIG, HOUSEHOLD_WEST)) == (
        Target("township", TOWNSHIP_WEST),
    )
    assert router.targets(phone_event(CONFIG)) == (STATION_T,)


def test_targets_are_not_repeated() -> None:
    """A sink named twice, or reached by two roles, is dispatched to once."""
    router = with_routes(property=("village", "township", "village", "bureau", "bureau"))
    assert router.targets(phone_event(CONFIG, code=130)) == (VILLAGE_T, TOWNSHIP_T, BUREAU_T)


def test_a_category_without_a_route_goes_nowhere() -> None:
    """A policy that omits a category routes it nowhere (and no fallback)."""
    targets = {k: v for k, v in CONFIG.routing.targets.items() if k != "trouble"}
    router = Router(make_config(routing=RoutingPolicy(targets=targets)))
    assert router.targets(phone_event(CONFIG, code=301)) == ()


def test_watchlist_route_can_be_configured() -> None:
    """A policy entry for `watchlist` replaces its default."""
    router = with_routes(watchlist=("bureau",))
    hit = watchlist_event(checkpoint_event(CONFIG, plate=WATCHED_PLATE), {WATCHED_PLATE})
    assert hit is not None
    assert router.targets(hit) == (BUREAU_T,)


# ---------------------------------------------------------------- escalation chain


def test_chain_comes_from_the_policy() -> None:
    """The chain is the escalation policy's, lowest level first."""
    assert ROUTER.chain == ("village", "township", "bureau")


def test_level_is_the_highest_chain_level_reached() -> None:
    """level() is the index of the highest chain role among the targets, -1 for none."""
    assert ROUTER.level((VILLAGE_T, TOWNSHIP_T, GROUP_T)) == 1
    assert ROUTER.level((TOWNSHIP_T, VILLAGE_T)) == 1
    assert ROUTER.level((VILLAGE_T,)) == 0
    assert ROUTER.level((BUREAU_T,)) == 2
    assert ROUTER.level((GROUP_T, STATION_T)) == -1
    assert ROUTER.level(()) == -1


def test_escalation_target_is_the_chain_level_for_this_event() -> None:
    """escalation_target resolves chain level N for the event's place; None past the top."""
    panic = phone_event(CONFIG)
    assert ROUTER.escalation_target(panic, 0) == VILLAGE_T
    assert ROUTER.escalation_target(panic, 1) == TOWNSHIP_T
    assert ROUTER.escalation_target(panic, 2) == BUREAU_T
    assert ROUTER.escalation_target(panic, 3) is None
    fault = checkpoint_event(CONFIG, CP_A, type=CheckpointEventType.FAULT)
    assert ROUTER.escalation_target(fault, 0) is None  # a checkpoint has no village


def test_level_of_a_role_named_twice_in_the_chain_is_its_highest() -> None:
    """A chain that names a role twice reaches that role's higher level."""
    router = Router(
        make_config(escalation=EscalationPolicy(chain=("village", "township", "village")))
    )
    assert router.level((VILLAGE_T,)) == 2
    assert router.level((TOWNSHIP_T,)) == 1


def test_custom_chain() -> None:
    """A chain through the station resolves per township."""
    config: Config = make_config(escalation=EscalationPolicy(chain=("village", "station")))
    router = Router(config)
    assert router.chain == ("village", "station")
    assert router.escalation_target(phone_event(CONFIG), 1) == STATION_T
    assert router.level((STATION_T,)) == 1
