"""The benchmark's outputs: results.json, summary.md and latency.png, with ratios and targets.

Absolute figures drift on a shared two-core machine, so every system's figures
are also given as a ratio to the bare gmqtt relay's from the same run (the
gateway's own MQTT client doing nothing but relaying): the highest rate passed,
and at each offered rate both ran, p50/p99/p99.9 latency and CPU per event.

The targets (the benchmark issue; docs/benchmark.md) are checked against the
durable gateway's figures and listed with what was measured.

The plot needs matplotlib (the `bench` extra); without it the PNG is skipped and
the summary says so.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Final

from bench import scenario_report
from bench.scenario_report import figure as _f

__all__ = ["commit", "machine", "ratios", "slowest_lines", "targets", "write_outputs"]

Json = dict[str, Any]

_REFERENCE: Final = "relay-gmqtt"
_TARGET_P99_MS: Final = 50.0
_REPO: Final = Path(__file__).resolve().parent.parent


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - read-only git queries
            ["git", *args],  # noqa: S607
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def commit() -> str | None:
    """The checked-out commit, `+` when tracked files differ from it."""
    head = _git("rev-parse", "--short", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if head is None else head + ("+" if status else "")


def machine() -> Json:
    """What the figures came from: CPU, cores, memory, OS, versions, commit."""
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mosquitto = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["/usr/sbin/mosquitto", "-h"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        first = (done.stdout or done.stderr).splitlines()
        mosquitto = first[0].strip() if first else None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "mosquitto": mosquitto,
        "gmqtt": _version("gmqtt"),
        "aiomqtt": _version("aiomqtt"),
        "msgpack": _version("msgpack"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "tree_modified": bool(status) if status is not None else None,
    }


def _sweep_steps(system: Json) -> dict[float, Json]:
    return {float(s["offered_rate"]): s for s in system.get("steps", [])}


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return round(value / reference, 2)


def ratios(results: Json) -> Json:
    """Each system's figures over the bare gmqtt relay's, per common offered rate."""
    systems = results.get("systems", {})
    reference = systems.get(_REFERENCE)
    if reference is None:
        return {}
    ref_steps = _sweep_steps(reference)
    out: Json = {}
    for name, system in systems.items():
        per_rate: Json = {}
        for rate, step in sorted(_sweep_steps(system).items()):
            ref = ref_steps.get(rate)
            if ref is None or step["latency_ms"] is None or ref["latency_ms"] is None:
                continue
            per_rate[f"{rate:.0f}"] = {
                key: _ratio(step["latency_ms"][key], ref["latency_ms"][key])
                for key in ("p50", "p99", "p999")
            } | {
                "cpu_per_event": _ratio(
                    step["cpu"]["sut_us_per_event"], ref["cpu"]["sut_us_per_event"]
                )
            }
        out[name] = {
            "best_ok_rate": _ratio(system.get("best_ok_rate"), reference.get("best_ok_rate")),
            "max_ok_rate": _ratio(system.get("max_ok_rate"), reference.get("max_ok_rate")),
            "per_rate": per_rate,
        }
    return out


def _step_at(system: Json | None, rate: float) -> Json | None:
    if system is None:
        return None
    return _sweep_steps(system).get(float(rate))


def targets(results: Json) -> list[Json]:
    """The issue's targets for the durable gateway: (target, measured, met); the
    scenarios' after the main benchmark's (`bench.scenario_report`)."""
    return _main_targets(results) + scenario_report.targets(results)


def _main_targets(results: Json) -> list[Json]:
    systems = results.get("systems", {})
    gateway = systems.get("gateway")
    relay = systems.get(_REFERENCE)
    found: list[Json] = []
    if gateway is None:
        return found
    mine = gateway.get("best_ok_rate")
    theirs = relay.get("best_ok_rate") if relay else None
    if theirs:
        strict = gateway.get("max_ok_rate")
        found.append(
            {
                "target": "highest rate with 0 lost and p99 < 50 ms >= 0.7x the bare gmqtt relay's",
                "measured": f"{mine or 0:,.0f} vs {theirs:,.0f} events/s "
                f"({(mine or 0) / theirs:.2f}x); every step passed up to {strict or 0:,.0f}",
                "met": (mine or 0) >= 0.7 * theirs,
            }
        )
    at_1000 = _step_at(gateway, 1000)
    if at_1000 is not None and at_1000["latency_ms"] is not None:
        p99 = at_1000["latency_ms"]["p99"]
        found.append(
            {
                "target": "p99 dispatch latency < 10 ms at 1,000 events/s",
                "measured": f"{p99:.2f} ms",
                "met": p99 < 10.0 and at_1000["lost"] == 0,
            }
        )
    overload = gateway.get("overload")
    if overload is not None:
        panic = overload["panic"]
        latency = panic["latency_ms"]
        p99 = latency["p99"] if latency else None
        found.append(
            {
                "target": "overload (2x passes + panics): panic p99 < 50 ms, none lost",
                "measured": f"panic p99 {'-' if p99 is None else f'{p99:.1f} ms'}, "
                f"lost {panic['lost']}",
                "met": p99 is not None and p99 < _TARGET_P99_MS and panic["lost"] == 0,
            }
        )
    startup = gateway.get("startup", {})
    if gateway.get("district") is not None or startup:
        seconds = startup.get("startup_s")
        found.append(
            {
                "target": "start-up < 3 s with 130,000 households and 207 checkpoints",
                "measured": f"{seconds:.2f} s",
                "met": seconds is not None and seconds < 3.0,
            }
        )
        district = gateway.get("district") or {}
        rss = max(
            [
                v
                for v in (
                    startup.get("rss_mb_at_ready"),
                    district.get("rss_mb_all_supervised"),
                )
                if v is not None
            ],
            default=None,
        )
        if rss is not None:
            found.append(
                {
                    "target": "RSS < 300 MB at district scale (loaded, every phone supervised)",
                    "measured": f"{rss:.0f} MB",
                    "met": rss < 300.0,
                }
            )
    return found


# -- markdown -----------------------------------------------------------------------
def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _latency(step: Json, key: str) -> float | None:
    latency = step.get("latency_ms")
    return None if latency is None else latency[key]


def _hops(step: Json, kind: str) -> str:
    """`to ingress | in system | to sink` cells, each `p50 / p99` in ms."""
    hops = step.get("hops_ms_by_kind", {}).get(kind, {})
    cells = []
    for hop in ("to_ingress", "in_system", "to_sink"):
        figures = hops.get(hop)
        cells.append(
            "-" if figures is None else f"{_f(figures['p50'], 1)} / {_f(figures['p99'], 1)}"
        )
    return " | ".join(cells)


def slowest_lines(step: Json, kind: str, label: str) -> list[str]:
    """The slowest messages of a kind, when they were due and their hops: a p99 over
    a trickle is nearly its maximum, and several slow ones due at one moment are
    one stall (bench.stats)."""
    slowest = step.get("slowest_by_kind", {}).get(kind)
    if not slowest:
        return []
    lines = [
        "",
        f"Slowest {label} (due = seconds into the step):",
        "",
        "| due s | sink topic | ms | to ingress | in gateway | to sink |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {slow['at_s']:.3f} | {slow['topic']} | {_f(slow['ms'], 1)} | "
        f"{_f(slow.get('to_ingress'), 1)} | {_f(slow.get('in_system'), 1)} | "
        f"{_f(slow.get('to_sink'), 1)} |"
        for slow in slowest
    )
    return lines


def summary_markdown(results: Json, png: str | None) -> str:
    """The short summary: headline table, per-step tables, overload, district, the
    scenarios, targets; with the scenarios only, their tables and targets."""
    scenario_lines = scenario_report.markdown(results)
    if results["systems"]:
        text = _main_summary(results, png)
        if not scenario_lines:
            return text
        head, marker, tail = text.partition("\n## Targets\n")
        return head + "\n".join(scenario_lines).removeprefix("\n") + "\n" + marker + tail
    lines = _header(results) + scenario_lines
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [
        f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |"
        for t in results.get("targets", [])
    ]
    return "\n".join([*lines, ""])


def _header(results: Json) -> list[str]:
    meta = results["meta"]
    box = meta["machine"]
    return [
        f"# alarmgw benchmark, {meta['started']}",
        "",
        (
            f"Machine: {box['cpu']}, {box['cores']} cores, {box['memory_gib']} GiB, "
            f"{box['os']}; Python {box['python']}, {box['mosquitto']}, gmqtt {box['gmqtt']}, "
            f"aiomqtt {box['aiomqtt']}; commit {box['commit']}"
            + (" (tree modified)" if box.get("tree_modified") else "")
            + "."
        ),
        f"Command: `{meta['command']}`; {meta['duration_s'] / 60:.1f} min.",
    ]


def _main_summary(results: Json, png: str | None) -> str:
    meta = results["meta"]
    box = meta["machine"]
    systems: Json = results["systems"]
    rel = results.get("ratios", {})
    lines = [
        f"# alarmgw benchmark, {meta['started']}",
        "",
        (
            f"Machine: {box['cpu']}, {box['cores']} cores, {box['memory_gib']} GiB, "
            f"{box['os']}; Python {box['python']}, {box['mosquitto']}, gmqtt {box['gmqtt']}, "
            f"aiomqtt {box['aiomqtt']}; commit {box['commit']}"
            + (" (tree modified)" if box.get("tree_modified") else "")
            + "."
        ),
        f"Command: `{meta['command']}`; {meta['duration_s'] / 60:.1f} min.",
        "",
        "## Highest offered rate with 0 lost and p99 < 50 ms",
        "",
        (
            "| system | events/s | x bare gmqtt relay | every step passed up to | first failing "
            "step | kept up to (events/s) | CPU µs/event at 1,000/s | p99 at 1,000/s (ms) | "
            "peak RSS (MB) |"
        ),
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    commits = {system.get("commit") for system in systems.values()}
    for name, system in systems.items():
        at_1000 = _step_at(system, 1000)
        failing = next(
            (
                s
                for s in system.get("steps", [])
                if s["offered_rate"] == system["first_failed_rate"]
            ),
            None,
        )
        lines.append(
            f"| {system['label']} | {_f(system.get('best_ok_rate'), 0)} | "
            f"{_x(rel.get(name, {}).get('best_ok_rate'))} | {_f(system.get('max_ok_rate'), 0)} | "
            + (
                f"{failing['offered_rate']:,.0f}/s: {failing['verdict']}"
                if failing is not None
                else "none"
            )
            + f" | {_f(system.get('max_kept_up_rate'), 0)}"
            + f" | {_f(at_1000 and at_1000['cpu']['sut_us_per_event'])} | "
            f"{_f(at_1000 and _latency(at_1000, 'p99'), 2)} | "
            f"{_f(system.get('peak_rss_mb_kernel') or system.get('peak_rss_mb'), 0)} |"
        )
    if len(commits) > 1:
        lines += [
            "",
            "The tree changed during the run: "
            + "; ".join(f"{s['label']} ran {s.get('commit')}" for s in systems.values())
            + ".",
        ]
    lines += ["", "## Every step", ""]
    lines += [
        (
            "Latency: scheduled send → receipt at the sink, per dispatched message, "
            "over the measured part of each step. Ratios are to the bare gmqtt relay at the "
            "same offered rate. Core shares are of one core during the load (2 cores in all)."
        ),
        "",
        (
            "| system | offered ev/s | delivered msg/s | lost | dup | p50 ms | p99 ms | "
            "p99.9 ms | p99 x relay | SUT µs/ev | CPU x relay | SUT core | broker core | "
            "gen. late p99 ms | GC max ms | RSS MB |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, system in systems.items():
        per_rate = rel.get(name, {}).get("per_rate", {})
        for step in system.get("steps", []):
            ratio = per_rate.get(f"{step['offered_rate']:.0f}", {})
            shares = step["cpu"]["load_core_share"]
            late = step["generator"].get("lateness_ms") or {}
            mark = "" if step["ok"] else " ✗"
            lines.append(
                f"| {system['label']} | {step['offered_rate']:,.0f}{mark} | "
                f"{_f(step['delivered_msgs_per_s'], 0)} | {step['lost']} | {step['duplicates']} | "
                f"{_f(_latency(step, 'p50'), 2)} | {_f(_latency(step, 'p99'), 2)} | "
                f"{_f(_latency(step, 'p999'), 2)} | {_x(ratio.get('p99'))} | "
                f"{_f(step['cpu']['sut_us_per_event'])} | {_x(ratio.get('cpu_per_event'))} | "
                f"{shares['sut']:.0%} | {shares['mosquitto']:.0%} | {_f(late.get('p99'), 2)} | "
                f"{_f((step.get('gc_pauses') or {}).get('max_ms'), 0)} | {_f(step['rss_mb'], 0)} |"
            )
    gateway = systems.get("gateway", {})
    hop_rows = [
        (system["label"], step)
        for name, system in systems.items()
        for step in system.get("steps", [])
        if name in ("gateway", "relay-gmqtt") and step["offered_rate"] in (1000, 5000, 8000)
    ]
    if hop_rows:
        lines += [
            "",
            "## Where the latency goes",
            "",
            (
                "Alarms (the 5 % phone alarms), split with the system's own `ingress_ts` and "
                "`dispatch_ts`: scheduled send → the system's handler took it (generator, broker, "
                "receive window) → the dispatch was encoded (decision, store, outbox) → the sink "
                "got it (publish, broker, sink). Milliseconds, p50 / p99."
            ),
            "",
            "| system | offered ev/s | to ingress | in system | to sink |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {label} | {step['offered_rate']:,.0f} | {_hops(step, 'alarm')} |"
            for label, step in hop_rows
        ]
    overload = gateway.get("overload")
    if overload is not None:
        panic = overload["panic"]
        passes = overload["passes"]
        pl = panic["latency_ms"] or {}
        ps = passes["latency_ms"] or {}
        lines += [
            "",
            "## Alarms first under overload (durable gateway)",
            "",
            (
                f"Checkpoint passes at {overload['pass_rate']:,.0f}/s (twice the sustainable "
                f"{overload['sustainable_rate']:,.0f} events/s) plus panics at "
                f"{overload['panic_rate']:.0f}/s, for {overload['duration_s']:.0f} s."
            ),
            "",
            (
                "| traffic | messages | lost | p50 ms | p99 ms | max ms | to ingress p50 / p99 "
                "| in gateway p50 / p99 | to sink p50 / p99 |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            (
                f"| panics | {_f(pl.get('count'))} | {panic['lost']} | {_f(pl.get('p50'), 1)} "
                f"| {_f(pl.get('p99'), 1)} | {_f(pl.get('max'), 1)} | "
                f"{_hops(overload, 'panic')} |"
            ),
            (
                f"| passes | {_f(ps.get('count'))} | {passes['lost']} | {_f(ps.get('p50'), 1)} "
                f"| {_f(ps.get('p99'), 1)} | {_f(ps.get('max'), 1)} | "
                f"{_hops(overload, 'pass')} |"
            ),
            "",
            (
                f"Passes delivered at {_f(overload['delivered_msgs_per_s'], 0)} msg/s during "
                f"the overload; the backlog drained {_f(overload['drain_after_load_s'], 1)} s "
                "after the load ended."
            ),
        ]
        lines += slowest_lines(overload, "panic", "panics")
    lines += ["", "## District scale", ""]
    lines += [
        (
            "| system | start-up s | RSS at ready MB | idle core | first contact of every "
            "phone | µs/first heartbeat | steady supervision | RSS all supervised MB |"
        ),
        "|---|---:|---:|---:|---|---:|---|---:|",
    ]
    for system in systems.values():
        district = system.get("district")
        startup = system["startup"]
        if district is None:
            continue
        first = district["first_contact"]
        steady = district["steady"]
        lines.append(
            f"| {system['label']} | {startup['startup_s']:.2f} | "
            f"{startup['rss_mb_at_ready']:.0f} | {district['idle_core_share']['sut']:.1%} | "
            f"{district['households']:,} at {first['offered_rate']:,.0f}/s, "
            f"{first['drain']['gateway']['waited_s']:.1f} s drain, lost {first['lost']} | "
            f"{first['cpu']['sut_us_per_event']:.0f} | "
            f"{district['steady_rate']:.0f} heartbeats/s (one per phone every "
            f"{district['heartbeat_interval_s']:.0f} s): "
            f"{district['supervision_core_share']:.1%} of a core, "
            f"{steady['cpu']['sut_us_per_event']:.0f} µs each | "
            f"{district['rss_mb_all_supervised']:.0f} |"
        )
    gc_rows = [(system["label"], system["gc"]) for system in systems.values() if system.get("gc")]
    if gc_rows:
        lines += [
            "",
            "## Garbage collector (gateway)",
            "",
            (
                "Pauses recorded by `bench.gcwatch` over the whole session (collections that "
                "took 5 ms or more, or reached generation 2), and what the collector tracked "
                "after the last step."
            ),
            "",
            (
                "| system | full collections | longest pause ms | all recorded pauses ms | "
                "tracked objects at end | most common |"
            ),
            "|---|---:|---:|---:|---:|---|",
        ]
        for label, gc_figures in gc_rows:
            pauses = gc_figures.get("pauses") or {}
            snap = gc_figures.get("snapshot_at_end") or {}
            top = ", ".join(f"{name} {count:,}" for name, count in (snap.get("top") or [])[:6])
            lines.append(
                f"| {label} | {_f(pauses.get('full_collections'))} | "
                f"{_f(pauses.get('max_ms'), 0)} | {_f(pauses.get('total_ms'), 0)} | "
                f"{_f(snap.get('tracked'))} | {top} |"
            )
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for item in results.get("targets", []):
        lines.append(
            f"| {item['target']} | {item['measured']} | {'yes' if item['met'] else 'NO'} |"
        )
    profile = gateway.get("profile")
    if profile is not None and profile.get("summary"):
        summary = profile["summary"]
        lines += [
            "",
            (
                f"## Profile of the durable gateway at {profile['offered_rate']:,.0f} events/s "
                f"({summary['samples']:,} samples)"
            ),
            "",
            "| where (self time) | % |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {v} |" for k, v in summary["area_self_pct"][:15]]
        lines += ["", "| project function (inclusive) | % |", "|---|---:|"]
        lines += [f"| `{k}` | {v} |" for k, v in summary["project_inclusive_pct"][:25]]
    lines += [""]
    lines.append(
        f"![latency against offered load]({png})" if png else "(no plot: matplotlib missing)"
    )
    lines.append("")
    return "\n".join(lines)


# -- plot -----------------------------------------------------------------------------
def plot(results: Json, path: Path) -> bool:
    """Latency percentiles against offered load, per system; False without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 - optional (the bench extra)

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError:
        return False
    if not any(system.get("steps") for system in results["systems"].values()):
        return False  # the scenarios only: nothing swept against offered load
    figure, axes = pyplot.subplots(figsize=(10, 6), dpi=110)
    colours = ["tab:red", "tab:orange", "tab:blue", "tab:green", "tab:purple"]
    styles = {"p50": ":", "p99": "-", "p999": "--"}
    for colour, (_name, system) in zip(colours, results["systems"].items(), strict=False):
        steps = sorted(
            (s for s in system.get("steps", []) if s["latency_ms"] is not None),
            key=lambda s: s["offered_rate"],
        )
        if not steps:
            continue
        rates = [s["offered_rate"] for s in steps]
        for key, style in styles.items():
            axes.plot(
                rates,
                [max(s["latency_ms"][key], 0.01) for s in steps],
                linestyle=style,
                marker="o" if key == "p99" else None,
                markersize=3,
                color=colour,
                label=f"{system['label']} {key.replace('p999', 'p99.9')}",
            )
    axes.axhline(_TARGET_P99_MS, color="grey", linewidth=0.8)
    axes.text(axes.get_xlim()[0], _TARGET_P99_MS * 1.08, " 50 ms", color="grey", fontsize=8)
    axes.set_yscale("log")
    axes.set_xlabel("offered load (events/s)")
    axes.set_ylabel("dispatch latency, scheduled send → sink (ms)")
    box = results["meta"]["machine"]
    axes.set_title(
        f"alarmgw vs bare relays, {box['cores']} cores ({box['cpu']}), "
        f"{results['meta']['started']}",
        fontsize=9,
    )
    axes.grid(visible=True, which="both", linewidth=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
    return True


def write_outputs(results: Json, folder: Path) -> dict[str, Path]:
    """Add ratios and targets, then write results.json, latency.png and summary.md."""
    folder.mkdir(parents=True, exist_ok=True)
    results["ratios"] = ratios(results)
    if results.get("scenarios"):
        results["scenario_figures"] = scenario_report.figures(results)
    results["targets"] = targets(results)
    paths = {"json": folder / "results.json", "summary": folder / "summary.md"}
    png = folder / "latency.png"
    if plot(results, png):
        paths["png"] = png
    paths["json"].write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    paths["summary"].write_text(
        summary_markdown(results, png.name if "png" in paths else None), encoding="utf-8"
    )
    return paths
