"""`scripts/bench`: run the benchmark and write its results.

    scripts/bench                      the full benchmark and every scenario (about 30 minutes)
    scripts/bench --scenarios all      the scenarios only (alarm-heavy,power-cut,panic-storm)
    scripts/bench --smoke              ~20 s: gateway and bare gmqtt relay at a low rate
    scripts/bench --profile 5000       the full run plus a py-spy profile of the gateway
    scripts/bench --systems gateway,relay-gmqtt --rates 1000,5000 --no-overload

Results go to `bench/results/<timestamp>/` (git-ignored) or `--out DIR`:
results.json, summary.md, latency.png, and the run's logs under `work/`.
Exit code: 0 when the run completed (missed targets are reported, not fatal);
for `--smoke`, 1 if any message was lost, duplicated or unexpected; 2 on a
usage error or if a process failed to start.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import machine, write_outputs
from bench.run import REPO, SYSTEMS, Bench, Plan, smoke_plan, with_overrides
from bench.scenarios import NAMES as SCENARIOS

__all__ = ["main", "smoke_ok"]


def _rates(text: str) -> tuple[int, ...]:
    try:
        rates = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"rates are integers separated by commas: {text}"
        ) from error
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("rates must be positive")
    return rates


def _systems(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    return names


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if names == ("all",):
        return SCENARIOS
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenarios {unknown}; known: all, {', '.join(SCENARIOS)}"
        )
    return tuple(n for n in SCENARIOS if n in names)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Throughput, latency and memory of the gateway at district scale, "
        "side by side with bare relays (docs/benchmark.md).",
    )
    parser.add_argument("--smoke", action="store_true", help="a ~20 s check of the accounting")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results/<time>)")
    parser.add_argument("--systems", type=_systems, help=f"subset of {', '.join(SYSTEMS)}")
    parser.add_argument("--rates", type=_rates, help="offered rates of the sweep, events/s")
    parser.add_argument("--step-seconds", type=float, help="load duration of each step")
    parser.add_argument("--no-district", action="store_true", help="skip the district phase")
    parser.add_argument("--no-overload", action="store_true", help="skip the overload step")
    parser.add_argument("--overload-rate", type=float, help="sustainable rate to double")
    parser.add_argument("--profile", type=float, metavar="RATE", help="py-spy the gateway at RATE")
    parser.add_argument("--inflight", type=int, help="mosquitto max_inflight_messages")
    parser.add_argument("--seed", type=int, help="schedule and district seed")
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        help=f"run only these scenarios (all, or of {', '.join(SCENARIOS)}), on gateway and "
        "relay-gmqtt; a plain run runs the main benchmark and all of them",
    )
    parser.add_argument("--no-scenarios", action="store_true", help="skip the scenarios")
    parser.add_argument("--scenario-rates", type=_rates, help="alarm-heavy's sweep rates, events/s")
    parser.add_argument(
        "--power-cut-seconds",
        type=float,
        help="each half of the power cut (default 60; fewer phones in proportion)",
    )
    parser.add_argument("--power-cut-phones", type=int, help="phones that lose power")
    parser.add_argument("--storm-rate", type=float, help="panic-storm panics/s (default 2,000)")
    parser.add_argument("--storm-seconds", type=float, help="panic-storm duration (default 10)")
    parser.add_argument(
        "--storm-deadline", type=float, help="panic-storm life-safety deadline, s (default 15)"
    )
    return parser


def _plan(args: argparse.Namespace) -> Plan:
    plan = smoke_plan() if args.smoke else Plan()
    changes: dict[str, Any] = {}
    if args.systems:
        changes["systems"] = args.systems
    if args.rates:
        changes["rates"] = args.rates
    if args.step_seconds:
        changes["step_s"] = args.step_seconds
    if args.no_district:
        changes["district"] = False
    if args.no_overload:
        changes["overload"] = False
    if args.overload_rate:
        changes["overload_rate"] = args.overload_rate
    if args.profile:
        changes["profile_rate"] = args.profile
    if args.inflight:
        changes["inflight"] = args.inflight
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.scenarios:
        changes["scenarios"] = args.scenarios
        changes["main"] = False
    elif not (args.smoke or args.no_scenarios or args.systems or args.rates):
        changes["scenarios"] = SCENARIOS  # the plain full run
    options = {
        "scenario_rates": args.scenario_rates,
        "power_cut_s": args.power_cut_seconds,
        "power_cut_phones": args.power_cut_phones,
        "storm_rate": args.storm_rate,
        "storm_s": args.storm_seconds,
        "storm_deadline_s": args.storm_deadline,
    }
    changes.update({k: v for k, v in options.items() if v is not None})
    return with_overrides(plan, **changes)


def smoke_ok(results: dict[str, Any]) -> list[str]:
    """Every problem the smoke's accounting found (empty: all delivered once, nothing else)."""
    problems: list[str] = []
    for name, system in results["systems"].items():
        for step in [system["prime"], *system["steps"]]:
            problems.extend(
                f"{name} {step['name']}: {key} {step[key]}"
                for key in ("lost", "duplicates", "unexpected")
                if step[key]
            )
            if step["delivered"] == 0:
                problems.append(f"{name} {step['name']}: nothing delivered")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Run; see the module docstring for the exit codes."""
    args = _parser().parse_args(argv)
    plan = _plan(args)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ") + ("-smoke" if plan.smoke else "")
    folder: Path = args.out or REPO / "bench" / "results" / stamp
    workdir = folder / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    clock = time.monotonic()
    print(f"bench: results in {folder}", flush=True)
    try:
        bench = Bench(plan, workdir, say=lambda text: print(text, flush=True))
        results = bench.run()
    except RuntimeError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    results["meta"] = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": round(time.monotonic() - clock, 1),
        "command": shlex.join(["scripts/bench", *(sys.argv[1:] if argv is None else argv)]),
        "plan": plan.as_dict(),
        "machine": machine(),
    }
    paths = write_outputs(results, folder)
    for kind, path in paths.items():
        print(f"bench: {kind}: {path}")
    for target in results["targets"]:
        print(
            f"  target {'met' if target['met'] else 'MISSED'}: {target['target']}: "
            f"{target['measured']}"
        )
    if plan.smoke:
        problems = smoke_ok(results)
        for problem in problems:
            print(f"bench smoke: {problem}", file=sys.stderr)
        return 1 if problems else 0
    return 0
