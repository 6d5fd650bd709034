"""Running the scenarios (`bench.scenarios`) on the gateway and the bare gmqtt relay.

Each scenario gets a fresh session per system (its own broker, its own
configuration variant from `bench.scenarios.variant`), and runs the same steps
on both systems; only what the relay cannot do differs: it never escalates,
so in the panic storm it owes no escalations (its dispatch figures only).

* `alarm-heavy`: a prime step, then the sweep of the main benchmark
  (`Bench.sweep`: rising rates while the system keeps up, one bisection step)
  over `Plan.scenario_rates`, every step the scenario's load, with the acker
  acknowledging every alarm.
* `power-cut`: a warm-up (one heartbeat from each phone that will lose power,
  so that the gateway's supervision knows them as it would in the field; the
  relay drops them), then one step of `2 * power_cut_s`: troubles, then
  restores, plus panics from a second generator; no acker (no operator
  acknowledges 130,000 troubles in two minutes, and their deadline is off).
* `panic-storm`: a prime step, then `storm_rate` panics/s for `storm_s`; the
  acker acknowledges the even-numbered panics; the gateway's step owes one
  escalation to the bureau per other panic, `storm_deadline_s` after its
  ingress, and the sink listens until they have come (plus a linger, so a
  second escalation would be seen).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from bench.load import Mix
from bench.procs import peak_rss_bytes
from bench.report import commit
from bench.scenarios import (
    ALARM_HEAVY,
    PANIC_STORM,
    POWER_CUT,
    AlarmHeavy,
    PowerCut,
    Trickle,
    variant,
)

if TYPE_CHECKING:
    from bench.run import Bench, Session

__all__ = ["SCENARIO_SYSTEMS", "run_scenarios"]

Json = dict[str, Any]

SCENARIO_SYSTEMS: Final = ("gateway", "relay-gmqtt")
_MB: Final = 1024 * 1024
_WARM_RATE: Final = 4000.0
"""Heartbeats/s of the power cut's warm-up (the main benchmark's first contact rate)."""
_FULL_CUT_S: Final = 60.0
_WINDOW_S: Final = 10.0


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / _MB, 1)


def run_scenarios(bench: Bench, names: tuple[str, ...]) -> Json:
    """Every named scenario, each on both systems; their results by name."""
    runners = {ALARM_HEAVY: _alarm_heavy, POWER_CUT: _power_cut, PANIC_STORM: _panic_storm}
    out: Json = {}
    for name in names:
        started = time.monotonic()
        bench.say(f"scenario {name}")
        systems: Json = {}
        for system in SCENARIO_SYSTEMS:
            systems[system] = runners[name](bench, system)
        out[name] = {"systems": systems, "duration_s": round(time.monotonic() - started, 1)}
    return out


def _prime(session: Session, scenario: AlarmHeavy | None = None) -> Json | None:
    """The session's prime step (connections, first sight), unless `Plan.prime_s` is 0."""
    plan = session.bench.plan
    if plan.prime_s <= 0:
        return None
    return session.step("prime", plan.prime_rate, plan.prime_s, warm_s=0, scenario=scenario)


def _finish(out: Json, session_pid: int | None, peaks: list[int]) -> None:
    out["peak_rss_mb"] = _mb(max(peaks, default=0))
    out["peak_rss_mb_kernel"] = None if session_pid is None else _mb(peak_rss_bytes(session_pid))


def _alarm_heavy(bench: Bench, system: str) -> Json:
    plan = bench.plan
    load = AlarmHeavy()
    current = bench.current(system, variant(ALARM_HEAVY), acker=True)
    out: Json = {"restarts": [], "commit": commit()}
    try:
        session = current.open()
        out["label"] = session.system.label
        out["startup"] = dict(session.startup)
        homes, sites = load.devices(bench.population, plan.seed)
        out["households"] = len(homes)
        out["checkpoints"] = len(sites)
        out["checkpoint_classes"] = sorted({s.cls for s in sites})
        out["prime"] = _prime(session, scenario=load)
        out.update(bench.sweep(current, out["restarts"], plan.scenario_rates, scenario=load))
        session = current.session
        steps = [*([out["prime"]] if out["prime"] else []), *out["steps"]]
        out["escalated_seen"] = sum(s["escalations"]["seen"] for s in steps)
        out["acks_sent"] = sum(s["acker"]["acks_sent"] for s in steps)
        peaks = [*current.peaks, session.rss.stop()]
        _finish(out, None if session.sut is None else session.sut.pid, peaks)
    finally:
        current.close()
    return out


def _power_cut(bench: Bench, system: str) -> Json:
    plan = bench.plan
    homes = len(bench.population.homes)
    phones = plan.power_cut_phones
    if phones is None:
        phones = max(1, min(homes, round(homes * plan.power_cut_s / _FULL_CUT_S)))
    cut = PowerCut(phones=phones, half_s=plan.power_cut_s)
    current = bench.current(system, variant(POWER_CUT))
    out: Json = {
        "restarts": [],
        "commit": commit(),
        "phones": phones,
        "half_s": plan.power_cut_s,
        "panic_rate": plan.power_cut_panic_rate,
    }
    try:
        session = current.open()
        out["label"] = session.system.label
        out["startup"] = dict(session.startup)
        out["warm_up"] = session.step(
            "power cut: warm-up",
            min(_WARM_RATE, float(phones)),
            max(1.0, phones / _WARM_RATE),
            warm_s=0,
            scenario=replace(cut, warm=True),
            drain_max_s=180.0,
        )
        step = session.step(
            "power cut",
            phones / plan.power_cut_s,
            2 * plan.power_cut_s,
            warm_s=0,
            scenario=cut,
            apart=(plan.power_cut_panic_rate, Trickle(skip=phones)),
            drain_max_s=240.0,
            quiet_s=10.0,
            window_s=_WINDOW_S,
        )
        step["panic_rate"] = plan.power_cut_panic_rate
        out["step"] = step
        assert session.sut is not None
        peaks = [*current.peaks, session.rss.stop()]
        _finish(out, session.sut.pid, peaks)
    finally:
        current.close()
    return out


def _panic_storm(bench: Bench, system: str) -> Json:
    plan = bench.plan
    deadline = plan.storm_deadline_s
    current = bench.current(system, variant(PANIC_STORM, storm_deadline_s=deadline), acker=True)
    out: Json = {
        "restarts": [],
        "commit": commit(),
        "rate": plan.storm_rate,
        "duration_s": plan.storm_s,
        "deadline_s": deadline,
    }
    try:
        session = current.open()
        out["label"] = session.system.label
        out["startup"] = dict(session.startup)
        out["escalates"] = session.system.gateway
        out["prime"] = _prime(session)
        panics = Mix(heartbeat=0.0, routed_pass=0.0, unrouted_pass=0.0, alarm=0.0, panic=1.0)
        out["step"] = session.step(
            "panic storm",
            plan.storm_rate,
            plan.storm_s,
            warm_s=0,
            mix=panics,
            ack_policy="even",
            escalation_deadline_s=deadline if session.system.gateway else None,
            quiet_s=deadline + 5.0,
            drain_max_s=plan.storm_s + deadline + 60.0,
            linger_s=plan.storm_linger_s if session.system.gateway else 0.0,
        )
        assert session.sut is not None
        peaks = [*current.peaks, session.rss.stop()]
        _finish(out, session.sut.pid, peaks)
    finally:
        current.close()
    return out
