"""Ingress payloads (CONTRACT.md): golden bytes, every rejection with its detail, round trips."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.payloads import (
    MAX_PAYLOAD,
    AckMessage,
    CheckpointEventType,
    CheckpointMessage,
    PhoneMessage,
    RequestMessage,
    _checkpoint_checked,  # the fast pass's oracle
    _phone_checked,  # the fast pass's oracle
    ack_payload,
    checkpoint_payload,
    deadletter_payload,
    decode_ack,
    decode_checkpoint,
    decode_map,
    decode_native,
    decode_phone,
    decode_phone_fields,
    decode_request,
    encode,
    native_payload,
    phone_payload,
    unfrozen_builder,
)
from protocols.reasons import Reason, Rejected
from protocols.topics import MAX_ID_LEN, validate_id

# ---------------------------------------------------------------- golden fixtures

# {"v": 1, "seq": 300, "ts": 1700000000.5, "q": 1, "code": 130, "zone": 3, "part": 1},
# packed by hand from the MessagePack spec, so a symmetric codec bug cannot hide.
GOLDEN_PHONE_MSGPACK = bytes.fromhex(
    "87"  # fixmap, 7 entries
    "a176 01"  # "v": 1 (positive fixint)
    "a3736571 cd012c"  # "seq": 300 (uint16)
    "a27473 cb41d954fc40200000"  # "ts": 1700000000.5 (float64)
    "a171 01"  # "q": 1
    "a4636f6465 cc82"  # "code": 130 (uint8)
    "a47a6f6e65 03"  # "zone": 3
    "a470617274 01"  # "part": 1
)
GOLDEN_PHONE = PhoneMessage("h-0001", 300, 1700000000.5, 1, 130, 3, 1)
GOLDEN_PHONE_JSON = (
    b'{"v": 1, "seq": 300, "ts": 1700000000.5, "q": 1, "code": 130, "zone": 3, "part": 1}'
)

# A pass as a field tech would type it for mosquitto_pub, with leading whitespace.
GOLDEN_PASS_JSON = (
    ' \n{"v":1,"id":"r-77","type":"pass","ts":1700000001,"plate":"苏A12345",'
    '"conf":0.93,"lane":2,"dir":"in","speed":48.5,"vtype":"car","color":"white",'
    '"img":"https://cam/77.jpg"}'
).encode()
GOLDEN_PASS = CheckpointMessage(
    "kk-东山-01",
    "r-77",
    CheckpointEventType.PASS,
    1700000001.0,
    plate="苏A12345",
    conf=0.93,
    lane=2,
    dir="in",
    speed=48.5,
    vtype="car",
    color="white",
    img="https://cam/77.jpg",
)

PHONE: dict[str, object] = {"v": 1, "seq": 7, "ts": 1.5, "q": 1, "code": 120, "zone": 2}
PASS: dict[str, object] = {"v": 1, "id": "r1", "type": "pass", "ts": 2.0, "plate": "", "conf": 0.0}
ACK: dict[str, object] = {"alarm_id": "a-1", "by": "王警官", "ts": 3.0}


def _with(base: dict[str, object], **changes: object) -> bytes:
    """`base` with keys changed (a value of ... removes the key), packed."""
    out = dict(base)
    for key, value in changes.items():
        if value is ...:
            del out[key]
        else:
            out[key] = value
    return encode(out)


def _rejected(result: object, reason: Reason, detail: str | None = None) -> Rejected:
    assert isinstance(result, Rejected), result
    assert result.reason is reason, result
    if detail is not None:
        assert result.detail == detail
    return result


def test_golden_phone_msgpack_decodes() -> None:
    """The hand-packed phone map decodes to its message."""
    assert decode_phone("h-0001", GOLDEN_PHONE_MSGPACK) == GOLDEN_PHONE


def test_golden_phone_msgpack_encodes_byte_for_byte() -> None:
    """The encoder produces exactly the hand-packed bytes, key order included."""
    assert encode(phone_payload(GOLDEN_PHONE)) == GOLDEN_PHONE_MSGPACK


def test_golden_phone_json_decodes_like_msgpack() -> None:
    """The JSON equivalent of the golden map decodes to the same message."""
    assert decode_phone("h-0001", GOLDEN_PHONE_JSON) == GOLDEN_PHONE


def test_golden_pass_json_with_leading_whitespace_decodes() -> None:
    """A JSON pass with Chinese plate, int ts and every option decodes; ts becomes a float."""
    result = decode_checkpoint("kk-东山-01", GOLDEN_PASS_JSON)
    assert result == GOLDEN_PASS
    assert isinstance(result, CheckpointMessage)
    assert type(result.ts) is float


def test_phone_part_defaults_to_one() -> None:
    """A phone map without `part` gets partition 1."""
    result = decode_phone("h", encode(PHONE))
    assert result == PhoneMessage("h", 7, 1.5, 1, 120, 2, 1)


def test_phone_int_ts_becomes_float() -> None:
    """An integer timestamp is accepted and widened to float."""
    result = decode_phone("h", _with(PHONE, ts=1700000000))
    assert isinstance(result, PhoneMessage)
    assert result.ts == 1700000000.0
    assert type(result.ts) is float


def test_unknown_keys_are_ignored() -> None:
    """Keys the contract does not name are ignored, whatever their type (forward compatibility)."""
    extra = {"fw": "2.1", "rssi": -71, "nested": {"a": [1, 2]}, "blob": b"\x00"}
    assert decode_phone("h", encode({**PHONE, **extra})) == decode_phone("h", encode(PHONE))
    assert isinstance(decode_checkpoint("c", encode({**PASS, **extra})), CheckpointMessage)
    assert isinstance(decode_ack(encode({**ACK, **extra})), AckMessage)


def test_nil_optional_keys_count_as_absent() -> None:
    """An optional key sent as nil/null is treated as absent."""
    assert decode_phone("h", _with(PHONE, part=None)) == decode_phone("h", encode(PHONE))
    nils = dict.fromkeys(("lane", "dir", "speed", "vtype", "color", "img"))
    assert decode_checkpoint("c", encode({**PASS, **nils})) == decode_checkpoint("c", encode(PASS))


def test_boundaries_are_inclusive() -> None:
    """Every range includes its ends: seq 2**63-1, code 100/999, zone 0/999, part 0/99."""
    for changes in (
        {"seq": 0},
        {"seq": 2**63 - 1},
        {"code": 100},
        {"code": 999},
        {"zone": 0},
        {"zone": 999},
        {"part": 0},
        {"part": 99},
        {"q": 3},
        {"q": 6},
        {"ts": -1.0},
    ):
        assert isinstance(decode_phone("h", _with(PHONE, **changes)), PhoneMessage), changes


def test_checkpoint_heartbeat_and_fault() -> None:
    """A heartbeat needs only v, id, type, ts; a fault also carries its text."""
    heartbeat = {"v": 1, "id": "hb-1", "type": "heartbeat", "ts": 5.0}
    assert decode_checkpoint("c", encode(heartbeat)) == CheckpointMessage(
        "c", "hb-1", CheckpointEventType.HEARTBEAT, 5.0
    )
    fault = {"v": 1, "id": "f-1", "type": "fault", "ts": 6.0, "fault": "lens dirty", "img": "x"}
    assert decode_checkpoint("c", encode(fault)) == CheckpointMessage(
        "c", "f-1", CheckpointEventType.FAULT, 6.0, img="x", fault="lens dirty"
    )


def test_pass_only_keys_are_ignored_on_other_types() -> None:
    """Pass details on a heartbeat are not contract keys there, so even bad ones are ignored."""
    heartbeat = {"v": 1, "id": "hb-1", "type": "heartbeat", "ts": 5.0, "plate": 12, "conf": "x"}
    result = decode_checkpoint("c", encode({**heartbeat, "fault": 3}))
    assert result == CheckpointMessage("c", "hb-1", CheckpointEventType.HEARTBEAT, 5.0)


def test_pass_with_unread_plate_and_int_conf() -> None:
    """An unread plate is "" and a JSON integer confidence is widened to float."""
    result = decode_checkpoint("c", json.dumps({**PASS, "conf": 1}).encode())
    assert result == CheckpointMessage("c", "r1", CheckpointEventType.PASS, 2.0, "", 1.0)


def test_ack_with_and_without_version() -> None:
    """An ack decodes without `v`, and with `v` 1."""
    expected = AckMessage("a-1", "王警官", 3.0)
    assert decode_ack(encode(ACK)) == expected
    assert decode_ack(encode({**ACK, "v": 1})) == expected
    assert decode_ack(json.dumps(ACK).encode()) == expected


def test_native_frames_carry_kind_and_device() -> None:
    """A native map decodes to the same message the MQTT path produces from the topic."""
    phone = encode({**PHONE, "kind": "phone", "device": "户-12"})
    assert decode_native(phone) == decode_phone("户-12", encode(PHONE))
    checkpoint = encode({**PASS, "kind": "checkpoint", "device": "kk-1"})
    assert decode_native(checkpoint) == decode_checkpoint("kk-1", encode(PASS))


# ---------------------------------------------------------------- rejections with details

PHONE_REJECTIONS: list[tuple[bytes, Reason, str]] = [
    (_with(PHONE, v=...), Reason.MISSING_KEY, "missing key 'v'"),
    (
        _with(PHONE, v=2),
        Reason.UNKNOWN_VERSION,
        "unknown contract version 2, this gateway speaks 1",
    ),
    (
        _with(PHONE, v=0),
        Reason.UNKNOWN_VERSION,
        "unknown contract version 0, this gateway speaks 1",
    ),
    (_with(PHONE, v="1"), Reason.WRONG_TYPE, "'v' must be an int, got str"),
    (_with(PHONE, v=True), Reason.WRONG_TYPE, "'v' must be an int, got bool"),
    (_with(PHONE, v=1.0), Reason.WRONG_TYPE, "'v' must be an int, got float"),
    (_with(PHONE, seq=...), Reason.MISSING_KEY, "missing key 'seq'"),
    (_with(PHONE, seq=-1), Reason.OUT_OF_RANGE, "'seq' must be 0-9223372036854775807, got -1"),
    (
        _with(PHONE, seq=2**63),
        Reason.OUT_OF_RANGE,
        "'seq' must be 0-9223372036854775807, got 9223372036854775808",
    ),
    (_with(PHONE, seq=True), Reason.WRONG_TYPE, "'seq' must be an int, got bool"),
    (_with(PHONE, seq=7.0), Reason.WRONG_TYPE, "'seq' must be an int, got float"),
    (_with(PHONE, seq=None), Reason.WRONG_TYPE, "'seq' must be an int, got nil"),
    (_with(PHONE, ts=...), Reason.MISSING_KEY, "missing key 'ts'"),
    (_with(PHONE, ts="now"), Reason.WRONG_TYPE, "'ts' must be a number, got str"),
    (_with(PHONE, ts=False), Reason.WRONG_TYPE, "'ts' must be a number, got bool"),
    (_with(PHONE, ts=math.nan), Reason.OUT_OF_RANGE, "'ts' must be a finite number, got nan"),
    (_with(PHONE, ts=math.inf), Reason.OUT_OF_RANGE, "'ts' must be a finite number, got inf"),
    (_with(PHONE, ts=-math.inf), Reason.OUT_OF_RANGE, "'ts' must be a finite number, got -inf"),
    (_with(PHONE, q=...), Reason.MISSING_KEY, "missing key 'q'"),
    (_with(PHONE, q=2), Reason.OUT_OF_RANGE, "'q' must be one of 1, 3, 6, got 2"),
    (_with(PHONE, q=True), Reason.WRONG_TYPE, "'q' must be an int, got bool"),
    (_with(PHONE, q="1"), Reason.WRONG_TYPE, "'q' must be an int, got str"),
    (_with(PHONE, code=...), Reason.MISSING_KEY, "missing key 'code'"),
    (_with(PHONE, code=99), Reason.OUT_OF_RANGE, "'code' must be 100-999, got 99"),
    (_with(PHONE, code=1000), Reason.OUT_OF_RANGE, "'code' must be 100-999, got 1000"),
    (_with(PHONE, code="120"), Reason.WRONG_TYPE, "'code' must be an int, got str"),
    (_with(PHONE, zone=...), Reason.MISSING_KEY, "missing key 'zone'"),
    (_with(PHONE, zone=1200), Reason.OUT_OF_RANGE, "'zone' must be 0-999, got 1200"),
    (_with(PHONE, zone=-1), Reason.OUT_OF_RANGE, "'zone' must be 0-999, got -1"),
    (_with(PHONE, zone=False), Reason.WRONG_TYPE, "'zone' must be an int, got bool"),
    (_with(PHONE, part=100), Reason.OUT_OF_RANGE, "'part' must be 0-99, got 100"),
    (_with(PHONE, part=True), Reason.WRONG_TYPE, "'part' must be an int, got bool"),
    (_with(PHONE, part=[1]), Reason.WRONG_TYPE, "'part' must be an int, got list"),
]


@pytest.mark.parametrize(("payload", "reason", "detail"), PHONE_REJECTIONS)
def test_phone_rejections_name_the_key(payload: bytes, reason: Reason, detail: str) -> None:
    """Each malformed phone map is refused with its precise reason, detail and raw bytes."""
    result = _rejected(decode_phone("h", payload), reason, detail)
    assert result.raw == payload


def _as_json(payload: bytes) -> bytes | None:
    obj = msgpack.unpackb(payload)
    if any(isinstance(v, float) and not math.isfinite(v) for v in obj.values()):
        return None  # JSON has no NaN/Infinity: see test_undecodable_payloads
    return json.dumps(obj).encode()


JSON_PHONE_REJECTIONS = [
    (text, reason, detail)
    for payload, reason, detail in PHONE_REJECTIONS
    if (text := _as_json(payload)) is not None
]


@pytest.mark.parametrize(("payload", "reason", "detail"), JSON_PHONE_REJECTIONS)
def test_phone_rejections_are_the_same_for_json(
    payload: bytes, reason: Reason, detail: str
) -> None:
    """The same maps as JSON objects are refused with the same reason and detail."""
    result = _rejected(decode_phone("h", payload), reason, detail)
    assert result.raw == payload


def test_first_failure_in_table_order_wins() -> None:
    """With several bad keys the first in contract order is reported (v, seq, ts, q, ...)."""
    payload = _with(PHONE, seq=-1, code=5, zone=5000)
    _rejected(
        decode_phone("h", payload),
        Reason.OUT_OF_RANGE,
        "'seq' must be 0-9223372036854775807, got -1",
    )
    payload = _with(PHONE, v=9, seq="x")
    _rejected(decode_phone("h", payload), Reason.UNKNOWN_VERSION)


CHECKPOINT_REJECTIONS: list[tuple[bytes, Reason, str]] = [
    (_with(PASS, v=...), Reason.MISSING_KEY, "missing key 'v'"),
    (_with(PASS, v=2), Reason.UNKNOWN_VERSION, "unknown contract version 2, this gateway speaks 1"),
    (_with(PASS, id=...), Reason.MISSING_KEY, "missing key 'id'"),
    (_with(PASS, id=""), Reason.OUT_OF_RANGE, "'id' must not be empty"),
    (_with(PASS, id="x" * 65), Reason.OUT_OF_RANGE, "'id' must be at most 64 characters, got 65"),
    (_with(PASS, id=17), Reason.WRONG_TYPE, "'id' must be a string, got int"),
    (_with(PASS, id=b"r1"), Reason.WRONG_TYPE, "'id' must be a string, got bytes"),
    (_with(PASS, type=...), Reason.MISSING_KEY, "missing key 'type'"),
    (_with(PASS, type=1), Reason.WRONG_TYPE, "'type' must be a string, got int"),
    (
        _with(PASS, type="PASS"),
        Reason.OUT_OF_RANGE,
        "'type' must be one of pass, heartbeat, fault, got 'PASS'",
    ),
    (_with(PASS, ts=...), Reason.MISSING_KEY, "missing key 'ts'"),
    (_with(PASS, ts=math.nan), Reason.OUT_OF_RANGE, "'ts' must be a finite number, got nan"),
    (_with(PASS, img=7), Reason.WRONG_TYPE, "'img' must be a string, got int"),
    (
        _with(PASS, img="u" * 1025),
        Reason.OUT_OF_RANGE,
        "'img' must be at most 1024 characters, got 1025",
    ),
    (_with(PASS, plate=...), Reason.MISSING_KEY, "missing key 'plate'"),
    (_with(PASS, plate=None), Reason.WRONG_TYPE, "'plate' must be a string, got nil"),
    (
        _with(PASS, plate="苏" * 17),
        Reason.OUT_OF_RANGE,
        "'plate' must be at most 16 characters, got 17",
    ),
    (_with(PASS, conf=...), Reason.MISSING_KEY, "missing key 'conf'"),
    (_with(PASS, conf=1.5), Reason.OUT_OF_RANGE, "'conf' must be 0-1, got 1.5"),
    (_with(PASS, conf=-0.1), Reason.OUT_OF_RANGE, "'conf' must be 0-1, got -0.1"),
    (_with(PASS, conf=True), Reason.WRONG_TYPE, "'conf' must be a number, got bool"),
    (_with(PASS, conf=math.nan), Reason.OUT_OF_RANGE, "'conf' must be a finite number, got nan"),
    (_with(PASS, lane=-1), Reason.OUT_OF_RANGE, "'lane' must be 0-999, got -1"),
    (_with(PASS, lane=True), Reason.WRONG_TYPE, "'lane' must be an int, got bool"),
    (_with(PASS, dir="up"), Reason.OUT_OF_RANGE, "'dir' must be 'in' or 'out', got 'up'"),
    (_with(PASS, dir=1), Reason.WRONG_TYPE, "'dir' must be a string, got int"),
    (_with(PASS, speed=-1), Reason.OUT_OF_RANGE, "'speed' must be 0-inf, got -1.0"),
    (_with(PASS, speed=math.inf), Reason.OUT_OF_RANGE, "'speed' must be a finite number, got inf"),
    (_with(PASS, speed="fast"), Reason.WRONG_TYPE, "'speed' must be a number, got str"),
    (
        _with(PASS, vtype="v" * 33),
        Reason.OUT_OF_RANGE,
        "'vtype' must be at most 32 characters, got 33",
    ),
    (_with(PASS, color=0), Reason.WRONG_TYPE, "'color' must be a string, got int"),
    (
        encode({"v": 1, "id": "f", "type": "fault", "ts": 1.0}),
        Reason.MISSING_KEY,
        "missing key 'fault'",
    ),
    (
        encode({"v": 1, "id": "f", "type": "fault", "ts": 1.0, "fault": "e" * 257}),
        Reason.OUT_OF_RANGE,
        "'fault' must be at most 256 characters, got 257",
    ),
]


@pytest.mark.parametrize(("payload", "reason", "detail"), CHECKPOINT_REJECTIONS)
def test_checkpoint_rejections_name_the_key(payload: bytes, reason: Reason, detail: str) -> None:
    """Each malformed checkpoint map is refused with its precise reason, detail and raw bytes."""
    result = _rejected(decode_checkpoint("c", payload), reason, detail)
    assert result.raw == payload


ACK_REJECTIONS: list[tuple[bytes, Reason, str]] = [
    (_with(ACK, v=2), Reason.UNKNOWN_VERSION, "unknown contract version 2, this gateway speaks 1"),
    (_with(ACK, v=True), Reason.WRONG_TYPE, "'v' must be an int, got bool"),
    (_with(ACK, alarm_id=...), Reason.MISSING_KEY, "missing key 'alarm_id'"),
    (_with(ACK, alarm_id=""), Reason.OUT_OF_RANGE, "'alarm_id' must not be empty"),
    (
        _with(ACK, alarm_id="a" * 129),
        Reason.OUT_OF_RANGE,
        "'alarm_id' must be at most 128 characters, got 129",
    ),
    (_with(ACK, by=...), Reason.MISSING_KEY, "missing key 'by'"),
    (_with(ACK, by=""), Reason.OUT_OF_RANGE, "'by' must not be empty"),
    (_with(ACK, by=5), Reason.WRONG_TYPE, "'by' must be a string, got int"),
    (_with(ACK, ts=...), Reason.MISSING_KEY, "missing key 'ts'"),
    (_with(ACK, ts=math.inf), Reason.OUT_OF_RANGE, "'ts' must be a finite number, got inf"),
]


@pytest.mark.parametrize(("payload", "reason", "detail"), ACK_REJECTIONS)
def test_ack_rejections_name_the_key(payload: bytes, reason: Reason, detail: str) -> None:
    """Each malformed ack map is refused with its precise reason and detail."""
    _rejected(decode_ack(payload), reason, detail)


NATIVE_PHONE = {**PHONE, "kind": "phone", "device": "h-1"}
NATIVE_REJECTIONS: list[tuple[bytes, Reason, str]] = [
    (_with(NATIVE_PHONE, kind=...), Reason.MISSING_KEY, "missing key 'kind'"),
    (_with(NATIVE_PHONE, kind=1), Reason.WRONG_TYPE, "'kind' must be a string, got int"),
    (
        _with(NATIVE_PHONE, kind="receiver"),
        Reason.OUT_OF_RANGE,
        "'kind' must be 'phone' or 'checkpoint', got 'receiver'",
    ),
    (_with(NATIVE_PHONE, device=...), Reason.MISSING_KEY, "missing key 'device'"),
    (_with(NATIVE_PHONE, device=12), Reason.WRONG_TYPE, "'device' must be a string, got int"),
    (_with(NATIVE_PHONE, device=""), Reason.BAD_ID, "'device' '': is empty"),
    (
        _with(NATIVE_PHONE, device="a/b"),
        Reason.BAD_ID,
        "'device' 'a/b': contains the topic level separator '/'",
    ),
    (
        _with(NATIVE_PHONE, device="h+"),
        Reason.BAD_ID,
        "'device' 'h+': contains the MQTT wildcard '+'",
    ),
    (_with(NATIVE_PHONE, code=7), Reason.OUT_OF_RANGE, "'code' must be 100-999, got 7"),
    (
        encode({**PASS, "kind": "checkpoint", "device": "k", "conf": 2}),
        Reason.OUT_OF_RANGE,
        "'conf' must be 0-1, got 2.0",
    ),
]


@pytest.mark.parametrize(("payload", "reason", "detail"), NATIVE_REJECTIONS)
def test_native_rejections_name_the_key(payload: bytes, reason: Reason, detail: str) -> None:
    """Each malformed native map is refused with its precise reason and detail."""
    _rejected(decode_native(payload), reason, detail)


# ---------------------------------------------------------------- encoding-level rejections


def test_too_large_is_refused_before_decoding() -> None:
    """A payload over MAX_PAYLOAD is TOO_LARGE, with raw truncated to MAX_PAYLOAD."""
    payload = encode({**PHONE, "pad": "x" * MAX_PAYLOAD})
    result = _rejected(decode_phone("h", payload), Reason.TOO_LARGE)
    assert result.detail == f"payload is {len(payload)} bytes, limit {MAX_PAYLOAD}"
    assert result.raw == payload[:MAX_PAYLOAD]
    # Garbage that large is still TOO_LARGE, not BAD_ENCODING: size is checked first.
    _rejected(decode_map(b"\xc1" * (MAX_PAYLOAD + 1)), Reason.TOO_LARGE)


def test_exactly_max_payload_is_decoded() -> None:
    """A payload of exactly MAX_PAYLOAD bytes is accepted."""
    base = encode({**PHONE, "pad": ""})
    pad = "x" * (MAX_PAYLOAD - len(base) - 2)  # str8 header grows by 2 bytes
    payload = encode({**PHONE, "pad": pad})
    assert len(payload) == MAX_PAYLOAD
    assert isinstance(decode_phone("h", payload), PhoneMessage)


def test_trailing_bytes_are_bad_encoding() -> None:
    """Anything after the one map is BAD_ENCODING, for MessagePack and JSON alike."""
    _rejected(
        decode_phone("h", GOLDEN_PHONE_MSGPACK + b"\x00"),
        Reason.BAD_ENCODING,
        "trailing bytes after the MessagePack object",
    )
    _rejected(decode_phone("h", GOLDEN_PHONE_MSGPACK * 2), Reason.BAD_ENCODING)
    _rejected(decode_phone("h", GOLDEN_PHONE_JSON + b"{}"), Reason.BAD_ENCODING)


def test_json_trailing_whitespace_is_fine() -> None:
    """JSON allows whitespace around the value (a shell adds a newline)."""
    payload = b"\t" + GOLDEN_PHONE_JSON + b"\r\n"
    assert decode_phone("h-0001", payload) == GOLDEN_PHONE


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (b"", Reason.BAD_ENCODING, "empty payload"),
        (b"\x93\x01\x02\x03", Reason.NOT_A_MAP, "expected a map, got list"),
        (b"\x05", Reason.NOT_A_MAP, "expected a map, got int"),
        (b"\xc0", Reason.NOT_A_MAP, "expected a map, got nil"),
        (b"\xa3abc", Reason.NOT_A_MAP, "expected a map, got str"),
        (b"\n", Reason.NOT_A_MAP, "expected a map, got int"),  # whitespace alone is fixint 10
        (b"\x81\xc4\x01v\x01", Reason.WRONG_TYPE, "map keys must be strings, got b'v'"),
        (b"\x81\x01\x01", Reason.BAD_ENCODING, None),  # int key: strict_map_key
        (b"\x81\xa1v", Reason.BAD_ENCODING, None),  # truncated
        (b"\xc1", Reason.BAD_ENCODING, None),  # never used
        (b"\x81\xa2\xff\xfe\x01", Reason.BAD_ENCODING, None),  # invalid UTF-8 in str
        (b"\xdf\xff\xff\xff\xff", Reason.BAD_ENCODING, None),  # 4G-entry map header
        (b"\xdd\xff\xff\xff\xff", Reason.BAD_ENCODING, None),  # 4G-element array header
        (b"\x91" * 3000 + b"\x80", Reason.BAD_ENCODING, None),  # nested past the stack
        (b"{", Reason.BAD_ENCODING, None),
        (b"{'v': 1}", Reason.BAD_ENCODING, None),  # Python, not JSON
        (b'{"v": NaN}', Reason.BAD_ENCODING, "not JSON: NaN is not JSON"),
        (b'{"v": -Infinity}', Reason.BAD_ENCODING, "not JSON: -Infinity is not JSON"),
        (b'{"v": "\xff"}', Reason.BAD_ENCODING, "JSON payload is not UTF-8"),
        (b'{"v":' + b"[" * 4000 + b"]" * 4000 + b"}", Reason.BAD_ENCODING, None),  # deep
        (b'{"v": ' + b"9" * 5000 + b"}", Reason.BAD_ENCODING, None),  # int() digit limit
        (b"  [1]", Reason.BAD_ENCODING, None),  # whitespace then not an object: fixints
    ],
)
def test_undecodable_payloads(payload: bytes, reason: Reason, detail: str | None) -> None:
    """Garbage, non-maps and hostile headers are refused with the right reason, never raised."""
    for decoder in (
        decode_map,
        lambda p: decode_phone("h", p),
        lambda p: decode_checkpoint("c", p),
        decode_ack,
        decode_native,
    ):
        result = _rejected(decoder(payload), reason, detail)
        assert result.raw == payload


def test_json_out_of_range_numbers() -> None:
    """JSON numbers too big for a float are OUT_OF_RANGE, not a crash."""
    _rejected(
        decode_phone("h", b'{"v":1,"seq":1,"ts":1e400,"q":1,"code":120,"zone":1}'),
        Reason.OUT_OF_RANGE,
        "'ts' must be a finite number, got inf",
    )
    big = b"1" + b"0" * 400
    result = _rejected(
        decode_phone("h", b'{"v":1,"seq":1,"ts":' + big + b',"q":1,"code":120,"zone":1}'),
        Reason.OUT_OF_RANGE,
    )
    assert result.detail.startswith("'ts' must be a finite number, got 1000")
    assert result.detail.endswith("...")


def test_bool_is_not_an_int_for_any_int_key() -> None:
    """True and False are WRONG_TYPE wherever the contract wants an int or a number."""
    for key in ("v", "seq", "ts", "q", "code", "zone", "part"):
        for value in (True, False):
            _rejected(decode_phone("h", _with(PHONE, **{key: value})), Reason.WRONG_TYPE)
    for key in ("v", "ts", "conf", "lane", "speed"):
        _rejected(decode_checkpoint("c", _with(PASS, **{key: True})), Reason.WRONG_TYPE)


# ---------------------------------------------------------------- encoders


def test_checkpoint_payload_omits_none() -> None:
    """Only the keys with values travel; `type` is its plain string."""
    heartbeat = CheckpointMessage("c", "hb", CheckpointEventType.HEARTBEAT, 1.0)
    assert checkpoint_payload(heartbeat) == {"v": 1, "id": "hb", "type": "heartbeat", "ts": 1.0}
    assert type(checkpoint_payload(heartbeat)["type"]) is str


def test_native_payload_adds_kind_and_device() -> None:
    """A native map is the contract map plus kind and device."""
    assert native_payload(GOLDEN_PHONE) == {
        **phone_payload(GOLDEN_PHONE),
        "kind": "phone",
        "device": "h-0001",
    }
    assert native_payload(GOLDEN_PASS) == {
        **checkpoint_payload(GOLDEN_PASS),
        "kind": "checkpoint",
        "device": "kk-东山-01",
    }


def test_ack_payload_is_the_contract_map() -> None:
    """The ack map is exactly {alarm_id, by, ts}."""
    assert ack_payload(AckMessage("a-1", "op", 2.5)) == {"alarm_id": "a-1", "by": "op", "ts": 2.5}


def test_deadletter_payload_keeps_raw_bytes_as_bin() -> None:
    """The dead letter carries reason, topic, raw (as MessagePack bin), ts and detail."""
    rejected = Rejected(Reason.BAD_ENCODING, b"\xc1", "not MessagePack")
    entry = deadletter_payload(rejected, "alarmgw/in/phone/h", 9.0)
    assert entry == {
        "reason": "bad_encoding",
        "topic": "alarmgw/in/phone/h",
        "raw": b"\xc1",
        "ts": 9.0,
        "detail": "not MessagePack",
    }
    packed = encode(entry)
    assert b"\xa3raw\xc4\x01\xc1" in packed  # "raw": bin8 of one byte
    assert msgpack.unpackb(packed, raw=False) == entry


# ---------------------------------------------------------------- properties

_finite = st.floats(allow_nan=False, allow_infinity=False)
_ids = st.text(
    st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")),
    min_size=1,
    max_size=MAX_ID_LEN,
).filter(lambda s: validate_id(s) is None)

phone_messages = st.builds(
    PhoneMessage,
    household=_ids,
    seq=st.integers(0, 2**63 - 1),
    ts=_finite,
    q=st.sampled_from([1, 3, 6]),
    code=st.integers(100, 999),
    zone=st.integers(0, 999),
    part=st.integers(0, 99),
)


@st.composite
def checkpoint_messages(draw: st.DrawFn) -> CheckpointMessage:
    """Valid checkpoint messages of every type, with any subset of the optional keys."""
    kind = draw(st.sampled_from(CheckpointEventType))
    checkpoint = draw(_ids)
    record = draw(st.text(min_size=1, max_size=64))
    ts = draw(_finite)
    img = draw(st.none() | st.text(max_size=1024))
    if kind is CheckpointEventType.HEARTBEAT:
        return CheckpointMessage(checkpoint, record, kind, ts, img=img)
    if kind is CheckpointEventType.FAULT:
        fault = draw(st.text(max_size=256))
        return CheckpointMessage(checkpoint, record, kind, ts, img=img, fault=fault)
    return CheckpointMessage(
        checkpoint,
        record,
        kind,
        ts,
        plate=draw(st.text(max_size=16)),
        conf=draw(st.floats(0.0, 1.0)),
        lane=draw(st.none() | st.integers(0, 999)),
        dir=draw(st.none() | st.sampled_from(["in", "out"])),
        speed=draw(st.none() | st.floats(0.0, allow_infinity=False)),
        vtype=draw(st.none() | st.text(max_size=32)),
        color=draw(st.none() | st.text(max_size=32)),
        img=img,
    )


ack_messages = st.builds(
    AckMessage,
    alarm_id=st.text(min_size=1, max_size=128),
    by=st.text(min_size=1, max_size=64),
    ts=_finite,
)


@given(phone_messages)
def test_phone_round_trip(msg: PhoneMessage) -> None:
    """payload -> MessagePack or JSON -> decode gives the message back."""
    payload = phone_payload(msg)
    assert decode_phone(msg.household, encode(payload)) == msg
    assert decode_phone(msg.household, json.dumps(payload).encode()) == msg
    fields = (msg.seq, msg.ts, msg.q, msg.code, msg.zone, msg.part)
    assert decode_phone_fields(encode(payload)) == fields


@given(checkpoint_messages())
def test_checkpoint_round_trip(msg: CheckpointMessage) -> None:
    """payload -> MessagePack or JSON -> decode gives the message back."""
    payload = checkpoint_payload(msg)
    assert decode_checkpoint(msg.checkpoint, encode(payload)) == msg
    assert decode_checkpoint(msg.checkpoint, json.dumps(payload).encode()) == msg


@given(st.one_of(phone_messages, checkpoint_messages()))
def test_native_round_trip(msg: PhoneMessage | CheckpointMessage) -> None:
    """native payload -> MessagePack or JSON -> decode_native gives the message back."""
    payload = native_payload(msg)
    assert decode_native(encode(payload)) == msg
    assert decode_native(json.dumps(payload, ensure_ascii=False).encode()) == msg


@given(ack_messages)
def test_ack_round_trip(msg: AckMessage) -> None:
    """ack payload -> MessagePack or JSON -> decode gives the ack back."""
    assert decode_ack(encode(ack_payload(msg))) == msg
    assert decode_ack(json.dumps(ack_payload(msg)).encode()) == msg


_DECODERS: list[Callable[[bytes], object]] = [
    decode_map,
    lambda p: decode_phone("h", p),
    decode_phone_fields,
    lambda p: decode_checkpoint("c", p),
    decode_ack,
    decode_native,
]


@given(st.binary(max_size=MAX_PAYLOAD + 16))
def test_any_bytes_never_raise(payload: bytes) -> None:
    """Arbitrary bytes give a message or a Rejected from every decoder, never an exception."""
    for decoder in _DECODERS:
        result = decoder(payload)
        if isinstance(result, Rejected):
            assert result.raw == payload[:MAX_PAYLOAD]


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=80)
    | st.binary(max_size=8)
)
_keys = st.sampled_from(
    ["v", "seq", "ts", "q", "code", "zone", "part", "id", "type", "plate", "conf", "lane",
     "dir", "speed", "vtype", "color", "img", "fault", "alarm_id", "by", "kind", "device"]
)  # fmt: skip
_near_valid = st.dictionaries(_keys, _scalars | st.sampled_from([1, "pass", "phone", "in"]))


@given(_near_valid, st.sampled_from([PHONE, PASS, ACK, NATIVE_PHONE]))
def test_near_valid_maps_never_raise(changes: dict[str, object], base: dict[str, object]) -> None:
    """Contract keys with any scalar value give a message or a precise Rejected, never raise."""
    payload = encode({**base, **changes})
    for decoder in _DECODERS:
        result = decoder(payload)
        if isinstance(result, Rejected):
            assert result.reason in {
                Reason.MISSING_KEY,
                Reason.WRONG_TYPE,
                Reason.OUT_OF_RANGE,
                Reason.UNKNOWN_VERSION,
                Reason.BAD_ID,
            }
            assert result.detail


# ---------------------------------------------------------------- the fast pass
# Each decoder tries the common case in one pass and leaves everything else to
# the checked decoder (module docstring, point 6): the two must never disagree.


def _checked(decode: Callable[[str, Mapping[str, object], bytes], object]) -> Callable[..., object]:
    """The decoder without its fast pass: `decode_map`, then the key-by-key checks."""

    def run(device: str, payload: bytes) -> object:
        m = decode_map(payload)
        return m if isinstance(m, Rejected) else decode(device, m, payload)

    return run


_extra_keys = st.dictionaries(
    st.text(max_size=6) | st.binary(max_size=4) | st.sampled_from(["part", "img", "lane", "x"]),
    _scalars,
    max_size=2,
)


@given(
    _near_valid,
    st.sets(st.sampled_from([*PHONE, "part"]), max_size=2),
    _extra_keys,
    st.sampled_from([encode, lambda m: json.dumps(m).encode()]),
)
def test_phone_fast_pass_agrees_with_the_checked_decoder(
    changes: dict[str, object],
    dropped: set[str],
    extra: dict[Any, object],
    pack: Callable[[dict[Any, object]], bytes],
) -> None:
    """For any near-valid phone map, bin keys included, the decoders give the checked result."""
    m: dict[Any, object] = {**PHONE, "part": 1, **changes}
    for key in dropped:
        m.pop(key, None)
    m.update(extra)
    try:
        payload = pack(m)
    except (TypeError, ValueError):  # JSON has no bin keys or bin values
        return
    decoded = decode_map(payload)
    checked = decoded if isinstance(decoded, Rejected) else _phone_checked(decoded, payload)
    assert decode_phone_fields(payload) == checked
    assert decode_phone("h", payload) == (
        checked if isinstance(checked, Rejected) else PhoneMessage("h", *checked)
    )


@given(
    _near_valid,
    st.sampled_from(["pass", "heartbeat", "fault"]),
    st.sets(st.sampled_from(list(PASS)), max_size=2),
    _extra_keys,
)
def test_checkpoint_fast_pass_agrees_with_the_checked_decoder(
    changes: dict[str, object],
    kind: str,
    dropped: set[str],
    extra: dict[Any, object],
) -> None:
    """For any near-valid checkpoint map, decode_checkpoint gives the checked decoder's result."""
    full = {"lane": 2, "dir": "out", "speed": 3.5, "vtype": "car", "color": "red", "img": "u"}
    m: dict[Any, object] = {**PASS, **full, "type": kind, **changes}
    for key in dropped:
        m.pop(key, None)
    m.update(extra)
    payload = encode(m)
    assert decode_checkpoint("c", payload) == _checked(_checkpoint_checked)("c", payload)


def test_a_bin_key_beside_a_valid_phone_map_is_still_refused() -> None:
    """The fast pass skips the key-type check only when every key is a contract key."""
    good: dict[Any, object] = {"v": 1, "seq": 1, "ts": 1.0, "q": 1, "code": 602, "zone": 0}
    extras: list[dict[Any, object]] = [{b"part": 1}, {b"x": 1}, {"part": 1, b"x": 1}]
    for extra in extras:
        _rejected(decode_phone("h", encode({**good, **extra})), Reason.WRONG_TYPE)


# ---------------------------------------------------------------- unfrozen_builder


@dataclasses.dataclass(frozen=True, slots=True)
class _Sample:
    a: int
    b: str = "b"
    c: tuple[int, ...] = dataclasses.field(default_factory=tuple)


def test_unfrozen_builder_builds_an_equal_immutable_value() -> None:
    """The builder's result is a real instance, equal to the usual one, and frozen."""
    build = unfrozen_builder(_Sample)
    built = build(1, c=(2,))
    assert type(built) is _Sample
    assert built == _Sample(1, c=(2,))
    assert build(5) == _Sample(5, "b", ())
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.a = 2  # type: ignore[misc]
    assert dataclasses.replace(built, b="x") == _Sample(1, "x", (2,))


@given(phone_messages)
def test_messages_built_by_the_decoder_are_ordinary_messages(msg: PhoneMessage) -> None:
    """What the hot path builds behaves like a message built the usual way."""
    decoded = decode_phone(msg.household, encode(phone_payload(msg)))
    assert type(decoded) is PhoneMessage
    assert decoded == msg
    assert hash(decoded) == hash(msg)
    assert repr(decoded) == repr(msg)


@dataclasses.dataclass(frozen=True)
class _NoSlots:
    a: int


@dataclasses.dataclass(slots=True)
class _NotFrozen:
    a: int


@dataclasses.dataclass(frozen=True, slots=True)
class _PostInit:
    a: int

    def __post_init__(self) -> None:
        pass


@dataclasses.dataclass(frozen=True, slots=True)
class _NoInitField:
    a: int
    b: int = dataclasses.field(default=0, init=False)


@pytest.mark.parametrize("cls", [_NoSlots, _NotFrozen, _PostInit, _NoInitField, int])
def test_unfrozen_builder_refuses_what_it_cannot_build(cls: type) -> None:
    """A class the builder would build wrongly is refused when the builder is made."""
    with pytest.raises(TypeError):
        unfrozen_builder(cls)


def _limited(payload: bytes) -> object:
    return msgpack.unpackb(
        payload,
        raw=False,
        strict_map_key=True,
        max_str_len=MAX_PAYLOAD,
        max_bin_len=MAX_PAYLOAD,
        max_array_len=MAX_PAYLOAD,
        max_map_len=MAX_PAYLOAD // 2,
        max_ext_len=MAX_PAYLOAD,
    )


_packable = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=4) | st.binary(max_size=2) | st.integers(0, 3), inner,
                      max_size=4),
    max_leaves=12,
)  # fmt: skip
_headers = st.sampled_from([b"\xd9", b"\xda", b"\xdb", b"\xc4", b"\xc5", b"\xc6", b"\xdc", b"\xdd",
                            b"\xde", b"\xdf", b"\xc7", b"\xc8", b"\xc9"])  # fmt: skip


@given(
    st.one_of(
        _packable.map(lambda o: msgpack.packb(o, use_bin_type=True)),
        st.tuples(_headers, st.binary(min_size=4, max_size=12)).map(b"".join),
        st.binary(max_size=64),
    ),
    st.binary(max_size=3),
)
def test_msgpack_without_keywords_accepts_only_what_the_limits_accept(
    packed: bytes, tail: bytes
) -> None:
    """The keyword-free first call (`_unpack_map`) never accepts more, nor decodes otherwise."""
    for payload in (packed, packed[:-1], packed + tail):
        try:
            quick = msgpack.unpackb(payload)
        except (ValueError, msgpack.UnpackException):
            continue
        assert repr(_limited(payload)) == repr(quick)  # repr: a NaN is not equal to itself


@pytest.mark.parametrize(
    ("decode", "payload"),
    [
        (decode_ack, b'{"alarm_id": "\\ud800", "by": "wang", "ts": 1.0}'),
        (decode_ack, b'{"alarm_id": "ph/h1/1", "by": "\\udfff", "ts": 1.0}'),
        (
            lambda p: decode_checkpoint("cp1", p),
            b'{"v": 1, "id": "r1", "type": "pass", "ts": 1.0, "plate": "\\uDBFF", "conf": 0.9}',
        ),
        (
            decode_ack,
            b'{"alarm_id": "ph/h1/1", "by": "wang", "ts": 1.0, "\\ud800": 1}',
        ),
    ],
)
def test_a_json_lone_surrogate_is_refused(decode: Any, payload: bytes) -> None:
    """JSON can escape half a surrogate pair; no UTF-8 (and so no dispatch) can carry
    it, so the payload is refused as bad_encoding instead of failing at dispatch."""
    got = decode(payload)
    assert isinstance(got, Rejected)
    assert got.reason is Reason.BAD_ENCODING
    assert got.raw == payload


def test_a_json_surrogate_pair_is_text() -> None:
    """A whole pair is one character (here an emoji) and is accepted."""
    got = decode_ack(b'{"alarm_id": "ph/h1/1", "by": "\\ud83d\\ude00", "ts": 1.0}')
    assert not isinstance(got, Rejected)
    assert got.by == "\U0001f600"


# ---------------------------------------------------------------- requests
def test_a_request_carries_its_fields_and_transaction() -> None:
    """MessagePack or JSON; the transaction (string or integer) is set apart to be echoed;
    an empty payload is an empty request."""
    packed = encode({"activation_id": "ic/x", "by": "zhao", "transaction": "t-1"})
    assert decode_request(packed) == RequestMessage("t-1", {"activation_id": "ic/x", "by": "zhao"})
    assert decode_request(b'{"transaction": 7}') == RequestMessage(7, {})
    assert decode_request(b"") == RequestMessage(None, {})
    assert decode_request(b"{}") == RequestMessage(None, {})


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (b"\xc1", Reason.BAD_ENCODING, ""),
        (encode({"a": 1})[:1] + b"", Reason.BAD_ENCODING, ""),
        (b"\x91\x01", Reason.NOT_A_MAP, ""),
        (encode({"transaction": True}), Reason.WRONG_TYPE, "'transaction'"),
        (encode({"transaction": 1.5}), Reason.WRONG_TYPE, "'transaction'"),
        (encode({"transaction": "x" * 129}), Reason.OUT_OF_RANGE, "at most 128"),
    ],
)
def test_a_bad_request_is_rejected_with_its_reason(
    payload: bytes, reason: Reason, detail: str
) -> None:
    found = decode_request(payload)
    assert isinstance(found, Rejected)
    assert found.reason is reason
    assert detail in found.detail
