"""The benchmark's scenarios: their schedules and oracle, the acker's decisions, the
relay's alarm ids and acks, escalated copies in the accounting, and a real smoke.

The smoke runs all three scenarios scaled down on the durable gateway and the
bare gmqtt relay (each with its own mosquitto): alarm-heavy one step at 200/s
with every alarm acknowledged; power-cut over 2 s + 2 s from 2,000 phones with
panics apart; a panic storm of 100/s for 2 s with a 3 s deadline, where the
acknowledged half must never escalate and the other half exactly once.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import msgpack
import pytest

from bench.acker import decide, should_ack
from bench.cli import _parser, _plan
from bench.district import ConfigVariant, District, edit_district_toml
from bench.load import (
    ID_SPAN,
    Home,
    Kind,
    Mix,
    Planned,
    Population,
    Scenario,
    Site,
    StepSpec,
    schedule,
)
from bench.relay import Routes
from bench.report import write_outputs
from bench.run import Bench, Plan
from bench.scenario_report import figures, markdown, targets
from bench.scenarios import (
    NAMES,
    PANIC_STORM,
    AlarmHeavy,
    PowerCut,
    Trickle,
    escalations_owed,
    variant,
)
from bench.sink import decode_received
from bench.stats import Received, account
from config.generate import generate_district
from config.loader import load_config
from config.model import CheckpointClass, Priority
from tests.brokers import find_mosquitto

HOMES = tuple(Home(f"h{n:06d}", f"v{n % 3}", f"t{n % 2}", f"g{n // 10}") for n in range(3000))
SITES = tuple(Site(f"r{n:03d}{'abc'[n % 3]}", f"t{n % 2}", "ABC"[n % 3]) for n in range(207))
POPULATION = Population(HOMES, SITES)
BUREAU = "alarmgw/out/bureau/b1/alarms"


def _spec(name: str, rate: float, duration_s: float, scenario: Scenario | None = None) -> StepSpec:
    return StepSpec(name, rate, duration_s, 100.0, 7, 3 * ID_SPAN, scenario=scenario)


def _payload(item: Planned) -> dict[str, object]:
    decoded = msgpack.unpackb(item.payload)
    assert isinstance(decoded, dict)
    return decoded


# -- schedules and oracle ----------------------------------------------------------------
def test_power_cut_sends_each_phone_one_loss_then_one_restore() -> None:
    """Each phone sends exactly one AC loss (301 q=1) in the first half and one restore
    (301 q=3) in the second, each owed to its village room only; numbers are unique."""
    cut = PowerCut(phones=1000, half_s=5.0)
    planned = schedule(_spec("cut", 200.0, 10.0, cut), POPULATION)
    assert len(planned) == 2000
    assert [p.t for p in planned] == sorted(p.t for p in planned)
    assert len({p.number for p in planned}) == 2000
    losses = Counter[str]()
    restores = Counter[str]()
    for item in planned:
        body = _payload(item)
        assert body["code"] == 301
        assert body["seq"] == item.number
        home = HOMES[int(item.device[1:])]
        assert item.expected == (f"alarmgw/out/village/{home.village}/alarms",)
        if body["q"] == 1:
            assert item.kind is Kind.TROUBLE
            assert 100.0 <= item.t < 105.0
            losses[item.device] += 1
        else:
            assert body["q"] == 3
            assert item.kind is Kind.RESTORE
            assert 105.0 <= item.t < 110.0
            restores[item.device] += 1
    phones = {h.id for h in HOMES[:1000]}
    assert set(losses) == set(restores) == phones
    assert set(losses.values()) == set(restores.values()) == {1}
    assert schedule(_spec("cut", 200.0, 10.0, cut), POPULATION) == planned


def test_power_cut_warm_up_and_panics_apart() -> None:
    """The warm-up is one heartbeat per phone that will lose power, owing nothing;
    the panics come from the other phones, each owed to village, township and group."""
    warm = schedule(_spec("w", 1000.0, 1.0, PowerCut(phones=500, warm=True)), POPULATION)
    assert sorted(p.device for p in warm) == sorted(h.id for h in HOMES[:500])
    assert all(p.expected == () and _payload(p)["code"] == 602 for p in warm)
    panics = schedule(_spec("p", 200.0, 5.0, Trickle(skip=500)), POPULATION)
    assert 800 < len(panics) < 1200
    assert all(int(p.device[1:]) >= 500 for p in panics)
    assert all(p.kind is Kind.PANIC and len(p.expected) == 3 for p in panics)
    everyone = schedule(_spec("p", 200.0, 1.0, Trickle(skip=len(HOMES))), POPULATION)
    assert everyone  # nobody left after the skip: every household may panic


def test_alarm_heavy_shares_and_devices() -> None:
    """Half phone events (panic 20 %, burglary 30 %, heartbeat 50 %), half passes at
    checkpoints of every class, each pass owed to its township's passes topic, from a
    fixed seeded subset of 1,000 households and 100 checkpoints."""
    load = AlarmHeavy()
    planned = schedule(_spec("h", 4000.0, 5.0, load), POPULATION)
    count = len(planned)
    kinds = Counter(p.kind for p in planned)
    phones = count - kinds[Kind.PASS]
    assert kinds[Kind.PASS] / count == pytest.approx(0.5, abs=0.02)
    assert kinds[Kind.PANIC] / phones == pytest.approx(0.2, abs=0.02)
    assert kinds[Kind.ALARM] / phones == pytest.approx(0.3, abs=0.02)
    assert kinds[Kind.HEARTBEAT] / phones == pytest.approx(0.5, abs=0.02)
    homes, sites = load.devices(POPULATION, 7)
    assert (len(homes), len(sites)) == (1000, 100)
    assert {s.cls for s in sites} == {"A", "B", "C"}
    assert {p.device for p in planned if p.kind is not Kind.PASS} <= {h.id for h in homes}
    assert {p.device for p in planned if p.kind is Kind.PASS} <= {s.id for s in sites}
    by_id = {s.id: s for s in SITES}
    for item in planned:
        body = _payload(item)
        if item.kind is Kind.PASS:
            site = by_id[item.device]
            assert item.expected == (f"alarmgw/out/township/{site.township}/passes",)
            assert body["id"] == str(item.number)
        elif item.kind is Kind.PANIC:
            assert (body["code"], len(item.expected)) == (120, 3)
        elif item.kind is Kind.ALARM:
            assert (body["code"], len(item.expected)) == (130, 2)
        else:
            assert (body["code"], item.expected) == (602, ())
    assert load.devices(POPULATION, 7) == (homes, sites)


def test_panic_storm_owes_one_bureau_escalation_per_unacked_panic() -> None:
    """Only panics the acker leaves alone owe an escalation, one each, to the bureau."""
    mix = Mix(heartbeat=0.0, routed_pass=0.0, unrouted_pass=0.0, alarm=0.0, panic=1.0)
    spec = StepSpec("s", 500.0, 1.0, 0.0, 1, 2 * ID_SPAN, mix)
    planned = schedule(spec, POPULATION)
    acked = [p.number for p in planned if should_ack("even", p.number)]
    owed = escalations_owed(planned, BUREAU, acked)
    assert len(owed) == len(planned) - len(acked) > 0
    assert all(topic == BUREAU and number % 2 == 1 for topic, _, number in owed)
    assert escalations_owed(planned, BUREAU, [p.number for p in planned]) == []


def test_scenario_config_variants(tmp_path: Path) -> None:
    """alarm-heavy routes every class's passes at QoS 1 with the deployed deadlines;
    the panic storm's life-safety deadline is its parameter; the main bench's stay off."""
    district = District.generate(tmp_path, 3)
    heavy = load_config(
        district.write_config(
            "h",
            broker_port=1,
            http_port=2,
            store_dir=tmp_path / "s",
            variant=variant("alarm-heavy"),
        )
    )
    assert all(heavy.routing.passes[c] for c in CheckpointClass)
    assert heavy.routing.passes_qos == 1
    assert heavy.escalation.deadline_s[Priority.LIFE_SAFETY] == 60.0
    assert heavy.escalation.deadline_s[Priority.PROPERTY] == 300.0
    storm = variant(PANIC_STORM, storm_deadline_s=2.5)
    assert storm == ConfigVariant(PANIC_STORM, life_safety_s=2.5)
    text, _ = generate_district(3)
    edited = edit_district_toml(
        text, broker_port=1, http_port=2, store_path=tmp_path / "x", variant=storm
    )
    assert "life_safety = 2.5\n" in edited
    assert "property = 0\n" in edited
    assert "[routing.passes]" not in edited
    with pytest.raises(ValueError, match="unknown scenario"):
        variant("nope")


# -- the acker and the relay -------------------------------------------------------------
def test_acker_acknowledges_each_alarm_once_on_its_sink() -> None:
    """The first copy of an alarm is acknowledged on the ack topic of the sink it came
    on; later copies, escalated copies and (under `even`) odd numbers never are."""
    seen: set[str] = set()
    body = {"alarm_id": "ph/h1/4", "event": {"seq": 4}, "escalated": False}
    topic = "alarmgw/out/village/v001/alarms"
    assert decide("alarmgw", "all", topic, body, seen) == ("alarmgw/ack/village/v001", "ph/h1/4")
    assert decide("alarmgw", "all", "alarmgw/out/township/t01/alarms", body, seen) is None
    odd = {"alarm_id": "ph/h1/5", "event": {"seq": 5}}
    assert decide("alarmgw", "even", topic, odd, seen) is None
    assert decide("alarmgw", "all", topic, odd | {"escalated": True}, seen) is None
    assert decide("alarmgw", "none", topic, {"alarm_id": "x", "event": {"seq": 2}}, seen) is None
    assert decide("alarmgw", "all", topic, "junk", seen) is None
    assert should_ack("even", 10)
    assert not should_ack("even", 11)
    with pytest.raises(ValueError, match="unknown ack policy"):
        should_ack("some", 1)


def test_relay_with_acks_carries_alarm_ids_and_pops_acks() -> None:
    """With acks the relay's phone dispatches carry the gateway's `ph/<household>/<seq>`
    alarm id, an ack pops it; passes of every configured class are routed."""
    routes = Routes(HOMES, SITES, "alarmgw", routed_classes=frozenset("ABC"), acks=True)
    assert "alarmgw/ack/#" in routes.subscriptions
    planned = schedule(_spec("h", 2000.0, 1.0, AlarmHeavy()), POPULATION)
    for item in planned:
        topics, body = routes.route(item.topic, item.payload)
        assert topics == item.expected
        if topics:
            decoded = msgpack.unpackb(body)
            assert decode_received(0.0, b"t", body).number == item.number
            if item.kind is not Kind.PASS:
                assert decoded["alarm_id"] == f"ph/{item.device}/{item.number}"
    panic = next(p for p in planned if p.kind is Kind.PANIC)
    alarm_id = f"ph/{panic.device}/{panic.number}"
    assert alarm_id in routes.open_alarms
    ack = msgpack.packb({"alarm_id": alarm_id, "by": "bench", "ts": 1.0})
    assert routes.ack(ack)
    assert not routes.ack(ack)
    assert not routes.ack(b"\xc1")
    assert routes.acked == 1
    plain = Routes(HOMES, SITES, "alarmgw")
    _, body = plain.route(panic.topic, panic.payload)
    assert "alarm_id" not in msgpack.unpackb(body)
    assert plain.open_alarms == {}


# -- accounting of escalated copies ------------------------------------------------------
def _panic(number: int, t: float, device: str = "h1") -> Planned:
    return Planned(t, Kind.PANIC, "in", b"", device, number, ("v", "t", "g"))


def test_escalated_copies_are_accounted_apart() -> None:
    """Owed escalations are counted with their lateness from ingress + deadline; a second
    escalated copy is a duplicate escalation, one of an acknowledged alarm unexpected;
    neither touches the step's own duplicates or unexpected messages."""
    base = 5 * ID_SPAN
    planned = [_panic(base, 10.0), _panic(base + 1, 10.5), _panic(base + 2, 11.0)]
    received = [Received(p.t + 0.003, topic, "h1", p.number) for p in planned for topic in "vtg"]
    received += [
        # base + 1 is owed an escalation; its ingress was at 10.501, deadline 15 s
        Received(25.701, BUREAU, "h1", base + 1, True, 10.501, 25.7),
        Received(25.9, BUREAU, "h1", base + 1, True, 10.501, 25.9),  # escalated twice
        Received(25.0, BUREAU, "h1", base, True, 10.001, 25.0),  # acked, yet escalated
        Received(10.02, "v", "h1", base + 2),  # a true duplicate of a normal dispatch
    ]
    owed = [(BUREAU, "h1", base + 1), (BUREAU, "h1", base + 2)]
    result = account(
        planned, received, measure_from=10.0, measure_to=12.0, escalations_owed=owed, deadline_s=15
    )
    assert (result.expected, result.delivered, result.lost) == (9, 9, 0)
    assert (result.duplicates, result.unexpected, result.stale) == (1, 0, 0)
    escalations = result.escalations
    assert (escalations.owed, escalations.delivered, escalations.missing) == (2, 1, 1)
    assert (escalations.duplicates, escalations.unexpected, escalations.seen) == (1, 1, 3)
    assert escalations.lateness is not None
    assert escalations.lateness.max == pytest.approx(200.0)
    assert escalations.earliest_ms == pytest.approx(200.0)
    figures_ = result.as_dict()["escalations"]
    assert isinstance(figures_, dict)
    assert figures_["missing"] == 1


def test_account_last_receipt_by_kind_and_p99_by_window() -> None:
    """The last receipt and last send of each kind, and a p99 for every window."""
    base = 5 * ID_SPAN
    planned = [
        Planned(10.0 + i, Kind.TROUBLE if i < 5 else Kind.RESTORE, "in", b"", "h", base + i, ("v",))
        for i in range(10)
    ]
    received = [Received(p.t + 0.001 * (i + 1), "v", "h", p.number) for i, p in enumerate(planned)]
    result = account(planned, received, measure_from=10.0, measure_to=20.0, window_s=5.0)
    assert result.last_send_by_kind == {"trouble": 14.0, "restore": 19.0}
    assert result.last_receipt_by_kind["restore"] == pytest.approx(19.01)
    trouble, restore = result.p99_by_window["trouble"], result.p99_by_window["restore"]
    assert trouble[0] == pytest.approx(5.0)
    assert trouble[1:] == (None,)
    assert restore[0] is None
    assert restore[1] == pytest.approx(10.0)
    assert result.escalations.owed == result.escalations.seen == 0
    with pytest.raises(ValueError, match="window_s"):
        account(planned, received, measure_from=10.0, measure_to=20.0, window_s=0.0)


# -- the CLI -----------------------------------------------------------------------------
def test_cli_chooses_the_scenarios() -> None:
    """A plain run runs the main benchmark and every scenario; `--scenarios` only those;
    the smoke and explicit systems or rates, the main benchmark only."""
    parser = _parser()
    plain = _plan(parser.parse_args([]))
    assert plain.main
    assert plain.scenarios == NAMES
    only = _plan(parser.parse_args(["--scenarios", "panic-storm,alarm-heavy"]))
    assert not only.main
    assert only.scenarios == ("alarm-heavy", "panic-storm")
    assert _plan(parser.parse_args(["--scenarios", "all"])).scenarios == NAMES
    assert _plan(parser.parse_args(["--smoke"])).scenarios == ()
    assert _plan(parser.parse_args(["--rates", "1000"])).scenarios == ()
    assert _plan(parser.parse_args(["--no-scenarios"])).scenarios == ()
    scaled = _plan(parser.parse_args(["--power-cut-seconds", "5", "--storm-deadline", "4"]))
    assert (scaled.power_cut_s, scaled.storm_deadline_s) == (5.0, 4.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--scenarios", "blackout"])


# -- the smoke -------------------------------------------------------------------------
@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.timeout(150)
def test_scenarios_smoke(tmp_path: Path) -> None:
    """All three scenarios, scaled down, on the gateway and the relay: nothing lost or
    repeated; every alarm acknowledged and none escalated in alarm-heavy; in the storm
    the unacknowledged half escalated exactly once and the acknowledged half never."""
    find_mosquitto()
    plan = Plan(
        systems=(),
        main=False,
        scenarios=NAMES,
        scenario_rates=(200,),
        step_s=2.0,
        warm_s=0.5,
        bisect=False,
        prime_s=0.0,
        drain_max_s=15.0,
        power_cut_s=2.0,
        power_cut_phones=2000,
        storm_rate=100.0,
        storm_s=2.0,
        storm_deadline_s=3.0,
        storm_linger_s=1.0,
    )
    bench = Bench(plan, tmp_path / "work", say=lambda _text: None)
    results = bench.run()
    results["meta"] = {
        "started": "now",
        "duration_s": 1.0,
        "command": "test",
        "plan": plan.as_dict(),
        "machine": dict.fromkeys(
            ("cpu", "cores", "memory_gib", "os", "python", "mosquitto", "gmqtt", "aiomqtt"), "-"
        )
        | {"commit": "-"},
    }
    write_outputs(results, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    scenarios = saved["scenarios"]
    for name in NAMES:
        assert set(scenarios[name]["systems"]) == {"gateway", "relay-gmqtt"}
    for system, heavy in scenarios["alarm-heavy"]["systems"].items():
        (step,) = heavy["steps"]
        # Everything but the latency target (no timed assertions in the suite: a
        # stall of the shared CI machine may put one step's p99 over 50 ms).
        problems = [v for v in step["verdict"].split("; ") if v != "ok" and not v.startswith("p99")]
        assert problems == [], (system, step["verdict"])
        assert step["delivered"] == step["expected_messages"] > 0
        assert (step["duplicates"], step["unexpected"]) == (0, 0)
        assert step["acker"]["acks_sent"] == step["acker"]["acks_confirmed"] > 0
        assert step["cpu"]["total_s"]["acker"] >= 0
        assert heavy["escalated_seen"] == 0
        assert heavy["checkpoint_classes"] == ["A", "B", "C"]
    for system, cut in scenarios["power-cut"]["systems"].items():
        step = cut["step"]
        assert step["lost"] == 0, system
        assert step["delivered"] == step["expected_messages"]
        assert {"panic", "trouble", "restore"} <= set(step["latency_ms_by_kind"])
        assert step["latency_ms_by_kind"]["trouble"]["count"] == 2000
    gateway = scenarios["panic-storm"]["systems"]["gateway"]["step"]
    assert gateway["lost"] == 0
    escalations = gateway["escalations"]
    assert escalations["owed"] > 50
    assert escalations["delivered"] == escalations["owed"]
    assert (escalations["missing"], escalations["duplicates"]) == (0, 0)
    assert escalations["unexpected"] == 0
    assert escalations["earliest_ms"] >= 0.0  # never early; how late is the bench's figure
    relay = scenarios["panic-storm"]["systems"]["relay-gmqtt"]["step"]
    assert relay["lost"] == 0
    assert relay["escalations"]["seen"] == 0
    condensed = figures(saved)
    if all(h["steps"][0]["ok"] for h in scenarios["alarm-heavy"]["systems"].values()):
        assert condensed["alarm-heavy"]["gateway_over_relay"]["best_ok_rate"] == 1.0
    found = {t["target"].split(":")[0].split(" (")[0] for t in targets(saved)}
    assert found == {"alarm-heavy", "power-cut", "panic-storm"}
    text = "\n".join(markdown(saved))
    assert "## Scenario panic-storm" in text
    assert (tmp_path / "summary.md").read_text(encoding="utf-8").startswith("# alarmgw benchmark")
