"""The composition root: one gateway, every long-lived task under one task group.

Wires the pure core (gateway/core) to the adapters: the MQTT link (ingress,
acks, dispatch), the embedded demo broker, the serial lines, the durable store
and the outbox with its publishing pump, the timers, the metrics/health server.
STYLE.md 7: each task is named, readiness is awaited (`task_status.started()`),
shutdown is cancellation.

The way of an event (DESIGN.md): a handler (a batch of MQTT messages, a serial
record, a native frame) decides through `Intake`; the outcomes are written down
by the `Journal` (dedup identities, every publish they owe, the alarms they
raised) in one group commit; only then does the handler return, and only then
do the devices get their acknowledgement (MQTT 5 PUBACKs after the handler,
serial ACK); the pump sends each dispatch at QoS 1, best lane first, counts it
done when the broker confirms, and marks it delivered.

Alarms first at ingress: phones and acks have the main MQTT session, plate reads
their own (`<client_id>-traffic`), whose batches are smaller and paced (two at
a time), so a flood of passes waits in the broker, not in front of a panic. A
store that cannot be written means no acknowledgement: the devices send again.
Rejections go to the dead letter with their reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry

from config.model import Config, Priority
from devices.events import Category, Event, Source
from devices.supervision import DeviceClass
from gateway.adapters.embedded_broker import EmbeddedBroker
from gateway.adapters.http import HealthServer
from gateway.adapters.journal import Journal
from gateway.adapters.mqtt import MqttError, MqttLink, MqttNotConnected, MqttPublishError
from gateway.adapters.outbox import MemoryOutbox, Outgoing
from gateway.adapters.serial_port import LineState, SerialLine
from gateway.adapters.store import Store, StoreUnavailable
from gateway.core.alarms import Alarm, AlarmState
from gateway.core.intake import Acked, Intake, Refused, Requested
from gateway.core.interception import Activation, ActivationState, Command
from gateway.core.lanes import PASS_LANE, Queued
from gateway.core.pipeline import Availability, Core, Dispatch, Outcome
from gateway.core.routing import Channel, Target
from gateway.logbudget import LogBudget
from gateway.metrics import InterceptionCounts, Metrics, StoreCounts
from protocols.frames import NakCode, encode_ack, encode_nak
from protocols.payloads import (
    deadletter_payload,
    encode,
    packed_float,
    packed_str,
    with_packed_entries,
)
from protocols.reasons import Rejected
from protocols.receiver import ACK, NAK, ReceiverEvent, ReceiverHeartbeat
from protocols.topics import Topics

__all__ = ["Gateway"]

_RECEIVE_MAXIMUM = 1000
"""Unacknowledged ingress messages the broker may hand one session at once (MQTT 5
Receive Maximum): enough to keep batches full across a store commit (1,000
messages is 50 ms at 20,000 events/s)."""
_MAX_BATCH = 256
"""Messages per ingress batch (one store submission, one loop turn of work)."""
_MAX_INFLIGHT = 1000
"""Our publishes the broker has not confirmed yet, at most (the broker's Receive
Maximum caps it too). A busy broker confirms late: at 16,000 events/s its round
trip reached 40-80 ms, and 256 in flight held the dispatches to 3,000-6,000/s
while they queued in the outbox; 1,000 keeps up (docs/benchmark.md)."""
_MAX_PASSES_IN_FLIGHT = 256
"""Of those, plate reads at most: a broker flooded with passes holds only this
many of ours ahead of a panic's dispatch (with all 1,000 for passes, the panics'
p99 under the 2x overload went from 46 to 99 ms)."""
_MAX_PASSES_QUEUED = 4096
"""Passes waiting for the broker past which the traffic session stops reading
(its batch's PUBACKs wait): under a flood of plate reads at twice the
sustainable rate the pass lane grew by 10,000 a second, in memory."""
_TRAFFIC_MAX_BATCH = 128
"""Plate reads per batch: a smaller slice of each loop turn, so under a flood of
passes a panic on the main session waits for one short batch at most."""
_TRAFFIC_MAX_BATCHES = 1
"""Plate-read batches in progress at once. Paces the traffic session to what the
store finishes, so a flood of passes leaves the CPU (the broker's included) room
for alarms instead of taking all of it; what waits, waits in the broker. Under
passes at 44,000/s one batch gave panic p99 23-24 ms, two gave 43-143 ms
(the plate reads still went out at 16,000-17,000/s)."""
_MAX_UNACKED = 1024
"""Past this many received and unacknowledged messages a session stops reading its
socket (mosquitto overshoots the Receive Maximum, #2301): the backlog waits in the
broker, which is built to hold it, and the gateway's memory stays flat."""
_PUMP_BURST = 32
"""Free slots the pump waits for before it sends again: one wake-up per burst of
confirmations instead of one per confirmation (a full window means PUBACKs are
flowing, so 32 free up within a few milliseconds)."""
_RETRY_S = 0.5
_PRUNE_EVERY_S = 600.0
_HELD_LINES_EVERY_S = 1.0
"""How often the count of log lines held back by the budget is written."""
_ONLINE = b"online"
_DISPATCH_TS = packed_str("dispatch_ts")
_OFFLINE = b"offline"
_STATE_LANE = 2
_COMMAND_LANE = 1
"""Orders to checkpoints: a listed vehicle is on the move (interception)."""
_AVAILABILITY_LANE = 3
_DEADLETTER_LANE = 4
_RESPONSE_LANE = 3
"""Answers to requests (interception): someone is waiting at a console."""

Publish = tuple[int, Outgoing]
"""(lane, item): one publish the gateway owes."""


class _Staged:
    """What a batch of inputs owes the store: written in one commit, or not at all."""

    __slots__ = ("activations", "alarms", "outcomes", "publishes", "seen", "urgent")

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.publishes: list[Publish] = []
        self.seen: list[Event] = []
        self.alarms: list[Alarm] = []
        self.activations: list[Activation] = []
        self.urgent = False

    def outcome(self, outcome: Outcome) -> None:
        """An accepted event: its identity, its alarms; its publishes are built at store time."""
        self.outcomes.append(outcome)
        event = outcome.event
        if not (
            outcome.duplicate
            or event.source is Source.GATEWAY
            or event.category is Category.HEARTBEAT
        ):
            self.seen.append(event)
        self.alarms.extend(outcome.alarms)
        if outcome.activations:
            self.activations.extend(outcome.activations)
        if event.priority is Priority.LIFE_SAFETY and not outcome.duplicate:
            self.urgent = True  # a panic never waits behind a group of plate reads


class Gateway:
    """One gateway instance for one district configuration.

    `durable=False` skips the store (the benchmark's durability-off run): devices
    are then acknowledged once the event is decided, and a crash loses what the
    broker had not confirmed yet.
    """

    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        durable: bool = True,
    ) -> None:
        self.config = config
        self.clock = clock
        self.durable = durable
        self.log = structlog.get_logger("alarmgw")
        self.log_budget = LogBudget()
        """Per-alarm log lines in a storm: a budget per kind, the rest counted
        (gateway/logbudget.py; the metrics carry every figure)."""
        self.topics = Topics(config.mqtt.base_topic)
        self.core = Core(config)
        self.intake = Intake(self.core, self.topics)
        sink_kinds = sorted({kind for kind, _ in config.topology.sinks})
        self.metrics = Metrics(registry or CollectorRegistry(), sink_kinds)
        self.outbox = MemoryOutbox(max_passes_in_flight=_MAX_PASSES_IN_FLIGHT, clock=clock)
        self.journal = Journal(None, self.outbox)
        self.link: MqttLink | None = None
        self.traffic_link: MqttLink | None = None
        self.broker_port: int | None = None
        self.http: HealthServer | None = None
        self._egress_topics: dict[Target, str] = {}
        self._timers_changed = asyncio.Event()
        self._timer_target = float("inf")
        self._dispatch_metrics: dict[tuple[str, int, str], tuple[Any, Any, Any]] = {}
        self._duplicates = {
            source.value: self.metrics.duplicates.labels(source.value) for source in Source
        }
        self._received = {
            (s, t): self.metrics.events_received.labels(s, t)
            for s in ("phone", "checkpoint")
            for t in ("mqtt", "serial")
        }
        m = self.metrics
        m.outbox_pending.set_function(lambda: self.outbox.pending)
        m.store_writable.set_function(lambda: 1 if self.journal.writable else 0)
        m.gc_frozen.set_function(gc.get_freeze_count)
        m.registry.register(StoreCounts(self._store_counts))
        m.registry.register(InterceptionCounts(self._interception_counts))
        for device_class in (DeviceClass.PHONE, DeviceClass.CHECKPOINT):
            m.devices_online.labels(device_class.value).set_function(
                functools.partial(self.core.supervisor.online_count, device_class)
            )
        m.devices_online.labels(DeviceClass.RECEIVER.value).set_function(self.core.lines_online)
        m.devices_online.labels(DeviceClass.SERIAL_PORT.value).set_function(
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
            if self.durable:
                store = self._open_store()
                stack.push_async_callback(store.aclose)  # last out: flushes delivered marks
                self.journal = Journal(store, self.outbox)
                found = self.journal.recover(self.core, self.clock())
                self.log.info(
                    "store opened",
                    path=self.config.store.path,
                    dedup_identities=found.seen,
                    alarms=found.alarms,
                    pending_publishes=found.pending,
                )
            host, port = mqtt.host, mqtt.port
            if mqtt.embedded:
                broker = EmbeddedBroker(port=port)
                await stack.enter_async_context(broker)
                host, port = "127.0.0.1", broker.port
                self.log.warning(
                    "embedded broker (amqtt, MQTT 3.1.1): for demos only; devices are "
                    "acknowledged on receipt there, not after their event is stored",
                    port=port,
                )
            self.broker_port = port
            # Two sessions, so that alarms come first at ingress too: a broker
            # queues each session's messages in order, and one session would put
            # a panic behind every plate read queued before it. Phones, acks and
            # every publish use the main session (with the Last Will); checkpoint
            # traffic has its own, with a smaller in-flight window.
            traffic = f"{self.topics.base}/in/checkpoint/+"
            link_options: dict[str, Any] = {
                "host": host,
                "port": port,
                "username": mqtt.username,
                "password": mqtt.password,
                "ssl_context": self._ssl_context(),
                "keepalive_s": mqtt.keepalive_s,
                "session_expiry_s": mqtt.session_expiry_s,
                "logger": self.log,
                "mqtt_version": EmbeddedBroker.mqtt_version if mqtt.embedded else None,
            }
            self.link = MqttLink(
                client_id=mqtt.client_id,
                will=(self.topics.state, _OFFLINE),
                subscriptions=[f for f in self.topics.subscriptions() if f != traffic],
                on_connected=self._on_connected,
                on_batch=self._on_batch,
                receive_maximum=_RECEIVE_MAXIMUM,
                max_inflight=_MAX_INFLIGHT,
                max_batch=_MAX_BATCH,
                max_unacked=_MAX_UNACKED,
                **link_options,
            )
            self.traffic_link = MqttLink(
                client_id=f"{mqtt.client_id}-traffic",
                subscriptions=[traffic],
                receive_maximum=_RECEIVE_MAXIMUM,
                on_batch=self._on_traffic_batch,
                max_batch=_TRAFFIC_MAX_BATCH,
                max_batches=_TRAFFIC_MAX_BATCHES,
                max_unacked=_MAX_UNACKED,
                **link_options,
            )
            self.http = HealthServer(
                self.metrics.registry, self._readiness, self.config.http.host, self.config.http.port
            )
            await self.http.start()
            stack.push_async_callback(self.http.close)
            async with anyio.create_task_group() as tg:
                await self.link.start()
                await self.traffic_link.start()
                stack.push_async_callback(self._goodbye)
                tg.start_soon(self._pump, name="publisher")
                tg.start_soon(self._timers, name="timers")
                tg.start_soon(self._held_lines, name="log-budget")
                if self.journal.store is not None:
                    tg.start_soon(self._pruner, name="pruner")
                for line in self.lines:
                    await tg.start(line.run, name=f"serial:{line.name}")
                self.log.info(
                    "gateway started",
                    district=self.config.district_id,
                    broker=f"{host}:{port}",
                    http=f"{self.config.http.host}:{self.http.port}",
                    households=len(self.config.households),
                    checkpoints=len(self.config.checkpoints),
                    serial_lines=len(self.lines),
                    durable=self.journal.durable,
                )
                task_status.started(self)

    def _open_store(self) -> Store:
        settings = self.config.store
        if settings.path != ":memory:":
            Path(settings.path).parent.mkdir(parents=True, exist_ok=True)
        store = Store(
            settings.path,
            commit_interval_ms=settings.commit_interval_ms,
            commit_max_batch=settings.commit_max_batch,
            on_state_change=self._store_state,
        )
        store.start()
        return store

    def _store_state(self, writable: bool, reason: str | None) -> None:
        if writable:
            self.log.warning("store writable again: acknowledging devices again")
        else:
            self.log.error(
                "store cannot be written: devices are not acknowledged until it recovers",
                reason=reason,
            )

    async def _goodbye(self) -> None:
        """Say `offline` ourselves (a clean disconnect does not fire the Will)."""
        link = self.link
        if link is None:
            return
        with anyio.move_on_after(2.0, shield=True):
            if self.traffic_link is not None:
                await self.traffic_link.stop()
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
        connected = (
            link is not None
            and link.connected
            and self.traffic_link is not None
            and self.traffic_link.connected
        )
        store = self.journal.store
        if store is None:
            outbox = (True, f"{self.outbox.pending} pending, in memory only (durability off)")
        elif store.writable:
            outbox = (True, f"{self.outbox.pending} pending, store writable")
        else:
            outbox = (False, f"store not writable ({store.last_error}): devices not acknowledged")
        refused = next(
            (s.refused for s in (link, self.traffic_link) if s is not None and s.refused), None
        )
        if connected:
            broker = "connected"
        elif refused is not None:
            broker = f"not connected: the broker refused the credentials: {refused}"
        else:
            broker = "not connected"
        checks = [
            ("broker", connected, broker),
            ("outbox", *outbox),
        ]
        if link is not None and connected:
            checks.append(
                (
                    "ack_after_store",
                    True,
                    "MQTT 5: devices are acknowledged after their event is stored"
                    if link.ack_after_handler
                    else "unavailable: the MQTT 3.1.1 broker does not redeliver "
                    "unacknowledged messages, so acknowledgement after store is not guaranteed",
                )
            )
        return checks

    async def _on_connected(self) -> None:
        self.metrics.broker_connected.set(1)
        # Retained state is republished after every reconnect (PROTOCOLS.md, MQTT facts).
        self.outbox.put(_STATE_LANE, Outgoing(self.topics.state, 1, retain=True, payload=_ONLINE))

    # -- MQTT ingress ----------------------------------------------------------------
    async def _on_batch(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Handle a batch of messages, stored in one commit. Returning lets the broker
        have their PUBACKs; raising (the store cannot be written) withholds them
        all, so the broker sends them again."""
        if not self.journal.writable:
            self.metrics.unacknowledged.inc(len(messages))
            raise StoreUnavailable("store not writable")
        now = self.clock()
        staged = _Staged()
        received: dict[str, int] = {}
        for topic, payload in messages:
            result = self.intake.mqtt(topic, payload, now)
            if isinstance(result, Outcome):
                source = result.event.source.value
                received[source] = received.get(source, 0) + 1
                staged.outcome(result)
            elif isinstance(result, Refused):
                if result.source in ("phone", "checkpoint"):
                    received[result.source] = received.get(result.source, 0) + 1
                self._stage_refused(staged, result, now)
            elif isinstance(result, Requested):
                self._stage_request(staged, result, now)
            else:
                self._stage_acked(staged, result, now)
        for source, count in received.items():
            self._received[(source, "mqtt")].inc(count)
        if not await self._store(staged):
            self.metrics.unacknowledged.inc(len(messages))
            raise StoreUnavailable("store not writable")

    async def _on_traffic_batch(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """A batch of plate reads: stored like any batch, then acknowledged only once
        the pass lane has room, so the traffic session reads no faster than the
        broker takes our dispatches (a flood waits in the broker)."""
        await self._on_batch(messages)
        await self.outbox.wait_pass_room(_MAX_PASSES_QUEUED)

    def _publishes(
        self, availability: Availability | None, dispatches: tuple[Dispatch, ...]
    ) -> list[Publish]:
        publishes: list[Publish] = []
        if availability is not None:
            publishes.append(self._availability(availability.device_id, availability.online))
        for dispatch in dispatches:
            target = dispatch.target
            lane = PASS_LANE if target.channel is Channel.PASSES else int(dispatch.priority)
            publishes.append((lane, Outgoing(self._topic(target), target.qos, dispatch=dispatch)))
        return publishes

    def _commands(self, commands: Sequence[Command]) -> list[Publish]:
        """Retained orders to checkpoints, each on its own commands topic."""
        return [
            (
                _COMMAND_LANE,
                Outgoing(
                    self.topics.commands("checkpoint", command.checkpoint),
                    1,
                    retain=True,
                    payload=encode(command.body),
                ),
            )
            for command in commands
        ]

    def _log_activation(self, activation: Activation, now: float) -> None:
        """One line per interception started, extended or finished."""
        if activation.state is ActivationState.ACTIVE:
            what = "interception activated"
            if len(activation.triggers) == 1:  # started now (an extension has more)
                trigger = "watchlist_hit" if activation.target.startswith("plate:") else "alarm"
                self.metrics.interceptions.labels(trigger).inc()
        else:
            what = f"interception {activation.state.value}"
        if self.log_budget.allow(what, now):
            self.log.warning(
                what,
                activation_id=activation.activation_id,
                trigger=activation.triggers[-1] if activation.triggers else activation.trigger,
                rings=list(activation.rings),
                checkpoints=len(activation.checkpoints),
                until=activation.until,
                plate=activation.look_for.get("plate"),
                by=activation.ended_by,
            )

    def _topic(self, target: Target) -> str:
        """The egress topic of a target, built (and its ids checked) once per sink."""
        topic = self._egress_topics.get(target)
        if topic is None:
            build = self.topics.passes if target.channel is Channel.PASSES else self.topics.alarms
            topic = self._egress_topics[target] = build(target.sink_kind, target.sink_id)
        return topic

    def _interception_counts(self) -> tuple[int, dict[str, int]]:
        """Running activations, and their checkpoints by standing (for /metrics)."""
        interception = self.core.interception
        return len(interception.active()), interception.standing()

    def _store_counts(self) -> tuple[int, int]:
        """Commits and ops the store committed so far (0, 0 without a store)."""
        store = self.journal.store
        return (0, 0) if store is None else (store.commits, store.ops_committed)

    def _availability(self, device_id: str, online: bool) -> Publish:
        payload = _ONLINE if online else _OFFLINE
        item = Outgoing(self.topics.availability(device_id), 1, retain=True, payload=payload)
        return _AVAILABILITY_LANE, item

    async def _commit(self, outcome: Outcome) -> bool:
        """Store one accepted event and what it owes, then queue it; False if not stored."""
        staged = _Staged()
        staged.outcome(outcome)
        return await self._store(staged)

    async def _refused(self, refused: Refused, now: float) -> bool:
        """Count, log and dead-letter a rejection; False if the dead letter was not stored."""
        staged = _Staged()
        self._stage_refused(staged, refused, now)
        return await self._store(staged)

    async def _store(self, staged: _Staged) -> bool:
        """Write what `staged` owes in one commit, then queue its publishes.

        False if the store refused: the core forgets the events again (the
        devices send them again, which must not look like duplicates)."""
        publishes = staged.publishes
        for outcome in staged.outcomes:
            publishes.extend(self._publishes(outcome.availability, outcome.dispatches))
            if outcome.commands:
                publishes.extend(self._commands(outcome.commands))
        stored = await self.journal.record(
            publishes,
            seen=staged.seen,
            alarms=staged.alarms,
            activations=staged.activations,
            now=self.clock(),
            urgent=staged.urgent,
        )
        if not stored:
            for outcome in reversed(staged.outcomes):
                self.core.rollback(outcome)
            return False
        timers_moved = False
        now = self.clock()
        allow = self.log_budget.allow
        for outcome in staged.outcomes:
            event = outcome.event
            if outcome.duplicate:
                self._duplicates[event.source.value].inc()
            if (
                outcome.dispatches
                and event.category is not Category.PASS
                and allow("alarm accepted", now)
            ):
                self.log.info(
                    "alarm accepted",
                    alarm_id=event.alarm_id,
                    device=event.device_id,
                    kind=event.kind.value,
                    priority=int(event.priority),
                    stage=event.stage.value,
                    sinks=[f"{d.target.sink_kind}/{d.target.sink_id}" for d in outcome.dispatches],
                )
            timers_moved = timers_moved or bool(outcome.alarms) or outcome.availability is not None
        for activation in staged.activations:
            self._log_activation(activation, now)
        if timers_moved:
            self._timers_moved()  # only a new alarm or device can bring a deadline nearer
        return True

    def _stage_refused(self, staged: _Staged, refused: Refused, now: float) -> None:
        """Count and log a rejection now; its dead letter is stored with the batch."""
        rejected = refused.rejected
        self.metrics.rejected(refused.source, rejected.reason)
        if self.log_budget.allow("input rejected", now):
            self.log.warning(
                "input rejected",
                reason=rejected.reason.value,
                detail=rejected.detail,
                topic=refused.topic,
            )
        body = encode(deadletter_payload(rejected, refused.topic, now))
        letter = Outgoing(self.topics.deadletter, 1, payload=body)
        staged.publishes.append((_DEADLETTER_LANE, letter))

    def _stage_request(self, staged: _Staged, requested: Requested, now: float) -> None:
        """Answer a request; what it changes is stored with its answer, or neither is."""
        message = requested.message
        transaction: str | int | None = None
        if isinstance(message, Rejected):
            answer: dict[str, object] = {
                "status": "error",
                "error": f"{message.reason.value}: {message.detail}",
            }
        else:
            transaction = message.transaction
            answer, change = self.core.request(requested.api, requested.op, message.fields, now)
            if change is not None:
                staged.alarms.extend(change.alarms)
                staged.activations.extend(change.activations)
                staged.publishes.extend(self._commands(change.commands))
        if transaction is not None:
            answer["transaction"] = transaction
        if answer["status"] != "ok" and self.log_budget.allow("request refused", now):
            self.log.warning(
                "request refused",
                api=requested.api,
                op=requested.op,
                error=answer.get("error"),
            )
        topic = self.topics.response(requested.api, requested.op)
        staged.publishes.append((_RESPONSE_LANE, Outgoing(topic, 1, payload=encode(answer))))

    def _stage_acked(self, staged: _Staged, acked: Acked, now: float) -> None:
        """An operator's acknowledgement: stored before the PUBACK, so never forgotten."""
        outcome = acked.outcome
        self.metrics.acks.labels(acked.sink_kind, "yes" if outcome.known else "no").inc()
        if outcome.latency_s is not None:
            self.metrics.ack_latency.labels(acked.sink_kind).observe(outcome.latency_s)
        what = "alarm acknowledged" if outcome.known else "ack for an unknown alarm"
        if self.log_budget.allow(what, now):
            self.log.info(
                what,
                alarm_id=outcome.alarm_id,
                by=acked.by,
                sink=f"{acked.sink_kind}/{acked.sink_id}",
                first=outcome.first,
                ack_latency_s=outcome.latency_s,
            )
        alarm = self.core.find_alarm(outcome.alarm_id) if outcome.first else None
        if alarm is not None:
            staged.alarms.append(alarm)

    # -- serial ingress --------------------------------------------------------------
    async def _on_receiver(
        self, line: str, item: ReceiverEvent | ReceiverHeartbeat | Rejected
    ) -> bytes | None:
        answer = await self._answer_receiver(line, item)
        if answer is None:
            self.metrics.unacknowledged.inc()
        return answer

    async def _on_frame(self, line: str, seq: int, payload: bytes) -> bytes | None:
        answer = await self._answer_frame(line, seq, payload)
        if answer == encode_nak(seq, NakCode.RETRY):
            self.metrics.unacknowledged.inc()
        return answer

    async def _answer_receiver(
        self, line: str, item: ReceiverEvent | ReceiverHeartbeat | Rejected
    ) -> bytes | None:
        """One record from an alarm receiver; the byte to answer (None: stay silent).

        PROTOCOLS.md: ACK once the event is safely stored, NAK ("send again") for a
        record that cannot be parsed; a record for an unknown account is ACKed (or
        the receiver would retry it forever) but dead-lettered and counted. Any
        record proves the line alive; heartbeats are ACKed and supervised. While
        the store cannot be written the gateway says nothing, so the receiver
        retries and then buffers, as it does for a dead automation link.
        """
        if not self.journal.writable:
            return None
        now = self.clock()
        where = f"serial:{line}"
        if isinstance(item, Rejected):
            self._received[("phone", "serial")].inc()
            return NAK if await self._refused(Refused("phone", item, where), now) else None
        if not await self._line_heard(line, now):
            return None
        if isinstance(item, ReceiverHeartbeat):
            return ACK
        self._received[("phone", "serial")].inc()
        result = self.intake.receiver_record(item, now, line)
        if isinstance(result, Refused):
            return ACK if await self._refused(result, now) else None
        return ACK if await self._commit(result) else None

    async def _answer_frame(self, line: str, seq: int, payload: bytes) -> bytes | None:
        """One native DATA frame: ACK once stored, NAK REFUSED for content never
        acceptable, NAK RETRY while the store cannot be written (docs/framing.md)."""
        if not self.journal.writable:
            return encode_nak(seq, NakCode.RETRY)
        now = self.clock()
        result = self.intake.native_frame(payload, now, line)
        if isinstance(result, Refused):
            if result.source in ("phone", "checkpoint"):
                self._received[(result.source, "serial")].inc()
            if await self._refused(result, now):
                return encode_nak(seq, NakCode.REFUSED)
            return encode_nak(seq, NakCode.RETRY)
        self._received[(result.event.source.value, "serial")].inc()
        if await self._commit(result):
            return encode_ack(seq)
        return encode_nak(seq, NakCode.RETRY)

    async def _on_line_rejected(self, line: str, rejected: Rejected) -> None:
        """A damaged native frame (never answered) or a record cut off by a dying port."""
        await self._refused(Refused("unknown", rejected, f"serial:{line}"), self.clock())

    def _on_line_state(self, line: str, state: LineState) -> None:
        self.log.info("serial line state", line=line, state=state.value)
        self.metrics.serial_line_up.labels(line).set(1 if state is LineState.OPEN else 0)
        if state is not LineState.OPEN:
            self.outbox.put(*self._availability(line, online=False))
        elif line in self._native_lines:
            self.outbox.put(*self._availability(line, online=True))

    def _on_line_answer(self, _line: str, latency_s: float) -> None:
        self.metrics.serial_answer_latency.observe(latency_s)

    async def _line_heard(self, line: str, now: float) -> bool:
        change = self.core.line_heard(line, now)
        return True if change is None else await self._commit(change)

    # -- egress --------------------------------------------------------------------
    async def _pump(self) -> None:
        """Keep the broker's window full, best lane first, with no task per publish.

        Waits for room in the window and for an item, then sends every due item
        the window has room for in one go (one socket write); each confirmation
        settles its item from a callback. A panic queued behind a flood of passes
        takes the next free slot: the lanes, not arrival order, decide.
        """
        link = self.link
        assert link is not None
        while True:
            await link.wait_connected()
            try:
                await link.wait_room(_PUMP_BURST)
            except (MqttNotConnected, MqttPublishError):
                continue
            queued: Queued[Outgoing] | None = await self.outbox.get()
            while queued is not None:
                self._send(link, queued)
                queued = self.outbox.get_nowait() if link.room else None

    def _send(self, link: MqttLink, queued: Queued[Outgoing]) -> None:
        item = queued.item
        payload = item.payload
        if item.dispatch is not None:
            if not payload:  # not recorded (durability off) or recovered: pack it now
                payload = item.payload = encode(item.dispatch.body)
            payload = with_packed_entries(payload, _DISPATCH_TS + packed_float(self.clock()))
        try:
            sent = link.send_nowait(
                item.topic,
                payload,
                functools.partial(self._settled, queued),
                qos=item.qos,
                retain=item.retain,
            )
        except (MqttNotConnected, MqttPublishError) as error:
            self._failed(queued, error)
            return
        if not sent:  # the window filled (cannot happen while we check `room`)
            self.outbox.defer(queued, 0.0)

    def _settled(self, queued: Queued[Outgoing], error: MqttError | None) -> None:
        if error is not None:
            self._failed(queued, error)
            return
        self.outbox.done(queued)
        now = self.clock()
        item = queued.item
        self.journal.delivered(item, now)
        if item.dispatch is not None:
            self._confirmed(item.dispatch, now)

    def _failed(self, queued: Queued[Outgoing], error: BaseException) -> None:
        dispatch = queued.item.dispatch
        sink_kind = dispatch.target.sink_kind if dispatch is not None else "gateway"
        self.metrics.dispatch_failures.labels(sink_kind).inc()
        self.log.debug("publish failed; will retry", topic=queued.item.topic, error=str(error))
        self.outbox.defer(queued, _RETRY_S)

    def _confirmed(self, dispatch: Dispatch, now: float) -> None:
        sink_kind = dispatch.target.sink_kind
        source = dispatch.source.value
        key = (sink_kind, int(dispatch.priority), source)
        children = self._dispatch_metrics.get(key)
        if children is None:  # labels() costs a lock and a lookup: once per combination
            m = self.metrics
            children = self._dispatch_metrics[key] = (
                m.dispatched.labels(sink_kind, str(key[1])),
                m.dispatch_latency.labels(source, sink_kind),
                m.device_to_dispatch.labels(source),
            )
        dispatched, dispatch_latency, device_to_dispatch = children
        dispatched.inc()
        latency = now - dispatch.ingress_ts
        dispatch_latency.observe(latency)
        if dispatch.device_ts is not None:
            device_to_dispatch.observe(now - dispatch.device_ts)
        if dispatch.target.channel is not Channel.ALARMS:
            return
        # The ack clock starts at the first confirmation. It is not written down
        # on its own (one store write fewer per alarm): after a restart an ack's
        # latency counts from when the alarm was raised, a few ms earlier.
        self.core.dispatched(dispatch, now)
        if not self.log_budget.allow("alarm dispatched", now):
            return
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
            await self._fire(self.clock())
            deadline = self.core.next_deadline()
            self._timer_target = deadline if deadline is not None else float("inf")
            self._timers_changed.clear()
            delay = None if deadline is None else max(0.0, deadline - self.clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._timers_changed.wait()

    async def _fire(self, now: float) -> None:
        tick = self.core.tick(now)
        publishes: list[Publish] = []
        allow = self.log_budget.allow
        for change in tick.availability:
            publishes.append(self._availability(change.device_id, change.online))
            what = "device offline" if not change.online else "device online"
            if allow(what, now):
                self.log.warning(
                    what, device=change.device_id, device_class=change.device_class.value
                )
        publishes.extend(self._publishes(None, tick.dispatches))
        publishes.extend(self._commands(tick.commands))
        for activation in tick.activations:
            self._log_activation(activation, now)
        for alarm_id in tick.escalated:
            self.metrics.escalations.inc()
            if allow("alarm escalated", now):
                self.log.warning("alarm escalated: no acknowledgement in time", alarm_id=alarm_id)
        if publishes or tick.alarms or tick.activations:
            stored = await self.journal.record(
                publishes, alarms=tick.alarms, activations=tick.activations, now=now
            )
            if not stored:
                # Time decided these, no device is waiting to retry them: send them
                # anyway, from memory, rather than not at all.
                for lane, item in publishes:
                    self.outbox.put(lane, item)

    async def _held_lines(self) -> None:
        """Once a second, how many log lines the budget held back, by kind."""
        while True:
            await anyio.sleep(_HELD_LINES_EVERY_S)
            held = self.log_budget.held()
            if held:
                self.log.warning(
                    "log lines held back (storm): the metrics count every event",
                    held=held,
                    window_s=_HELD_LINES_EVERY_S,
                )

    async def _pruner(self) -> None:
        """Delete what the store no longer needs, so it does not grow without bound."""
        store = self.journal.store
        assert store is not None
        retention_s = self.config.store.retention_h * 3600
        alarm_retention_s = self.config.store.alarm_retention_days * 86400
        while True:
            await anyio.sleep(_PRUNE_EVERY_S)
            now = self.clock()
            if not store.writable:
                continue
            pruned = await store.prune(
                delivered_before=now - retention_s,
                seen_before=now - self.core.dedup.window_s,
                alarms_before=now - alarm_retention_s,
                # Every state: an alarm untouched for the retention period is
                # history (one escalated past the top of the chain waits for nothing).
                final_states=[
                    *(state.value for state in AlarmState),
                    *(state.value for state in ActivationState),
                ],
            )
            self.log.info(
                "store pruned", outbox=pruned.outbox, seen=pruned.seen, alarms=pruned.alarms
            )

    def alarm(self, alarm_id: str) -> Alarm | None:
        """An alarm the gateway remembers (for tests and the operator's tools)."""
        return self.core.alarms.get(alarm_id)
