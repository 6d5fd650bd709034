"""The way of an event, up to the core's decision (DESIGN.md).

Bytes from any path come in; one of three values goes out:

* `Outcome`: accepted (duplicate or not), with what to dispatch;
* `Refused`: a rejection with its one reason (the dead letter, the metric
  label, the NAK and the log field, all at once) and the metric `source`;
* `Acked`: an operator's acknowledgement, judged.

Each path is a topic parse (MQTT) or a frame (serial), then a `protocols/`
decoder, then `devices/` normalisation, then `Core.accept`. Pure: `now` is an
argument. The shell only counts, stores, answers and publishes what comes out.

The MQTT path is the hot one (every phone heartbeat and checkpoint pass). A
topic under the phone or checkpoint prefix whose last level is a configured
device skips the general topic parse: the device's id is a valid topic level
(checked once, for every configured id, when the intake is built), so the parse
could only have said "this device", and the device found by the lookup is the
one normalisation would look up again. Anything else takes the general path,
so every refusal is the same value either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.checkpoint import checkpoint_event, normalise_checkpoint
from devices.events import Transport
from devices.phone import normalise_phone, normalise_receiver_event, phone_event
from gateway.core.pipeline import AckOutcome, Core, Outcome
from protocols.payloads import (
    PhoneMessage,
    RequestMessage,
    decode_ack,
    decode_checkpoint,
    decode_native,
    decode_phone,
    decode_phone_fields,
    decode_request,
)
from protocols.reasons import Reason, Rejected
from protocols.receiver import ReceiverEvent
from protocols.topics import AckTopic, IngressKind, RequestTopic, Topics, validate_id

__all__ = ["Acked", "Intake", "Refused", "Requested"]

# Enum members the hot path uses, read once: in Python 3.11 `Enum.MEMBER` goes
# through the enum metaclass's __getattr__ hook (50 ns); a module global is 8 ns.
_MQTT = Transport.MQTT


@dataclass(frozen=True, slots=True)
class Refused:
    """Input the gateway will not accept. `source` is a metric label."""

    source: str
    rejected: Rejected
    topic: str


@dataclass(frozen=True, slots=True)
class Acked:
    """An acknowledgement from the operator of sink `sink_kind`/`sink_id`."""

    sink_kind: str
    sink_id: str
    by: str
    outcome: AckOutcome


@dataclass(frozen=True, slots=True)
class Requested:
    """A request to a request/response API; `message` is Rejected when it could not
    be read (the answer then says why: a requester is owed a response either way)."""

    api: str
    op: str
    message: RequestMessage | Rejected
    topic: str


class Intake:
    """Turns what arrived into the core's decision."""

    def __init__(self, core: Core, topics: Topics) -> None:
        self.core = core
        self.topics = topics
        topology = self._topology = core.topology
        self._operators = core.operators
        """Sink (`kind/id`) → its operators; empty: acks are not checked by name."""
        self._households = topology.households
        self._checkpoints = topology.checkpoints
        # The prefixes `Topics` builds device topics under ("<base>/in/phone/").
        self._phone_prefix = topics.phone_in("-")[:-1]
        self._phone_start = len(self._phone_prefix)
        self._checkpoint_prefix = topics.checkpoint_in("-")[:-1]
        self._checkpoint_start = len(self._checkpoint_prefix)
        # The shortcut is only sound if every configured id is a valid topic level
        # (the config loader makes sure; a hand-built topology might not).
        self._shortcut = all(
            validate_id(device) is None for device in (*self._households, *self._checkpoints)
        )

    def mqtt(self, topic: str, payload: bytes, now: float) -> Outcome | Refused | Acked | Requested:
        """A message on any subscribed topic."""
        if self._shortcut:
            # The hot path (module docstring); a miss falls through to the general one.
            if topic.startswith(self._phone_prefix):
                household = topic[self._phone_start :]
                home = self._households.get(household)
                if home is not None:
                    fields = decode_phone_fields(payload)
                    if isinstance(fields, Rejected):
                        return Refused("phone", fields, topic)
                    return self.core.accept(
                        phone_event(home, fields, self._topology, _MQTT, now), now
                    )
            elif topic.startswith(self._checkpoint_prefix):
                checkpoint = topic[self._checkpoint_start :]
                site = self._checkpoints.get(checkpoint)
                if site is not None:
                    seen = decode_checkpoint(checkpoint, payload)
                    if isinstance(seen, Rejected):
                        return Refused("checkpoint", seen, topic)
                    return self.core.accept(checkpoint_event(seen, site, _MQTT, now), now)
        where = self.topics.parse(topic)
        if isinstance(where, Rejected):
            return Refused("unknown", where, topic)
        if isinstance(where, RequestTopic):
            return Requested(where.api, where.op, decode_request(payload), topic)
        if isinstance(where, AckTopic):
            ack = decode_ack(payload)
            if isinstance(ack, Rejected):
                return Refused("ack", ack, topic)
            if self._operators:
                sink = f"{where.sink_kind}/{where.sink_id}"
                if ack.by not in self._operators.get(sink, ()):
                    detail = f"{ack.by!r} is not an operator of {sink} ([operators])"
                    rejected = Rejected(Reason.UNKNOWN_OPERATOR, bytes(payload), detail)
                    return Refused("ack", rejected, topic)
            judged = self.core.acknowledge(ack.alarm_id, ack.by, now)
            return Acked(where.sink_kind, where.sink_id, ack.by, judged)
        if where.kind is IngressKind.PHONE:
            phone = decode_phone(where.device_id, payload)
            if isinstance(phone, Rejected):
                return Refused("phone", phone, topic)
            event = normalise_phone(phone, self._topology, transport=Transport.MQTT, ingress_ts=now)
            source = "phone"
        else:
            seen = decode_checkpoint(where.device_id, payload)
            if isinstance(seen, Rejected):
                return Refused("checkpoint", seen, topic)
            event = normalise_checkpoint(
                seen, self._topology, transport=Transport.MQTT, ingress_ts=now
            )
            source = "checkpoint"
        if isinstance(event, Rejected):
            return Refused(source, event, topic)
        return self.core.accept(event, now)

    def native_frame(self, payload: bytes, now: float, port: str) -> Outcome | Refused:
        """The payload of a native serial frame from port `port`."""
        where = f"serial:{port}"
        message = decode_native(payload)
        if isinstance(message, Rejected):
            return Refused("unknown", message, where)
        if isinstance(message, PhoneMessage):
            event = normalise_phone(
                message, self._topology, transport=Transport.SERIAL, ingress_ts=now
            )
            source = "phone"
        else:
            event = normalise_checkpoint(
                message, self._topology, transport=Transport.SERIAL, ingress_ts=now
            )
            source = "checkpoint"
        if isinstance(event, Rejected):
            return Refused(source, event, where)
        return self.core.accept(event, now)

    def receiver_record(self, record: ReceiverEvent, now: float, port: str) -> Outcome | Refused:
        """A Contact ID record an alarm receiver printed on port `port`."""
        event = normalise_receiver_event(record, self._topology, ingress_ts=now)
        if isinstance(event, Rejected):
            return Refused("phone", event, f"serial:{port}")
        return self.core.accept(event, now)
