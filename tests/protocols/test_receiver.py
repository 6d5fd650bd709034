"""Receiver output (Sur-Gard style): golden records, framing three ways, overflow, properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.contact_id import Qualifier
from protocols.reasons import Reason, Rejected
from protocols.receiver import (
    ACK,
    DC4,
    NAK,
    ReceiverDecoder,
    ReceiverEvent,
    ReceiverHeartbeat,
    ReceiverItem,
    answer_for,
    build_heartbeat,
    build_record,
)
from tests.strategies import chunkings, contact_id_accounts, qualifiers

# PROTOCOLS.md, "Alarm receiver output": the manual's example and the older 1-digit line.
MANUAL = b"501100 181234E12101001"
MANUAL_EVENT = ReceiverEvent("01", "100", "1234", Qualifier.NEW, 121, 1, 1, MANUAL)
OLDER = b"5011 181234E12101001"
OLDER_EVENT = ReceiverEvent("01", "1", "1234", Qualifier.NEW, 121, 1, 1, OLDER)
HEARTBEAT = b"101000" + b" " * 11 + b"@" + b" " * 4
HEARTBEAT_1011 = b"1011" + b" " * 11 + b"@" + b" " * 4
BAD_X = b"501100 181234X12101001"

# One stream of everything, and what it must decode to, however it is read.
STREAM = MANUAL + DC4 + b"\r\n" + OLDER + DC4 + HEARTBEAT + DC4 + HEARTBEAT_1011 + DC4 + BAD_X + DC4
EXPECTED: list[ReceiverItem] = [
    MANUAL_EVENT,
    OLDER_EVENT,
    ReceiverHeartbeat("01", HEARTBEAT),
    ReceiverHeartbeat("01", HEARTBEAT_1011),
    Rejected(Reason.BAD_QUALIFIER, BAD_X, "qualifier 'X': E, R or P only"),
]


def _feed(decoder: ReceiverDecoder, chunks: list[bytes]) -> list[ReceiverItem]:
    items: list[ReceiverItem] = []
    for chunk in chunks:
        items += decoder.receive_data(chunk)
    return items


def _decode_all(stream: bytes, max_record: int = 256) -> list[ReceiverItem]:
    decoder = ReceiverDecoder(max_record)
    return decoder.receive_data(stream) + decoder.receive_data(b"")


def _one(record: bytes) -> ReceiverItem:
    items = _decode_all(record + DC4)
    assert len(items) == 1
    return items[0]


def test_golden_stream_fed_whole() -> None:
    """The golden stream read in one go gives the manual's events, heartbeats and the rejection."""
    decoder = ReceiverDecoder()
    assert decoder.receive_data(STREAM) == EXPECTED
    assert decoder.pending == b""
    assert decoder.receive_data(b"") == []


def test_golden_stream_fed_one_byte_at_a_time() -> None:
    """A read is never a message: byte-at-a-time reads give the same items."""
    decoder = ReceiverDecoder()
    assert _feed(decoder, [STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED
    assert decoder.receive_data(b"") == []


def test_trailing_partial_record_stays_pending_until_dc4() -> None:
    """Bytes after the last DC4 are kept, not decoded, and complete with the next read."""
    decoder = ReceiverDecoder()
    assert decoder.receive_data(STREAM + MANUAL[:9]) == EXPECTED
    assert decoder.pending == MANUAL[:9]
    assert decoder.receive_data(MANUAL[9:]) == []
    assert decoder.pending == MANUAL
    assert decoder.receive_data(DC4) == [MANUAL_EVENT]
    assert decoder.pending == b""


def test_partial_record_at_end_of_stream_is_truncated() -> None:
    """b"" ends the stream: a record begun but never ended is Rejected(TRUNCATED)."""
    decoder = ReceiverDecoder()
    assert decoder.receive_data(MANUAL[:9]) == []
    [item] = decoder.receive_data(b"")
    assert isinstance(item, Rejected)
    assert item.reason is Reason.TRUNCATED
    assert item.raw == MANUAL[:9]
    assert decoder.pending == b""


def test_end_of_stream_is_idempotent_and_final() -> None:
    """After b"", more b"" gives nothing and more data is misuse."""
    decoder = ReceiverDecoder()
    assert decoder.receive_data(b"") == []
    assert decoder.receive_data(b"") == []
    with pytest.raises(ValueError, match="end of the stream"):
        decoder.receive_data(MANUAL + DC4)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (MANUAL, MANUAL_EVENT),
        (OLDER, OLDER_EVENT),
        (
            b"5021234567 98BEEF12R13002015",  # 9 header digits, 98, 6-char account
            ReceiverEvent("02", "1234567", "BEEF12", Qualifier.RESTORE, 130, 2, 15, b""),
        ),
        (
            b"501100   1812345P60200000  ",  # several spaces, 5-char account, padding
            ReceiverEvent("01", "100", "12345", Qualifier.PREVIOUS, 602, 0, 0, b""),
        ),
        (
            b"501100 18beef1E11001004",  # lower-case hex account, normalised
            ReceiverEvent("01", "100", "BEEF1", Qualifier.NEW, 110, 1, 4, b""),
        ),
    ],
)
def test_event_records_decode_without_fixed_columns(record: bytes, expected: ReceiverEvent) -> None:
    """Header width, spaces, account width and marker vary; the body is read from the marker."""
    item = _one(record)
    assert isinstance(item, ReceiverEvent)
    assert item == ReceiverEvent(
        expected.receiver,
        expected.line,
        expected.account,
        expected.qualifier,
        expected.code,
        expected.group,
        expected.zone,
        record,
    )


@pytest.mark.parametrize(
    ("record", "receiver"),
    [
        (HEARTBEAT, "01"),
        (HEARTBEAT_1011, "01"),
        (b"107000 @", "07"),
        (b"1123456789   @", "12"),  # 1 + 9 digits
    ],
)
def test_heartbeats_decode(record: bytes, receiver: str) -> None:
    """`1` + 2-9 digits + spaces + `@` + optional spaces is a heartbeat of receiver RR."""
    assert _one(record) == ReceiverHeartbeat(receiver, record)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (BAD_X, Reason.BAD_QUALIFIER),
        (b"501100 181234e12101001", Reason.BAD_QUALIFIER),  # letters are upper case
        (b"501100 181234E09901001", Reason.BAD_EVENT_CODE),  # below 100
        (b"501100 181234E1B101001", Reason.BAD_EVENT_CODE),  # not decimal
        (b"501100 1812A4E12101001", Reason.BAD_CHARACTER),  # A never occurs
        (b"501100 1812\xff4E12101001", Reason.BAD_CHARACTER),
        (b"501100 181234E1210B001", Reason.BAD_CHARACTER),  # hex group
        (b"501100 181234E121010B1", Reason.BAD_CHARACTER),  # hex zone
        (b"501100 171234E12101001", Reason.BAD_MESSAGE_TYPE),
        (b"501100 18123E12101001", Reason.BAD_LENGTH),  # 3-char account
        (b"501100 181234567E12101001", Reason.BAD_LENGTH),  # 7-char account
        (b"50110000000 181234E12101001", Reason.BAD_FRAME),  # 10 header digits
        (b"501 181234E12101001", Reason.BAD_FRAME),  # 2 header digits
        (b"501100181234E12101001", Reason.BAD_FRAME),  # no space
        (b"501100 18 1234E12101001", Reason.BAD_FRAME),  # two bodies
        (b"501100    ", Reason.BAD_FRAME),  # header only
        (b"hello", Reason.BAD_FRAME),
        (b"101000           ", Reason.BAD_FRAME),  # heartbeat without @
        (b"10 @", Reason.BAD_FRAME),  # heartbeat with one digit
        (b"5011\r\n 181234E12101001", Reason.BAD_FRAME),  # noise inside a record
    ],
)
def test_bad_records_are_rejected_with_their_reason(record: bytes, reason: Reason) -> None:
    """A well-delimited bad record is one Rejected with the precise reason and the record as raw."""
    item = _one(record)
    assert isinstance(item, Rejected)
    assert item.reason is reason
    assert item.raw == record
    assert item.detail
    assert answer_for(item) == NAK


def test_noise_around_records_is_stripped() -> None:
    """CR, LF and NUL around records are printer/line noise; empty records are ignored."""
    stream = b"\x00\r\n" + MANUAL + b"\r\n" + DC4 + DC4 + b"\r\n\x00" + DC4 + b"\n\r"
    decoder = ReceiverDecoder()
    assert decoder.receive_data(stream) == [MANUAL_EVENT]
    assert decoder.pending == b""
    assert decoder.receive_data(b"") == []


def test_overlong_record_overflows_once_then_resynchronises() -> None:
    """A record past max_record is one OVERFLOW (raw bounded), then the next record decodes."""
    decoder = ReceiverDecoder(max_record=40)
    long_record = b"5" * 100
    items = decoder.receive_data(long_record[:30])
    assert items == []
    items = decoder.receive_data(long_record[30:])
    assert len(items) == 1
    assert isinstance(items[0], Rejected)
    assert items[0].reason is Reason.OVERFLOW
    assert items[0].raw == long_record[:40]
    assert decoder.pending == b""
    # Still discarding: more of the long record is dropped unbuffered, not reported again.
    assert decoder.receive_data(b"x" * 1000) == []
    assert decoder.pending == b""
    assert decoder.receive_data(DC4 + MANUAL + DC4) == [MANUAL_EVENT]


def test_overflow_inside_one_read_with_its_dc4() -> None:
    """An overlong record that ends in the same read is reported once and not discarded past."""
    decoder = ReceiverDecoder(max_record=40)
    items = decoder.receive_data(b"9" * 41 + DC4 + MANUAL + DC4)
    assert [type(i) for i in items] == [Rejected, ReceiverEvent]
    assert isinstance(items[0], Rejected)
    assert items[0].reason is Reason.OVERFLOW
    assert items[1] == MANUAL_EVENT


def test_record_of_exactly_max_record_bytes_is_not_an_overflow() -> None:
    """The bound is inclusive: max_record bytes are decoded, one more overflows."""
    record = b"501100" + b" " * 15 + b"181234E12101001"  # 36 bytes
    assert len(record) == 36
    assert _decode_all(record + DC4, max_record=36) == [
        ReceiverEvent("01", "100", "1234", Qualifier.NEW, 121, 1, 1, record)
    ]
    [item] = _decode_all(record + DC4, max_record=35)
    assert isinstance(item, Rejected)
    assert item.reason is Reason.OVERFLOW


def test_end_of_stream_while_discarding_adds_nothing() -> None:
    """The overflow was already reported; the end of the stream does not report it again."""
    decoder = ReceiverDecoder(max_record=40)
    [item] = decoder.receive_data(b"7" * 50)
    assert isinstance(item, Rejected)
    assert item.reason is Reason.OVERFLOW
    assert decoder.receive_data(b"") == []


@pytest.mark.parametrize(
    ("max_record", "error"),
    [(27, ValueError), (0, ValueError), (True, TypeError), ("256", TypeError)],
)
def test_decoder_misuse_raises(max_record: object, error: type[Exception]) -> None:
    """A bound too small for any record, or not an int, is misuse."""
    with pytest.raises(error):
        ReceiverDecoder(max_record)  # type: ignore[arg-type]


def test_receive_data_of_a_non_bytes_is_misuse() -> None:
    """Feeding text instead of bytes is a TypeError."""
    with pytest.raises(TypeError):
        ReceiverDecoder().receive_data("501100")  # type: ignore[arg-type]


def test_receive_data_accepts_bytearray_and_memoryview() -> None:
    """Buffers from a serial read are accepted like bytes."""
    decoder = ReceiverDecoder()
    assert decoder.receive_data(bytearray(MANUAL)) == []
    assert decoder.receive_data(memoryview(DC4)) == [MANUAL_EVENT]


def test_answer_for_each_kind_of_item() -> None:
    """ACK for events and heartbeats, NAK for any rejection, TypeError for anything else."""
    assert answer_for(MANUAL_EVENT) == ACK == b"\x06"
    assert answer_for(ReceiverHeartbeat("01", HEARTBEAT)) == ACK
    assert answer_for(Rejected(Reason.OVERFLOW, b"")) == NAK == b"\x15"
    assert answer_for(Rejected(Reason.TRUNCATED, b"")) == NAK
    with pytest.raises(TypeError):
        answer_for(b"\x06")  # type: ignore[arg-type]


def test_builders_give_the_manual_bytes() -> None:
    """Builders reproduce the manual's record and heartbeat byte for byte, DC4 included."""
    assert build_record("01", "100", "1234", Qualifier.NEW, 121, 1, 1) == MANUAL + DC4
    assert build_record("01", "1", "1234", Qualifier.NEW, 121, 1, 1) == OLDER + DC4
    assert build_heartbeat() == HEARTBEAT + DC4
    assert build_heartbeat("07") == b"107000" + b" " * 11 + b"@" + b" " * 4 + DC4
    assert DC4 == b"\x14"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"receiver": "1"}, ValueError),
        ({"receiver": "001"}, ValueError),
        ({"receiver": "0a"}, ValueError),
        ({"receiver": 1}, TypeError),
        ({"line": ""}, ValueError),
        ({"line": "12345678"}, ValueError),
        ({"account": "123"}, ValueError),
        ({"account": "1234567"}, ValueError),
        ({"account": "12A4"}, ValueError),
        ({"account": "beef"}, ValueError),
        ({"account": 1234}, TypeError),
        ({"qualifier": 2}, ValueError),
        ({"qualifier": "E"}, TypeError),
        ({"qualifier": True}, TypeError),
        ({"code": 99}, ValueError),
        ({"code": 1000}, ValueError),
        ({"code": "121"}, TypeError),
        ({"group": 100}, ValueError),
        ({"zone": -1}, ValueError),
        ({"zone": False}, TypeError),
    ],
)
def test_build_record_misuse_raises(kwargs: dict[str, object], error: type[Exception]) -> None:
    """Every field out of its domain raises: building is our API, not peer input."""
    fields: dict[str, object] = {
        "receiver": "01",
        "line": "100",
        "account": "1234",
        "qualifier": Qualifier.NEW,
        "code": 121,
        "group": 1,
        "zone": 1,
    }
    fields.update(kwargs)
    with pytest.raises(error):
        build_record(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("receiver", "error"), [("1", ValueError), (1, TypeError)])
def test_build_heartbeat_misuse_raises(receiver: object, error: type[Exception]) -> None:
    """A receiver number that is not two digits is misuse."""
    with pytest.raises(error):
        build_heartbeat(receiver)  # type: ignore[arg-type]


# ----------------------------------------------------------------- properties

_DIGITS = "0123456789"


@st.composite
def _events(draw: st.DrawFn) -> ReceiverEvent:
    """A valid event and, in raw, the record the builder prints for it."""
    receiver = draw(st.text(_DIGITS, min_size=2, max_size=2))
    line = draw(st.text(_DIGITS, min_size=1, max_size=7))
    account = draw(contact_id_accounts(4, 6))
    qualifier = draw(qualifiers())
    code = draw(st.integers(100, 999))
    group = draw(st.integers(0, 99))
    zone = draw(st.integers(0, 999))
    record = build_record(receiver, line, account, qualifier, code, group, zone)
    return ReceiverEvent(receiver, line, account, qualifier, code, group, zone, record[:-1])


def _records() -> st.SearchStrategy[bytes]:
    """Whole records (DC4 included): good events, heartbeats, noise, garbage."""
    return st.one_of(
        _events().map(lambda e: e.raw + DC4),
        st.text(_DIGITS, min_size=2, max_size=2).map(build_heartbeat),
        st.sampled_from([b"\r\n", b"\x00", DC4, BAD_X + DC4]),
        st.binary(max_size=60).map(lambda b: b + DC4),
    )


@given(_events())
def test_round_trip_build_then_decode(event: ReceiverEvent) -> None:
    """Any valid fields built into a record decode back to the same event, answered ACK."""
    items = _decode_all(event.raw + DC4)
    assert items == [event]
    assert answer_for(items[0]) == ACK


@given(st.lists(_records(), max_size=8).map(b"".join), st.binary(max_size=20), st.data())
def test_any_split_points_give_the_same_items(
    stream: bytes, tail: bytes, data: st.DataObject
) -> None:
    """However the stream is cut into reads, the items and the pending bytes are the same."""
    whole = ReceiverDecoder(max_record=48)
    expected = whole.receive_data(stream + tail)
    chunked = ReceiverDecoder(max_record=48)
    assert _feed(chunked, data.draw(chunkings(stream + tail))) == expected
    assert chunked.pending == whole.pending
    assert chunked.receive_data(b"") == whole.receive_data(b"")


@given(st.binary(max_size=600), st.data())
def test_arbitrary_bytes_never_raise_and_stay_bounded(stream: bytes, data: st.DataObject) -> None:
    """Any bytes, any reads: only items come back, and the buffer never exceeds max_record."""
    decoder = ReceiverDecoder(max_record=32)
    items: list[ReceiverItem] = []
    for chunk in data.draw(chunkings(stream)):
        items += decoder.receive_data(chunk)
        assert len(decoder.pending) <= 32
    items += decoder.receive_data(b"")
    for item in items:
        assert isinstance(item, ReceiverEvent | ReceiverHeartbeat | Rejected)
        assert answer_for(item) in (ACK, NAK)
        if isinstance(item, Rejected):
            assert len(item.raw) <= 32


@given(st.binary(max_size=200), _events(), st.data())
def test_garbage_then_a_good_record_decodes_the_record(
    garbage: bytes, event: ReceiverEvent, data: st.DataObject
) -> None:
    """Whatever garbage came before, the first good record after a DC4 is decoded."""
    decoder = ReceiverDecoder(max_record=64)
    items = _feed(decoder, data.draw(chunkings(garbage + DC4 + event.raw + DC4)))
    assert items[-1] == event


@given(st.binary(min_size=41, max_size=400), _events(), st.data())
def test_overflow_then_a_good_record_decodes_the_record(
    junk: bytes, event: ReceiverEvent, data: st.DataObject
) -> None:
    """An overlong record gives exactly one OVERFLOW, then the next record decodes."""
    overlong = b"?" + junk.replace(DC4, b"?")  # starts with no noise, holds no DC4
    decoder = ReceiverDecoder(max_record=40)
    items = _feed(decoder, data.draw(chunkings(overlong + DC4 + event.raw + DC4)))
    assert len(items) == 2
    assert isinstance(items[0], Rejected)
    assert items[0].reason is Reason.OVERFLOW
    assert items[0].raw == overlong[:40]
    assert items[1] == event
