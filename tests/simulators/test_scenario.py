"""The pure scenario core: seeded streams, contract payloads, rates, faults, --wait matching."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.loader import load_config
from config.model import Checkpoint, CheckpointClass, Config, Household, RoutingPolicy, SinkRef
from protocols.payloads import (
    CheckpointEventType,
    CheckpointMessage,
    PhoneMessage,
    deadletter_payload,
    decode_checkpoint,
    decode_map,
    decode_phone,
    encode,
    phone_payload,
)
from protocols.reasons import Reason, Rejected
from protocols.topics import IngressKind, Topics
from simulators.plates import SERIAL_LETTERS
from simulators.scenario import (
    LANE_PROFILES,
    PHONE_EVENTS,
    CheckpointScenario,
    DispatchMatcher,
    DistrictScenario,
    Fault,
    PayloadFormat,
    PhoneScenario,
    Scenario,
    Send,
    burst,
    clock_skew,
    corrupt,
    duplicate,
    encode_map,
    expected_sinks,
    phone_code,
    silence,
    stream,
)

DEMO = Path(__file__).resolve().parents[2] / "config" / "examples" / "demo.toml"
START = 1_700_000_000.0
TOPICS = Topics()


@pytest.fixture(scope="module")
def demo() -> Config:
    """The demo deployment: one township, three villages, 60 households, 4 checkpoints."""
    return load_config(DEMO)


def fingerprint(sends: Iterable[Send]) -> list[tuple[float, str, bytes, tuple[str, ...]]]:
    """What must be identical between two runs with the same seed."""
    return [(s.at, s.topic, s.payload, s.meta.faults) for s in sends]


def assert_time_ordered(sends: Sequence[Send]) -> None:
    """Shared check: a stream never goes back in time."""
    assert all(a.at <= b.at for a, b in itertools.pairwise(sends))


def phone(send: Send) -> PhoneMessage:
    """Decode a phone send as the gateway would."""
    household = send.topic.rsplit("/", 1)[1]
    decoded = decode_phone(household, send.payload)
    assert isinstance(decoded, PhoneMessage), decoded
    return decoded


def camera(send: Send) -> CheckpointMessage:
    """Decode a checkpoint send as the gateway would."""
    checkpoint = send.topic.rsplit("/", 1)[1]
    decoded = decode_checkpoint(checkpoint, send.payload)
    assert isinstance(decoded, CheckpointMessage), decoded
    return decoded


def checkpoint(cls: CheckpointClass, cid: str = "kx") -> Checkpoint:
    """A checkpoint of one class, outside any config."""
    return Checkpoint(cid, cid, cls, 1, "t01", SinkRef("bureau", "county"))


def within(count: int, expected: float, sigmas: float = 5.0) -> bool:
    """A Poisson count within `sigmas` standard deviations of its mean."""
    return abs(count - expected) <= sigmas * math.sqrt(expected)


# ------------------------------------------------------------------ phones


def test_phone_payloads_decode_to_the_intended_events() -> None:
    """Each named event is its Contact ID code, q=1, zone 1 (0 for system events)."""
    names = list(PHONE_EVENTS)
    scenario = PhoneScenario(TOPICS, ["h001"], names, start=START, interval=2.0)
    sends = list(stream(scenario, seed=1))
    assert [s.meta.event for s in sends] == names
    for index, (send, name) in enumerate(zip(sends, names, strict=True)):
        message = phone(send)
        assert message == send.meta.message
        assert send.topic == "alarmgw/in/phone/h001"
        assert message.code == PHONE_EVENTS[name]
        assert message.q == 1
        assert message.zone == (0 if message.code in (301, 302, 602) else 1)
        assert message.part == 1
        assert message.ts == send.at == START + 2.0 * index
        assert send.meta.kind is IngressKind.PHONE


def test_the_issue_codes() -> None:
    """The codes the issue names: panic 120 ... heartbeat 602, plus literal codes."""
    assert {name: phone_code(name) for name in PHONE_EVENTS} == {
        "panic": 120,
        "duress": 121,
        "fire": 110,
        "medical": 100,
        "burglary": 130,
        "low_battery": 302,
        "ac_loss": 301,
        "tamper": 137,
        "heartbeat": 602,
    }
    assert phone_code("Low-Battery") == 302
    assert phone_code("151") == 151
    for bad in ("restore", "bogus", "99", "1000"):
        with pytest.raises(ValueError, match="unknown phone event"):
            phone_code(bad)


def test_seq_counts_per_phone_and_starts_at_the_run() -> None:
    """Each phone counts its own seq from the start time in microseconds."""
    scenario = PhoneScenario(
        TOPICS, ["h001", "h002"], ["panic", "heartbeat"], start=START, count=3, interval=1.0
    )
    seqs: dict[str, list[int]] = defaultdict(list)
    for send in stream(scenario, seed=2):
        seqs[send.meta.device].append(phone(send).seq)
    first = int(START * 1_000_000)
    assert seqs == {"h001": list(range(first, first + 6)), "h002": list(range(first, first + 6))}
    later = PhoneScenario(TOPICS, ["h001"], ["panic"], start=START + 0.001)
    assert phone(next(stream(later, seed=2))).seq >= first + 999
    fixed = PhoneScenario(TOPICS, ["h001"], ["panic"], start=START, seq_start=7)
    assert phone(next(stream(fixed, seed=2))).seq == 7


def test_restore_repeats_the_previous_alarm_with_q3() -> None:
    """A restore is q=3 on the previous alarm's code and zone (heartbeats do not count)."""
    scenario = PhoneScenario(
        TOPICS, ["h001"], ["duress", "heartbeat", "restore"], start=START, zone=12
    )
    duress, _, restore = (phone(s) for s in stream(scenario, seed=0))
    assert (restore.q, restore.code, restore.zone) == (3, duress.code, 12)
    alone = PhoneScenario(TOPICS, ["h001"], ["restore"], start=START, restore_of="fire")
    lone = phone(next(stream(alone, seed=0)))
    assert (lone.q, lone.code, lone.zone) == (3, 110, 1)


def test_spread_keeps_each_phones_order() -> None:
    """Spread rounds stay time-ordered and each phone's sends keep their interval."""
    households = [f"h{n:03d}" for n in range(1, 41)]
    scenario = PhoneScenario(
        TOPICS, households, ["panic", "restore"], start=START, interval=5.0, spread=4.0, count=2
    )
    sends = list(stream(scenario, seed=3))
    assert len(sends) == len(scenario) == 160
    assert_time_ordered(sends)
    times: dict[str, list[float]] = defaultdict(list)
    for send in sends:
        times[send.meta.device].append(send.at)
    offsets = {round(t[0] - START, 3) for t in times.values()}
    assert len(offsets) > 30  # really spread
    for series in times.values():
        assert [round(b - a, 3) for a, b in itertools.pairwise(series)] == [5.0, 5.0, 5.0]


def test_json_format_decodes_the_same() -> None:
    """--format json sends a JSON object that decodes to the same message."""
    for fmt in PayloadFormat:
        scenario = PhoneScenario(TOPICS, ["东山村-03"], ["fire"], start=START, fmt=fmt)
        send = next(stream(scenario, seed=1))
        assert (send.payload[:1] == b"{") is (fmt is PayloadFormat.JSON)
        assert phone(send) == send.meta.message
        assert send.meta.fmt is fmt


@pytest.mark.parametrize(
    ("households", "events", "kwargs"),
    [
        ([], ["panic"], {}),
        (["h001"], [], {}),
        (["h001"], ["bogus"], {}),
        (["a/b"], ["panic"], {}),
        (["h001"], ["panic"], {"count": 0}),
        (["h001"], ["panic", "fire"], {"interval": 1.0, "spread": 2.0}),
        (["h001"], ["panic"], {"zone": 1000}),
        (["h001"], ["panic"], {"part": 100}),
        (["h001"], ["panic"], {"interval": math.inf}),
    ],
)
def test_phone_scenario_refuses_bad_settings(
    households: list[str], events: list[str], kwargs: dict[str, float]
) -> None:
    """Bad ids, events or timings are a ValueError at construction."""
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        PhoneScenario(TOPICS, households, events, start=START, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_records_decode_and_ids_are_unique(demo: Config) -> None:
    """Every record decodes to its message; ids are unique per checkpoint and run."""
    scenario = CheckpointScenario(
        TOPICS, demo.checkpoints, start=START, duration=1800, fault_rate_per_h=10
    )
    sends = list(stream(scenario, seed=4))
    assert_time_ordered(sends)
    ids: dict[str, set[str]] = defaultdict(set)
    types: Counter[CheckpointEventType] = Counter()
    for send in sends:
        message = camera(send)
        assert message == send.meta.message
        assert send.meta.kind is IngressKind.CHECKPOINT
        assert message.ts == send.at
        assert message.id not in ids[message.checkpoint]
        ids[message.checkpoint].add(message.id)
        types[message.type] += 1
        if message.type is CheckpointEventType.PASS:
            assert message.plate is not None
            assert message.conf is not None
            assert message.lane is not None
            lanes = LANE_PROFILES[demo.topology.checkpoints[message.checkpoint].cls].lanes
            assert 1 <= message.lane <= lanes
            assert message.dir == ("in" if message.lane <= (lanes + 1) // 2 else "out")
            assert message.speed is not None
            assert message.speed >= 3.0
            assert message.img is not None
            assert message.img.endswith(f"/{message.id}.jpg")
        elif message.type is CheckpointEventType.FAULT:
            assert message.fault
    assert set(types) == set(CheckpointEventType)


def test_per_lane_pass_rates_follow_the_class() -> None:
    """Over four simulated hours each lane's passes match its class rate (5 sigma)."""
    hours = 4.0
    for cls, profile in LANE_PROFILES.items():
        scenario = CheckpointScenario(
            TOPICS, [checkpoint(cls)], start=START, duration=hours * 3600, fault_rate_per_h=0
        )
        lanes = Counter(camera(s).lane for s in stream(scenario, seed=5) if s.meta.event == "pass")
        assert set(lanes) == set(range(1, profile.lanes + 1))
        for count in lanes.values():
            assert within(count, profile.vehicles_per_hour * hours), (cls, lanes)


def test_a_is_busier_than_b_and_c() -> None:
    """A-class roads carry more passes than B, and B more than C."""
    counts = {}
    for cls in CheckpointClass:
        scenario = CheckpointScenario(TOPICS, [checkpoint(cls)], start=START, duration=3600)
        counts[cls] = sum(1 for s in stream(scenario, seed=6) if s.meta.event == "pass")
    assert counts[CheckpointClass.A] > counts[CheckpointClass.B] > counts[CheckpointClass.C]


def test_rate_scale_heartbeats_faults_and_unread() -> None:
    """Rate scale multiplies passes; heartbeats every interval; faults and unread as set."""
    scenario = CheckpointScenario(
        TOPICS,
        [checkpoint(CheckpointClass.B)],
        start=START,
        duration=3600,
        rate_scale=3.0,
        heartbeat_interval=30.0,
        fault_rate_per_h=100.0,
        unread_rate=0.2,
    )
    kinds: Counter[str] = Counter()
    unread = 0
    for send in stream(scenario, seed=7):
        kinds[send.meta.event] += 1
        if send.meta.event == "pass" and camera(send).plate == "":
            unread += 1
            assert camera(send).conf == 0.0
    assert within(kinds["pass"], 3 * 4 * 180)
    assert kinds["heartbeat"] in (120, 121)
    assert within(kinds["fault"], 100)
    assert 0.15 <= unread / kinds["pass"] <= 0.25
    assert scenario.total_pass_rate() == pytest.approx(3 * 4 * 180 / 3600)


def test_plates_in_passes_are_realistic() -> None:
    """Read plates never use I or O and are mostly 苏."""
    scenario = CheckpointScenario(
        TOPICS, [checkpoint(CheckpointClass.A)], start=START, duration=3600
    )
    plates = [camera(s).plate for s in stream(scenario, seed=8) if s.meta.event == "pass"]
    read = [p for p in plates if p]
    assert read
    assert all(set(p[1:]) <= set(SERIAL_LETTERS + "0123456789") for p in read)
    assert sum(1 for p in read if p[0] == "苏") / len(read) > 0.6


def test_checkpoint_scenario_without_end_is_lazy() -> None:
    """duration None runs forever, lazily."""
    scenario = CheckpointScenario(
        TOPICS, [checkpoint(CheckpointClass.C)], start=START, duration=None
    )
    first = list(itertools.islice(stream(scenario, seed=9), 500))
    assert len(first) == 500
    assert_time_ordered(first)


@pytest.mark.parametrize(
    "kwargs",
    [{"duration": -1.0}, {"rate_scale": -1.0}, {"speed": 0.0}, {"heartbeat_interval": 0.0}],
)
def test_checkpoint_scenario_refuses_bad_settings(kwargs: dict[str, float]) -> None:
    """Negative durations and rates, zero speed or interval are a ValueError."""
    settings: dict[str, float | None] = {"duration": 10.0, **kwargs}
    with pytest.raises(ValueError):  # noqa: PT011
        CheckpointScenario(TOPICS, [checkpoint(CheckpointClass.A)], start=START, **settings)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the district


def phone_beat(send: Send) -> bool:
    """A phone's periodic test (checkpoints have heartbeats too)."""
    return send.meta.kind is IngressKind.PHONE and send.meta.event == "heartbeat"


def big_district(demo: Config, households: int) -> Config:
    """The demo's topology with many households spread over its groups."""
    groups = demo.groups
    homes = tuple(
        Household(f"p{n:06d}", groups[n % len(groups)].village, "t01", groups[n % len(groups)].id)
        for n in range(households)
    )
    return dataclasses.replace(demo, households=homes)


def test_district_heartbeats_alarms_and_restores(demo: Config) -> None:
    """Each phone beats every interval; alarms at the set rate; restores follow alarms."""
    scenario = DistrictScenario(
        TOPICS, demo, start=START, duration=3600, alarm_rate_per_min=30, fault_rate_per_h=0
    )
    sends = list(stream(scenario, seed=10))
    assert_time_ordered(sends)
    beats = Counter(
        s.meta.device
        for s in sends
        if s.meta.kind is IngressKind.PHONE and s.meta.event == "heartbeat"
    )
    assert beats == dict.fromkeys((h.id for h in demo.households), 4)
    alarms = [phone(s) for s in sends if s.meta.kind is IngressKind.PHONE and phone(s).code != 602]
    new = [m for m in alarms if m.q == 1]
    restores = [m for m in alarms if m.q == 3]
    assert within(len(new), 30 * 60)
    assert 0.4 * len(new) <= len(restores) <= 0.55 * len(new)
    raised: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for message in alarms:
        if message.q == 1:
            raised[message.household].append((message.code, message.zone))
        else:
            assert (message.code, message.zone) in raised[message.household]
    seqs: dict[str, list[int]] = defaultdict(list)
    for send in sends:
        if send.meta.kind is IngressKind.PHONE:
            seqs[send.meta.device].append(phone(send).seq)
    for series in seqs.values():
        assert series == list(range(series[0], series[0] + len(series)))
    assert {s.meta.device for s in sends if s.meta.kind is IngressKind.CHECKPOINT} == {
        c.id for c in demo.checkpoints
    }


def test_the_district_figures(demo: Config) -> None:
    """130,000 phones every 900 s make about 145 heartbeats/s (DESIGN.md)."""
    config = big_district(demo, 130_000)
    scenario = DistrictScenario(TOPICS, config, start=START, duration=10, alarm_rate_per_min=0)
    assert scenario.rates()["heartbeats"] == pytest.approx(144.4, abs=0.1)
    beats = sum(1 for s in stream(scenario, seed=11) if phone_beat(s))
    assert within(beats, 1444.4)


def test_speed_scales_every_rate(demo: Config) -> None:
    """Speed 4 quarters every interval and quadruples every rate."""
    slow = DistrictScenario(TOPICS, demo, start=START, duration=60, speed=1.0)
    fast = DistrictScenario(TOPICS, demo, start=START, duration=60, speed=4.0)
    for key, value in slow.rates().items():
        assert fast.rates()[key] == pytest.approx(4 * value)
    beats = Counter(
        s.meta.device
        for s in stream(
            DistrictScenario(TOPICS, demo, start=START, duration=900, speed=4.0), seed=12
        )
        if phone_beat(s)
    )
    assert set(beats.values()) == {4}


def test_district_without_checkpoints_or_households(demo: Config) -> None:
    """A config with only phones, or only checkpoints, still makes a district."""
    phones_only = dataclasses.replace(demo, checkpoints=())
    kinds = {
        s.meta.kind
        for s in stream(DistrictScenario(TOPICS, phones_only, start=START, duration=900), seed=1)
    }
    assert kinds == {IngressKind.PHONE}
    cameras_only = dataclasses.replace(demo, households=())
    kinds = {
        s.meta.kind
        for s in stream(DistrictScenario(TOPICS, cameras_only, start=START, duration=60), seed=1)
    }
    assert kinds == {IngressKind.CHECKPOINT}


# ------------------------------------------------------------------ reproducibility


def scenarios(demo: Config) -> list[Scenario]:
    """One of each kind of scenario, over the demo config."""
    return [
        PhoneScenario(
            TOPICS,
            [h.id for h in demo.households],
            ["panic", "restore", "heartbeat"],
            start=START,
            count=2,
            interval=3.0,
            spread=2.0,
        ),
        CheckpointScenario(TOPICS, demo.checkpoints, start=START, duration=600),
        DistrictScenario(TOPICS, demo, start=START, duration=600, speed=3, alarm_rate_per_min=10),
    ]


def all_faults() -> list[Fault]:
    """Every fault at once."""
    return [
        clock_skew(30.0),
        silence("h002", 1.0),
        duplicate(0.2, delay=0.5),
        corrupt(0.1),
        burst(20, 2.0),
    ]


def test_same_seed_same_bytes(demo: Config) -> None:
    """The same seed gives a byte-identical stream, faults included; another seed does not."""
    for scenario in scenarios(demo):
        first = fingerprint(stream(scenario, seed=42, faults=all_faults()))
        again = fingerprint(stream(scenario, seed=42, faults=all_faults()))
        other = fingerprint(stream(scenario, seed=43, faults=all_faults()))
        assert first == again
        assert first != other


@given(st.integers(min_value=0, max_value=2**63))
def test_any_seed_reproduces(seed: int) -> None:
    """For any seed, two runs of a spread phone scenario are identical."""
    scenario = PhoneScenario(
        TOPICS, ["h001", "h002", "h003"], ["burglary", "restore"], start=START, spread=0.9
    )
    assert fingerprint(stream(scenario, seed=seed)) == fingerprint(stream(scenario, seed=seed))


def test_streams_are_time_ordered_with_faults(demo: Config) -> None:
    """Every scenario stays time-ordered under every fault."""
    for scenario in scenarios(demo):
        assert_time_ordered(list(stream(scenario, seed=1, faults=all_faults())))


def test_a_fault_leaves_the_rest_of_the_stream_alone(demo: Config) -> None:
    """Adding a fault that touches nothing changes nothing: faults have their own generators."""
    for scenario in scenarios(demo):
        plain = fingerprint(stream(scenario, seed=5))
        assert fingerprint(stream(scenario, seed=5, faults=[silence("nobody")])) == plain
        assert fingerprint(stream(scenario, seed=5, faults=[duplicate(0.0)])) == plain


# ------------------------------------------------------------------ faults


def panic_sends(count: int = 20) -> PhoneScenario:
    """Twenty panics from one phone, one a second."""
    return PhoneScenario(TOPICS, ["h001"], ["panic"], start=START, count=count, interval=1.0)


def test_duplicate_repeats_the_same_bytes() -> None:
    """Rate 1 sends everything twice, same bytes and seq; the copy is tagged."""
    sends = list(stream(panic_sends(), seed=1, faults=[duplicate(1.0)]))
    assert len(sends) == 40
    for original, copy in zip(sends[::2], sends[1::2], strict=True):
        assert copy.payload == original.payload
        assert copy.at == original.at
        assert original.meta.faults == ()
        assert copy.meta.faults == ("duplicate",)


def test_duplicate_with_delay_comes_later_in_order() -> None:
    """A delayed duplicate is sent `delay` later, interleaved in time order."""
    sends = list(stream(panic_sends(5), seed=1, faults=[duplicate(1.0, delay=1.5)]))
    assert_time_ordered(sends)
    copies = [s for s in sends if s.meta.faults]
    originals = [s for s in sends if not s.meta.faults]
    assert [c.at - o.at for c, o in zip(copies, originals, strict=True)] == [1.5] * 5


def test_duplicate_rate_is_roughly_kept() -> None:
    """Rate 0.3 duplicates about 30 % of sends."""
    sends = list(stream(panic_sends(2000), seed=1, faults=[duplicate(0.3)]))
    assert 0.26 * 2000 <= len(sends) - 2000 <= 0.34 * 2000


@given(st.integers(min_value=0, max_value=2**32), st.sampled_from(list(PayloadFormat)))
def test_corrupt_payloads_are_always_rejected(seed: int, fmt: PayloadFormat) -> None:
    """A corrupted payload never decodes: the gateway must dead-letter it."""
    scenario = PhoneScenario(
        TOPICS, ["h001", "h002"], ["panic", "heartbeat"], start=START, count=3, fmt=fmt
    )
    for send in stream(scenario, seed=seed, faults=[corrupt(1.0)]):
        assert send.meta.corrupted
        assert isinstance(decode_phone(send.meta.device, send.payload), Rejected)
        assert isinstance(decode_map(send.payload), Rejected)
        assert isinstance(send.meta.message, PhoneMessage)
        intact = encode_map(phone_payload(send.meta.message), fmt)
        assert len(send.payload) == len(intact)
        assert send.payload != intact


def test_corrupt_touches_only_its_share() -> None:
    """Rate 0 corrupts nothing; uncorrupted sends are untouched."""
    plain = fingerprint(stream(panic_sends(), seed=1))
    assert fingerprint(stream(panic_sends(), seed=1, faults=[corrupt(0.0)])) == plain
    mixed = list(stream(panic_sends(200), seed=1, faults=[corrupt(0.5)]))
    damaged = [s for s in mixed if s.meta.corrupted]
    assert 60 <= len(damaged) <= 140
    for send in mixed:
        if not send.meta.corrupted:
            assert phone(send) == send.meta.message


def test_clock_skew_shifts_ts_not_the_schedule() -> None:
    """The device clock is off: ts moves, the send time does not; one device or all."""
    scenario = PhoneScenario(TOPICS, ["h001", "h002"], ["fire"], start=START)
    plain = list(stream(scenario, seed=1))
    skewed = list(stream(scenario, seed=1, faults=[clock_skew(-300.0, ["h002"])]))
    for before, after in zip(plain, skewed, strict=True):
        assert after.at == before.at
        shift = -300.0 if after.meta.device == "h002" else 0.0
        assert phone(after).ts == pytest.approx(before.at + shift)
        assert after.meta.message.ts == phone(after).ts
        assert ("skew" in after.meta.faults) is (after.meta.device == "h002")
    json_scenario = PhoneScenario(TOPICS, ["h001"], ["fire"], start=START, fmt=PayloadFormat.JSON)
    send = next(stream(json_scenario, seed=1, faults=[clock_skew(5.0)]))
    assert send.payload.startswith(b"{")
    assert phone(send).ts == START + 5.0


def test_burst_sends_n_at_once() -> None:
    """The n sends due from `after` go out together, at the first one's time."""
    sends = list(stream(panic_sends(), seed=1, faults=[burst(5, after=3.0)]))
    assert len(sends) == 20
    assert_time_ordered(sends)
    burst_sends = [s for s in sends if "burst" in s.meta.faults]
    assert [s.at for s in burst_sends] == [START + 3.0] * 5
    assert [phone(s).ts for s in burst_sends] == [START + n for n in range(3, 8)]
    assert [s.at for s in sends[8:]] == [START + n for n in range(8, 20)]


def test_burst_longer_than_the_stream_flushes_what_there_is() -> None:
    """A burst of more sends than remain sends the rest at once."""
    sends = list(stream(panic_sends(3), seed=1, faults=[burst(10)]))
    assert [s.at for s in sends] == [START] * 3


def test_silence_stops_one_device() -> None:
    """A silenced device sends nothing from `after` on; the others carry on."""
    scenario = PhoneScenario(TOPICS, ["h001", "h002"], ["heartbeat"], start=START, count=10)
    sends = list(stream(scenario, seed=1, faults=[silence("h001", 4.0)]))
    h001 = [s.at - START for s in sends if s.meta.device == "h001"]
    h002 = [s.at - START for s in sends if s.meta.device == "h002"]
    assert h001 == [0.0, 1.0, 2.0, 3.0]
    assert len(h002) == 10


@pytest.mark.parametrize(
    "make",
    [
        lambda: duplicate(1.5),
        lambda: duplicate(0.5, delay=-1.0),
        lambda: corrupt(-0.1),
        lambda: clock_skew(math.nan),
        lambda: burst(0),
        lambda: burst(3, after=-1.0),
        lambda: silence("h001", math.inf),
    ],
)
def test_fault_factories_refuse_nonsense(make: object) -> None:
    """Out-of-range fault settings are a ValueError."""
    assert callable(make)
    with pytest.raises(ValueError):  # noqa: PT011
        make()


# ------------------------------------------------------------------ --wait


def test_expected_sinks_follow_the_routing(demo: Config) -> None:
    """Life safety to village, township and group; property to two; troubles to one."""
    assert expected_sinks(demo, "h001", 120) == ("village/v01", "township/t01", "group/g11")
    assert expected_sinks(demo, "h012", 110) == ("village/v01", "township/t01", "group/g12")
    assert expected_sinks(demo, "h001", 130) == ("village/v01", "township/t01")
    assert expected_sinks(demo, "h001", 137) == ("village/v01",)
    assert expected_sinks(demo, "h001", 301) == ("village/v01",)
    assert expected_sinks(demo, "h001", 602) == ()
    assert expected_sinks(demo, "h001", 601) == ()  # info routes nowhere by default
    assert expected_sinks(demo, "nobody", 120) == ()


def test_expected_sinks_resolve_station_bureau_and_fallback(demo: Config) -> None:
    """Station and bureau roles resolve from the config; no role applying means the township."""
    routing = RoutingPolicy(
        targets={"life_safety": ("station", "bureau", "village"), "property": ("unit",)}
    )
    config = dataclasses.replace(demo, routing=routing)
    assert expected_sinks(config, "h001", 120) == ("station/s01", "bureau/county", "village/v01")
    assert expected_sinks(config, "h001", 130) == ("township/t01",)


def alarm(
    household: str,
    seq: int,
    *,
    device_ts: float = START,
    ingress_ts: float = START + 0.002,
    dispatch_ts: float = START + 0.005,
    escalated: bool = False,
) -> bytes:
    """A dispatched alarm as the gateway publishes it (CONTRACT.md, Egress)."""
    return encode(
        {
            "v": 1,
            "alarm_id": f"ph/{household}/{seq}",
            "source": "phone",
            "kind": "panic",
            "household": household,
            "device_ts": device_ts,
            "ingress_ts": ingress_ts,
            "dispatch_ts": dispatch_ts,
            "escalated": escalated,
            "event": {"seq": seq, "q": 1, "code": 120, "zone": 1, "part": 1},
        }
    )


def test_matcher_times_every_hop(demo: Config) -> None:
    """Each sink's dispatch is matched by household and seq, with each hop's latency."""
    send = next(stream(PhoneScenario(TOPICS, ["h001"], ["panic"], start=START), seed=1))
    seq = phone(send).seq
    matcher = DispatchMatcher(TOPICS)
    matcher.expect(send, expected_sinks(demo, "h001", 120))
    assert matcher.pending == 1
    assert matcher.observe("alarmgw/out/township/t01/alarms", alarm("h001", seq), START + 0.006)
    assert matcher.observe("alarmgw/out/village/v01/alarms", alarm("h001", seq), START + 0.007)
    assert not matcher.observe(
        "alarmgw/out/village/v01/alarms", alarm("h001", seq, escalated=True), START + 1
    )
    assert matcher.pending == 1
    (result,) = matcher.results()
    assert not result.ok
    assert result.missing == ("group/g11",)
    assert [hop.sink for hop in result.hops] == ["village/v01", "township/t01"]
    hop = result.hops[0]
    assert hop.device_to_ingress == pytest.approx(0.002, abs=1e-6)
    assert hop.ingress_to_dispatch == pytest.approx(0.003, abs=1e-6)
    assert hop.dispatch_to_received == pytest.approx(0.002, abs=1e-6)
    assert matcher.observe("alarmgw/out/group/g11/alarms", alarm("h001", seq), START + 0.008)
    assert matcher.pending == 0
    assert matcher.results()[0].ok


def test_matcher_ignores_strangers_and_merges_duplicates(demo: Config) -> None:
    """Other phones, other seqs, garbage and other topics do not match; a repeat is one."""
    sends = list(
        stream(
            PhoneScenario(TOPICS, ["h001"], ["burglary"], start=START),
            seed=1,
            faults=[duplicate(1.0)],
        )
    )
    matcher = DispatchMatcher(TOPICS)
    for send in sends:
        matcher.expect(send, expected_sinks(demo, "h001", 130))
    seq = phone(sends[0]).seq
    assert len(matcher.results()) == 1
    assert not matcher.observe("alarmgw/out/village/v01/alarms", alarm("h002", seq), START)
    assert not matcher.observe("alarmgw/out/village/v01/alarms", alarm("h001", seq + 1), START)
    assert not matcher.observe("alarmgw/out/village/v01/alarms", b"\xc1garbage", START)
    assert not matcher.observe("alarmgw/out/village/v01/passes", alarm("h001", seq), START)
    assert not matcher.observe("alarmgw/out/village/alarms", alarm("h001", seq), START)
    assert not matcher.observe(
        "alarmgw/out/village/v01/alarms", encode({"household": "h001"}), START
    )
    assert matcher.pending == 1


def test_matcher_expects_dead_letters_for_garbage_and_strangers() -> None:
    """A corrupted send matches the dead letter carrying its bytes; an unknown phone its topic."""
    corrupted = next(
        stream(
            PhoneScenario(TOPICS, ["h001"], ["panic"], start=START), seed=1, faults=[corrupt(1.0)]
        )
    )
    stranger = next(stream(PhoneScenario(TOPICS, ["zz9"], ["panic"], start=START), seed=1))
    matcher = DispatchMatcher(TOPICS)
    matcher.expect(corrupted, ())
    matcher.expect(stranger, (), known=False)
    assert matcher.pending == 2
    other = Rejected(Reason.BAD_ENCODING, b"something else")
    assert not matcher.observe(
        TOPICS.deadletter, encode(deadletter_payload(other, corrupted.topic, START)), START
    )
    bad = Rejected(Reason.BAD_ENCODING, corrupted.payload)
    assert matcher.observe(
        TOPICS.deadletter, encode(deadletter_payload(bad, corrupted.topic, START)), START
    )
    unknown = Rejected(Reason.UNKNOWN_DEVICE, b"zz9")
    assert matcher.observe(
        TOPICS.deadletter, encode(deadletter_payload(unknown, stranger.topic, START)), START
    )
    assert matcher.pending == 0
    results = matcher.results()
    assert [r.deadletter for r in results] == ["bad_encoding", "unknown_device"]
    assert all(r.ok and r.expect_deadletter for r in results)


def test_matcher_skips_checkpoints_and_counts_undispatched_as_done(demo: Config) -> None:
    """Checkpoint sends are not expected; a heartbeat expects nothing and is done."""
    matcher = DispatchMatcher(TOPICS)
    camera_send = next(
        stream(CheckpointScenario(TOPICS, demo.checkpoints, start=START, duration=60), seed=1)
    )
    matcher.expect(camera_send, ("township/t01",))
    beat = next(stream(PhoneScenario(TOPICS, ["h001"], ["heartbeat"], start=START), seed=1))
    matcher.expect(beat, ())
    assert matcher.pending == 0
    (result,) = matcher.results()
    assert result.ok
    assert result.hops == ()


def test_public_names_resolve() -> None:
    """Every name the package and its pure modules export exists."""
    import simulators  # noqa: PLC0415
    from simulators import plates, scenario  # noqa: PLC0415

    for module in (simulators, plates, scenario):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)
