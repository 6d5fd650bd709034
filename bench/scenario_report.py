"""The scenarios' figures, targets and summary tables (`bench.scenarios`). Pure.

`figures(results)` condenses each scenario's results per system (and the
gateway/relay ratios) into `results["scenario_figures"]`; `targets(results)`
checks the issue's targets for the durable gateway; `markdown(results)` is
the scenarios' part of summary.md.
"""

from __future__ import annotations

from typing import Any, Final

from bench.scenarios import ALARM_HEAVY, PANIC_STORM, POWER_CUT

__all__ = ["figure", "figures", "markdown", "targets"]

Json = dict[str, Any]

_GATEWAY: Final = "gateway"
_RELAY: Final = "relay-gmqtt"
_P99_MS: Final = 50.0
_AT: Final = 1000.0


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return round(value / reference, 2)


def _step_at(system: Json, rate: float) -> Json | None:
    return next((s for s in system.get("steps", []) if float(s["offered_rate"]) == rate), None)


def _p99(step: Json | None, kind: str | None = None) -> float | None:
    if step is None:
        return None
    latency = step["latency_ms"] if kind is None else step["latency_ms_by_kind"].get(kind)
    return None if latency is None else latency["p99"]


def _us_per_event(step: Json | None, process: str) -> float | None:
    if step is None:
        return None
    sent = max(1, int(step["generator"]["sent"]))
    seconds = step["cpu"]["total_s"].get(process)
    return None if seconds is None else round(seconds / sent * 1e6, 1)


def _alarm_heavy(system: Json) -> Json:
    at = _step_at(system, _AT)
    steps = [s for s in (system.get("prime"), *system.get("steps", [])) if s]
    return {
        "best_ok_rate": system.get("best_ok_rate"),
        "max_ok_rate": system.get("max_ok_rate"),
        "max_kept_up_rate": system.get("max_kept_up_rate"),
        "first_failed_rate": system.get("first_failed_rate"),
        "p99_ms_at_1000": _p99(at),
        "sut_us_per_event_at_1000": None if at is None else at["cpu"]["sut_us_per_event"],
        "acker_us_per_event_at_1000": _us_per_event(at, "acker"),
        "sink_us_per_event_at_1000": _us_per_event(at, "sink"),
        "escalated_seen": system.get("escalated_seen"),
        "duplicates": sum(s["duplicates"] for s in steps),
        "unexpected": sum(s["unexpected"] for s in steps),
        "acks_sent": system.get("acks_sent"),
        "peak_rss_mb": system.get("peak_rss_mb_kernel") or system.get("peak_rss_mb"),
    }


def _power_cut(system: Json) -> Json:
    step = system["step"]
    by_kind = step["latency_ms_by_kind"]
    last_receipt = step["last_receipt_by_kind"]
    last_send = step["last_send_by_kind"]
    kinds = [k for k in ("trouble", "restore") if k in last_send]
    lag = None
    if kinds and all(k in last_receipt for k in kinds):
        lag = round(max(last_receipt[k] for k in kinds) - max(last_send[k] for k in kinds), 3)
    windows = step["p99_ms_by_window"].get("panic", [])
    return {
        "phones": system["phones"],
        "half_s": system["half_s"],
        "lost": step["lost"],
        "lost_by_kind": step["lost_by_kind"],
        "duplicates": step["duplicates"],
        "unexpected": step["unexpected"],
        "panic": by_kind.get("panic"),
        "trouble": by_kind.get("trouble"),
        "restore": by_kind.get("restore"),
        "panic_p99_ms_by_10s": windows,
        "panic_p99_ms_worst_window": max((w for w in windows if w is not None), default=None),
        "troubles_done_after_last_send_s": lag,
        "sut_us_per_event": step["cpu"]["sut_us_per_event"],
        "peak_rss_mb": system.get("peak_rss_mb_kernel") or system.get("peak_rss_mb"),
        "generator_late_p99_ms": (step["generator"].get("lateness_ms") or {}).get("p99"),
    }


def _panic_storm(system: Json) -> Json:
    step = system["step"]
    return {
        "rate": system["rate"],
        "duration_s": system["duration_s"],
        "deadline_s": system["deadline_s"],
        "escalates": system.get("escalates"),
        "lost": step["lost"],
        "duplicates": step["duplicates"],
        "unexpected": step["unexpected"],
        "latency_ms": step["latency_ms"],
        "done_after_load_s": step["drain_after_load_s"],
        "escalations": step["escalations"],
        "acks_sent": (step.get("acker") or {}).get("acks_sent"),
        "sut_us_per_event": step["cpu"]["sut_us_per_event"],
        "peak_rss_mb": system.get("peak_rss_mb_kernel") or system.get("peak_rss_mb"),
    }


_FIGURES = {ALARM_HEAVY: _alarm_heavy, POWER_CUT: _power_cut, PANIC_STORM: _panic_storm}


def figures(results: Json) -> Json:
    """Per scenario, per system: the figures the summary and the targets use."""
    out: Json = {}
    for name, scenario in results.get("scenarios", {}).items():
        per_system = {
            system: _FIGURES[name](found) for system, found in scenario["systems"].items()
        }
        gateway, relay = per_system.get(_GATEWAY), per_system.get(_RELAY)
        ratio: Json = {}
        if name == ALARM_HEAVY and gateway and relay:
            ratio = {
                "best_ok_rate": _ratio(gateway["best_ok_rate"], relay["best_ok_rate"]),
                "p99_at_1000": _ratio(gateway["p99_ms_at_1000"], relay["p99_ms_at_1000"]),
                "cpu_per_event_at_1000": _ratio(
                    gateway["sut_us_per_event_at_1000"], relay["sut_us_per_event_at_1000"]
                ),
            }
        elif gateway and relay:
            ratio = {
                "cpu_per_event": _ratio(gateway["sut_us_per_event"], relay["sut_us_per_event"])
            }
        out[name] = {"systems": per_system, "gateway_over_relay": ratio}
    return out


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f} ms"


def _target(target: str, measured: str, met: bool) -> Json:
    return {"target": target, "measured": measured, "met": met}


def targets(results: Json) -> list[Json]:
    """The scenarios' targets for the durable gateway: (target, measured, met)."""
    found: list[Json] = []
    condensed = results.get("scenario_figures") or figures(results)
    heavy = condensed.get(ALARM_HEAVY, {}).get("systems", {})
    gateway, relay = heavy.get(_GATEWAY), heavy.get(_RELAY)
    if gateway is not None and relay is not None:
        mine, theirs = gateway["best_ok_rate"] or 0, relay["best_ok_rate"]
        if theirs:
            found.append(
                _target(
                    "alarm-heavy: highest rate with 0 lost and p99 < 50 ms >= 0.7x the relay's",
                    f"{mine:,.0f} vs {theirs:,.0f} events/s ({mine / theirs:.2f}x)",
                    mine >= 0.7 * theirs,
                )
            )
        p99 = gateway["p99_ms_at_1000"]
        if p99 is not None:  # the sweep ran 1,000/s
            found.append(
                _target("alarm-heavy: p99 < 10 ms at 1,000 events/s", _ms(p99, 2), p99 < 10.0)
            )
        cpu, ref = gateway["sut_us_per_event_at_1000"], relay["sut_us_per_event_at_1000"]
        if cpu is not None and ref:
            found.append(
                _target(
                    "alarm-heavy: CPU per event at 1,000/s <= 1.5x the relay's",
                    f"{cpu} vs {ref} µs/event ({cpu / ref:.2f}x)",
                    cpu <= 1.5 * ref,
                )
            )
    cut = condensed.get(POWER_CUT, {}).get("systems", {}).get(_GATEWAY)
    if cut is not None:
        panic = cut["panic"] or {}
        worst = cut["panic_p99_ms_worst_window"]
        lag = cut["troubles_done_after_last_send_s"]
        rss = cut["peak_rss_mb"]
        scale = f"{cut['phones']:,} phones, {cut['half_s']:.0f} s + {cut['half_s']:.0f} s"
        found += [
            _target(f"power-cut ({scale}): 0 lost", f"lost {cut['lost']}", cut["lost"] == 0),
            _target(
                "power-cut: panic p99 < 50 ms, overall and in every 10 s window",
                f"{_ms(panic.get('p99'))} overall, worst window {_ms(worst)}",
                panic.get("p99") is not None
                and panic["p99"] < _P99_MS
                and (worst is None or worst < _P99_MS),
            ),
            _target(
                "power-cut: every trouble and restore dispatched within 10 s of the last send",
                "-" if lag is None else f"{lag:.2f} s after",
                lag is not None and lag < 10.0,
            ),
            _target(
                "power-cut: peak RSS (VmHWM) < 500 MB",
                "-" if rss is None else f"{rss:.0f} MB",
                rss is not None and rss < 500.0,
            ),
        ]
    storm = condensed.get(PANIC_STORM, {}).get("systems", {}).get(_GATEWAY)
    if storm is not None:
        esc = storm["escalations"]
        late = esc["lateness_ms"] or {}
        done = storm["done_after_load_s"]
        rate = f"{storm['rate']:,.0f}/s for {storm['duration_s']:.0f} s"
        found += [
            _target(f"panic-storm ({rate}): 0 lost", f"lost {storm['lost']}", storm["lost"] == 0),
            _target(
                "panic-storm: every panic at all its sinks within 5 s of the end of the storm",
                "-" if done is None else f"{done:.2f} s after",
                done is not None and done <= 5.0,
            ),
            _target(
                "panic-storm: every unacknowledged panic escalated exactly once, no acked one",
                f"owed {esc['owed']}, escalated {esc['delivered']}, missing {esc['missing']}, "
                f"twice {esc['duplicates']}, unexpected {esc['unexpected']}",
                esc["owed"] > 0
                and esc["missing"] == 0
                and esc["duplicates"] == 0
                and esc["unexpected"] == 0,
            ),
            _target(
                f"panic-storm: escalation lateness p99 < 1 s (deadline {storm['deadline_s']:g} s)",
                f"p50 {_ms(late.get('p50'))}, p99 {_ms(late.get('p99'))}, "
                f"max {_ms(late.get('max'))}",
                late.get("p99") is not None and late["p99"] < 1000.0,
            ),
        ]
    return found


def figure(value: Any, digits: int = 1) -> str:  # noqa: ANN401 - any JSON value
    """A JSON value for a table cell: `-` for none, thousands separators for numbers."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pct(latency: Json | None, key: str) -> str:
    return "-" if not latency else figure(latency.get(key), 1)


def markdown(results: Json) -> list[str]:
    """The scenarios' sections of summary.md (none without scenarios)."""
    condensed = results.get("scenario_figures") or figures(results)
    scenarios = results.get("scenarios", {})
    lines: list[str] = []
    labels = {
        name: {s: found.get("label", s) for s, found in scenario["systems"].items()}
        for name, scenario in scenarios.items()
    }
    heavy = condensed.get(ALARM_HEAVY)
    if heavy is not None:
        ratio = heavy["gateway_over_relay"]
        lines += [
            "",
            "## Scenario alarm-heavy",
            "",
            (
                "1,000 households and 100 checkpoints (every class) of the district; half phone "
                "events (panic 20 %, burglary 30 %, heartbeat 50 %), half passes, every class "
                "routed at QoS 1; every alarm acknowledged 2 ms after it arrived; deadlines "
                "60 s / 300 s on. Highest rate: 0 lost and p99 < 50 ms."
            ),
            "",
            (
                "| system | highest passing ev/s | x relay | kept up to | p99 at 1,000/s | "
                "CPU µs/event at 1,000/s | x relay | acker µs/ev | escalated seen | "
                "peak RSS MB |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for system, found in heavy["systems"].items():
            is_gateway = system == _GATEWAY
            lines.append(
                f"| {labels[ALARM_HEAVY][system]} | {figure(found['best_ok_rate'], 0)} | "
                f"{figure(ratio.get('best_ok_rate') if is_gateway else 1.0, 2)} | "
                f"{figure(found['max_kept_up_rate'], 0)} | {_ms(found['p99_ms_at_1000'], 2)} | "
                f"{figure(found['sut_us_per_event_at_1000'])} | "
                f"{figure(ratio.get('cpu_per_event_at_1000') if is_gateway else 1.0, 2)} | "
                f"{figure(found['acker_us_per_event_at_1000'])} | "
                f"{figure(found['escalated_seen'])} | "
                f"{figure(found['peak_rss_mb'], 0)} |"
            )
        lines += ["", "| system | ev/s | lost | dup | p50 ms | p99 ms | SUT µs/ev | verdict |"]
        lines.append("|---|---:|---:|---:|---:|---:|---:|---|")
        for system, found in scenarios[ALARM_HEAVY]["systems"].items():
            for step in found.get("steps", []):
                latency = step["latency_ms"]
                lines.append(
                    f"| {labels[ALARM_HEAVY][system]} | {step['offered_rate']:,.0f} | "
                    f"{step['lost']} | {step['duplicates']} | {_pct(latency, 'p50')} | "
                    f"{_pct(latency, 'p99')} | {figure(step['cpu']['sut_us_per_event'])} | "
                    f"{step['verdict']} |"
                )
    cut = condensed.get(POWER_CUT)
    if cut is not None:
        lines += [
            "",
            "## Scenario power-cut",
            "",
            (
                "Every phone reports AC loss (301 q=1) once over the first half, its restore "
                "(301 q=3) once over the second, while other phones send panics from their "
                "own connection. Latency p50 / p99 / max in ms."
            ),
            "",
            (
                "| system | phones | lost | panics | troubles | restores | worst 10 s panic p99 "
                "| done after last send | SUT µs/ev | peak RSS MB |"
            ),
            "|---|---:|---:|---|---|---|---:|---:|---:|---:|",
        ]
        for system, found in cut["systems"].items():
            cells = [
                "-"
                if not found[k]
                else " / ".join(figure(found[k][p]) for p in ("p50", "p99", "max"))
                for k in ("panic", "trouble", "restore")
            ]
            lag = found["troubles_done_after_last_send_s"]
            lines.append(
                f"| {labels[POWER_CUT][system]} | {found['phones']:,} | {found['lost']} | "
                f"{' | '.join(cells)} | {_ms(found['panic_p99_ms_worst_window'])} | "
                f"{'-' if lag is None else f'{lag:.2f} s'} | {figure(found['sut_us_per_event'])} | "
                f"{figure(found['peak_rss_mb'], 0)} |"
            )
    storm = condensed.get(PANIC_STORM)
    if storm is not None:
        lines += [
            "",
            "## Scenario panic-storm",
            "",
            (
                "Panics from households drawn uniformly; the even-numbered ones acknowledged "
                "2 ms after they arrived, each other one owed one escalation (to the bureau). "
                "The relay cannot escalate: dispatch figures only."
            ),
            "",
            (
                "| system | panics/s | lost | p50 / p99 / max ms | done after load | "
                "escalations owed / came / missing / twice / unexpected | lateness p50 / p99 / "
                "max ms | SUT µs/ev |"
            ),
            "|---|---:|---:|---|---:|---|---|---:|",
        ]
        for system, found in storm["systems"].items():
            esc = found["escalations"]
            late = esc["lateness_ms"]
            latency = found["latency_ms"]
            done = found["done_after_load_s"]
            lines.append(
                f"| {labels[PANIC_STORM][system]} | {found['rate']:,.0f} | {found['lost']} | "
                f"{_pct(latency, 'p50')} / {_pct(latency, 'p99')} / {_pct(latency, 'max')} | "
                f"{'-' if done is None else f'{done:.2f} s'} | "
                + (
                    f"{esc['owed']} / {esc['delivered']} / {esc['missing']} / "
                    f"{esc['duplicates']} / {esc['unexpected']} | "
                    f"{_pct(late, 'p50')} / {_pct(late, 'p99')} / {_pct(late, 'max')}"
                    if found["escalates"]
                    else f"cannot escalate (seen {esc['seen']}) | -"
                )
                + f" | {figure(found['sut_us_per_event'])} |"
            )
    return lines
