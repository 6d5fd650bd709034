"""The monthly report as files: CSV tables and one printable HTML page with its plots.

`write_report(report, folder)` writes `townships.csv` (the league table, rank
first), `villages.csv`, and `report.html`: headings in Chinese and English,
the league table, the per-village table and three plots (alarms by kind per
township, acknowledgement latency per township, the share in time), embedded
as PNG so the page is one file that prints and travels by e-mail. The plots
are drawn with matplotlib's Agg backend, with ids for labels (the machine may
have no CJK font; the tables carry the names).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.report import Figures, MonthlyReport

__all__ = ["COLUMNS", "row_of", "write_report"]

COLUMNS: tuple[tuple[str, str], ...] = (
    ("rank", "排名 rank"),
    ("level", "级别 level"),
    ("id", "编号 id"),
    ("name", "名称 name"),
    ("township", "镇区 township"),
    ("alarms", "警情 alarms"),
    ("acknowledged", "已确认 acknowledged"),
    ("ack_p50_s", "确认时长 p50 (s)"),
    ("ack_p90_s", "确认时长 p90 (s)"),
    ("ack_p99_s", "确认时长 p99 (s)"),
    ("with_deadline", "限时警情 with a deadline"),
    ("in_time", "按时确认 in time"),
    ("in_time_share", "按时率 in-time share"),
    ("escalated", "超时升级 escalated"),
    ("escalations", "升级次数 escalations"),
    ("closed", "已处置 closed"),
    ("false_alarms", "误报 false alarms"),
    ("false_alarm_rate", "误报率 false-alarm rate"),
    ("devices", "设备 devices"),
    ("availability", "在线率 availability"),
)


def row_of(unit: Figures, kinds: Sequence[str]) -> dict[str, object]:
    """One CSV row: every column of `COLUMNS`, then one count per kind."""
    values: dict[str, object] = {
        "rank": unit.rank if unit.level == "township" else "",
        "level": unit.level,
        "id": unit.id,
        "name": unit.name,
        "township": unit.township,
        "alarms": unit.alarms,
        "acknowledged": unit.acknowledged,
        "ack_p50_s": _round(unit.ack_p50_s, 1),
        "ack_p90_s": _round(unit.ack_p90_s, 1),
        "ack_p99_s": _round(unit.ack_p99_s, 1),
        "with_deadline": unit.with_deadline,
        "in_time": unit.in_time,
        "in_time_share": _round(unit.in_time_share, 4),
        "escalated": unit.escalated,
        "escalations": unit.escalations,
        "closed": unit.closed,
        "false_alarms": unit.false_alarms,
        "false_alarm_rate": _round(unit.false_alarm_rate, 4),
        "devices": unit.devices,
        "availability": _round(unit.availability, 5),
    }
    for kind in kinds:
        values[f"kind:{kind}"] = unit.by_kind.get(kind, 0)
    return values


def write_report(report: MonthlyReport, folder: Path) -> list[Path]:
    """Write the CSV tables and the HTML page into `folder`; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [
        _csv(folder / "townships.csv", report.townships, report.kinds),
        _csv(folder / "villages.csv", report.villages, report.kinds),
    ]
    page = folder / "report.html"
    page.write_text(_html(report), encoding="utf-8")
    written.append(page)
    return written


def _csv(path: Path, units: Sequence[Figures], kinds: Sequence[str]) -> Path:
    header = [label for _, label in COLUMNS] + [f"{kind}" for kind in kinds]
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for unit in units:
            row = row_of(unit, kinds)
            writer.writerow(["" if value is None else value for value in row.values()])
    return path


# ------------------------------------------------------------------ the page
_STYLE = """
body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 2em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #999; padding: 0.2em 0.45em; text-align: right; }
th { background: #eee; } td.t { text-align: left; }
tr.late td { background: #fde2e2; }
img { max-width: 100%; page-break-inside: avoid; }
@media print { body { margin: 0.5cm; } h2 { page-break-after: avoid; } }
"""


def _html(report: MonthlyReport) -> str:
    zone = ZoneInfo(report.timezone)
    start = dt.datetime.fromtimestamp(report.start, zone).strftime("%Y-%m-%d")
    end = dt.datetime.fromtimestamp(report.end, zone).strftime("%Y-%m-%d")
    title = f"{report.district} 平安报表 Monthly safety report {report.month}"
    parts = [
        "<!doctype html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        (
            f"<p>{_e(start)} to {_e(end)} ({_e(report.timezone)}) · "
            f"警情 alarms: {report.alarms} · 镇区 townships: {len(report.townships)} · "
            f"村居 villages: {len(report.villages)}</p>"
        ),
        "<h2>镇区排名 League table of townships</h2>",
        (
            "<p>按时确认率高者先, 其次确认时长中位数, 其次每起警情升级次数. "
            " Ranked by the share acknowledged in time, then the median acknowledgement"
            " time, then escalations per alarm.</p>"
        ),
        _table(report.townships, report.kinds, league=True),
        _plots(report),
        "<h2>村居 Villages</h2>",
        _table(report.villages, report.kinds, league=False),
        "</body></html>",
    ]
    return "\n".join(parts)


_SHOWN = (
    "rank", "name", "alarms", "acknowledged", "ack_p50_s", "ack_p90_s", "ack_p99_s",
    "in_time_share", "escalated", "false_alarm_rate", "availability",
)  # fmt: skip


def _table(units: Sequence[Figures], kinds: Sequence[str], *, league: bool) -> str:
    labels = dict(COLUMNS)
    shown = [c for c in _SHOWN if league or c != "rank"]
    if not league:
        shown.insert(1, "township")
    head = "".join(f"<th>{_e(labels[c])}</th>" for c in shown)
    head += "".join(f"<th>{_e(kind)}</th>" for kind in kinds)
    rows = []
    for unit in units:
        values = row_of(unit, kinds)
        share = unit.in_time_share
        late = share is not None and share < 0.9
        cells = []
        for column in shown:
            value = values[column]
            text = _percent(value) if column.endswith(("share", "rate", "availability")) else value
            css = ' class="t"' if column in ("name", "township") else ""
            cells.append(f"<td{css}>{_e('' if text is None else str(text))}</td>")
        cells.extend(f"<td>{values[f'kind:{kind}']}</td>" for kind in kinds)
        rows.append(f"<tr{' class=late' if late else ''}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _plots(report: MonthlyReport) -> str:
    try:
        import matplotlib  # noqa: PLC0415 - heavy; only the report draws
    except ImportError:  # pragma: no cover - the report extra is installed with alarmgw's tools
        return "<p>(no plots: matplotlib is not installed; pip install 'alarmgw[report]')</p>"

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    towns = sorted(report.townships, key=lambda t: t.id)
    ids = [t.id for t in towns]
    figures = []
    fig, axis = plt.subplots(figsize=(9, 3.6))
    bottom = [0] * len(towns)
    for kind in report.kinds:
        counts = [t.by_kind.get(kind, 0) for t in towns]
        axis.bar(ids, counts, bottom=bottom, label=kind)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    axis.set_title("Alarms by kind")
    axis.set_ylabel("alarms")
    if report.kinds:
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axis.tick_params(axis="x", labelrotation=60, labelsize=7)
    figures.append(("警情构成 Alarms by kind", _png(fig, plt)))
    fig, axis = plt.subplots(figsize=(9, 3.6))
    for label, pick in (("p50", "ack_p50_s"), ("p90", "ack_p90_s")):
        axis.plot(ids, [getattr(t, pick) or 0 for t in towns], marker="o", label=label)
    axis.set_title("Acknowledgement time")
    axis.set_ylabel("seconds")
    axis.legend(fontsize=7)
    axis.tick_params(axis="x", labelrotation=60, labelsize=7)
    figures.append(("确认时长 Acknowledgement time", _png(fig, plt)))
    fig, axis = plt.subplots(figsize=(9, 3.6))
    league = list(report.townships)
    shares = [100 * (t.in_time_share or 0) for t in league]
    axis.bar(
        [t.id for t in league], shares, color=["#c0392b" if s < 90 else "#2e86c1" for s in shares]
    )
    axis.axhline(90, color="#555", linewidth=0.8, linestyle="--")
    axis.set_ylim(0, 100)
    axis.set_title("Acknowledged in time (league order)")
    axis.set_ylabel("%")
    axis.tick_params(axis="x", labelrotation=60, labelsize=7)
    figures.append(("按时确认率 Acknowledged in time", _png(fig, plt)))
    return "\n".join(
        f'<h2>{_e(title)}</h2><img alt="{_e(title)}" src="data:image/png;base64,{data}">'
        for title, data in figures
    )


def _png(fig: object, plt: object) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(buffer, format="png", dpi=110)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[attr-defined]
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _percent(value: object) -> str:
    return "" if not isinstance(value, int | float) else f"{100 * value:.1f} %"


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _e(text: str) -> str:
    return html.escape(text, quote=True)
