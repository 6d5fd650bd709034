"""`alarmgw tail`: the operator's live terminal view of dispatched alarms, with acknowledgement.

Who uses it (DESIGN.md): the operator of a township monitoring centre or a village
police room, who must see every alarm as it arrives and acknowledge it (the
district's league table counts acknowledgement time as much as delivery), and a
field technician checking a site from a laptop.

Theory of operation (CONTRACT.md, "Egress"):

* **What it hears.** `<base>/out/+/+/alarms` (every sink), or with
  `--sink KIND/ID` that one sink's topic; `<base>/availability/+` (retained
  `online`/`offline` per device, from heartbeat supervision) and `<base>/state`
  (the gateway's retained state, its Last Will). Payloads are MessagePack (JSON
  is accepted too), read by `protocols.payloads.decode_map`; what cannot be read
  is counted, never a crash.
* **One row per alarm.** A life-safety alarm reaches several sinks (village,
  township, group) and an unacknowledged one is sent again, escalated, further up
  the chain; every copy carries the same `alarm_id`. `AlarmBoard` keeps one row
  per `alarm_id` with the sinks it reached, whether it was escalated and its
  highest `attempt`. Rows get a stable number in order of arrival (`#12` stays
  `#12` while newer alarms push it down the screen), so an operator who types a
  number acknowledges the alarm they read, not whichever moved into that line.
  The board is bounded (oldest rows go first) and pure: it takes the receive
  time as an argument.
* **Every hop is timed** (DESIGN.md principle 4): device clock → gateway ingress
  (`ingress_ts - device_ts`, includes the phone's clock error), ingress →
  dispatch (`dispatch_ts - ingress_ts`: the gateway's own time), dispatch → here
  (`received - dispatch_ts`: the broker and the network), for the first copy.
* **Acknowledging.** An ack is `{alarm_id, by, ts}` (MessagePack) on
  `<base>/ack/<kind>/<id>` for the sink the operator sits at: `--sink`, else the
  first sink the alarm reached. The contract has no topic that echoes acks, so a
  row shows as acknowledged when *this* tail's ack was confirmed by the broker
  (QoS 1 PUBACK); acks from other consoles are not visible here.
* **The view** (a terminal on both stdin and stdout): `rich.live.Live` redraws a
  `rich.table.Table`, newest first, coloured by priority (1 red, 2 orange,
  3 cyan, 4 dim), with a footer of device availability and gateway state. Keys
  are read from stdin in cbreak mode (no echo, no line editing, Ctrl-C still
  interrupts) through the event loop's reader; the terminal's settings are put
  back on the way out, whatever happens. `Controls` turns key bytes into actions
  and is pure: ↑/↓ (or k/j) select, a number then `a` acknowledges that row,
  `a` acknowledges the selected row, `:` opens a command line (`ack 12`,
  `ack <alarm_id>`, `q`), `q` quits.
* **Scripts and tests**: `--plain` prints one line per new alarm (and one per
  escalation) as it arrives, `--json` one JSON object per line; `--count N` /
  `--once` stop after N alarms, `--duration S` after S seconds; `--ack ALARM_ID
  --sink KIND/ID` publishes one acknowledgement and exits. When stdout is not a
  terminal the view falls back to `--plain`.

Exit codes: 0 done; 1 the broker could not be reached (`--ack`), the ack was not
confirmed, or `--count` alarms did not arrive within `--duration`; 2 usage or
configuration errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import getpass
import json
import logging
import math
import os
import signal
import ssl
import sys
import termios
import threading
import time
import tty
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import anyio
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from config import arguments
from config.loader import ConfigError, load_config, parse_broker_url, with_overrides
from config.model import MqttSettings
from gateway.adapters.mqtt import MQTT_V311, MqttError, MqttLink
from protocols.payloads import AckMessage, ack_payload, decode_map, encode
from protocols.reasons import Rejected
from protocols.topics import Topics, validate_id

__all__ = [
    "AckAction",
    "AlarmBoard",
    "AlarmRow",
    "Controls",
    "QuitAction",
    "Tail",
    "TailError",
    "Update",
    "add_tail_parser",
    "json_record",
    "main",
    "parse_sink",
    "plain_line",
    "render",
    "run_plain",
    "run_tail",
    "run_view",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

_DEFAULT_BROKER: Final = "mqtt://127.0.0.1:1883"
_CAPACITY: Final = 500
_CONNECT_TIMEOUT_S: Final = 10.0
_REFRESH_S: Final = 0.5
_PRIORITY_STYLES: Final[Mapping[int, str]] = {
    1: "bold red",
    2: "dark_orange",
    3: "cyan",
    4: "dim",
}
_PRIORITY_NAMES: Final[Mapping[int, str]] = {
    1: "life safety",
    2: "property",
    3: "trouble",
    4: "info",
}


class TailError(Exception):
    """Something the operator must be told (the text says what)."""


def parse_sink(text: str) -> tuple[str, str]:
    """`KIND/ID` (e.g. `village/v01`) as (kind, id); argparse type, ArgumentTypeError if bad."""
    kind, sep, sink_id = text.partition("/")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not KIND/ID (e.g. village/v01)")
    for what, value in (("kind", kind), ("id", sink_id)):
        why = validate_id(value)
        if why is not None:
            raise argparse.ArgumentTypeError(f"{text!r}: sink {what} {why}")
    return kind, sink_id


# ------------------------------------------------------------------ the board (pure)


@dataclass(frozen=True, slots=True)
class AlarmRow:
    """One alarm as the operator sees it: every copy (sink, escalation) folded together."""

    number: int
    """Stable row number, in order of arrival at this tail (1 = the first)."""
    alarm_id: str
    priority: int
    kind: str
    source: str
    device_id: str
    household: str | None
    group: str | None
    checkpoint: str | None
    village: str | None
    township: str | None
    device_ts: float | None
    ingress_ts: float | None
    dispatch_ts: float | None
    """Of the first copy heard."""
    received_at: float
    """When the first copy arrived here (this machine's clock)."""
    sinks: tuple[str, ...]
    """`kind/id` of every sink heard to receive it, in order."""
    escalated: bool
    attempt: int
    acked_by: str | None = None
    acked_at: float | None = None
    acked_sink: str | None = None
    detail: str = ""
    """What the operator must know beyond the kind: a hit's plate, an interception's
    checkpoint, what to look for and until when (`describe`)."""

    @property
    def device_to_ingress_s(self) -> float | None:
        """Device clock to the gateway's ingress (includes the device's clock error)."""
        return _diff(self.ingress_ts, self.device_ts)

    @property
    def ingress_to_dispatch_s(self) -> float | None:
        """The gateway's own time, ingress until it published the first copy."""
        return _diff(self.dispatch_ts, self.ingress_ts)

    @property
    def dispatch_to_received_s(self) -> float | None:
        """Broker and network: the first copy's dispatch until it arrived here."""
        return _diff(self.received_at, self.dispatch_ts)

    @property
    def acked(self) -> bool:
        """True once this tail's acknowledgement was confirmed by the broker."""
        return self.acked_by is not None


def _diff(later: float | None, earlier: float | None) -> float | None:
    if later is None or earlier is None:
        return None
    return later - earlier


@dataclass(frozen=True, slots=True)
class Update:
    """What one message changed: a `new` alarm, an `escalated` copy, or another `copy`."""

    what: str
    row: AlarmRow
    sink: str
    at: float
    """When this copy arrived (for an escalation, later than the row's first copy)."""


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class AlarmBoard:
    """Dispatched alarms by `alarm_id`, newest first, bounded; availability and gateway state.

    Pure: feed it `message(topic, payload, received_at)`; nothing here reads a clock.
    """

    def __init__(self, topics: Topics, capacity: int = _CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.topics = topics
        self.capacity = capacity
        self._rows: OrderedDict[str, AlarmRow] = OrderedDict()  # oldest first
        self._by_number: dict[int, str] = {}
        self._next_number = 1
        self.availability: dict[str, str] = {}
        """Device id → the last retained `online`/`offline` heard."""
        self.gateway_state: str | None = None
        """The gateway's retained state (`online`/`offline`), None until heard."""
        self.unreadable = 0
        """Messages that were not a readable alarm or state (counted, ignored)."""
        self._out = f"{topics.base}/out/"
        self._availability = f"{topics.base}/availability/"

    # ------------------------------------------------------------ input

    def message(self, topic: str, payload: bytes, received_at: float) -> Update | None:
        """Take one message from the broker; returns what it changed about the alarms."""
        if topic == self.topics.state:
            self.gateway_state = payload.decode("utf-8", "replace")
            return None
        if topic.startswith(self._availability):
            device = topic[len(self._availability) :]
            if "/" in device or not device:
                self.unreadable += 1
            else:
                self.availability[device] = payload.decode("utf-8", "replace")
            return None
        if topic.startswith(self._out) and topic.endswith("/alarms"):
            levels = topic[len(self._out) : -len("/alarms")].split("/")
            if len(levels) == 2 and all(levels):
                return self._alarm(f"{levels[0]}/{levels[1]}", payload, received_at)
        self.unreadable += 1
        return None

    def _alarm(self, sink: str, payload: bytes, received_at: float) -> Update | None:
        body = decode_map(payload)
        if isinstance(body, Rejected):
            self.unreadable += 1
            return None
        alarm_id = body.get("alarm_id")
        if not isinstance(alarm_id, str) or not alarm_id:
            self.unreadable += 1
            return None
        escalated = body.get("escalated") is True
        attempt = _int(body.get("attempt"), 1)
        row = self._rows.get(alarm_id)
        if row is not None:
            sinks = row.sinks if sink in row.sinks else (*row.sinks, sink)
            changed = dataclasses.replace(
                row,
                sinks=sinks,
                escalated=row.escalated or escalated,
                attempt=max(row.attempt, attempt),
            )
            self._rows[alarm_id] = changed
            what = "escalated" if escalated and not row.escalated else "copy"
            return Update(what, changed, sink, received_at)
        priority = _int(body.get("priority"), 4)
        row = AlarmRow(
            number=self._next_number,
            alarm_id=alarm_id,
            priority=priority,
            kind=_text(body.get("kind")) or "?",
            source=_text(body.get("source")) or "?",
            device_id=_text(body.get("device_id")) or "",
            household=_text(body.get("household")),
            group=_text(body.get("group")),
            checkpoint=_text(body.get("checkpoint")),
            village=_text(body.get("village")),
            township=_text(body.get("township")),
            device_ts=_number(body.get("device_ts")),
            ingress_ts=_number(body.get("ingress_ts")),
            dispatch_ts=_number(body.get("dispatch_ts")),
            received_at=received_at,
            sinks=(sink,),
            escalated=escalated,
            attempt=attempt,
            detail=describe(body),
        )
        self._next_number += 1
        self._rows[alarm_id] = row
        self._by_number[row.number] = alarm_id
        while len(self._rows) > self.capacity:
            _, oldest = self._rows.popitem(last=False)
            self._by_number.pop(oldest.number, None)
        return Update("escalated" if escalated else "new", row, sink, received_at)

    def mark_acked(self, alarm_id: str, by: str, at: float, sink: str) -> AlarmRow | None:
        """Record that this tail's ack of `alarm_id` was confirmed; the row, if on the board."""
        row = self._rows.get(alarm_id)
        if row is None:
            return None
        row = dataclasses.replace(row, acked_by=by, acked_at=at, acked_sink=sink)
        self._rows[alarm_id] = row
        return row

    # ------------------------------------------------------------ output

    def rows(self) -> list[AlarmRow]:
        """Every alarm on the board, newest first."""
        return list(reversed(self._rows.values()))

    def get(self, alarm_id: str) -> AlarmRow | None:
        """The row of `alarm_id`, if on the board."""
        return self._rows.get(alarm_id)

    def by_number(self, number: int) -> AlarmRow | None:
        """The row numbered `number`, if still on the board."""
        alarm_id = self._by_number.get(number)
        return None if alarm_id is None else self._rows.get(alarm_id)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def unacknowledged(self) -> int:
        """Rows this tail has not acknowledged."""
        return sum(1 for row in self._rows.values() if not row.acked)

    def devices(self) -> tuple[int, list[str]]:
        """(devices online, ids of the devices offline, sorted)."""
        online = sum(1 for state in self.availability.values() if state == "online")
        offline = sorted(d for d, state in self.availability.items() if state != "online")
        return online, offline


# ------------------------------------------------------------------ keys (pure)


@dataclass(frozen=True, slots=True)
class AckAction:
    """Acknowledge the row numbered `number`, or the alarm `alarm_id`."""

    number: int | None = None
    alarm_id: str | None = None


@dataclass(frozen=True, slots=True)
class QuitAction:
    """Leave the view."""


Action = AckAction | QuitAction

_UP: Final = frozenset({b"\x1b[A", b"\x1bOA"})
_DOWN: Final = frozenset({b"\x1b[B", b"\x1bOB"})
_HOME: Final = frozenset({b"\x1b[H", b"\x1bOH", b"\x1b[1~"})
_ENTER: Final = frozenset({b"\r", b"\n"})
_BACKSPACE: Final = frozenset({b"\x7f", b"\x08"})
_ESC: Final = b"\x1b"
_HELP: Final = (
    "↑/↓ select · a acknowledge it · 12a acknowledge #12 · :ack 12 · :ack ALARM_ID · q quit"
)


def _keys(data: bytes) -> Iterator[bytes]:
    """Split a read from the terminal into keys; escape sequences stay whole."""
    i = 0
    while i < len(data):
        if data[i] == _ESC[0] and i + 1 < len(data) and data[i + 1] in b"[O":
            j = i + 2
            while j < len(data) and not 0x40 <= data[j] <= 0x7E:
                j += 1  # parameter bytes of a CSI sequence
            yield data[i : j + 1]
            i = j + 1
            continue
        yield data[i : i + 1]
        i += 1


class Controls:
    """The keyboard, as a state machine: selection, a typed row number, a command line.

    `feed(data, numbers)` takes the bytes the terminal sent and the row numbers on
    screen, newest first; it returns the actions to perform. `message` is the last
    thing to tell the operator.
    """

    def __init__(self) -> None:
        self.selected: int | None = None
        """Row number of the selected alarm (stable while rows move)."""
        self.number = ""
        """Digits typed so far."""
        self.command: str | None = None
        """The command line being typed, None when not in command mode."""
        self.message = ""

    def feed(self, data: bytes, numbers: Sequence[int]) -> list[Action]:
        """Keys in, actions out."""
        actions: list[Action] = []
        for key in _keys(data):
            if self.command is not None:
                self._command_key(key, actions)
            else:
                self._key(key, numbers, actions)
        return actions

    def _key(self, key: bytes, numbers: Sequence[int], actions: list[Action]) -> None:
        if key in _UP or key == b"k":
            self._move(numbers, -1)
        elif key in _DOWN or key == b"j":
            self._move(numbers, +1)
        elif key in _HOME:
            self.selected = numbers[0] if numbers else None
        elif key.isdigit():
            self.number = (self.number + key.decode())[-9:]
            self.message = ""
        elif key in _BACKSPACE:
            self.number = self.number[:-1]
        elif key in (b"a", b"A"):
            if self.number:
                actions.append(AckAction(number=int(self.number)))
                self.number = ""
            elif self.selected is not None:
                actions.append(AckAction(number=self.selected))
            else:
                self.message = "select an alarm first (↑/↓ or its number), then press a"
        elif key in _ENTER:
            if self.number:
                wanted = int(self.number)
                self.number = ""
                if wanted in numbers:
                    self.selected = wanted
                else:
                    self.message = f"no alarm #{wanted} on the board"
        elif key in (b":", b"/"):
            self.command = ""
            self.number = ""
        elif key == _ESC:
            self.number = ""
            self.selected = None
            self.message = ""
        elif key in (b"q", b"Q"):
            actions.append(QuitAction())

    def _move(self, numbers: Sequence[int], step: int) -> None:
        self.number = ""
        if not numbers:
            self.selected = None
            return
        if self.selected not in numbers:
            self.selected = numbers[0]
            return
        index = numbers.index(self.selected) + step
        self.selected = numbers[min(max(index, 0), len(numbers) - 1)]

    def _command_key(self, key: bytes, actions: list[Action]) -> None:
        assert self.command is not None
        if key in _ENTER:
            line, self.command = self.command.strip(), None
            self._run(line, actions)
        elif key == _ESC:
            self.command = None
        elif key in _BACKSPACE:
            self.command = self.command[:-1]
        elif key[:1] != _ESC and key.isascii() and key.decode().isprintable():
            self.command += key.decode()

    def _run(self, line: str, actions: list[Action]) -> None:
        words = line.split()
        if not words:
            return
        verb, rest = words[0].lower(), words[1:]
        if verb in ("q", "quit", "exit"):
            actions.append(QuitAction())
        elif verb in ("a", "ack") and len(rest) == 1:
            ref = rest[0].removeprefix("#")
            if ref.isdigit():
                actions.append(AckAction(number=int(ref)))
            else:
                actions.append(AckAction(alarm_id=rest[0]))
        else:
            self.message = f"unknown command {line!r}: ack <number|alarm_id>, q"


# ------------------------------------------------------------------ rendering (pure)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.1f}" if abs(ms) < 100 else f"{ms:,.0f}"


def _clock(at: float | None) -> str:
    if at is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(at))


def describe(body: Mapping[str, object]) -> str:
    """The short detail of a watchlist hit or an interception staffing request."""
    event = body.get("event")
    if not isinstance(event, Mapping):
        return ""
    kind = body.get("kind")
    if kind == "watchlist_hit":
        read = _text(event.get("plate")) or "?"
        listed = _text(event.get("listed_plate"))
        text = read if listed is None or listed == read else f"{read} → {listed}"
        reason = _text(event.get("reason")) or _text(event.get("list"))
        return f"{text} ({reason})" if reason else text
    if kind == "interception":
        look_for = event.get("look_for")
        wanted = ""
        if isinstance(look_for, Mapping):
            wanted = _text(look_for.get("plate")) or _text(look_for.get("household")) or ""
        until = _number(event.get("until"))
        ring = event.get("ring")
        text = f"staff {_text(event.get('checkpoint')) or '?'} (ring {ring}): {wanted or '?'}"
        return text + (f" until {_clock(until)}" if until is not None else "")
    return ""


def _where(row: AlarmRow) -> str:
    if row.household is not None:
        return row.household + (f" ({row.group})" if row.group else "")
    return row.checkpoint or row.device_id


def _place(row: AlarmRow) -> str:
    return "/".join(part for part in (row.village, row.township) if part) or "-"


def _sinks(row: AlarmRow) -> str:
    # One line per row, however many sinks: the count first, in case the list is cut.
    listed = ", ".join(row.sinks)
    return f"({len(row.sinks)}) {listed}" if len(row.sinks) > 1 else listed


def _escalation(row: AlarmRow) -> str:
    return f"↑ {row.attempt}" if row.escalated else str(row.attempt)


def render(
    board: AlarmBoard,
    controls: Controls,
    *,
    title: str,
    connected: bool,
    max_rows: int = 30,
    status: str = "",
) -> RenderableType:
    """The whole screen: title, the alarm table (newest first), footer, help and input."""
    # Fits 120 columns: the row number, priority and place never collapse; the
    # alarm id and the sinks give way first (the number is what an operator types).
    table = Table(
        box=box.SIMPLE_HEAD, expand=True, pad_edge=False, show_edge=False, collapse_padding=True
    )
    table.add_column("#", justify="right", no_wrap=True, min_width=2)
    table.add_column("time", no_wrap=True, min_width=8)
    table.add_column("alarm_id", no_wrap=True, overflow="ellipsis", min_width=16, ratio=2)
    table.add_column("P", justify="center", no_wrap=True, min_width=1)
    table.add_column("kind", no_wrap=True, overflow="ellipsis", max_width=14)
    table.add_column("detail", no_wrap=True, overflow="ellipsis", ratio=2)
    table.add_column("device", no_wrap=True, overflow="ellipsis", min_width=6, max_width=16)
    table.add_column("place", no_wrap=True, overflow="ellipsis", min_width=7, max_width=16)
    table.add_column("sinks", no_wrap=True, overflow="ellipsis", ratio=3, min_width=12)
    table.add_column("dev→in", justify="right", no_wrap=True, min_width=6)
    table.add_column("in→disp", justify="right", no_wrap=True, min_width=7)
    table.add_column("disp→here", justify="right", no_wrap=True, min_width=9)
    table.add_column("esc", justify="center", no_wrap=True, min_width=3)
    table.add_column("acked", no_wrap=True, overflow="ellipsis", min_width=5, max_width=12)
    rows = board.rows()
    for row in rows[:max_rows]:
        style = _PRIORITY_STYLES.get(row.priority, "")
        if row.acked:
            style = "dim"
        if row.number == controls.selected:
            style = f"{style} reverse".strip()
        table.add_row(
            str(row.number),
            _clock(row.ingress_ts if row.ingress_ts is not None else row.received_at),
            row.alarm_id,
            str(row.priority),
            row.kind,
            row.detail,
            _where(row),
            _place(row),
            _sinks(row),
            _ms(row.device_to_ingress_s),
            _ms(row.ingress_to_dispatch_s),
            _ms(row.dispatch_to_received_s),
            Text(_escalation(row), style="bold magenta" if row.escalated else ""),
            f"✓ {row.acked_by}" if row.acked else "",
            style=style,
        )
    online, offline = board.devices()
    shown_offline = ", ".join(offline[:6]) + (", …" if len(offline) > 6 else "")
    footer = Text()
    footer.append("devices ")
    footer.append(f"{online} online", style="green")
    footer.append(" · ")
    footer.append(f"{len(offline)} offline", style="bold red" if offline else "")
    if offline:
        footer.append(f" ({shown_offline})", style="red")
    footer.append(" · gateway ")
    state = board.gateway_state or "unknown"
    footer.append(state, style="green" if state == "online" else "bold red")
    footer.append(" · broker ")
    footer.append(
        "connected" if connected else "NOT CONNECTED", style="" if connected else "bold red"
    )
    hidden = max(0, len(rows) - max_rows)
    footer.append(
        f" · {len(board)} alarms, {board.unacknowledged} not acknowledged here"
        + (f" ({hidden} older below)" if hidden else "")
    )
    lines: list[RenderableType] = [Text(title, style="bold"), table, footer]
    legend = Text()
    for priority, name in _PRIORITY_NAMES.items():
        legend.append(f" {priority} {name} ", style=_PRIORITY_STYLES[priority])
    legend.append(" · device: household (group) or checkpoint · hops in ms", style="dim")
    lines.append(legend)
    lines.append(Text(_HELP, style="dim"))
    if controls.command is not None:
        lines.append(Text(f":{controls.command}▏", style="bold"))
    elif controls.number:
        lines.append(Text(f"#{controls.number}  (a: acknowledge, Enter: select)", style="bold"))
    message = controls.message or status
    if message:
        lines.append(Text(message, style="yellow"))
    return Group(*lines)


def plain_line(update: Update) -> str:
    """One human line per new alarm or escalation (`--plain`)."""
    row = update.row
    escalated = f" ESCALATED (attempt {row.attempt})" if update.what == "escalated" else ""
    return (
        f"{_clock(update.at)} #{row.number} P{row.priority} {row.kind} {row.alarm_id} "
        f"{_where(row)} {_place(row)}{f' [{row.detail}]' if row.detail else ''} → "
        f"{update.sink}{escalated} · "
        f"dev→in {_ms(row.device_to_ingress_s)} ms · in→disp {_ms(row.ingress_to_dispatch_s)} ms"
        f" · disp→here {_ms(row.dispatch_to_received_s)} ms"
    )


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def json_record(update: Update) -> dict[str, object]:
    """One JSON object per new alarm or escalation (`--json`)."""
    row = update.row
    return {
        "update": update.what,
        "n": row.number,
        "alarm_id": row.alarm_id,
        "priority": row.priority,
        "kind": row.kind,
        "detail": row.detail,
        "source": row.source,
        "device_id": row.device_id,
        "household": row.household,
        "group": row.group,
        "checkpoint": row.checkpoint,
        "village": row.village,
        "township": row.township,
        "sink": update.sink,
        "sinks": list(row.sinks),
        "escalated": row.escalated,
        "attempt": row.attempt,
        "device_ts": row.device_ts,
        "ingress_ts": row.ingress_ts,
        "dispatch_ts": row.dispatch_ts,
        "received_ts": row.received_at,
        "update_ts": update.at,
        "device_to_ingress_ms": _rounded(row.device_to_ingress_s),
        "ingress_to_dispatch_ms": _rounded(row.ingress_to_dispatch_s),
        "dispatch_to_received_ms": _rounded(row.dispatch_to_received_s),
    }


# ------------------------------------------------------------------ the MQTT side


class _LinkLog:
    """MqttLink's logger for a terminal tool: keep the last problem for the footer."""

    def __init__(self) -> None:
        self.last = ""

    def debug(self, event: str, /, **kw: object) -> object:
        return None

    def info(self, event: str, /, **kw: object) -> object:
        return None

    def warning(self, event: str, /, **kw: object) -> object:
        self.last = _describe_log(event, kw)
        return None

    def error(self, event: str, /, **kw: object) -> object:
        self.last = _describe_log(event, kw)
        return None


def _describe_log(event: str, kw: Mapping[str, object]) -> str:
    detail = kw.get("reason") or kw.get("error") or kw.get("detail") or ""
    return f"{event}: {detail}" if detail else event


class Tail:
    """The tail's MQTT connection: fills an `AlarmBoard`, sends acknowledgements.

    `sink` limits what is heard to that sink's alarms and is where acks go;
    without it an ack goes to the first sink the alarm reached.
    `on_update(update)` is called for each alarm message that changed the board.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        topics: Topics,
        operator: str,
        sink: tuple[str, str] | None = None,
        client_id: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        mqtt_version: int | None = None,
        clock: Callable[[], float] = time.time,
        capacity: int = _CAPACITY,
        on_update: Callable[[Update], None] | None = None,
    ) -> None:
        self.topics = topics
        self.operator = operator
        self.sink = sink
        self.clock = clock
        self.board = AlarmBoard(topics, capacity)
        self.on_update = on_update
        self.changed = asyncio.Event()
        """Set whenever the board changed; the view clears it."""
        self.log = _LinkLog()
        alarms = topics.alarms(*sink) if sink is not None else f"{topics.base}/out/+/+/alarms"
        self.link = MqttLink(
            host=host,
            port=port,
            client_id=client_id or f"alarmgw-tail-{os.getpid()}-{id(self) % 10_000}",
            on_message=self._on_message,
            subscriptions=(alarms, f"{topics.base}/availability/+", topics.state),
            ssl_context=ssl_context,
            username=username,
            password=password,
            session_expiry_s=0,  # a console's session ends with it
            logger=self.log,
            mqtt_version=mqtt_version,
        )

    @property
    def address(self) -> str:
        """host:port of the broker."""
        return f"{self.link.host}:{self.link.port}"

    async def _on_message(self, topic: str, payload: bytes) -> None:
        update = self.board.message(topic, payload, self.clock())
        if update is not None and self.on_update is not None:
            self.on_update(update)
        self.changed.set()

    async def __aenter__(self) -> Tail:
        await self.link.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        with anyio.CancelScope(shield=True):
            await self.link.stop()

    async def wait_connected(self, timeout_s: float) -> bool:
        """True once connected and subscribed; False after `timeout_s`."""
        with anyio.move_on_after(timeout_s):
            await self.link.wait_connected()
            return True
        return False

    def target(self, alarm_id: str) -> tuple[str, str]:
        """Where an ack of `alarm_id` goes: `--sink`, else the first sink it reached."""
        if self.sink is not None:
            return self.sink
        row = self.board.get(alarm_id)
        if row is None:
            raise TailError(f"{alarm_id} is not on the board: say where you sit with --sink")
        kind, _, sink_id = row.sinks[0].partition("/")
        return kind, sink_id

    async def ack(self, alarm_id: str) -> str:
        """Publish the acknowledgement (QoS 1, confirmed); returns the sink as `kind/id`.

        Raises TailError when it cannot be sent or confirmed.
        """
        kind, sink_id = self.target(alarm_id)
        at = self.clock()
        payload = encode(ack_payload(AckMessage(alarm_id, self.operator, at)))
        try:
            await self.link.publish(self.topics.ack(kind, sink_id), payload, qos=1)
        except MqttError as error:
            raise TailError(f"acknowledgement of {alarm_id} not sent: {error}") from None
        where = f"{kind}/{sink_id}"
        self.board.mark_acked(alarm_id, self.operator, at, where)
        self.changed.set()
        return where

    async def act(self, action: AckAction) -> str:
        """Perform an acknowledgement from the keyboard; the line to show."""
        if action.number is not None:
            row = self.board.by_number(action.number)
            if row is None:
                return f"no alarm #{action.number} on the board"
            alarm_id = row.alarm_id
        else:
            assert action.alarm_id is not None
            alarm_id = action.alarm_id
        row = self.board.get(alarm_id)
        try:
            where = await self.ack(alarm_id)
        except TailError as error:
            return str(error)
        name = f"#{row.number} " if row is not None else ""
        return f"acknowledged {name}{alarm_id} at {where} as {self.operator}"


# ------------------------------------------------------------------ the terminal


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    """No echo, no line editing, Ctrl-C still a signal; the old settings always come back."""
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


async def run_view(
    tail: Tail,
    out: IO[str],
    *,
    keys_fd: int | None,
    title: str = "alarmgw tail",
    duration_s: float | None = None,
) -> None:
    """The live view until `q`, `duration_s`, or cancellation; keys from `keys_fd` (a tty)."""
    controls = Controls()
    pressed: asyncio.Queue[bytes] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    console = Console(file=out, highlight=False, emoji=False)
    status = ""

    def keys_ready() -> None:
        assert keys_fd is not None
        try:
            data = os.read(keys_fd, 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b"q"  # the terminal went away: leave
        pressed.put_nowait(data or b"q")

    def screen() -> RenderableType:
        link = tail.link.connected
        shown = status or ("" if link else tail.log.last or f"connecting to {tail.address}…")
        return render(
            tail.board,
            controls,
            title=title,
            connected=link,
            max_rows=max(3, console.size.height - 10),
            status=shown,
        )

    with contextlib.ExitStack() as stack:
        if keys_fd is not None:
            stack.enter_context(_cbreak(keys_fd))
            loop.add_reader(keys_fd, keys_ready)
            stack.callback(loop.remove_reader, keys_fd)
        live = Live(
            screen(), console=console, screen=True, auto_refresh=False, redirect_stderr=False
        )
        stack.enter_context(live)
        with anyio.move_on_after(math.inf if duration_s is None else duration_s):
            while True:
                tail.changed.clear()
                live.update(screen(), refresh=True)
                data = await _next_key(pressed, tail.changed)
                numbers = [row.number for row in tail.board.rows()]
                for action in controls.feed(data, numbers) if data else []:
                    if isinstance(action, QuitAction):
                        return
                    controls.message = ""
                    status = "sending acknowledgement…"
                    live.update(screen(), refresh=True)
                    status = await tail.act(action)


async def _next_key(pressed: asyncio.Queue[bytes], changed: asyncio.Event) -> bytes:
    """Keys typed, or b"" when the board changed or it is time to refresh the clock."""
    waiter = asyncio.ensure_future(pressed.get())
    changing = asyncio.ensure_future(changed.wait())
    try:
        await asyncio.wait(
            {waiter, changing}, timeout=_REFRESH_S, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (waiter, changing):
            task.cancel()
        await asyncio.gather(waiter, changing, return_exceptions=True)
    # A key that arrived while the other waiter was being cancelled still counts.
    return waiter.result() if waiter.done() and not waiter.cancelled() else b""


async def run_plain(
    tail: Tail,
    out: IO[str],
    *,
    as_json: bool,
    count: int | None,
    duration_s: float | None,
) -> int:
    """Print each new alarm (and escalation) as it arrives; returns how many new alarms."""
    arrived = 0
    enough = asyncio.Event()

    def printed(update: Update) -> None:
        nonlocal arrived
        if update.what == "copy":
            return
        if update.what == "new":
            arrived += 1
        if as_json:
            out.write(json.dumps(json_record(update), ensure_ascii=False) + "\n")
        else:
            out.write(plain_line(update) + "\n")
        out.flush()
        if count is not None and arrived >= count:
            enough.set()

    tail.on_update = printed
    with anyio.move_on_after(math.inf if duration_s is None else duration_s):
        await enough.wait()
    return arrived


# ------------------------------------------------------------------ the command


def add_tail_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add `tail` to the `alarmgw` parser; returns its parser."""
    parser = subparsers.add_parser(
        "tail",
        help="live view of dispatched alarms; acknowledge them",
        description=(
            "The operator's live view of dispatched alarms: newest first, coloured by "
            "priority, with the latency of each hop, escalation and device availability. "
            "Keys: ↑/↓ select, a acknowledge the selected alarm, 12a acknowledge #12, "
            ": for a command line (ack 12, ack ALARM_ID), q quit. Without a terminal "
            "(or with --plain) one line per alarm."
        ),
        epilog=(
            "examples:\n"
            "  alarmgw tail --config demo.toml\n"
            "  alarmgw tail --config demo.toml --sink township/t01 --operator 王警官\n"
            "  alarmgw tail --broker mqtt://10.0.0.5 --plain --json --count 1\n"
            "  alarmgw tail --config demo.toml --ack ph/h001/42 --sink village/v01"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("where")
    where.add_argument("--config", metavar="FILE", help="deployment file (broker, base topic)")
    where.add_argument(
        "--broker",
        metavar="URL",
        help=f"mqtt://host[:port] or mqtts://... (default: the config's, else {_DEFAULT_BROKER})",
    )
    where.add_argument("--base-topic", metavar="TOPIC", help="default: the config's, else alarmgw")
    where.add_argument(
        "--sink",
        type=parse_sink,
        metavar="KIND/ID",
        help="the sink you sit at (e.g. township/t01): only its alarms, and acks go there "
        "(default: every sink; an ack goes to the first sink the alarm reached)",
    )
    where.add_argument(
        "--operator",
        metavar="NAME",
        help="who acknowledges (the ack's `by`; default: your login name)",
    )
    where.add_argument(
        "--username",
        metavar="NAME",
        help="the broker account to log in with, e.g. op-village-v01 from `alarmgw "
        "broker-config` (default: the config's)",
    )
    where.add_argument(
        "--password-file",
        metavar="FILE",
        help="a file holding that account's password (first line); never on the command line",
    )
    where.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="the CA that signed the broker's certificate, for mqtts:// (default: the config's)",
    )
    mode = parser.add_argument_group("non-interactive")
    mode.add_argument("--plain", action="store_true", help="one line per alarm, no live view")
    mode.add_argument(
        "--json", action="store_true", help="one JSON object per alarm (implies --plain)"
    )
    mode.add_argument("--count", type=arguments.count, metavar="N", help="stop after N alarms")
    mode.add_argument("--once", action="store_true", help="stop after the first alarm (--count 1)")
    mode.add_argument(
        "--duration", type=arguments.positive, metavar="S", help="stop after S seconds"
    )
    mode.add_argument(
        "--ack",
        metavar="ALARM_ID",
        help="publish one acknowledgement (with --sink) and exit",
    )
    mode.add_argument(
        "--timeout",
        type=arguments.positive,
        default=_CONNECT_TIMEOUT_S,
        metavar="S",
        help=f"--ack: give up after S seconds without the broker (default {_CONNECT_TIMEOUT_S:g})",
    )
    return parser


@dataclass(frozen=True, slots=True)
class _Where:
    mqtt: MqttSettings
    topics: Topics


def _locate(args: argparse.Namespace) -> _Where:
    """Broker and base topic from --config, --broker and --base-topic; ConfigError if bad."""
    if args.config is not None:
        config = load_config(args.config)
        if args.broker is not None:
            config = with_overrides(config, broker=args.broker)
        mqtt = config.mqtt
    else:
        url = args.broker or _DEFAULT_BROKER
        parsed = parse_broker_url(url)
        if isinstance(parsed, str):
            raise TailError(f"--broker: {parsed}")
        host, port, tls = parsed
        mqtt = MqttSettings(broker_url=url, embedded=False, host=host, port=port, tls=tls)
    mqtt = _credentials(args, mqtt)
    base = args.base_topic or mqtt.base_topic
    try:
        topics = Topics(base)
    except ValueError as error:
        raise TailError(str(error)) from None
    return _Where(mqtt, topics)


def _credentials(args: argparse.Namespace, mqtt: MqttSettings) -> MqttSettings:
    """The broker account and CA of --username, --password-file and --tls-ca, where given."""
    password = mqtt.password
    if args.password_file is not None:
        try:
            text = Path(args.password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            message = f"--password-file: cannot read {args.password_file}: {reason}"
            raise TailError(message) from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise TailError(f"--password-file: {args.password_file} is empty")
        password = lines[0]
    return dataclasses.replace(
        mqtt,
        username=mqtt.username if args.username is None else args.username,
        password=password,
        tls_ca=mqtt.tls_ca if args.tls_ca is None else args.tls_ca,
    )


def _ssl(mqtt: MqttSettings) -> ssl.SSLContext | None:
    if not mqtt.tls:
        return None
    context = ssl.create_default_context(cafile=mqtt.tls_ca)
    if mqtt.tls_cert:
        context.load_cert_chain(mqtt.tls_cert, mqtt.tls_key)
    return context


def _operator(args: argparse.Namespace) -> str:
    if args.operator:
        return str(args.operator)
    with contextlib.suppress(Exception):  # getpass raises whatever the platform gives
        return getpass.getuser()
    return "operator"


def run_tail(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run `alarmgw tail` as parsed by `add_tail_parser`; returns the exit code."""
    if args.ack is not None and args.sink is None:
        err.write("alarmgw tail: --ack needs --sink KIND/ID: the sink you acknowledge from\n")
        return EXIT_USAGE
    try:
        where = _locate(args)
    except ConfigError as error:
        err.write(f"alarmgw tail: refusing configuration: {len(error.problems)} problem(s)\n")
        for problem in error.problems:
            err.write(f"  {problem}\n")
        return EXIT_USAGE
    except OSError as error:
        err.write(f"alarmgw tail: cannot read {args.config}: {error.strerror or error}\n")
        return EXIT_USAGE
    except TailError as error:
        err.write(f"alarmgw tail: {error}\n")
        return EXIT_USAGE
    count = 1 if args.once else args.count
    plain = args.plain or args.json or count is not None or not _interactive(out)
    with _quiet_libraries():
        try:
            return anyio.run(
                functools.partial(_main, args, where, out, err, plain=plain, count=count)
            )
        except KeyboardInterrupt:  # Ctrl-C before or after the loop's own handler
            return EXIT_OK


def _interactive(out: IO[str]) -> bool:
    try:
        return out.isatty() and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """gmqtt logs reconnects through the standard library: not onto the operator's screen."""
    logger = logging.getLogger("gmqtt")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


def _tail_for(args: argparse.Namespace, where: _Where) -> Tail:
    mqtt = where.mqtt
    return Tail(
        host=mqtt.host,
        port=mqtt.port,
        topics=where.topics,
        operator=_operator(args),
        sink=args.sink,
        ssl_context=_ssl(mqtt),
        username=mqtt.username,
        password=mqtt.password,
        mqtt_version=MQTT_V311 if mqtt.embedded else None,
    )


async def _main(
    args: argparse.Namespace,
    where: _Where,
    out: IO[str],
    err: IO[str],
    *,
    plain: bool,
    count: int | None,
) -> int:
    tail = _tail_for(args, where)
    result = EXIT_OK
    async with tail, anyio.create_task_group() as tg:

        async def session() -> None:
            nonlocal result
            result = await _session(args, tail, out, err, plain=plain, count=count)
            tg.cancel_scope.cancel()

        tg.start_soon(_until_signal, tg.cancel_scope)
        tg.start_soon(session)
    return result


async def _until_signal(scope: anyio.CancelScope) -> None:
    """SIGINT/SIGTERM end the session (only the main thread can hear signals)."""
    if threading.current_thread() is not threading.main_thread():
        return
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def _session(
    args: argparse.Namespace,
    tail: Tail,
    out: IO[str],
    err: IO[str],
    *,
    plain: bool,
    count: int | None,
) -> int:
    if args.ack is not None:
        if not await tail.wait_connected(args.timeout):
            err.write(
                f"alarmgw tail: cannot reach the broker at {tail.address}: "
                f"{tail.log.last or 'no answer'}\n"
            )
            return EXIT_FAILED
        try:
            sink = await tail.ack(args.ack)
        except TailError as error:
            err.write(f"alarmgw tail: {error}\n")
            return EXIT_FAILED
        out.write(f"acknowledged {args.ack} at {sink} as {tail.operator}\n")
        return EXIT_OK
    if plain:
        if await tail.wait_connected(_CONNECT_TIMEOUT_S):
            heard = tail.link.subscriptions[0]
            err.write(f"alarmgw tail: listening on {tail.address} for {heard}\n")
        else:
            err.write(
                f"alarmgw tail: not connected to {tail.address} yet "
                f"({tail.log.last or 'no answer'}); still trying\n"
            )
        err.flush()
        arrived = await run_plain(
            tail, out, as_json=args.json, count=count, duration_s=args.duration
        )
        if count is not None and arrived < count:
            within = f" within {args.duration:g} s" if args.duration is not None else ""
            err.write(f"alarmgw tail: {arrived} of {count} alarm(s){within}\n")
            return EXIT_FAILED
        return EXIT_OK
    sink = f" at {args.sink[0]}/{args.sink[1]}" if args.sink else ""
    title = f"alarmgw · live alarms{sink} · {tail.address} · operator {tail.operator}"
    await run_view(tail, out, keys_fd=sys.stdin.fileno(), title=title, duration_s=args.duration)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gateway.tail ...`: the same command without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="alarmgw")
    add_tail_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    try:
        args = parser.parse_args(["tail", *(sys.argv[1:] if argv is None else argv)])
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return run_tail(args, sys.stdout, sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
