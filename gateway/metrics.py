"""Every Prometheus metric of the gateway, in one module (STYLE.md 11).

Names and labels are the contract's (CONTRACT.md, "Metrics"): a rename is a
contract change. Label values come from closed sets only: enums (`Source`,
`Transport`, `Reason`, `Priority`, `DeviceClass`) and the sink kinds of the
configuration; never device ids, plates or free text, which would explode the
series count.

The registry is injected, so each test gets a fresh one. Label children are
resolved once and cached: `labels()` costs a lock and a dict lookup per call,
which is measurable at 10,000 events/s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from devices.events import Source, Transport
from devices.supervision import DeviceClass
from protocols.reasons import Reason

__all__ = ["INTERCEPTION_POSTS", "LATENCY_BUCKETS", "InterceptionCounts", "Metrics", "StoreCounts"]

INTERCEPTION_POSTS = ("waiting", "escalated", "confirmed")
"""The `state` label of `alarmgw_interception_checkpoints`."""

# Dispatch latency targets are in milliseconds (p99 < 10 ms at 1,000 events/s),
# ack latency in minutes: one bucket set spanning 0.5 ms to 30 min serves both.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
)  # fmt: skip


class StoreCounts(Collector):
    """`alarmgw_store_commits_total` and `alarmgw_store_ops_total`, read at scrape time
    from the store's own counters (`read` gives commits, ops; none without a store)."""

    def __init__(self, read: Callable[[], tuple[int, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        commits, ops = self._read()
        yield CounterMetricFamily(
            "alarmgw_store_commits",
            "Transactions the durable store committed (each one fsync).",
            value=commits,
        )
        yield CounterMetricFamily(
            "alarmgw_store_ops",
            "Changes (dedup identities, outbox rows, delivery marks, alarm records) committed.",
            value=ops,
        )


class InterceptionCounts(Collector):
    """`alarmgw_interceptions_active` and `alarmgw_interception_checkpoints{state}`,
    read at scrape time (`read` gives the running activations and, per state of
    `INTERCEPTION_POSTS`, how many of their checkpoints stand there)."""

    def __init__(self, read: Callable[[], tuple[int, Mapping[str, int]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active, posts = self._read()
        yield GaugeMetricFamily(
            "alarmgw_interceptions_active",
            "Interception activations running (rings called to staff).",
            value=active,
        )
        family = GaugeMetricFamily(
            "alarmgw_interception_checkpoints",
            "Checkpoints of running activations: waiting for their unit's confirmation,"
            " escalated past it, or confirmed staffed.",
            labels=["state"],
        )
        for state in INTERCEPTION_POSTS:
            family.add_metric([state], posts.get(state, 0))
        yield family


class Metrics:
    """The gateway's metrics on one registry."""

    def __init__(self, registry: CollectorRegistry, sink_kinds: Iterable[str] = ()) -> None:
        self.registry = registry
        self.events_received = Counter(
            "alarmgw_events_received",
            "Device messages received, before validation.",
            ["source", "transport"],
            registry=registry,
        )
        self.events_rejected = Counter(
            "alarmgw_events_rejected",
            "Input refused, by reason (the same reason is the NAK and the dead letter's).",
            ["source", "reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "alarmgw_duplicates",
            "Events suppressed as duplicates (retransmission or another path).",
            ["source"],
            registry=registry,
        )
        self.dispatched = Counter(
            "alarmgw_dispatched",
            "Dispatches the broker confirmed, per sink kind and priority.",
            ["sink_kind", "priority"],
            registry=registry,
        )
        self.dispatch_latency = Histogram(
            "alarmgw_dispatch_latency_seconds",
            "From ingress until the broker confirmed the dispatch.",
            ["source", "sink_kind"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.device_to_dispatch = Histogram(
            "alarmgw_device_to_dispatch_seconds",
            "From the device's clock to the confirmed dispatch (includes clock skew).",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ack_latency = Histogram(
            "alarmgw_ack_latency_seconds",
            "From the first confirmed dispatch to the first operator acknowledgement.",
            ["sink_kind"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.escalations = Counter(
            "alarmgw_escalations",
            "Alarms escalated to the next level for want of an acknowledgement.",
            registry=registry,
        )
        self.outbox_pending = Gauge(
            "alarmgw_outbox_pending",
            "Dispatches accepted but not yet confirmed by the broker.",
            registry=registry,
        )
        self.devices_online = Gauge(
            "alarmgw_devices_online",
            "Supervised devices currently online.",
            ["kind"],
            registry=registry,
        )
        self.dispatch_failures = Counter(
            "alarmgw_dispatch_failures",
            "Dispatch attempts that failed and will be retried.",
            ["sink_kind"],
            registry=registry,
        )
        self.broker_connected = Gauge(
            "alarmgw_broker_connected",
            "1 while the gateway's MQTT connection is up.",
            registry=registry,
        )
        self.acks = Counter(
            "alarmgw_acks",
            "Operator acknowledgements received, by sink kind and whether the alarm was known.",
            ["sink_kind", "known"],
            registry=registry,
        )
        self.unacknowledged = Counter(
            "alarmgw_unacknowledged",
            "Device messages not acknowledged because they could not be stored (sent again).",
            registry=registry,
        )
        self.store_writable = Gauge(
            "alarmgw_store_writable",
            "1 while the durable store accepts writes; 0 means devices are not acknowledged.",
            registry=registry,
        )
        self.interceptions = Counter(
            "alarmgw_interceptions",
            "Interception activations started, by what started them.",
            ["trigger"],
            registry=registry,
        )
        self.gc_frozen = Gauge(
            "alarmgw_gc_frozen_objects",
            "Objects moved out of the garbage collector's sight (gateway/runner.py freezes"
            " each collection's survivors); one that only grows suggests leaked cycles.",
            registry=registry,
        )
        self.serial_answer_latency = Histogram(
            "alarmgw_serial_answer_seconds",
            "From a serial record's last byte to the gateway's ACK/NAK on the line.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.serial_line_up = Gauge(
            "alarmgw_serial_line_up",
            "1 while the serial line is open (line names come from the configuration).",
            ["line"],
            registry=registry,
        )
        # Pre-create the series Prometheus users alert on, so they exist at 0.
        for source in Source:
            self.duplicates.labels(source.value)
            for transport in Transport:
                self.events_received.labels(source.value, transport.value)
        for device_class in DeviceClass:
            self.devices_online.labels(device_class.value)
        for kind in sink_kinds:
            self.dispatch_failures.labels(kind)
        for trigger in ("watchlist_hit", "alarm"):
            self.interceptions.labels(trigger)
        self._rejected: dict[tuple[str, Reason], Counter] = {}

    def rejected(self, source: str, reason: Reason) -> None:
        """Count one rejection (`source` is `phone`, `checkpoint`, `ack` or `unknown`)."""
        child = self._rejected.get((source, reason))
        if child is None:
            child = self._rejected[(source, reason)] = self.events_rejected.labels(
                source, reason.value
            )
        child.inc()
