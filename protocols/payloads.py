"""Ingress payloads: MessagePack (or JSON) maps from phones, checkpoints and consoles.

Theory of operation (CONTRACT.md, "Ingress" and "Egress"):

1. `decode_map` is the shared first step. A payload larger than `MAX_PAYLOAD` is
   refused before a single byte is parsed (TOO_LARGE). A payload whose first
   non-whitespace byte is `{` is JSON; anything else is MessagePack. The two never
   collide: a MessagePack map starts with 0x80-0x8f, 0xde or 0xdf, and a JSON
   object with `{` (0x7b), possibly after JSON whitespace (RFC 8259 section 2), which
   would be MessagePack fixints and so never the start of a single map. Exactly one
   object must fill the payload; trailing bytes are BAD_ENCODING. Top-level keys must
   be strings.
2. The per-kind decoders read each contract key with one dict lookup, check its type
   (a bool is not an int: `type(x) is int`), then its range, and build one frozen
   message. The first failure wins, in contract table order, and names the key in
   `detail`. `v` is checked first because every other key's meaning depends on it.
3. Unknown keys are ignored: a v1 device may grow a key before this gateway learns
   it, and forward compatibility is cheaper than a fleet-wide firmware lock-step.
   For the same reason an optional key whose value is nil/null counts as absent.
   Keys the contract marks "pass only" (`plate`, `conf`, `lane`, `dir`, `speed`,
   `vtype`, `color`) are read only on a `pass`, and `fault` only on a `fault`.
4. Timestamps are device clocks, so any finite number is accepted (an int is
   widened to float): a panic is never dropped because a phone's clock is wrong;
   judging skew is the devices layer's job. NaN and infinities are OUT_OF_RANGE.
   JSON's non-standard `NaN`/`Infinity` literals are not JSON (RFC 8259) and are
   BAD_ENCODING.
5. Native serial frames (CONTRACT.md, "Serial ingress") carry the same map plus
   `kind` (`phone`/`checkpoint`) and `device`, the id that the MQTT path takes from
   the topic; `device` is validated exactly like a topic id.

6. Each per-kind decoder first tries the common case in one pass: every key read
   once, every check inline, no helper calls. Whatever that pass is not sure of
   (a failure, but also an integer timestamp or a `fault`) goes to the checked
   decoder, which reads key by key in contract order and so finds the first
   failure and names it. The pass only ever accepts what the checked decoder
   would accept, with the same values; tests hold the two together. The phone
   pass also spares `decode_map`'s look at every key's type when the map holds
   nothing but the contract keys it has just read as strings.
7. Frozen dataclasses cost an `object.__setattr__` per field to build, because
   their own `__setattr__` refuses the store. `unfrozen_builder(cls)` makes a
   constructor without that cost: a private twin class with the same slots and a
   plain generated `__init__` stores the fields, and then the instance's
   `__class__` is set to `cls` (CPython allows that between classes of one
   layout). The result *is* a `cls`, equal to one built the usual way and as
   immutable. The messages here, `Event` and `Transition` (devices/), and the
   core's outcomes, dispatches and targets are built this way. It lives here because
   `protocols/` is the one room every other room may import (DESIGN.md).

Decoding is on the hot path (about 10,000 events/s), so there is no schema library
and no allocation beyond the decoded map and the result; error text is built only
on the failure path. Decoders never raise on peer bytes: every refusal is a
`Rejected` whose `raw` is the payload (at most `MAX_PAYLOAD` bytes of it).

The encoders produce the same maps for the egress, the simulators and the tests.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, ParamSpec, TypeAlias, TypeVar

import msgpack

from protocols.reasons import Reason, Rejected
from protocols.topics import validate_id

__all__ = [
    "MAX_PAYLOAD",
    "VERSION",
    "AckMessage",
    "CheckpointEventType",
    "CheckpointMessage",
    "PhoneFields",
    "PhoneMessage",
    "RequestMessage",
    "ack_payload",
    "checkpoint_payload",
    "deadletter_payload",
    "decode_ack",
    "decode_checkpoint",
    "decode_map",
    "decode_native",
    "decode_phone",
    "decode_phone_fields",
    "decode_request",
    "encode",
    "native_payload",
    "packed_float",
    "packed_str",
    "phone_payload",
    "unfrozen_builder",
    "with_packed_entries",
]

_T = TypeVar("_T")
_P = ParamSpec("_P")

MAX_PAYLOAD: Final = 8192
"""Largest accepted payload in bytes; a contract map is well under 1 KiB."""

VERSION: Final = 1
"""The contract version (`v`) this gateway speaks."""

_MAX_SEQ: Final = 2**63 - 1  # fits a signed 64-bit column in the store
_QUALIFIERS: Final = frozenset({1, 3, 6})  # Contact ID: new, restore, previously reported
_DIRECTIONS: Final = frozenset({"in", "out"})
_MAX_CHECKPOINT_ID: Final = 64
_MAX_PLATE: Final = 16  # longest real plates are 8-9 characters; room for separators
_MAX_SHORT_TEXT: Final = 32  # vtype, color
_MAX_IMG: Final = 1024
_MAX_FAULT: Final = 256
_MAX_LANE: Final = 999
_MAX_ALARM_ID: Final = 128
_MAX_OPERATOR: Final = 64
_JSON_WHITESPACE: Final = frozenset(b" \t\r\n")  # RFC 8259 section 2
_JSON_OPEN: Final = 0x7B  # "{"
_NATIVE_KINDS: Final = frozenset({"phone", "checkpoint"})
_MISSING: Final = object()
_INF: Final = math.inf
_NEG_INF: Final = -math.inf


def unfrozen_builder(cls: Callable[_P, _T]) -> Callable[_P, _T]:
    """A constructor for the frozen, slotted dataclass `cls` without the frozen cost.

    Same parameters, defaults and result as `cls(...)` (module docstring, point 7);
    `cls` must have no `__post_init__` (it would not run) and only `init` fields.
    Misuse raises TypeError when the builder is made, not when it is used.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if not isinstance(cls, type) or params is None or not params.frozen:
        raise TypeError(f"{cls!r} is not a frozen dataclass")
    name = cls.__name__
    if "__slots__" not in cls.__dict__:
        raise TypeError(f"{name} has no slots")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{name} has a __post_init__ the builder would skip")
    fields = dataclasses.fields(cls)
    if not all(f.init for f in fields):
        raise TypeError(f"{name} has fields outside __init__")

    def seal(self: object) -> None:
        # The twin's __init__ has stored every slot: from now on it is a `cls`.
        self.__class__ = cls

    twin = dataclasses.make_dataclass(
        f"_Unfrozen{name}",
        [
            (
                f.name,
                f.type,
                dataclasses.field(default=f.default, default_factory=f.default_factory),
            )
            for f in fields
        ],
        namespace={"__post_init__": seal},
        slots=True,
        repr=False,
        eq=False,
        match_args=False,
    )
    if twin.__dict__["__slots__"] != cls.__dict__["__slots__"]:  # pragma: no cover - defensive
        raise TypeError(f"{name}: the twin's slots differ")
    built: Callable[_P, _T] = twin
    return built


class CheckpointEventType(enum.StrEnum):
    """What a checkpoint camera reports (CONTRACT.md, checkpoint `type`)."""

    PASS = "pass"  # noqa: S105  (a vehicle pass, not a password)
    HEARTBEAT = "heartbeat"
    FAULT = "fault"


_EVENT_TYPES: Final = {member.value: member for member in CheckpointEventType}

# Enum members the hot path uses, read once: in Python 3.11 `Enum.MEMBER` goes
# through the enum metaclass's __getattr__ hook (50 ns); a module global is 8 ns.
_PASS: Final = CheckpointEventType.PASS
_HEARTBEAT: Final = CheckpointEventType.HEARTBEAT


@dataclass(frozen=True, slots=True)
class PhoneMessage:
    """A Contact ID event from a household alarm phone; (household, seq) is its identity."""

    household: str
    seq: int
    ts: float
    q: int
    code: int
    zone: int
    part: int = 1


@dataclass(frozen=True, slots=True)
class CheckpointMessage:
    """A checkpoint camera record; (checkpoint, id) is its identity."""

    checkpoint: str
    id: str
    type: CheckpointEventType
    ts: float
    plate: str | None = None
    conf: float | None = None
    lane: int | None = None
    dir: str | None = None
    speed: float | None = None
    vtype: str | None = None
    color: str | None = None
    img: str | None = None
    fault: str | None = None


PhoneFields: TypeAlias = tuple[int, float, int, int, int, int]
"""A phone message's values, as `PhoneMessage` has them: seq, ts, q, code, zone, part.

What the MQTT hot path decodes into (`decode_phone_fields`): the household is
the topic's, and a tuple is several times cheaper to build than a message.
"""

_new_phone = unfrozen_builder(PhoneMessage)
_new_checkpoint = unfrozen_builder(CheckpointMessage)


@dataclass(frozen=True, slots=True)
class AckMessage:
    """An operator's acknowledgement of a dispatched alarm (CONTRACT.md, `ack` topic)."""

    alarm_id: str
    by: str
    ts: float


# ------------------------------------------------------------------ failure helpers
# Only called once a check has failed, so they may spend time on good text.


def _raw(payload: bytes) -> bytes:
    return bytes(payload[:MAX_PAYLOAD])


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: object) -> str:
    return "nil" if value is None else type(value).__name__


def _missing(key: str, raw: bytes) -> Rejected:
    return Rejected(Reason.MISSING_KEY, _raw(raw), f"missing key {key!r}")


def _wrong_type(key: str, expected: str, value: object, raw: bytes) -> Rejected:
    return Rejected(
        Reason.WRONG_TYPE, _raw(raw), f"{key!r} must be {expected}, got {_type_name(value)}"
    )


def _out_of_range(key: str, allowed: str, value: object, raw: bytes) -> Rejected:
    return Rejected(
        Reason.OUT_OF_RANGE, _raw(raw), f"{key!r} must be {allowed}, got {_show(value)}"
    )


# ------------------------------------------------------------------ field readers
# Each reads one key with one lookup and returns the value or the Rejected.


def _int(m: Mapping[str, object], key: str, lo: int, hi: int, raw: bytes) -> int | Rejected:
    value = m.get(key, _MISSING)
    if type(value) is int:  # not isinstance: a bool is not a count
        if lo <= value <= hi:
            return value
        return _out_of_range(key, f"{lo}-{hi}", value, raw)
    if value is _MISSING:
        return _missing(key, raw)
    return _wrong_type(key, "an int", value, raw)


def _opt_int(
    m: Mapping[str, object], key: str, lo: int, hi: int, raw: bytes, *, default: int | None
) -> int | Rejected | None:
    value = m.get(key)
    if value is None:
        return default
    if type(value) is int:
        if lo <= value <= hi:
            return value
        return _out_of_range(key, f"{lo}-{hi}", value, raw)
    return _wrong_type(key, "an int", value, raw)


def _as_float(key: str, value: object, lo: float, hi: float, raw: bytes) -> float | Rejected:
    if type(value) is float:
        number = value
    elif type(value) is int:
        try:
            number = float(value)
        except OverflowError:  # a JSON integer with hundreds of digits
            return _out_of_range(key, "a finite number", value, raw)
    else:
        return _wrong_type(key, "a number", value, raw)
    if not math.isfinite(number):
        return _out_of_range(key, "a finite number", number, raw)
    if lo <= number <= hi:
        return number
    return _out_of_range(key, f"{lo:g}-{hi:g}", number, raw)


def _float(m: Mapping[str, object], key: str, lo: float, hi: float, raw: bytes) -> float | Rejected:
    value = m.get(key, _MISSING)
    if value is _MISSING:
        return _missing(key, raw)
    return _as_float(key, value, lo, hi, raw)


def _opt_float(
    m: Mapping[str, object], key: str, lo: float, hi: float, raw: bytes
) -> float | Rejected | None:
    value = m.get(key)
    if value is None:
        return None
    return _as_float(key, value, lo, hi, raw)


def _check_str(key: str, value: str, min_len: int, max_len: int, raw: bytes) -> Rejected | None:
    if min_len <= len(value) <= max_len:
        return None
    if min_len and not value:
        return Rejected(Reason.OUT_OF_RANGE, _raw(raw), f"{key!r} must not be empty")
    return Rejected(
        Reason.OUT_OF_RANGE,
        _raw(raw),
        f"{key!r} must be at most {max_len} characters, got {len(value)}",
    )


def _str(
    m: Mapping[str, object], key: str, min_len: int, max_len: int, raw: bytes
) -> str | Rejected:
    value = m.get(key, _MISSING)
    if type(value) is str:
        bad = _check_str(key, value, min_len, max_len, raw)
        return value if bad is None else bad
    if value is _MISSING:
        return _missing(key, raw)
    return _wrong_type(key, "a string", value, raw)


def _opt_str(m: Mapping[str, object], key: str, max_len: int, raw: bytes) -> str | Rejected | None:
    value = m.get(key)
    if value is None:
        return None
    if type(value) is str:
        bad = _check_str(key, value, 0, max_len, raw)
        return value if bad is None else bad
    return _wrong_type(key, "a string", value, raw)


def _version(m: Mapping[str, object], raw: bytes, *, required: bool = True) -> Rejected | None:
    value = m.get("v", _MISSING)
    if type(value) is int and value == VERSION:
        return None
    if value is _MISSING:
        return _missing("v", raw) if required else None
    if type(value) is not int:
        return _wrong_type("v", "an int", value, raw)
    return Rejected(
        Reason.UNKNOWN_VERSION,
        _raw(raw),
        f"unknown contract version {_show(value)}, this gateway speaks {VERSION}",
    )


# ------------------------------------------------------------------ decoding


def decode_map(payload: bytes) -> dict[str, object] | Rejected:
    """Decode one MessagePack map, or one JSON object, filling the whole payload."""
    m = _unpack_map(payload)
    if isinstance(m, Rejected):
        return m
    bad = _key_problem(m, payload)
    return m if bad is None else bad


def _key_problem(keys: Iterable[object], payload: bytes) -> Rejected | None:
    for key in keys:
        if type(key) is not str:  # strict_map_key still lets bin keys through
            return Rejected(
                Reason.WRONG_TYPE, bytes(payload), f"map keys must be strings, got {_show(key)}"
            )
    return None


def _unpack_map(payload: bytes) -> dict[str, object] | Rejected:
    # `decode_map` without the check of the keys' type (`_key_problem`): the
    # phone decoder can often tell it is not needed (see `_phone`), so until
    # then the `str` in the annotation is a promise still to be kept.
    size = len(payload)
    if size > MAX_PAYLOAD:
        return Rejected(
            Reason.TOO_LARGE, _raw(payload), f"payload is {size} bytes, limit {MAX_PAYLOAD}"
        )
    if not size:
        return Rejected(Reason.BAD_ENCODING, b"", "empty payload")
    first = payload[0]
    if first == _JSON_OPEN or (first in _JSON_WHITESPACE and payload.lstrip()[:1] == b"{"):
        return _decode_json(payload)
    try:
        # First without keywords, which cost a tenth of the call. msgpack (>= 1.0)
        # then decodes str as str, refuses map keys other than str and bin, and
        # bounds every length by the payload's own size: tighter than the limits
        # below, yet never exceeded by a complete object. So this call accepts
        # what the one below accepts, as the same object; whatever it refuses,
        # the one below refuses with the text of our limits.
        obj = msgpack.unpackb(payload)
    except (ValueError, msgpack.UnpackException):
        try:
            # The limits bound what a hostile header can make the unpacker allocate;
            # the payload is at most MAX_PAYLOAD, so no honest length exceeds them.
            obj = msgpack.unpackb(
                payload,
                raw=False,
                strict_map_key=True,
                max_str_len=MAX_PAYLOAD,
                max_bin_len=MAX_PAYLOAD,
                max_array_len=MAX_PAYLOAD,
                max_map_len=MAX_PAYLOAD // 2,
                max_ext_len=MAX_PAYLOAD,
            )
        except msgpack.ExtraData:
            return Rejected(
                Reason.BAD_ENCODING, bytes(payload), "trailing bytes after the MessagePack object"
            )
        except (ValueError, msgpack.UnpackException) as exc:
            # ValueError covers FormatError, StackError, incomplete input, invalid
            # UTF-8, over-limit lengths and non-string map keys.
            return Rejected(Reason.BAD_ENCODING, bytes(payload), f"not MessagePack: {exc}"[:200])
    if type(obj) is not dict:
        return Rejected(Reason.NOT_A_MAP, bytes(payload), f"expected a map, got {_type_name(obj)}")
    return obj


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _decode_json(payload: bytes) -> dict[str, object] | Rejected:
    try:
        # A text that starts with "{" and parses is an object, hence the annotation.
        obj: dict[str, object] = json.loads(
            payload.decode("utf-8"), parse_constant=_reject_constant
        )
    except UnicodeDecodeError:
        return Rejected(Reason.BAD_ENCODING, bytes(payload), "JSON payload is not UTF-8")
    except (ValueError, RecursionError) as exc:
        # ValueError: syntax (JSONDecodeError), NaN/Infinity, integers with more digits
        # than int() allows. RecursionError: absurd nesting.
        return Rejected(Reason.BAD_ENCODING, bytes(payload), f"not JSON: {exc}"[:200])
    # JSON may escape half of a surrogate pair ("\ud800") on its own: Python takes
    # it as a string no UTF-8 can carry, and the dispatch (MessagePack) could not
    # be encoded. Only an escape can make one, so only then is the map walked.
    if _SURROGATE_ESCAPE.search(payload) is not None and not _utf8_clean(obj):
        return Rejected(
            Reason.BAD_ENCODING, bytes(payload), "JSON payload escapes a lone surrogate"
        )
    return obj


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _utf8_clean(value: object) -> bool:
    """Whether every string in a decoded JSON value (keys included) is valid UTF-8 text."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _phone(household: str, m: Mapping[str, object], raw: bytes) -> PhoneMessage | Rejected:
    fields = _phone_fields(m, raw)
    if isinstance(fields, Rejected):
        return fields
    return _new_phone(household, *fields)


def _phone_fields(m: Mapping[str, object], raw: bytes) -> PhoneFields | Rejected:
    # The common case in one pass (module docstring, point 6); anything else,
    # good or bad, is decided by `_phone_checked`.
    try:
        v = m["v"]
        seq = m["seq"]
        ts = m["ts"]
        q = m["q"]
        code = m["code"]
        zone = m["zone"]
    except KeyError:
        return _phone_checked(m, raw)
    part = m.get("part", _MISSING)
    keys = 7  # how many keys of the map are known to be strings
    if part is _MISSING:
        part = 1
        keys = 6
    elif part is None:
        part = 1
    if (
        type(v) is int
        and v == VERSION
        and type(seq) is int
        and 0 <= seq <= _MAX_SEQ
        and type(ts) is float
        and _NEG_INF < ts < _INF
        and type(q) is int
        and q in _QUALIFIERS
        and type(code) is int
        and 100 <= code <= 999
        and type(zone) is int
        and 0 <= zone <= 999
        and type(part) is int
        and 0 <= part <= 99
        # The contract keys just read are strings; if they are all the map has,
        # no key can be of another type, and `_key_problem` need not look.
        and (len(m) == keys or _key_problem(m, raw) is None)
    ):
        return seq, ts, q, code, zone, part
    return _phone_checked(m, raw)


def _phone_checked(m: Mapping[str, object], raw: bytes) -> PhoneFields | Rejected:
    bad = _key_problem(m, raw)  # what `decode_map` refuses comes first
    if bad is not None:
        return bad
    # Only contract keys are read; unknown extra keys are ignored on purpose, for
    # forward compatibility with devices that speak a later minor addition.
    bad = _version(m, raw)
    if bad is not None:
        return bad
    seq = _int(m, "seq", 0, _MAX_SEQ, raw)
    if isinstance(seq, Rejected):
        return seq
    ts = _float(m, "ts", -math.inf, math.inf, raw)
    if isinstance(ts, Rejected):
        return ts
    q = m.get("q", _MISSING)
    if type(q) is not int:
        return _missing("q", raw) if q is _MISSING else _wrong_type("q", "an int", q, raw)
    if q not in _QUALIFIERS:
        return _out_of_range("q", "one of 1, 3, 6", q, raw)
    code = _int(m, "code", 100, 999, raw)
    if isinstance(code, Rejected):
        return code
    zone = _int(m, "zone", 0, 999, raw)
    if isinstance(zone, Rejected):
        return zone
    part = _opt_int(m, "part", 0, 99, raw, default=1)
    if isinstance(part, Rejected):
        return part
    assert part is not None  # the default is 1
    return seq, ts, q, code, zone, part


def _checkpoint(
    checkpoint: str, m: Mapping[str, object], raw: bytes
) -> CheckpointMessage | Rejected:
    # The common cases, a pass and a heartbeat, in one pass (module docstring,
    # point 6); anything else, good or bad, is decided by `_checkpoint_checked`.
    try:
        v = m["v"]
        record_id = m["id"]
        type_value = m["type"]
        ts = m["ts"]
    except KeyError:
        return _checkpoint_checked(checkpoint, m, raw)
    get = m.get
    img = get("img")
    if (
        type(v) is int
        and v == VERSION
        and type(record_id) is str
        and 1 <= len(record_id) <= _MAX_CHECKPOINT_ID
        and type(type_value) is str
        and type(ts) is float
        and _NEG_INF < ts < _INF
        and (img is None or (type(img) is str and len(img) <= _MAX_IMG))
    ):
        if type_value == "pass":
            plate = get("plate")
            conf = get("conf")
            lane = get("lane")
            direction = get("dir")
            speed = get("speed")
            vtype = get("vtype")
            color = get("color")
            if (
                type(plate) is str
                and len(plate) <= _MAX_PLATE
                and type(conf) is float
                and 0.0 <= conf <= 1.0
                and (lane is None or (type(lane) is int and 0 <= lane <= _MAX_LANE))
                and (direction is None or (type(direction) is str and direction in _DIRECTIONS))
                and (speed is None or (type(speed) is float and 0.0 <= speed < _INF))
                and (vtype is None or (type(vtype) is str and len(vtype) <= _MAX_SHORT_TEXT))
                and (color is None or (type(color) is str and len(color) <= _MAX_SHORT_TEXT))
            ):
                return _new_checkpoint(
                    checkpoint,
                    record_id,
                    _PASS,
                    ts,
                    plate,
                    conf,
                    lane,
                    direction,
                    speed,
                    vtype,
                    color,
                    img,
                )
        elif type_value == "heartbeat":
            return _new_checkpoint(checkpoint, record_id, _HEARTBEAT, ts, img=img)
    return _checkpoint_checked(checkpoint, m, raw)


def _checkpoint_checked(
    checkpoint: str, m: Mapping[str, object], raw: bytes
) -> CheckpointMessage | Rejected:
    bad = _version(m, raw)
    if bad is not None:
        return bad
    record_id = _str(m, "id", 1, _MAX_CHECKPOINT_ID, raw)
    if isinstance(record_id, Rejected):
        return record_id
    type_value = m.get("type", _MISSING)
    if type(type_value) is not str:
        if type_value is _MISSING:
            return _missing("type", raw)
        return _wrong_type("type", "a string", type_value, raw)
    event_type = _EVENT_TYPES.get(type_value)
    if event_type is None:
        return _out_of_range("type", "one of pass, heartbeat, fault", type_value, raw)
    ts = _float(m, "ts", -math.inf, math.inf, raw)
    if isinstance(ts, Rejected):
        return ts
    img = _opt_str(m, "img", _MAX_IMG, raw)
    if isinstance(img, Rejected):
        return img
    if event_type is CheckpointEventType.HEARTBEAT:
        return _new_checkpoint(checkpoint, record_id, event_type, ts, img=img)
    if event_type is CheckpointEventType.FAULT:
        fault = _str(m, "fault", 0, _MAX_FAULT, raw)
        if isinstance(fault, Rejected):
            return fault
        return _new_checkpoint(checkpoint, record_id, event_type, ts, img=img, fault=fault)
    plate = _str(m, "plate", 0, _MAX_PLATE, raw)
    if isinstance(plate, Rejected):
        return plate
    conf = _float(m, "conf", 0.0, 1.0, raw)
    if isinstance(conf, Rejected):
        return conf
    lane = _opt_int(m, "lane", 0, _MAX_LANE, raw, default=None)
    if isinstance(lane, Rejected):
        return lane
    direction = m.get("dir")
    if direction is not None:
        if type(direction) is not str:
            return _wrong_type("dir", "a string", direction, raw)
        if direction not in _DIRECTIONS:
            return _out_of_range("dir", "'in' or 'out'", direction, raw)
    speed = _opt_float(m, "speed", 0.0, math.inf, raw)
    if isinstance(speed, Rejected):
        return speed
    vtype = _opt_str(m, "vtype", _MAX_SHORT_TEXT, raw)
    if isinstance(vtype, Rejected):
        return vtype
    color = _opt_str(m, "color", _MAX_SHORT_TEXT, raw)
    if isinstance(color, Rejected):
        return color
    return _new_checkpoint(
        checkpoint,
        record_id,
        event_type,
        ts,
        plate,
        conf,
        lane,
        direction,
        speed,
        vtype,
        color,
        img,
    )


def decode_phone(household: str, payload: bytes) -> PhoneMessage | Rejected:
    """Decode a phone payload that arrived on `<base>/in/phone/<household>`.

    `household` comes from a topic that `Topics.parse` has already validated.
    """
    fields = decode_phone_fields(payload)
    if isinstance(fields, Rejected):
        return fields
    return _new_phone(household, *fields)


def decode_phone_fields(payload: bytes) -> PhoneFields | Rejected:
    """`decode_phone` without the message: its values, for the hot path (`PhoneFields`).

    Refuses exactly what `decode_phone` refuses, with the same `Rejected`.
    """
    m = _unpack_map(payload)  # `_phone_fields` checks the keys' type when it must
    if isinstance(m, Rejected):
        return m
    return _phone_fields(m, payload)


def decode_checkpoint(checkpoint: str, payload: bytes) -> CheckpointMessage | Rejected:
    """Decode a checkpoint payload that arrived on `<base>/in/checkpoint/<checkpoint>`."""
    m = decode_map(payload)
    if isinstance(m, Rejected):
        return m
    return _checkpoint(checkpoint, m, payload)


def decode_ack(payload: bytes) -> AckMessage | Rejected:
    """Decode an operator acknowledgement `{alarm_id, by, ts}`.

    The contract's ack map has no `v`; one is accepted if present and must be 1.
    `by` must be non-empty: an acknowledgement nobody can be held to is not one.
    """
    m = decode_map(payload)
    if isinstance(m, Rejected):
        return m
    bad = _version(m, payload, required=False)
    if bad is not None:
        return bad
    alarm_id = _str(m, "alarm_id", 1, _MAX_ALARM_ID, payload)
    if isinstance(alarm_id, Rejected):
        return alarm_id
    by = _str(m, "by", 1, _MAX_OPERATOR, payload)
    if isinstance(by, Rejected):
        return by
    ts = _float(m, "ts", -math.inf, math.inf, payload)
    if isinstance(ts, Rejected):
        return ts
    return AckMessage(alarm_id, by, ts)


@dataclass(frozen=True, slots=True)
class RequestMessage:
    """A request to one of the gateway's request/response APIs (topics.REQUEST_APIS):
    its own fields, and the `transaction` a requester may add, echoed in the answer."""

    transaction: str | int | None
    fields: Mapping[str, object]


_MAX_TRANSACTION = 128


def decode_request(payload: bytes) -> RequestMessage | Rejected:
    """Decode a request map; an empty payload is an empty request (`list` needs nothing)."""
    if not payload:
        return RequestMessage(None, {})
    m = decode_map(payload)
    if isinstance(m, Rejected):
        return m
    transaction = m.pop("transaction", None)
    if transaction is not None:
        if isinstance(transaction, bool) or not isinstance(transaction, str | int):
            return _wrong_type("transaction", "a string or an integer", transaction, payload)
        if isinstance(transaction, str):
            bad = _check_str("transaction", transaction, 0, _MAX_TRANSACTION, payload)
            if bad is not None:
                return bad
    return RequestMessage(transaction, m)


def decode_native(payload: bytes) -> PhoneMessage | CheckpointMessage | Rejected:
    """Decode the payload of a native serial frame: a contract map plus `kind` and `device`."""
    m = decode_map(payload)
    if isinstance(m, Rejected):
        return m
    kind = m.get("kind", _MISSING)
    if type(kind) is not str:
        if kind is _MISSING:
            return _missing("kind", payload)
        return _wrong_type("kind", "a string", kind, payload)
    if kind not in _NATIVE_KINDS:
        return _out_of_range("kind", "'phone' or 'checkpoint'", kind, payload)
    device = m.get("device", _MISSING)
    if type(device) is not str:
        if device is _MISSING:
            return _missing("device", payload)
        return _wrong_type("device", "a string", device, payload)
    why = validate_id(device)
    if why is not None:
        return Rejected(Reason.BAD_ID, _raw(payload), f"'device' {_show(device)}: {why}")
    if kind == "phone":
        return _phone(device, m, payload)
    return _checkpoint(device, m, payload)


# ------------------------------------------------------------------ encoding


def encode(obj: Mapping[str, object]) -> bytes:
    """Pack a map as MessagePack (str as str, bytes as bin)."""
    return msgpack.packb(obj, use_bin_type=True)


def phone_payload(msg: PhoneMessage) -> dict[str, object]:
    """The contract map for a phone message (the household travels in the topic)."""
    return {
        "v": VERSION,
        "seq": msg.seq,
        "ts": msg.ts,
        "q": msg.q,
        "code": msg.code,
        "zone": msg.zone,
        "part": msg.part,
    }


def checkpoint_payload(msg: CheckpointMessage) -> dict[str, object]:
    """The contract map for a checkpoint message, omitting the keys that are None."""
    out: dict[str, object] = {"v": VERSION, "id": msg.id, "type": msg.type.value, "ts": msg.ts}
    optional = (
        ("plate", msg.plate),
        ("conf", msg.conf),
        ("lane", msg.lane),
        ("dir", msg.dir),
        ("speed", msg.speed),
        ("vtype", msg.vtype),
        ("color", msg.color),
        ("img", msg.img),
        ("fault", msg.fault),
    )
    out.update((key, value) for key, value in optional if value is not None)
    return out


def native_payload(msg: PhoneMessage | CheckpointMessage) -> dict[str, object]:
    """The map a native serial frame carries: the contract map plus `kind` and `device`."""
    if isinstance(msg, PhoneMessage):
        out = phone_payload(msg)
        out["kind"] = "phone"
        out["device"] = msg.household
        return out
    out = checkpoint_payload(msg)
    out["kind"] = "checkpoint"
    out["device"] = msg.checkpoint
    return out


def ack_payload(msg: AckMessage) -> dict[str, object]:
    """The contract's acknowledgement map `{alarm_id, by, ts}`."""
    return {"alarm_id": msg.alarm_id, "by": msg.by, "ts": msg.ts}


def deadletter_payload(rejected: Rejected, topic: str, ts: float) -> dict[str, object]:
    """The dead-letter map `{reason, topic, raw, ts}`, plus the human `detail`.

    `detail` is an addition to the contract's keys (consumers ignore unknown keys).
    """
    return {
        "reason": rejected.reason.value,
        "topic": topic,
        "raw": rejected.raw,
        "ts": ts,
        "detail": rejected.detail,
    }


# ------------------------------------------------------------ packed-map edits
_FLOAT64 = struct.Struct(">Bd")


def packed_str(value: str) -> bytes:
    """One str packed as `encode` packs it (a map key, say)."""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def packed_float(value: float) -> bytes:
    """One float packed as `encode` packs it (float 64, as msgpack does by default)."""
    return _FLOAT64.pack(0xCB, value)


def with_packed_entries(packed_map: bytes, entries: bytes, count: int = 1) -> bytes:
    """`packed_map` (one packed map) with `count` packed key/value pairs appended.

    A map packed once can go out with a key added (the dispatch body gets its
    `dispatch_ts` at send time) without packing it again: only the header's
    count changes (fixmap up to 15 entries, map 16, map 32; MessagePack spec,
    "map format family"). The caller makes sure the keys are new.
    """
    first = packed_map[0]
    if 0x80 <= first <= 0x8F:
        size, start = first & 0x0F, 1
    elif first == 0xDE:
        size, start = int.from_bytes(packed_map[1:3], "big"), 3
    elif first == 0xDF:
        size, start = int.from_bytes(packed_map[1:5], "big"), 5
    else:
        raise ValueError(f"not a packed map (first byte 0x{first:02x})")
    size += count
    if size <= 0x0F:
        header = bytes((0x80 | size,))
    elif size <= 0xFFFF:
        header = b"\xde" + size.to_bytes(2, "big")
    else:
        header = b"\xdf" + size.to_bytes(4, "big")
    return b"".join((header, memoryview(packed_map)[start:], entries))
