"""`alarmgw report`: the monthly safety report from the gateway's store (gateway/report.py).

    alarmgw report --config district.toml --month 2026-11 [--out DIR] [--store FILE]

Reads the store named by the config (or `--store`) read-only, so it can run
beside the gateway, and writes `townships.csv`, `villages.csv` and
`report.html` into `--out` (default `report-<month>`). Exit codes: 0 written;
2 usage, configuration or store errors.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import IO

import msgpack

from config.loader import ConfigError, load_config
from gateway.adapters.store import StoreSchemaError, read_alarm_data
from gateway.core.records import OPEN_STATES
from gateway.report import facts_from_records, month_bounds, monthly_report

__all__ = ["add_report_parser", "run_report"]

_LOOKBACK_S = 40 * 86400.0
"""Records updated this long before the month are read too (offline periods)."""
EXIT_OK = 0
EXIT_USAGE = 2


def add_report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `report` subcommand."""
    report = sub.add_parser(
        "report",
        help="the monthly safety report (平安报表): CSV and a printable HTML page",
        description="Per township and village: alarms by kind, acknowledgement time,\n"
        "the share acknowledged in time, escalations, false alarms, device availability;\n"
        "the league table of townships. Reads the store read-only.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("--config", required=True, help="deployment TOML file")
    report.add_argument("--month", required=True, metavar="YYYY-MM", help="e.g. 2026-11")
    report.add_argument("--out", type=Path, metavar="DIR", help="default: report-<month>")
    report.add_argument("--store", metavar="FILE", help="the store (default: the config's)")


def run_report(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Build and write the report; 0 on success, 2 on a usage, config or store error."""
    try:
        config = load_config(args.config)
    except ConfigError as error:
        err.write(f"alarmgw: refusing configuration {args.config}: {error}\n")
        return EXIT_USAGE
    try:
        start, end = month_bounds(args.month, config.timezone)
    except ValueError as error:
        err.write(f"alarmgw report: --month: {error}\n")
        return EXIT_USAGE
    store = args.store or config.store.path
    try:
        blobs = read_alarm_data(store, updated_since=start - _LOOKBACK_S, open_states=OPEN_STATES)
    except (FileNotFoundError, StoreSchemaError) as error:
        err.write(f"alarmgw report: {error}\n")
        return EXIT_USAGE
    records = [msgpack.unpackb(blob, raw=False) for blob in blobs]
    facts, offline = facts_from_records(records)
    report = monthly_report(config, facts, offline, args.month, timezone=config.timezone)
    from gateway.report_render import write_report  # noqa: PLC0415 - matplotlib is heavy

    folder = args.out or Path(f"report-{args.month}")
    written = write_report(report, folder)
    generated = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out.write(
        f"report {args.month} ({config.timezone}, {report.alarms} alarms, "
        f"{len(report.townships)} townships, generated {generated}):\n"
    )
    for path in written:
        out.write(f"  {path}\n")
    if end > dt.datetime.now(dt.UTC).timestamp():
        out.write("  (the month is not over: the figures are so far)\n")
    return EXIT_OK
