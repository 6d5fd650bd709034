"""The composition root: one gateway, every long-lived task under one task group.

Wires the pure core (gateway/core) to the adapters: the MQTT link (ingress,
acks, dispatch), the embedded demo broker, the outbox and its publishers, the
timers, the metrics/health HTTP server. STYLE.md 7: each task is named,
readiness is awaited (`task_status.started()`), shutdown is cancellation.

The way of an event (DESIGN.md): the MQTT handler decodes and decides through
`Intake`; the outcome's dispatches go to the outbox; the handler returns, and
only then does the broker get its PUBACK (gmqtt, MQTT 5, ack after handler);
publishers send each dispatch at QoS 1 and count it done when the broker
confirms; rejections go to the dead letter with their reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry

from config.model import Config
from devices.events import Category
from devices.supervision import DeviceClass
from gateway.adapters.embedded_broker import EmbeddedBroker
from gateway.adapters.http import HealthServer
from gateway.adapters.mqtt import MqttLink, MqttNotConnected, MqttPublishError
from gateway.adapters.outbox import MemoryOutbox, Outgoing
from gateway.adapters.serial_port import LineState, SerialLine
from gateway.core.intake import Acked, Intake, Refused
from gateway.core.lanes import PASS_LANE, Queued
from gateway.core.pipeline import Availability, Core, Dispatch, Outcome
from gateway.core.routing import Channel
from gateway.metrics import Metrics
from protocols.frames import NakCode, encode_ack, encode_nak
from protocols.payloads import deadletter_payload, encode
from protocols.reasons import Rejected
from protocols.receiver import ACK, NAK, ReceiverEvent, ReceiverHeartbeat
from protocols.topics import Topics

__all__ = ["Gateway"]

_PUBLISHERS = 32
"""Concurrent confirmed publishes in flight: enough to hide the broker round trip."""
_RETRY_S = 0.5
_ONLINE = b"online"
_OFFLINE = b"offline"


class Gateway:
    """One gateway instance for one district configuration."""

    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.log = structlog.get_logger("alarmgw")
        self.topics = Topics(config.mqtt.base_topic)
        self.core = Core(config)
        self.intake = Intake(self.core, self.topics)
        sink_kinds = sorted({kind for kind, _ in config.topology.sinks})
        self.metrics = Metrics(registry or CollectorRegistry(), sink_kinds)
        self.outbox = MemoryOutbox(clock=clock)
        self.link: MqttLink | None = None
        self.broker_port: int | None = None
        self.http: HealthServer | None = None
        self._timers_changed = asyncio.Event()
        self._timer_target = float("inf")
        self._received = {
            (s, t): self.metrics.events_received.labels(s, t)
            for s in ("phone", "checkpoint")
            for t in ("mqtt", "serial")
        }
        self.metrics.outbox_pending.set_function(lambda: self.outbox.pending)
        for device_class in DeviceClass:
            self.metrics.devices_online.labels(device_class.value).set_function(
                functools.partial(self.core.supervisor.online_count, device_class)
            )
        self.metrics.devices_online.labels(DeviceClass.RECEIVER.value).set_function(
            self.core.lines_online
        )
        self.metrics.devices_online.labels(DeviceClass.SERIAL_PORT.value).set_function(
            lambda: sum(line.state is LineState.OPEN for line in self.lines)
        )
        self._native_lines = {port.name for port in config.serial if port.protocol == "native"}
        self.lines = [
            SerialLine(
                port,
                on_receiver=self._on_receiver if port.protocol == "receiver" else None,
                on_frame=self._on_frame if port.protocol == "native" else None,
                on_rejected=self._on_line_rejected,
                on_state=self._on_line_state,
                on_answer=self._on_line_answer,
                logger=self.log,
            )
            for port in config.serial
        ]

    # -- lifecycle ---------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[Gateway] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; `task_status.started(self)` once serving."""
        mqtt = self.config.mqtt
        async with contextlib.AsyncExitStack() as stack:
            host, port = mqtt.host, mqtt.port
            if mqtt.embedded:
                broker = EmbeddedBroker(port=port)
                await stack.enter_async_context(broker)
                host, port = "127.0.0.1", broker.port
                self.log.warning(
                    "embedded broker (amqtt, MQTT 3.1.1): for demos only; "
                    "acknowledgement after store is not available on it",
                    port=port,
                )
            self.broker_port = port
            self.link = MqttLink(
                host=host,
                port=port,
                client_id=mqtt.client_id,
                username=mqtt.username,
                password=mqtt.password,
                ssl_context=self._ssl_context(),
                keepalive_s=mqtt.keepalive_s,
                session_expiry_s=mqtt.session_expiry_s,
                will=(self.topics.state, _OFFLINE),
                subscriptions=self.topics.subscriptions(),
                on_message=self._on_message,
                on_connected=self._on_connected,
                logger=self.log,
            )
            self.http = HealthServer(
                self.metrics.registry, self._readiness, self.config.http.host, self.config.http.port
            )
            await self.http.start()
            stack.push_async_callback(self.http.close)
            async with anyio.create_task_group() as tg:
                await self.link.start()
                stack.push_async_callback(self._goodbye)
                for n in range(_PUBLISHERS):
                    tg.start_soon(self._publisher, name=f"publisher-{n}")
                tg.start_soon(self._timers, name="timers")
                for line in self.lines:
                    await tg.start(line.run, name=f"serial:{line.name}")
                self.log.info(
                    "gateway started",
                    district=self.config.district_id,
                    broker=f"{host}:{port}",
                    http=f"{self.config.http.host}:{self.http.port}",
                    households=len(self.config.households),
                    checkpoints=len(self.config.checkpoints),
                )
                task_status.started(self)

    async def _goodbye(self) -> None:
        """Say `offline` ourselves (a clean disconnect does not fire the Will)."""
        link = self.link
        if link is None:
            return
        with anyio.move_on_after(2.0, shield=True):
            if link.connected:
                with contextlib.suppress(MqttNotConnected, MqttPublishError):
                    await link.publish(self.topics.state, _OFFLINE, qos=1, retain=True)
            await link.stop()

    def _ssl_context(self) -> ssl.SSLContext | None:
        mqtt = self.config.mqtt
        if not mqtt.tls:
            return None
        context = ssl.create_default_context(cafile=mqtt.tls_ca)
        if mqtt.tls_cert:
            context.load_cert_chain(mqtt.tls_cert, mqtt.tls_key)
        return context

    def _readiness(self) -> list[tuple[str, bool, str]]:
        link = self.link
        connected = link is not None and link.connected
        checks = [
            ("broker", connected, "connected" if connected else "not connected"),
            ("outbox", True, f"{self.outbox.pending} pending (in memory)"),
        ]
        if link is not None and connected:
            after = link.ack_after_handler
            checks.append(
                (
                    "ack_after_store",
                    True,
                    "MQTT 5: devices are acknowledged after their event is accepted"
                    if after
                    else "unavailable: MQTT 3.1.1 broker acknowledges on receipt",
                )
            )
        return checks

    async def _on_connected(self) -> None:
        self.metrics.broker_connected.set(1)
        assert self.link is not None
        # Retained state is republished after every reconnect (PROTOCOLS.md, MQTT facts).
        self.outbox.put(2, Outgoing(self.topics.state, 1, retain=True, payload=_ONLINE))

    # -- ingress -------------------------------------------------------------------
    async def _on_message(self, topic: str, payload: bytes) -> None:
        """Handle one message; returning lets the broker have its PUBACK."""
        self.handle(topic, payload)

    def handle(self, topic: str, payload: bytes) -> Outcome | Refused | Acked:
        """Decide and enqueue: the synchronous heart of the MQTT handler."""
        now = self.clock()
        result = self.intake.mqtt(topic, payload, now)
        if isinstance(result, Outcome):
            self._received[(result.event.source.value, "mqtt")].inc()
            self._outcome(result)
        elif isinstance(result, Refused):
            if result.source in ("phone", "checkpoint"):
                self._received[(result.source, "mqtt")].inc()
            self._refused(result, now)
        else:
            self._acked(result)
        return result

    def _outcome(self, outcome: Outcome) -> None:
        event = outcome.event
        if outcome.duplicate:
            self.metrics.duplicates.labels(event.source.value).inc()
        if outcome.availability is not None:
            self._availability(outcome.availability)
        for dispatch in outcome.dispatches:
            self._enqueue(dispatch)
        if outcome.dispatches and event.category is not Category.PASS:
            self.log.info(
                "alarm accepted",
                alarm_id=event.alarm_id,
                device=event.device_id,
                kind=event.kind.value,
                priority=int(event.priority),
                stage=event.stage.value,
                sinks=[f"{d.target.sink_kind}/{d.target.sink_id}" for d in outcome.dispatches],
            )
        self._timers_moved()

    def _enqueue(self, dispatch: Dispatch) -> None:
        target = dispatch.target
        if target.channel is Channel.PASSES:
            topic = self.topics.passes(target.sink_kind, target.sink_id)
            lane = PASS_LANE
        else:
            topic = self.topics.alarms(target.sink_kind, target.sink_id)
            lane = int(dispatch.priority)
        self.outbox.put(lane, Outgoing(topic, target.qos, dispatch=dispatch))

    def _availability(self, change: Availability) -> None:
        topic = self.topics.availability(change.device_id)
        self.outbox.put(
            3, Outgoing(topic, 1, retain=True, payload=_ONLINE if change.online else _OFFLINE)
        )

    def _refused(self, refused: Refused, now: float) -> None:
        rejected = refused.rejected
        self.metrics.rejected(refused.source, rejected.reason)
        self.log.warning(
            "input rejected",
            reason=rejected.reason.value,
            detail=rejected.detail,
            topic=refused.topic,
        )
        body = encode(deadletter_payload(rejected, refused.topic, now))
        self.outbox.put(4, Outgoing(self.topics.deadletter, 1, payload=body))

    def _acked(self, acked: Acked) -> None:
        outcome = acked.outcome
        self.metrics.acks.labels(acked.sink_kind, "yes" if outcome.known else "no").inc()
        if outcome.latency_s is not None:
            self.metrics.ack_latency.labels(acked.sink_kind).observe(outcome.latency_s)
        self.log.info(
            "alarm acknowledged" if outcome.known else "ack for an unknown alarm",
            alarm_id=outcome.alarm_id,
            by=acked.by,
            sink=f"{acked.sink_kind}/{acked.sink_id}",
            first=outcome.first,
            ack_latency_s=outcome.latency_s,
        )

    # -- serial ingress --------------------------------------------------------------
    async def _on_receiver(
        self, line: str, item: ReceiverEvent | ReceiverHeartbeat | Rejected
    ) -> bytes | None:
        """One record from an alarm receiver; the byte to answer (None: stay silent).

        PROTOCOLS.md: ACK once the event is safely accepted, NAK ("send again") for
        a record that cannot be parsed; a record for an unknown account is ACKed
        (or the receiver would retry it forever) but dead-lettered and counted.
        Any record proves the line alive; heartbeats are ACKed and supervised.
        """
        now = self.clock()
        where = f"serial:{line}"
        if isinstance(item, Rejected):
            self._received[("phone", "serial")].inc()
            self._refused(Refused("phone", item, where), now)
            return NAK
        self._line_heard(line, now)
        if isinstance(item, ReceiverHeartbeat):
            return ACK
        self._received[("phone", "serial")].inc()
        result = self.intake.receiver_record(item, now, line)
        if isinstance(result, Refused):
            self._refused(result, now)
            return ACK
        return ACK if await self._commit(result) else None

    async def _on_frame(self, line: str, seq: int, payload: bytes) -> bytes | None:
        """One native DATA frame: ACK once accepted, NAK REFUSED for content never acceptable."""
        now = self.clock()
        result = self.intake.native_frame(payload, now, line)
        if isinstance(result, Refused):
            if result.source in ("phone", "checkpoint"):
                self._received[(result.source, "serial")].inc()
            self._refused(result, now)
            return encode_nak(seq, NakCode.REFUSED)
        self._received[(result.event.source.value, "serial")].inc()
        if await self._commit(result):
            return encode_ack(seq)
        return encode_nak(seq, NakCode.RETRY)

    async def _on_line_rejected(self, line: str, rejected: Rejected) -> None:
        """A damaged native frame (never answered) or a record cut off by a dying port."""
        self._refused(Refused("unknown", rejected, f"serial:{line}"), self.clock())

    def _on_line_state(self, line: str, state: LineState) -> None:
        self.log.info("serial line state", line=line, state=state.value)
        if state is not LineState.OPEN:
            self.outbox.put(
                3, Outgoing(self.topics.availability(line), 1, retain=True, payload=_OFFLINE)
            )
        elif line in self._native_lines:
            self.outbox.put(
                3, Outgoing(self.topics.availability(line), 1, retain=True, payload=_ONLINE)
            )
        self.metrics.serial_line_up.labels(line).set(1 if state is LineState.OPEN else 0)

    def _on_line_answer(self, line: str, latency_s: float) -> None:
        self.metrics.serial_answer_latency.observe(latency_s)

    def _line_heard(self, line: str, now: float) -> None:
        change = self.core.line_heard(line, now)
        if change is not None:
            self._outcome(change)

    async def _commit(self, outcome: Outcome) -> bool:
        """Make an accepted event durable, then dispatch it; False if it could not be stored."""
        self._outcome(outcome)
        return True

    # -- egress --------------------------------------------------------------------
    async def _publisher(self) -> None:
        link = self.link
        assert link is not None
        while True:
            await link.wait_connected()
            queued = await self.outbox.get()
            await self._publish(link, queued)

    async def _publish(self, link: MqttLink, queued: Queued[Outgoing]) -> None:
        item = queued.item
        dispatch = item.dispatch
        payload = item.payload
        if dispatch is not None:
            payload = encode({**dispatch.body, "dispatch_ts": self.clock()})
        try:
            await link.publish(item.topic, payload, qos=item.qos, retain=item.retain)
        except (MqttNotConnected, MqttPublishError) as error:
            sink_kind = dispatch.target.sink_kind if dispatch is not None else "gateway"
            self.metrics.dispatch_failures.labels(sink_kind).inc()
            self.log.debug("publish failed; will retry", topic=item.topic, error=str(error))
            self.outbox.defer(queued, _RETRY_S)
            return
        self.outbox.done()
        if dispatch is not None:
            self._confirmed(dispatch)

    def _confirmed(self, dispatch: Dispatch) -> None:
        now = self.clock()
        m = self.metrics
        sink_kind = dispatch.target.sink_kind
        m.dispatched.labels(sink_kind, str(int(dispatch.priority))).inc()
        latency = now - dispatch.ingress_ts
        m.dispatch_latency.labels(dispatch.source.value, sink_kind).observe(latency)
        if dispatch.device_ts is not None:
            m.device_to_dispatch.labels(dispatch.source.value).observe(now - dispatch.device_ts)
        if dispatch.target.channel is Channel.ALARMS:
            self.core.dispatched(dispatch, now)
            self.log.info(
                "alarm dispatched",
                alarm_id=dispatch.alarm_id,
                sink=f"{sink_kind}/{dispatch.target.sink_id}",
                escalated=bool(dispatch.body.get("escalated")),
                ingress_to_dispatch_ms=round(latency * 1000, 3),
                device_to_dispatch_ms=None
                if dispatch.device_ts is None
                else round((now - dispatch.device_ts) * 1000, 3),
            )

    # -- time ------------------------------------------------------------------------
    def _timers_moved(self) -> None:
        deadline = self.core.next_deadline()
        if deadline is not None and deadline < self._timer_target:
            self._timers_changed.set()

    async def _timers(self) -> None:
        """Sleep until the core's next deadline; then let it decide (supervision, escalation)."""
        while True:
            self._fire(self.clock())
            deadline = self.core.next_deadline()
            self._timer_target = deadline if deadline is not None else float("inf")
            self._timers_changed.clear()
            delay = None if deadline is None else max(0.0, deadline - self.clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._timers_changed.wait()

    def _fire(self, now: float) -> None:
        tick = self.core.tick(now)
        for change in tick.availability:
            self._availability(change)
            self.log.warning(
                "device offline" if not change.online else "device online",
                device=change.device_id,
                device_class=change.device_class.value,
            )
        for dispatch in tick.dispatches:
            self._enqueue(dispatch)
        for alarm_id in tick.escalated:
            self.metrics.escalations.inc()
            self.log.warning("alarm escalated: no acknowledgement in time", alarm_id=alarm_id)

    def snapshot(self) -> dict[str, Any]:
        """A few live figures for logs and tests."""
        return {
            "pending": self.outbox.pending,
            "alarms": len(self.core.alarms),
            "connected": self.link is not None and self.link.connected,
        }
