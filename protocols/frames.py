"""Native serial frames: COBS-delimited, CRC-32-checked, sequence-numbered.

Theory of operation. The spec is CONTRACT.md, "Serial ingress → Native device
frames": base stations and roadside controllers on RS-485/RS-232 send the same
MessagePack maps as the MQTT ingress, "framed so that a corrupted or truncated
frame is detected and dropped, never mis-parsed, and a reader resynchronises on
the next frame". docs/framing.md defines the framing this module implements, with
worked bytes and the reasons behind each choice; in short:

1. Delimiting. A frame travels as ``00 COBS(body) 00``. COBS (Cheshire & Baker,
   "Consistent Overhead Byte Stuffing", IEEE/ACM Trans. Networking 7(2), 1999)
   rewrites the body so that it holds no 0x00, at a cost of at most one byte in
   254, so 0x00 appears on the wire only between frames. A reader never has to
   trust anything inside a frame to find the next one: whatever noise, dropped
   bytes or a half-sent frame did, it resynchronises at the next 0x00. The
   leading 0x00 closes whatever noise came before the frame (an RS-485 driver
   switching on often emits a spurious byte), so that noise is rejected on its
   own instead of spoiling the frame; the empty frames this makes (``00 00``)
   are ignored.
2. Body. ``version(1) = 0xA1, type(1), seq(2), length(2), payload(length),
   crc(4)``; integers are big-endian; ``crc`` is CRC-32 (IEEE 802.3, the one
   `zlib.crc32` computes) over every byte before it. DATA carries an opaque
   payload (the MessagePack map; `protocols.payloads` reads it), ACK none, NAK
   one byte, a `NakCode`.
3. Checks, in this order, each with its `Reason`: the COBS encoding (BAD_FRAME),
   the minimum size (BAD_FRAME), the CRC (BAD_CRC), then, and only once the CRC
   has vouched for the bytes, the version (UNKNOWN_VERSION: an intact frame of a
   version we do not speak), the declared length against the bytes that arrived
   (BAD_LENGTH), the type (BAD_FRAME) and the payload each type allows
   (BAD_LENGTH, TOO_LARGE). Nothing inside a frame is believed before its CRC
   verifies.
4. One bounded buffer (STYLE.md 2). A run of more than ``max_frame`` bytes
   without a delimiter yields one `Rejected(OVERFLOW)` holding its first
   ``max_frame`` bytes; the rest, up to the next 0x00, is discarded unbuffered.
   ``b""`` is the end of the stream: a partial frame becomes
   `Rejected(TRUNCATED)`, and the decoder is then ready for a new stream (a
   reopened port).

The decoder is sans-I/O (STYLE.md 1): whatever the reads were, the same stream
yields the same items. Which frames to answer, and when, is the link protocol of
docs/framing.md; the gateway core decides, this module only shapes bytes.
"""

from __future__ import annotations

import enum
import operator
import struct
import zlib
from dataclasses import dataclass
from typing import TypeAlias

from protocols.reasons import Reason, Rejected

__all__ = [
    "DELIMITER",
    "MAX_FRAME",
    "MAX_PAYLOAD",
    "VERSION",
    "AckFrame",
    "DataFrame",
    "Frame",
    "FrameDecoder",
    "FrameItem",
    "FrameType",
    "NakCode",
    "NakFrame",
    "cobs_decode",
    "cobs_encode",
    "encode_ack",
    "encode_data",
    "encode_nak",
]

DELIMITER = b"\x00"
"""The only byte COBS keeps out of a frame: it separates frames, and only that."""
VERSION = 0xA1
"""First body byte of this version of the framing (``A`` for alarmgw, version 1)."""
MAX_PAYLOAD = 4096
"""Largest DATA payload, in bytes (docs/framing.md, "Limits")."""

_BytesLike: TypeAlias = bytes | bytearray | memoryview  # what a serial read may hand us

_HEADER = struct.Struct(">BBHH")  # version, type, seq, length
_CRC = struct.Struct(">I")
_OVERHEAD = _HEADER.size + _CRC.size  # 10: the body of an ACK
_SEQ_LIMIT = 0x10000
_BLOCK = 254  # data bytes in a full COBS block, whose code byte is 0xFF


def _cobs_bound(size: int) -> int:
    """Most bytes COBS turns ``size`` bytes into: one code byte per started block of 254."""
    return size + 1 + size // _BLOCK


MAX_FRAME = _cobs_bound(_OVERHEAD + MAX_PAYLOAD)
"""Most bytes between two delimiters of a valid frame (4123); the decoder's default bound."""
_MIN_MAX_FRAME = _cobs_bound(_OVERHEAD + 1)  # 12: the decoder must at least hold a NAK


class FrameType(enum.IntEnum):
    """The second body byte. The values are the ASCII controls a field tech already
    reads on alarm-receiver lines (PROTOCOLS.md: ACK 0x06, NAK 0x15), STX for data."""

    DATA = 0x02
    """Carries one payload; the receiver answers with ACK or NAK of its seq."""
    ACK = 0x06
    """The DATA frame with this seq is durably stored: the sender moves on."""
    NAK = 0x15
    """The DATA frame with this seq was intact but not accepted; see `NakCode`."""


class NakCode(enum.IntEnum):
    """The one payload byte of a NAK: what the sender does next (docs/framing.md)."""

    RETRY = 0
    """Not accepted now (e.g. the store is unavailable): send it again after the timeout."""
    REFUSED = 1
    """Refused for its content, which a resend cannot change: drop it, send the next."""


def _check_seq(seq: int) -> int:
    value = operator.index(seq)  # TypeError for floats and strings: misuse
    if not 0 <= value < _SEQ_LIMIT:
        msg = f"seq {value} outside 0..65535"
        raise ValueError(msg)
    return value


def _as_bytes(data: _BytesLike) -> bytes:
    # memoryview refuses int and str (bytes(5) would silently be five zeros).
    return data if type(data) is bytes else memoryview(data).tobytes()


@dataclass(frozen=True, slots=True)
class DataFrame:
    """A DATA frame: one opaque payload (a MessagePack map) and its sequence number."""

    seq: int
    payload: bytes

    def __post_init__(self) -> None:
        _check_seq(self.seq)
        if len(self.payload) > MAX_PAYLOAD:
            msg = f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class AckFrame:
    """An ACK: the DATA frame with this seq is durably stored."""

    seq: int

    def __post_init__(self) -> None:
        _check_seq(self.seq)


@dataclass(frozen=True, slots=True)
class NakFrame:
    """A NAK: the DATA frame with this seq was intact but not accepted.

    ``code`` is a byte; a sender reads it as a `NakCode` and treats a code it
    does not know as `NakCode.RETRY` (docs/framing.md), so it stays an int here.
    """

    seq: int
    code: int

    def __post_init__(self) -> None:
        _check_seq(self.seq)
        if not 0 <= operator.index(self.code) <= 0xFF:
            msg = f"NAK code {self.code} outside 0..255"
            raise ValueError(msg)


Frame: TypeAlias = DataFrame | AckFrame | NakFrame
FrameItem: TypeAlias = DataFrame | AckFrame | NakFrame | Rejected


# ----------------------------------------------------------------------- COBS


def cobs_encode(data: _BytesLike) -> bytes:
    """COBS-encode ``data``: the result holds no 0x00 and is at most 1 byte in 254 longer.

    Each block is a code byte ``n`` followed by ``n - 1`` non-zero bytes, then an
    implied zero; code 0xFF is 254 bytes with no implied zero, and the zero implied
    after the last block is dropped. A run ending on a full block gets no final
    ``01``, as in the paper's and Wikipedia's examples.
    """
    pieces = _as_bytes(data).split(DELIMITER)
    out = bytearray()
    last = len(pieces) - 1
    for index, piece in enumerate(pieces):
        start = 0
        while len(piece) - start >= _BLOCK:
            out.append(0xFF)
            out += piece[start : start + _BLOCK]
            start += _BLOCK
        rest = piece[start:]
        if index == last and start and not rest:
            break  # the data ends on a full block: nothing left to code
        out.append(len(rest) + 1)
        out += rest
    return bytes(out)


def cobs_decode(data: _BytesLike) -> bytes | None:
    """The bytes `cobs_encode` turned into ``data``, or None if no bytes encode to it.

    None for: empty input, a 0x00 (a delimiter is never inside a frame), a code
    byte promising more bytes than remain, and the one non-canonical form, an
    empty final block after a full one (``... FF <254 bytes> 01``). So decoding
    is the exact inverse of encoding: every accepted input has one meaning, and
    every meaning one wire form.
    """
    encoded = _as_bytes(data)
    if not encoded or 0 in encoded:
        return None
    out = bytearray()
    size = len(encoded)
    index = 0
    previous = 0
    while True:
        code = encoded[index]
        end = index + code
        if end > size:
            return None  # truncated, or a corrupted code byte
        out += encoded[index + 1 : end]
        if end == size:
            if code == 1 and previous == 0xFF:
                return None
            return bytes(out)
        if code != 0xFF:
            out.append(0)
        previous = code
        index = end


# ------------------------------------------------------------------- encoding


def _encode(frame_type: FrameType, seq: int, payload: bytes) -> bytes:
    content = _HEADER.pack(VERSION, frame_type, _check_seq(seq), len(payload)) + payload
    body = content + _CRC.pack(zlib.crc32(content))
    return DELIMITER + cobs_encode(body) + DELIMITER


def encode_data(seq: int, payload: _BytesLike) -> bytes:
    """The wire bytes of a DATA frame, both delimiters included.

    Raises ValueError for a seq outside 0..65535 or a payload over `MAX_PAYLOAD`
    bytes, TypeError for a payload that is not bytes-like.
    """
    content = _as_bytes(payload)
    if len(content) > MAX_PAYLOAD:
        msg = f"payload of {len(content)} bytes exceeds {MAX_PAYLOAD}"
        raise ValueError(msg)
    return _encode(FrameType.DATA, seq, content)


def encode_ack(seq: int) -> bytes:
    """The wire bytes of an ACK for the DATA frame ``seq``; ValueError outside 0..65535."""
    return _encode(FrameType.ACK, seq, b"")


def encode_nak(seq: int, code: int = NakCode.RETRY) -> bytes:
    """The wire bytes of a NAK for the DATA frame ``seq`` with a `NakCode` (or any byte).

    Raises ValueError for a seq outside 0..65535 or a code outside 0..255.
    """
    code = operator.index(code)
    if not 0 <= code <= 0xFF:
        msg = f"NAK code {code} outside 0..255"
        raise ValueError(msg)
    return _encode(FrameType.NAK, seq, bytes([code]))


# ------------------------------------------------------------------- decoding


def _parse(raw: bytes) -> FrameItem:
    """One frame from the bytes between two delimiters (never empty, never with 0x00)."""
    body = cobs_decode(raw)
    if body is None:
        return Rejected(Reason.BAD_FRAME, raw, "invalid COBS encoding")
    if len(body) < _OVERHEAD:
        return Rejected(Reason.BAD_FRAME, raw, f"{len(body)} bytes, fewer than a frame's header")
    content = body[: -_CRC.size]
    (received,) = _CRC.unpack_from(body, len(content))
    computed = zlib.crc32(content)
    if received != computed:
        return Rejected(Reason.BAD_CRC, raw, f"crc {received:08x}, computed {computed:08x}")
    # From here on the CRC vouches for the bytes: a failure is the sender's, not the line's.
    version, frame_type, seq, length = _HEADER.unpack_from(content)
    if version != VERSION:
        return Rejected(Reason.UNKNOWN_VERSION, raw, f"frame version 0x{version:02x}")
    payload = content[_HEADER.size :]
    if length != len(payload):
        return Rejected(Reason.BAD_LENGTH, raw, f"length {length}, {len(payload)} bytes arrived")
    if frame_type == FrameType.DATA:
        if length > MAX_PAYLOAD:
            return Rejected(Reason.TOO_LARGE, raw, f"payload of {length} bytes")
        return DataFrame(seq, payload)
    if frame_type == FrameType.ACK:
        if length:
            return Rejected(Reason.BAD_LENGTH, raw, f"ACK with {length} payload bytes")
        return AckFrame(seq)
    if frame_type == FrameType.NAK:
        if length != 1:
            return Rejected(Reason.BAD_LENGTH, raw, f"NAK with {length} payload bytes")
        return NakFrame(seq, payload[0])
    return Rejected(Reason.BAD_FRAME, raw, f"unknown frame type 0x{frame_type:02x}")


class FrameDecoder:
    """Turns a byte stream, in any chunks, into frames and rejections.

    ``max_frame`` bounds the bytes held between delimiters (default `MAX_FRAME`,
    which fits every valid frame); a longer run is one `Rejected(OVERFLOW)`.
    A smaller bound suits a reader that only expects ACK and NAK frames.
    """

    __slots__ = ("_buffer", "_discarding", "_max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        max_frame = operator.index(max_frame)
        if max_frame < _MIN_MAX_FRAME:
            msg = f"max_frame {max_frame} is below {_MIN_MAX_FRAME}, the size of a NAK"
            raise ValueError(msg)
        self._max_frame = max_frame
        self._buffer = bytearray()
        self._discarding = False  # after an OVERFLOW, until the next delimiter

    @property
    def max_frame(self) -> int:
        """The most bytes held between two delimiters."""
        return self._max_frame

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held for the next read (never over ``max_frame``)."""
        return len(self._buffer)

    def receive_data(self, data: _BytesLike) -> list[FrameItem]:
        """Feed bytes as they were read; get every frame they complete, in order.

        ``b""`` is the end of the stream: a pending partial frame becomes
        `Rejected(TRUNCATED)` and the decoder starts afresh.
        """
        if not data:
            return self._end_of_stream()
        chunk = _as_bytes(data)
        out: list[FrameItem] = []
        start = 0
        while True:
            delimiter = chunk.find(DELIMITER, start)
            if delimiter < 0:
                self._collect(chunk, start, len(chunk), out)
                return out
            self._collect(chunk, start, delimiter, out)
            self._close(out)
            start = delimiter + 1

    def _collect(self, chunk: bytes, start: int, end: int, out: list[FrameItem]) -> None:
        """Buffer ``chunk[start:end]``, bytes of a frame, unless that overflows the bound."""
        if self._discarding:
            return
        room = self._max_frame - len(self._buffer)
        if end - start <= room:
            self._buffer += chunk[start:end]
            return
        raw = bytes(self._buffer) + chunk[start : start + room]
        self._buffer.clear()
        self._discarding = True
        detail = f"more than {self._max_frame} bytes without a delimiter"
        out.append(Rejected(Reason.OVERFLOW, raw, detail))

    def _close(self, out: list[FrameItem]) -> None:
        """A delimiter arrived: whatever was buffered is one frame."""
        if self._discarding:
            self._discarding = False  # resynchronised: the overflow is already reported
            return
        if not self._buffer:
            return  # 00 00: the leading delimiter of a frame after the trailing one
        raw = bytes(self._buffer)
        self._buffer.clear()
        out.append(_parse(raw))

    def _end_of_stream(self) -> list[FrameItem]:
        self._discarding = False
        if not self._buffer:
            return []
        raw = bytes(self._buffer)
        self._buffer.clear()
        return [Rejected(Reason.TRUNCATED, raw, "the stream ended inside a frame")]
