"""The contract's MQTT topic tree: build every topic, parse the ones the gateway hears.

Theory of operation (CONTRACT.md, "Ingress" and "Egress"; MQTT 5.0 section 4.7):

Everything lives under one base topic (`alarmgw` by default, config
`mqtt.base_topic`). `Topics` is built once from the base and precomputes the three
prefixes the gateway subscribes under, so `parse` on the hot path is a prefix test,
at most one split and one id check, with no regular expression:

    <base>/in/phone/<household_id>          -> IngressTopic(PHONE, household_id)
    <base>/in/checkpoint/<checkpoint_id>    -> IngressTopic(CHECKPOINT, checkpoint_id)
    <base>/ack/<sink_kind>/<sink_id>        -> AckTopic(sink_kind, sink_id)

Anything else is `Rejected(BAD_TOPIC)`. An id that sits in the right place but could
never have been built by `Topics` (see `validate_id`) is `Rejected(BAD_ID)`: the
broker delivers an empty level or a control character under a `+` subscription, and
such an id must never reach the store, a metric or an egress topic.

Ids are one topic level each, so they may not contain `/` or the wildcards `+` and
`#`, nor anything MQTT forbids or discourages in a topic (NUL, control characters,
C1 controls, unpaired surrogates, non-characters). Leading or trailing whitespace is
refused because it is invisible on an operator's console and makes two ids look
alike. Any other printable character is fine: ids such as `东山村-03` are normal.

Builders are used with ids from our own configuration, so an invalid id there is a
bug or a config error that the loader should have caught: they raise ValueError.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from protocols.reasons import Reason, Rejected

__all__ = [
    "DEFAULT_BASE",
    "MAX_BASE_LEN",
    "MAX_ID_LEN",
    "REQUEST_APIS",
    "AckTopic",
    "IngressKind",
    "IngressTopic",
    "RequestTopic",
    "Topics",
    "validate_base",
    "validate_id",
]

DEFAULT_BASE: Final = "alarmgw"
"""The base topic when the config does not set `mqtt.base_topic`."""

MAX_ID_LEN: Final = 64
"""Longest device or sink id, in characters."""

MAX_BASE_LEN: Final = 256
"""Longest base topic, in characters; MQTT allows 65535 bytes for a whole topic."""


REQUEST_APIS: Final = ("interception",)
"""Request/response APIs: `<base>/<api>/request/<op>` answered on
`<base>/<api>/response/<op>` (the shape of zigbee2mqtt's bridge/request)."""


def validate_id(value: str) -> str | None:
    """Return None if `value` can be one topic level of the contract, else why not."""
    # Fast path first: ids are short printable text, so one C-level scan each.
    if (
        value
        and len(value) <= MAX_ID_LEN
        and value.isprintable()
        and "/" not in value
        and "+" not in value
        and "#" not in value
        and value == value.strip()
    ):
        return None
    if not value:
        return "is empty"
    if len(value) > MAX_ID_LEN:
        return f"is longer than {MAX_ID_LEN} characters ({len(value)})"
    for char in value:
        if char == "/":
            return "contains the topic level separator '/'"
        if char in "+#":
            return f"contains the MQTT wildcard {char!r}"
        if not char.isprintable():
            return f"contains the non-printable character U+{ord(char):04X}"
    return "has leading or trailing whitespace"


def validate_base(base: str) -> str | None:
    """Return None if `base` can be the base topic, else why not.

    A base may have several levels (`city/district7/alarmgw`); each level obeys the
    id rules, so there are no wildcards and no empty levels. A leading `$` is refused
    because brokers reserve `$`-topics (`$SYS`, `$share`) and wildcards skip them.
    """
    if not base:
        return "is empty"
    if len(base) > MAX_BASE_LEN:
        return f"is longer than {MAX_BASE_LEN} characters ({len(base)})"
    if base.startswith("$"):
        return "starts with '$', which brokers reserve"
    for level in base.split("/"):
        if not level:
            return "has an empty level (leading, trailing or double '/')"
        why = validate_id(level)
        if why is not None:
            return f"level {level!r} {why}"
    return None


class IngressKind(enum.StrEnum):
    """Which ingress tree a topic belongs to; the value is its topic level."""

    PHONE = "phone"
    CHECKPOINT = "checkpoint"


@dataclass(frozen=True, slots=True)
class IngressTopic:
    """A parsed device ingress topic."""

    kind: IngressKind
    device_id: str


@dataclass(frozen=True, slots=True)
class AckTopic:
    """A parsed acknowledgement topic: which sink's operator acknowledged."""

    sink_kind: str
    sink_id: str


@dataclass(frozen=True, slots=True)
class RequestTopic:
    """A parsed request topic: which API and which operation."""

    api: str
    op: str


def _checked(what: str, value: str) -> str:
    why = validate_id(value)
    if why is not None:
        raise ValueError(f"invalid {what} {value!r}: {why}")
    return value


def _encoded(topic: str) -> bytes:
    # surrogatepass: a topic is whatever the client library decoded, and the dead
    # letter must keep it even if it holds an unpaired surrogate.
    return topic.encode("utf-8", "surrogatepass")


class Topics:
    """Every topic of the contract under one base, built once from the config."""

    __slots__ = ("_ack", "_checkpoint", "_phone", "_requests", "base", "deadletter", "state")

    def __init__(self, base: str = DEFAULT_BASE) -> None:
        why = validate_base(base)
        if why is not None:
            raise ValueError(f"invalid base topic {base!r}: {why}")
        self.base: Final = base
        self.state: Final = f"{base}/state"
        """Retained `online`/`offline`: the gateway's Last Will."""
        self.deadletter: Final = f"{base}/deadletter"
        """Rejected input: `{reason, topic, raw, ts}`."""
        self._phone: Final = f"{base}/in/phone/"
        self._checkpoint: Final = f"{base}/in/checkpoint/"
        self._ack: Final = f"{base}/ack/"
        self._requests: Final = {f"{base}/{api}/request/": api for api in REQUEST_APIS}

    def __repr__(self) -> str:
        return f"Topics({self.base!r})"

    # ------------------------------------------------------------ builders

    def phone_in(self, household: str) -> str:
        """Where household `household`'s phone publishes."""
        return self._phone + _checked("household id", household)

    def checkpoint_in(self, checkpoint: str) -> str:
        """Where checkpoint `checkpoint` publishes."""
        return self._checkpoint + _checked("checkpoint id", checkpoint)

    def alarms(self, sink_kind: str, sink_id: str) -> str:
        """Alarms and troubles for one sink (QoS 1)."""
        return self._out(sink_kind, sink_id) + "/alarms"

    def passes(self, sink_kind: str, sink_id: str) -> str:
        """Checkpoint vehicle passes routed to one sink."""
        return self._out(sink_kind, sink_id) + "/passes"

    def commands(self, sink_kind: str, sink_id: str) -> str:
        """Retained orders to one device sink (a checkpoint: interception)."""
        return self._out(sink_kind, sink_id) + "/commands"

    def ack(self, sink_kind: str, sink_id: str) -> str:
        """Where one sink's operators acknowledge alarms."""
        return f"{self._ack}{_checked('sink kind', sink_kind)}/{_checked('sink id', sink_id)}"

    def availability(self, device_id: str) -> str:
        """Retained `online`/`offline` of one device, from heartbeat supervision."""
        return f"{self.base}/availability/{_checked('device id', device_id)}"

    def request(self, api: str, op: str) -> str:
        """Where a request of `api` (REQUEST_APIS) for operation `op` is sent."""
        return f"{self.base}/{api}/request/{_checked('operation', op)}"

    def response(self, api: str, op: str) -> str:
        """Where the gateway answers a request of `api` for operation `op`."""
        return f"{self.base}/{api}/response/{_checked('operation', op)}"

    def subscriptions(self) -> tuple[str, ...]:
        """The topic filters the gateway subscribes to."""
        return (
            self._phone + "+",
            self._checkpoint + "+",
            self._ack + "+/+",
            *(prefix + "+" for prefix in self._requests),
        )

    def _out(self, sink_kind: str, sink_id: str) -> str:
        return f"{self.base}/out/{_checked('sink kind', sink_kind)}/{_checked('sink id', sink_id)}"

    # ------------------------------------------------------------ parsing

    def parse(self, topic: str) -> IngressTopic | AckTopic | RequestTopic | Rejected:
        """Classify a topic the gateway received; never raises."""
        if topic.startswith(self._phone):
            return self._ingress(IngressKind.PHONE, topic, len(self._phone))
        if topic.startswith(self._checkpoint):
            return self._ingress(IngressKind.CHECKPOINT, topic, len(self._checkpoint))
        if topic.startswith(self._ack):
            levels = topic[len(self._ack) :].split("/")
            if len(levels) != 2:
                return Rejected(
                    Reason.BAD_TOPIC, _encoded(topic), "an ack topic is <base>/ack/<kind>/<id>"
                )
            sink_kind, sink_id = levels
            why = validate_id(sink_kind)
            if why is not None:
                return Rejected(Reason.BAD_ID, _encoded(topic), f"sink kind {why}")
            why = validate_id(sink_id)
            if why is not None:
                return Rejected(Reason.BAD_ID, _encoded(topic), f"sink id {why}")
            return AckTopic(sink_kind, sink_id)
        for prefix, api in self._requests.items():
            if topic.startswith(prefix):
                op = topic[len(prefix) :]
                why = validate_id(op)
                if why is not None:
                    return Rejected(Reason.BAD_TOPIC, _encoded(topic), f"request operation {why}")
                return RequestTopic(api, op)
        return Rejected(Reason.BAD_TOPIC, _encoded(topic), "not an ingress, ack or request topic")

    def _ingress(self, kind: IngressKind, topic: str, start: int) -> IngressTopic | Rejected:
        device_id = topic[start:]
        if "/" in device_id:
            return Rejected(
                Reason.BAD_TOPIC, _encoded(topic), f"a {kind} topic has one level after '{kind}'"
            )
        why = validate_id(device_id)
        if why is not None:
            return Rejected(Reason.BAD_ID, _encoded(topic), f"{kind} id {why}")
        return IngressTopic(kind, device_id)
