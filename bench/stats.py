"""Accounting for one step: what was owed, what arrived, how late. Pure.

Every send owes a known set of sink messages (`bench.load`). A received message
is matched by (topic, device id, event number):

* the first match of an owed message is *delivered*; its latency is receipt time
  minus the event's **scheduled** send time (not the actual send time, so a
  generator or broker stall counts against the system, as in an open-loop test;
  docs/benchmark.md "Method");
* a second match is a *duplicate*;
* a message whose event number belongs to this step but which was not owed
  (an escalation, a wrong topic) is *unexpected*;
* a message whose event number belongs to another step is *stale* (a late
  arrival from an earlier step);
* an owed message never matched by the end of the drain is *lost*.

Escalated copies (`escalated: true`, CONTRACT.md "Egress") are accounted apart,
never as deliveries, duplicates or unexpected messages of the step
(`Escalations`): a step may owe escalations, each a (topic, device, number) key
(`escalations_owed`); the first escalated copy of an owed key is an escalation
*delivered*, a second a *duplicate escalation*, an escalated copy of anything
not owed one (an acknowledged alarm's, or on another topic) an *unexpected
escalation*, an owed one that never came *missing*. Each delivered escalation's
*lateness* is its receipt minus (the alarm's `ingress_ts` + the deadline): when
the system's own clock said it was due (the scheduled send where unstamped).

Where the system stamps its dispatches with `ingress_ts` and `dispatch_ts`,
the latency of each delivered message is also split into three hops (same
machine, same clock): *to ingress* (scheduled send until the system's handler
took it: generator, broker queue, the system's receive window), *in system*
(handler until the dispatch was encoded: decision, store, outbox queue) and *to
sink* (the dispatch's publish, the broker, the sink).

Percentiles are nearest-rank over the messages of events scheduled in the
measured window (after the warm-up part of the step). A p99 over a trickle (the
overload's 200 panics) is nearly its maximum, so the slowest few messages of
each kind are kept too, each with when it was scheduled and its hops: a stall
shared by several of them shows as one moment.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from bench.load import Planned, step_of

__all__ = [
    "Accounting",
    "Escalations",
    "Percentiles",
    "Received",
    "Slow",
    "account",
    "percentiles",
]

_SLOWEST = 8
"""Slowest messages kept per kind."""


@dataclass(frozen=True, slots=True)
class Received:
    """One message the sink got: receipt time, topic, device id, event number.

    `ingress_ts` and `dispatch_ts` are the system's own stamps from the
    dispatched map (CONTRACT.md): when its handler took the message, and when
    it encoded the dispatch. They split the latency into hops.
    """

    t: float
    topic: str
    device: str
    number: int
    escalated: bool = False
    ingress_ts: float | None = None
    dispatch_ts: float | None = None


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency percentiles in milliseconds over `count` messages."""

    count: int
    p50: float
    p99: float
    p999: float
    max: float

    def as_dict(self) -> dict[str, object]:
        """Plain values for the JSON result file (ms, rounded to µs)."""
        return _rounded(self)


def _rounded(figures: Percentiles | Slow) -> dict[str, object]:
    """A dataclass's fields as plain values, floats (ms) rounded to µs."""
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(figures).items()}


def _rank(ordered: Sequence[float], fraction: float) -> float:
    # Nearest rank: the smallest value with at least `fraction` of the values <= it.
    index = max(0, math.ceil(fraction * len(ordered)) - 1)
    return ordered[index]


def percentiles(values: Iterable[float]) -> Percentiles | None:
    """p50, p99, p99.9 and max of some latencies (ms); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return Percentiles(
        len(ordered),
        _rank(ordered, 0.50),
        _rank(ordered, 0.99),
        _rank(ordered, 0.999),
        ordered[-1],
    )


@dataclass(frozen=True, slots=True)
class Slow:
    """One of the slowest messages of a kind: when it was due (seconds after the
    step's first scheduled send), its latency and, where stamped, its hops (ms)."""

    at_s: float
    ms: float
    topic: str
    to_ingress: float | None = None
    in_system: float | None = None
    to_sink: float | None = None

    def as_dict(self) -> dict[str, object]:
        """Plain values for the JSON result file (ms, rounded to µs)."""
        return _rounded(self)


Key = tuple[str, str, int]
"""(topic, device id, event number): what identifies a sink message."""


@dataclass(frozen=True, slots=True)
class Escalations:
    """Escalated copies of one step, accounted apart (see the module docstring)."""

    owed: int
    delivered: int
    missing: int
    duplicates: int
    unexpected: int
    seen: int
    """Every escalated copy received, owed or not."""
    lateness: Percentiles | None
    """Receipt minus (ingress_ts + deadline), ms, of the delivered ones."""
    earliest_ms: float | None
    """The smallest lateness (negative: escalated before its deadline)."""

    def as_dict(self) -> dict[str, object]:
        """Plain values for the JSON result file."""
        return {
            "owed": self.owed,
            "delivered": self.delivered,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
            "seen": self.seen,
            "lateness_ms": None if self.lateness is None else self.lateness.as_dict(),
            "earliest_ms": None if self.earliest_ms is None else round(self.earliest_ms, 3),
        }


@dataclass(frozen=True, slots=True)
class Accounting:
    """The outcome of one step."""

    events: int
    expected: int
    delivered: int
    lost: int
    duplicates: int
    unexpected: int
    stale: int
    latency: Percentiles | None
    by_kind: dict[str, Percentiles]
    lost_by_kind: dict[str, int]
    delivered_per_s: float
    """Owed messages received per second inside the measured window."""
    expected_per_s: float
    """Owed messages per second, by schedule, inside the measured window."""
    last_receipt: float | None
    """When the last owed message arrived (epoch), None if none did."""
    worst_by_second: tuple[float, ...]
    """The worst latency (ms) of the messages of each second of the schedule: stalls."""
    hops_by_kind: dict[str, dict[str, Percentiles]]
    """Per kind of event, percentiles of each hop (see the module docstring)."""
    slowest_by_kind: dict[str, tuple[Slow, ...]]
    """Per kind of event, its slowest measured messages, slowest first."""
    escalations: Escalations
    last_receipt_by_kind: dict[str, float]
    """Per kind of event, when its last owed message arrived (epoch)."""
    last_send_by_kind: dict[str, float]
    """Per kind of event that owes messages, its last scheduled send (epoch)."""
    p99_by_window: dict[str, tuple[float | None, ...]]
    """Per kind, the p99 (ms) of the messages of each `window_s` of the schedule
    (every delivered message, warm-up included); empty without `window_s`."""

    def as_dict(self) -> dict[str, object]:
        """Plain values for the JSON result file."""
        return {
            "events": self.events,
            "expected_messages": self.expected,
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
            "stale": self.stale,
            "latency_ms": None if self.latency is None else self.latency.as_dict(),
            "latency_ms_by_kind": {k: v.as_dict() for k, v in self.by_kind.items()},
            "lost_by_kind": self.lost_by_kind,
            "delivered_msgs_per_s": round(self.delivered_per_s, 1),
            "expected_msgs_per_s": round(self.expected_per_s, 1),
            "worst_ms_by_second": [round(v, 1) for v in self.worst_by_second],
            "hops_ms_by_kind": {
                kind: {hop: v.as_dict() for hop, v in hops.items()}
                for kind, hops in self.hops_by_kind.items()
            },
            "slowest_by_kind": {
                kind: [slow.as_dict() for slow in slowest]
                for kind, slowest in self.slowest_by_kind.items()
            },
            "escalations": self.escalations.as_dict(),
            "last_receipt_by_kind": {k: round(v, 4) for k, v in self.last_receipt_by_kind.items()},
            "last_send_by_kind": {k: round(v, 4) for k, v in self.last_send_by_kind.items()},
            "p99_ms_by_window": {
                kind: [None if v is None else round(v, 3) for v in values]
                for kind, values in self.p99_by_window.items()
            },
        }


def account(
    planned: Sequence[Planned],
    received: Iterable[Received],
    *,
    measure_from: float,
    measure_to: float,
    escalations_owed: Iterable[Key] = (),
    deadline_s: float = 0.0,
    window_s: float | None = None,
) -> Accounting:
    """Match what arrived against what `planned` owed (see the module docstring).

    `escalations_owed`: the escalated copies the step owes, `deadline_s` the
    deadline their lateness is measured from; `window_s`: also a p99 per kind
    for each window of that length.
    """
    if measure_to <= measure_from:
        raise ValueError("the measured window must not be empty")
    if window_s is not None and window_s <= 0:
        raise ValueError("window_s must be > 0")
    owed: dict[tuple[str, str, int], Planned] = {}
    step_ids = {step_of(p.number) for p in planned}
    for item in planned:
        for topic in item.expected:
            owed[(topic, item.device, item.number)] = item
    seen: set[tuple[str, str, int]] = set()
    duplicates = unexpected = stale = 0
    latencies: list[float] = []
    by_kind: defaultdict[str, list[float]] = defaultdict(list)
    delivered_in_window = 0
    last_receipt: float | None = None
    start = min((p.t for p in planned), default=0.0)
    worst: defaultdict[int, float] = defaultdict(float)
    hops: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
    # (latency, arrival order: ties never compare messages, message, send)
    slow: defaultdict[str, list[tuple[float, int, Received, Planned]]] = defaultdict(list)
    by_number = {p.number: p for p in planned}
    escalation_keys = set(escalations_owed)
    escalated_seen: set[Key] = set()
    escalation_duplicates = escalation_unexpected = escalations_received = 0
    lateness: list[float] = []
    last_by_kind: dict[str, float] = {}
    windowed: defaultdict[tuple[str, int], list[float]] = defaultdict(list)
    for order, message in enumerate(received):
        key = (message.topic, message.device, message.number)
        if message.escalated:
            escalations_received += 1
            if key not in escalation_keys:
                escalation_unexpected += 1
            elif key in escalated_seen:
                escalation_duplicates += 1
            else:
                escalated_seen.add(key)
                alarm = by_number.get(message.number)
                since = message.ingress_ts
                if since is None:
                    since = alarm.t if alarm is not None else message.t
                lateness.append((message.t - (since + deadline_s)) * 1000.0)
            continue
        sent = owed.get(key)
        if sent is None:
            if step_of(message.number) in step_ids:
                unexpected += 1
            else:
                stale += 1
            continue
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        if last_receipt is None or message.t > last_receipt:
            last_receipt = message.t
        if measure_from <= message.t < measure_to:
            delivered_in_window += 1
        latency_ms = (message.t - sent.t) * 1000.0
        second = int(sent.t - start)
        worst[second] = max(worst[second], latency_ms)
        kind = sent.kind.value
        if message.t > last_by_kind.get(kind, 0.0):
            last_by_kind[kind] = message.t
        if window_s is not None:
            windowed[(kind, int((sent.t - start) // window_s))].append(latency_ms)
        if sent.t >= measure_from:
            latencies.append(latency_ms)
            by_kind[kind].append(latency_ms)
            slowest = slow[kind]
            if len(slowest) < _SLOWEST:
                heapq.heappush(slowest, (latency_ms, order, message, sent))
            elif latency_ms > slowest[0][0]:
                heapq.heapreplace(slowest, (latency_ms, order, message, sent))
            if message.ingress_ts is not None and message.dispatch_ts is not None:
                hops[(kind, "to_ingress")].append((message.ingress_ts - sent.t) * 1000.0)
                hops[(kind, "in_system")].append((message.dispatch_ts - message.ingress_ts) * 1e3)
                hops[(kind, "to_sink")].append((message.t - message.dispatch_ts) * 1000.0)
    lost_by_kind: defaultdict[str, int] = defaultdict(int)
    for key, item in owed.items():
        if key not in seen:
            lost_by_kind[item.kind.value] += 1
    window = measure_to - measure_from
    expected_in_window = sum(len(p.expected) for p in planned if measure_from <= p.t < measure_to)
    kind_percentiles: dict[str, Percentiles] = {}
    for kind, values in sorted(by_kind.items()):
        figures = percentiles(values)
        if figures is not None:
            kind_percentiles[kind] = figures
    hops_by_kind: dict[str, dict[str, Percentiles]] = {}
    for (kind, hop), values in sorted(hops.items()):
        figures = percentiles(values)
        if figures is not None:
            hops_by_kind.setdefault(kind, {})[hop] = figures
    slowest_by_kind = {
        kind: tuple(_slow(ms, message, sent, start) for ms, _, message, sent in sorted(items)[::-1])
        for kind, items in sorted(slow.items())
    }
    last_send: dict[str, float] = {}
    for item in planned:
        if item.expected and item.t > last_send.get(item.kind.value, -math.inf):
            last_send[item.kind.value] = item.t
    by_window: dict[str, tuple[float | None, ...]] = {}
    if window_s is not None and planned:
        span = max(p.t for p in planned) - start
        count = int(span // window_s) + 1
        for kind in sorted({k for k, _ in windowed}):
            cells: list[float | None] = []
            for index in range(count):
                figures = percentiles(windowed.get((kind, index), ()))
                cells.append(None if figures is None else figures.p99)
            by_window[kind] = tuple(cells)
    escalations = Escalations(
        owed=len(escalation_keys),
        delivered=len(escalated_seen),
        missing=len(escalation_keys) - len(escalated_seen),
        duplicates=escalation_duplicates,
        unexpected=escalation_unexpected,
        seen=escalations_received,
        lateness=percentiles(lateness),
        earliest_ms=min(lateness, default=None),
    )
    return Accounting(
        events=len(planned),
        expected=len(owed),
        delivered=len(seen),
        lost=len(owed) - len(seen),
        duplicates=duplicates,
        unexpected=unexpected,
        stale=stale,
        latency=percentiles(latencies),
        by_kind=kind_percentiles,
        lost_by_kind=dict(lost_by_kind),
        delivered_per_s=delivered_in_window / window,
        expected_per_s=expected_in_window / window,
        last_receipt=last_receipt,
        worst_by_second=tuple(worst[s] for s in range(max(worst, default=-1) + 1)),
        hops_by_kind=hops_by_kind,
        slowest_by_kind=slowest_by_kind,
        escalations=escalations,
        last_receipt_by_kind=last_by_kind,
        last_send_by_kind=last_send,
        p99_by_window=by_window,
    )


def _slow(ms: float, message: Received, sent: Planned, start: float) -> Slow:
    if message.ingress_ts is None or message.dispatch_ts is None:
        return Slow(sent.t - start, ms, message.topic)
    return Slow(
        sent.t - start,
        ms,
        message.topic,
        (message.ingress_ts - sent.t) * 1000.0,
        (message.dispatch_ts - message.ingress_ts) * 1000.0,
        (message.t - message.dispatch_ts) * 1000.0,
    )
