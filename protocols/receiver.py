"""Alarm-receiver (Sur-Gard style) output to automation software: a sans-I/O decoder.

Theory of operation (PROTOCOLS.md, "Alarm receiver output to automation software").
A receiver that answers alarm phones prints one record per message on RS-232 (or
TCP), each record ending with DC4 (0x14). The automation software answers each
record with ACK (0x06) or NAK (0x15, "send again") within 4 s; unanswered, the
receiver retries 3 more times, then holds the event and replays its buffer when a
heartbeat is next acknowledged, so duplicates after an outage are normal and are
the dedup layer's business, not ours.

Framing (STYLE.md 2, "a read is never a message"). `ReceiverDecoder` keeps one
bounded buffer; a record is the bytes up to the next DC4, whatever the reads
were. A record that grows past ``max_record`` is dropped with one
`Rejected(OVERFLOW)` holding its first ``max_record`` bytes, and the decoder
discards, without buffering, up to the next DC4, where it resynchronises. CR,
LF and NUL around a record are noise and are stripped: receivers that also drive
a printer or terminal end lines with CR/LF, and a serial line's power-up or
break reads as NUL; none of them is part of a record, and a DC4 with nothing but
noise before it is ignored (there is no record to answer). `b""` is the end of
the stream: a partial record then becomes `Rejected(TRUNCATED)`; data after it
is misuse. `pending` shows the bytes of a record begun but not yet ended.

Records (no fixed column offsets: header widths differ between units):

- Contact ID event: ``5`` + header digits, one or more spaces, then the body
  ``MT AAAA Q XYZ GG CCC``: ``18`` (or ``98``), account (4-6 of 0-9 B-F),
  qualifier letter ``E`` new / ``R`` restore / ``P`` previous, 3-digit event
  code, 2-digit group, 3-digit zone. The header is 3-9 digits after the ``5``:
  the receiver number is the first two, the line the rest. Manual example
  ``501100 181234E12101001`` = receiver 01, line 100, account 1234, duress 121,
  group 01, user 001; older units print ``5011 181234E12101001`` (line 1). The
  body is read from the ``18`` marker and its fixed-width tail, so the account
  width follows from the body length. No checksum is printed; trailing spaces
  (padding) are allowed. Lower-case account hex ``b``-``f`` is accepted and
  normalised, as in `protocols.contact_id` (see its docstring for why).
- Heartbeat: ``1RR000`` + 11 spaces + ``@`` + 4 spaces (some units ``1011``);
  accepted as ``1`` + 2-9 digits + spaces + ``@`` + optional spaces, receiver =
  the first two digits. It must be acknowledged too: a missing heartbeat means
  the receiver link is down.

Answers. Every item comes from a DC4-delimited record (or, for TRUNCATED, from
the end of the stream), and `answer_for` gives the byte for it: ACK for an event
or heartbeat, NAK for every `Rejected`, since each rejection is record-level
(BAD_FRAME, BAD_LENGTH, BAD_CHARACTER, BAD_MESSAGE_TYPE, BAD_QUALIFIER,
BAD_EVENT_CODE, OVERFLOW) and NAK asks the receiver to send that record again
(a line hit is then corrected by the retry). A TRUNCATED comes at end of stream,
where no answer can reach the receiver; it holds and replays the event. The
gateway sends the ACK only after the event is durably stored (DESIGN.md
principle 1); this module only says which byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

from protocols.contact_id import Qualifier
from protocols.reasons import Reason, Rejected

__all__ = [
    "ACK",
    "DC4",
    "NAK",
    "ReceiverDecoder",
    "ReceiverEvent",
    "ReceiverHeartbeat",
    "ReceiverItem",
    "answer_for",
    "build_heartbeat",
    "build_record",
]

ACK = b"\x06"
"""Positive acknowledgement to the receiver: the record is stored (kiss-off)."""
NAK = b"\x15"
"""Negative acknowledgement: the receiver sends the record again."""
DC4 = b"\x14"
"""Ends every record the receiver prints."""

_NOISE = b"\r\n\x00"
_RECORD_START = re.compile(rb"[^\r\n\x00]")
_HEARTBEAT = re.compile(rb"1([0-9]{2})[0-9]{0,7} +@ *")
_EVENT_HEADER = re.compile(rb"5([0-9]{2})([0-9]{1,7}) +")
# The body is "18" + account (4-6) + Q + XYZ + GG + CCC: 15 to 17 characters.
_TAIL = 9  # Q XYZ GG CCC, fixed width, read from the right so the account may vary
_BODY_LENGTHS = range(2 + 4 + _TAIL, 2 + 6 + _TAIL + 1)
_MESSAGE_TYPES = frozenset({"18", "98"})
_QUALIFIER_BY_LETTER = {"E": Qualifier.NEW, "R": Qualifier.RESTORE, "P": Qualifier.PREVIOUS}
_LETTER_BY_QUALIFIER = {q: letter for letter, q in _QUALIFIER_BY_LETTER.items()}
_ACCOUNT_CHARS = frozenset("0123456789BCDEF")
_ACCOUNT_CHARS_READ = _ACCOUNT_CHARS | frozenset("bcdef")  # read leniently, printed upper
_DECIMAL = frozenset("0123456789")
# Longest standard record: "5" + 9 header digits + " " + 17-character body = 28.
# A smaller bound would reject every record, so it is refused as misuse.
_MIN_RECORD = 28


@dataclass(frozen=True, slots=True)
class ReceiverEvent:
    """A Contact ID event as printed by the receiver (no checksum on this link)."""

    receiver: str
    """Receiver number, the first two header digits (e.g. ``"01"``)."""
    line: str
    """Line (line card) number, the rest of the header digits (e.g. ``"100"``)."""
    account: str
    """4-6 characters of 0-9, B-F, upper case."""
    qualifier: Qualifier
    code: int
    group: int
    zone: int
    raw: bytes
    """The record without DC4 and without surrounding CR/LF/NUL noise."""


@dataclass(frozen=True, slots=True)
class ReceiverHeartbeat:
    """The receiver's periodic link test; answered with ACK like an event."""

    receiver: str
    raw: bytes


ReceiverItem: TypeAlias = ReceiverEvent | ReceiverHeartbeat | Rejected


class ReceiverDecoder:
    """Turn the receiver's byte stream into events, heartbeats and rejections."""

    __slots__ = ("_buffer", "_discarding", "_ended", "_max_record")

    def __init__(self, max_record: int = 256) -> None:
        if isinstance(max_record, bool) or not isinstance(max_record, int):
            raise TypeError(f"max_record must be an int, not {type(max_record).__name__}")
        if max_record < _MIN_RECORD:
            raise ValueError(f"max_record must be at least {_MIN_RECORD}, got {max_record}")
        self._max_record = max_record
        self._buffer = bytearray()  # never longer than max_record
        self._discarding = False  # after OVERFLOW, until the next DC4
        self._ended = False

    @property
    def pending(self) -> bytes:
        """The bytes of a record begun but not yet ended by DC4 (at most ``max_record``)."""
        return bytes(self._buffer)

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[ReceiverItem]:
        """Feed bytes as read; return the items completed by them. ``b""`` ends the stream."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        if self._ended:
            if data:
                raise ValueError("receive_data called with data after the end of the stream")
            return []
        if not data:
            self._ended = True
            return self._end_of_stream()
        view = bytes(data)
        items: list[ReceiverItem] = []
        start = 0
        while start < len(view):
            end = view.find(DC4, start)
            terminated = end >= 0
            if not terminated:
                end = len(view)
            self._take(view, start, end, terminated, items)
            start = end + 1
        return items

    def _take(
        self, view: bytes, start: int, end: int, terminated: bool, items: list[ReceiverItem]
    ) -> None:
        """Add view[start:end] to the record; `terminated` if a DC4 followed it."""
        if self._discarding:
            # Overflow already reported: drop bytes unbuffered until the DC4.
            self._discarding = not terminated
            return
        if not self._buffer:
            first = _RECORD_START.search(view, start, end)
            start = end if first is None else first.start()
        room = self._max_record - len(self._buffer)
        if end - start > room:
            raw = bytes(self._buffer) + view[start : start + room]
            self._buffer.clear()
            items.append(
                Rejected(
                    Reason.OVERFLOW,
                    raw,
                    f"record longer than {self._max_record} bytes; dropped to the next DC4",
                )
            )
            self._discarding = not terminated
            return
        self._buffer += view[start:end]
        if terminated:
            record = bytes(self._buffer)
            self._buffer.clear()
            item = _decode_record(record)
            if item is not None:
                items.append(item)

    def _end_of_stream(self) -> list[ReceiverItem]:
        """A record begun but never ended is TRUNCATED; an overflow was already reported."""
        self._discarding = False
        if not self._buffer:
            return []
        raw = bytes(self._buffer)
        self._buffer.clear()
        return [Rejected(Reason.TRUNCATED, raw, "stream ended before DC4")]


def _decode_record(record: bytes) -> ReceiverItem | None:
    """Decode one record (DC4 removed); None for a record of nothing but noise."""
    record = record.strip(_NOISE)
    if not record:
        return None
    heartbeat = _HEARTBEAT.fullmatch(record)
    if heartbeat is not None:
        return ReceiverHeartbeat(receiver=heartbeat[1].decode("ascii"), raw=record)
    header = _EVENT_HEADER.match(record)
    if header is None:
        return Rejected(Reason.BAD_FRAME, record, "neither a Contact ID record nor a heartbeat")
    # latin-1 maps each byte to one character; non-ASCII then fails the checks.
    body = record[header.end() :].rstrip(b" ").decode("latin-1")
    if not body or " " in body:
        return Rejected(Reason.BAD_FRAME, record, "expected one body after the header")
    if len(body) not in _BODY_LENGTHS:
        return Rejected(Reason.BAD_LENGTH, record, f"body of {len(body)} characters, not 15-17")
    mt, account, tail = body[:2], body[2:-_TAIL], body[-_TAIL:]
    if mt not in _MESSAGE_TYPES:
        return Rejected(Reason.BAD_MESSAGE_TYPE, record, f"marker {mt!r}: 18 or 98 only")
    if any(c not in _ACCOUNT_CHARS_READ for c in account):
        return Rejected(Reason.BAD_CHARACTER, record, f"account {account!r}: 0-9, B-F only")
    account = account.upper()  # only b-f can change: the canonical form is upper case
    letter, xyz, gg, ccc = tail[0], tail[1:4], tail[4:6], tail[6:9]
    qualifier = _QUALIFIER_BY_LETTER.get(letter)
    if qualifier is None:
        return Rejected(Reason.BAD_QUALIFIER, record, f"qualifier {letter!r}: E, R or P only")
    if not _is_decimal(xyz) or int(xyz) < 100:
        return Rejected(Reason.BAD_EVENT_CODE, record, f"event code {xyz!r}: decimal 100-999")
    if not _is_decimal(gg) or not _is_decimal(ccc):
        return Rejected(Reason.BAD_CHARACTER, record, f"group {gg!r} / zone {ccc!r}: decimal")
    return ReceiverEvent(
        receiver=header[1].decode("ascii"),
        line=header[2].decode("ascii"),
        account=account,
        qualifier=qualifier,
        code=int(xyz),
        group=int(gg),
        zone=int(ccc),
        raw=record,
    )


def _is_decimal(field: str) -> bool:
    """True if every character is an ASCII decimal digit (str.isdigit accepts '²' too)."""
    return all(c in _DECIMAL for c in field)


def answer_for(item: ReceiverItem) -> bytes:
    """The byte the automation sends back: ACK for an event or heartbeat, NAK for a rejection."""
    if isinstance(item, ReceiverEvent | ReceiverHeartbeat):
        return ACK
    if isinstance(item, Rejected):
        return NAK
    raise TypeError(f"not a receiver item: {type(item).__name__}")


def _check_digits(name: str, value: object, low: int, high: int) -> str:
    """Return `value` if it is a str of low..high ASCII digits, else raise."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not low <= len(value) <= high or not _is_decimal(value):
        raise ValueError(f"{name} must be {low}-{high} decimal digits, got {value!r}")
    return value


def _check_int(name: str, value: object, low: int, high: int) -> int:
    """Return `value` if it is an int (not bool) in [low, high], else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return value


def build_record(  # noqa: PLR0917 - the record's fields in wire order, as callers read them
    receiver: str,
    line: str,
    account: str,
    qualifier: Qualifier | int,
    code: int,
    group: int,
    zone: int,
) -> bytes:
    """Return one Contact ID record as the receiver prints it, DC4 included.

    ``5`` + receiver (2 digits) + line (1-7 digits) + a space + ``18`` + account
    + qualifier letter + code + group + zone. ValueError/TypeError on misuse;
    the account must already be canonical (4-6 of 0-9, B-F upper case).
    """
    _check_digits("receiver", receiver, 2, 2)
    _check_digits("line", line, 1, 7)
    if not isinstance(account, str):
        raise TypeError(f"account must be a str, not {type(account).__name__}")
    if not 4 <= len(account) <= 6 or any(c not in _ACCOUNT_CHARS for c in account):
        raise ValueError(f"account must be 4-6 characters of 0-9, B-F, got {account!r}")
    if isinstance(qualifier, bool) or not isinstance(qualifier, int):
        raise TypeError(f"qualifier must be a Qualifier or int, got {qualifier!r}")
    letter = _LETTER_BY_QUALIFIER[Qualifier(qualifier)]  # ValueError unless 1, 3, 6
    _check_int("code", code, 100, 999)
    _check_int("group", group, 0, 99)
    _check_int("zone", zone, 0, 999)
    text = f"5{receiver}{line} 18{account}{letter}{code:03d}{group:02d}{zone:03d}"
    return text.encode("ascii") + DC4


def build_heartbeat(receiver: str = "01") -> bytes:
    """Return the heartbeat ``1RR000`` + 11 spaces + ``@`` + 4 spaces, DC4 included."""
    _check_digits("receiver", receiver, 2, 2)
    return f"1{receiver}000{' ' * 11}@{' ' * 4}".encode("ascii") + DC4
