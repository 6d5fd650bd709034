"""Native serial frames (protocols/frames.py, docs/framing.md): golden bytes, three
ways of feeding, every rejection, and properties over any bytes and any damage."""

from __future__ import annotations

import itertools
import re
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.frames import (
    DELIMITER,
    MAX_FRAME,
    MAX_PAYLOAD,
    VERSION,
    AckFrame,
    DataFrame,
    Frame,
    FrameDecoder,
    FrameItem,
    FrameType,
    NakCode,
    NakFrame,
    cobs_decode,
    cobs_encode,
    encode_ack,
    encode_data,
    encode_nak,
)
from protocols.reasons import Reason, Rejected

DOC = Path(__file__).resolve().parents[2] / "docs" / "framing.md"

# ------------------------------------------------------------------ golden bytes
# Written by hand from docs/framing.md ("Worked example"): header fields, CRC-32 of
# the content (computed with a bitwise CRC, not zlib), then COBS by hand.

# {"v":1,"kind":"phone","device":"h0001","seq":7,"ts":1700000000.5,"q":1,"code":120,"zone":0}
GOLDEN_PAYLOAD = bytes.fromhex(
    "88 a1 76 01 a4 6b 69 6e 64 a5 70 68 6f 6e 65 a6 64 65 76 69 63 65 a5 68 30 30 30 31"
    " a3 73 65 71 07 a2 74 73 cb 41 d9 54 fc 40 20 00 00 a1 71 01 a4 63 6f 64 65 78 a4 7a"
    " 6f 6e 65 00"
)
GOLDEN_DATA_HEX = (
    "00 03 a1 02 02 01 2d 3c 88 a1 76 01 a4 6b 69 6e 64 a5 70 68 6f 6e 65 a6 64 65 76 69"
    " 63 65 a5 68 30 30 30 31 a3 73 65 71 07 a2 74 73 cb 41 d9 54 fc 40 20 01 0f a1 71 01"
    " a4 63 6f 64 65 78 a4 7a 6f 6e 65 05 d4 08 93 7e 00"
)
GOLDEN_ACK_HEX = "00 03 a1 06 02 07 01 05 e9 8d 80 cd 00"
GOLDEN_NAK_RETRY_HEX = "00 03 a1 15 02 07 02 01 05 ab 67 9d 74 00"
GOLDEN_NAK_REFUSED_HEX = "00 03 a1 15 02 07 07 01 01 dc 60 ad e2 00"

GOLDEN_DATA = bytes.fromhex(GOLDEN_DATA_HEX)
GOLDEN_ACK = bytes.fromhex(GOLDEN_ACK_HEX)

# Wikipedia, "Consistent Overhead Byte Stuffing", encoding examples 1-11.
COBS_EXAMPLES = [
    ("00", "01 01"),
    ("00 00", "01 01 01"),
    ("00 11 00", "01 02 11 01"),
    ("11 22 00 33", "03 11 22 02 33"),
    ("11 22 33 44", "05 11 22 33 44"),
    ("11 00 00 00", "02 11 01 01 01"),
    (bytes(range(1, 255)).hex(), "ff" + bytes(range(1, 255)).hex()),
    ("00" + bytes(range(1, 255)).hex(), "01 ff" + bytes(range(1, 255)).hex()),
    (bytes(range(1, 256)).hex(), "ff" + bytes(range(1, 255)).hex() + "02 ff"),
    (bytes(range(2, 256)).hex() + "00", "ff" + bytes(range(2, 256)).hex() + "01 01"),
    (bytes(range(3, 256)).hex() + "00 01", "fe" + bytes(range(3, 256)).hex() + "02 01"),
]


def decode(*chunks: bytes, eof: bool = False, max_frame: int = MAX_FRAME) -> list[FrameItem]:
    """Feed ``chunks`` to a fresh decoder, optionally followed by the end of stream."""
    decoder = FrameDecoder(max_frame)
    out: list[FrameItem] = []
    for chunk in chunks:
        out += decoder.receive_data(chunk)
    if eof:
        out += decoder.receive_data(b"")
    return out


def wire(body: bytes) -> bytes:
    """A hand-made body, delimited and COBS-encoded as on the wire."""
    return DELIMITER + cobs_encode(body) + DELIMITER


def body(
    frame_type: int,
    seq: int,
    payload: bytes,
    *,
    version: int = VERSION,
    length: int | None = None,
    crc_xor: int = 0,
) -> bytes:
    """A frame body with any field forced, and a CRC that is right unless ``crc_xor``."""
    declared = len(payload) if length is None else length
    content = struct.pack(">BBHH", version, frame_type, seq, declared) + payload
    return content + struct.pack(">I", zlib.crc32(content) ^ crc_xor)


def test_crc_is_crc32_ieee() -> None:
    """The CRC the doc names: CRC-32 (IEEE 802.3), check value of "123456789" 0xCBF43926."""
    assert zlib.crc32(b"123456789") == 0xCBF43926


@pytest.mark.parametrize(("decoded", "encoded"), COBS_EXAMPLES)
def test_cobs_golden(decoded: str, encoded: str) -> None:
    """COBS encodes and decodes the published examples byte for byte."""
    assert cobs_encode(bytes.fromhex(decoded)) == bytes.fromhex(encoded)
    assert cobs_decode(bytes.fromhex(encoded)) == bytes.fromhex(decoded)


def test_cobs_empty() -> None:
    """Empty data encodes to the single code byte 01, and back."""
    assert cobs_encode(b"") == b"\x01"
    assert cobs_decode(b"\x01") == b""


@pytest.mark.parametrize(
    ("encoded", "why"),
    [
        (b"", "empty"),
        (b"\x02\x11\x00", "a delimiter inside"),
        (b"\x05\x11\x22", "code runs past the end"),
        (b"\x03\x11\x22\x05\x33", "last code runs past the end"),
        (b"\xff" + bytes(range(1, 255)) + b"\x01", "empty block after a full one"),
    ],
)
def test_cobs_decode_refuses(encoded: bytes, why: str) -> None:
    """Input that no data encodes to decodes to None."""
    assert cobs_decode(encoded) is None, why


def test_golden_data() -> None:
    """A DATA frame is byte for byte the doc's worked example, and decodes back."""
    assert encode_data(1, GOLDEN_PAYLOAD) == GOLDEN_DATA
    assert decode(GOLDEN_DATA) == [DataFrame(1, GOLDEN_PAYLOAD)]


@pytest.mark.parametrize(
    ("wire_hex", "frame"),
    [
        (GOLDEN_ACK_HEX, AckFrame(7)),
        (GOLDEN_NAK_RETRY_HEX, NakFrame(7, NakCode.RETRY)),
        (GOLDEN_NAK_REFUSED_HEX, NakFrame(7, NakCode.REFUSED)),
    ],
)
def test_golden_answers(wire_hex: str, frame: Frame) -> None:
    """ACK and NAK frames are byte for byte the doc's examples, and decode back."""
    expected = bytes.fromhex(wire_hex)
    if isinstance(frame, AckFrame):
        assert encode_ack(frame.seq) == expected
    else:
        assert isinstance(frame, NakFrame)
        assert encode_nak(frame.seq, frame.code) == expected
    assert decode(expected) == [frame]


def test_nak_code_defaults_to_retry() -> None:
    """A NAK without a code asks for a resend after the timeout (RETRY, 0)."""
    assert encode_nak(7) == bytes.fromhex(GOLDEN_NAK_RETRY_HEX)


def test_doc_shows_the_encoder_output() -> None:
    """docs/framing.md's worked example is exactly what the encoder produces."""
    text = re.sub(r"\s+", " ", DOC.read_text(encoding="utf-8").lower())
    for hex_text in (GOLDEN_DATA_HEX, GOLDEN_ACK_HEX, GOLDEN_NAK_RETRY_HEX, GOLDEN_NAK_REFUSED_HEX):
        assert hex_text in text


def test_frame_types_and_version() -> None:
    """Type bytes are STX/ACK/NAK, and the version byte is 0xA1, as documented."""
    assert (FrameType.DATA, FrameType.ACK, FrameType.NAK) == (0x02, 0x06, 0x15)
    assert VERSION == 0xA1
    assert (NakCode.RETRY, NakCode.REFUSED) == (0, 1)


# ------------------------------------------------------------ three ways of feeding

STREAM = GOLDEN_DATA + encode_ack(65535) + encode_nak(0, NakCode.REFUSED) + encode_data(2, b"")
STREAM_ITEMS: list[FrameItem] = [
    DataFrame(1, GOLDEN_PAYLOAD),
    AckFrame(65535),
    NakFrame(0, NakCode.REFUSED),
    DataFrame(2, b""),
]


def test_fed_whole() -> None:
    """A stream fed in one read yields every frame in order."""
    assert decode(STREAM) == STREAM_ITEMS


def test_fed_one_byte_at_a_time() -> None:
    """A stream fed one byte per read yields the same frames."""
    assert decode(*(STREAM[i : i + 1] for i in range(len(STREAM)))) == STREAM_ITEMS


def test_trailing_partial_frame_stays_pending() -> None:
    """Bytes of an unfinished frame are held, and complete it on the next read."""
    tail = encode_data(3, b"tail")
    decoder = FrameDecoder()
    assert decoder.receive_data(STREAM + tail[:7]) == STREAM_ITEMS
    assert decoder.pending == 6  # the leading delimiter is not part of the frame
    assert decoder.receive_data(tail[7:]) == [DataFrame(3, b"tail")]
    assert decoder.pending == 0


def test_end_of_stream_inside_a_frame_is_truncated() -> None:
    """End of stream with a partial frame pending yields TRUNCATED holding its bytes."""
    tail = encode_data(3, b"tail")
    items = decode(STREAM, tail[:-3], eof=True)
    assert items[:-1] == STREAM_ITEMS
    assert items[-1] == Rejected(Reason.TRUNCATED, tail[1:-3], "the stream ended inside a frame")


def test_end_of_stream_between_frames_is_quiet() -> None:
    """End of stream right after a delimiter yields nothing."""
    assert decode(STREAM, eof=True) == STREAM_ITEMS
    assert decode(b"", eof=True) == []


def test_decoder_starts_afresh_after_end_of_stream() -> None:
    """After end of stream the decoder reads a new stream from its first frame."""
    decoder = FrameDecoder()
    decoder.receive_data(GOLDEN_ACK[:5])
    assert [item.reason for item in decoder.receive_data(b"") if isinstance(item, Rejected)] == [
        Reason.TRUNCATED
    ]
    assert decoder.receive_data(GOLDEN_ACK) == [AckFrame(7)]


def test_empty_frames_are_ignored() -> None:
    """Runs of delimiters (a sender's flush, back-to-back frames) yield nothing."""
    assert decode(b"\x00" * 9) == []
    assert decode(b"\x00\x00" + GOLDEN_ACK + b"\x00\x00") == [AckFrame(7)]


def test_frames_without_extra_delimiters_decode() -> None:
    """A sender that omits the leading delimiter is still understood."""
    assert decode(GOLDEN_ACK[1:] + GOLDEN_ACK[1:]) == [AckFrame(7), AckFrame(7)]


def test_bytes_like_input() -> None:
    """Reads may be bytearray or memoryview, and payloads too."""
    assert FrameDecoder().receive_data(bytearray(GOLDEN_ACK)) == [AckFrame(7)]
    assert FrameDecoder().receive_data(memoryview(GOLDEN_DATA)) == [DataFrame(1, GOLDEN_PAYLOAD)]
    assert encode_data(1, bytearray(GOLDEN_PAYLOAD)) == GOLDEN_DATA
    assert encode_data(1, memoryview(GOLDEN_PAYLOAD)) == GOLDEN_DATA
    assert cobs_encode(bytearray(b"\x11\x00")) == b"\x02\x11\x01"
    assert cobs_decode(memoryview(b"\x02\x11\x01")) == b"\x11\x00"


# -------------------------------------------------------------------- rejections


def test_noise_before_a_frame_is_rejected_alone() -> None:
    """Noise before a frame's leading delimiter is one rejection; the frame survives."""
    assert decode(b"\x13\x37" + GOLDEN_ACK) == [
        Rejected(Reason.BAD_FRAME, b"\x13\x37", "invalid COBS encoding"),
        AckFrame(7),
    ]


@pytest.mark.parametrize(
    ("raw_body", "reason"),
    [
        (body(FrameType.ACK, 7, b"")[:9], Reason.BAD_FRAME),
        (body(FrameType.ACK, 7, b"", crc_xor=1), Reason.BAD_CRC),
        (body(FrameType.DATA, 7, b"x", crc_xor=0x80000000), Reason.BAD_CRC),
        (body(FrameType.ACK, 7, b"", version=0xA2), Reason.UNKNOWN_VERSION),
        (body(FrameType.ACK, 7, b"", version=0x00), Reason.UNKNOWN_VERSION),
        (body(0x03, 7, b""), Reason.BAD_FRAME),
        (body(FrameType.DATA, 7, b"abc", length=4), Reason.BAD_LENGTH),
        (body(FrameType.DATA, 7, b"abc", length=2), Reason.BAD_LENGTH),
        (body(FrameType.ACK, 7, b"\x00"), Reason.BAD_LENGTH),
        (body(FrameType.NAK, 7, b""), Reason.BAD_LENGTH),
        (body(FrameType.NAK, 7, b"\x00\x01"), Reason.BAD_LENGTH),
        (body(FrameType.DATA, 7, bytes(MAX_PAYLOAD + 1)), Reason.TOO_LARGE),
    ],
)
def test_rejections(raw_body: bytes, reason: Reason) -> None:
    """Each broken field yields its reason, with the bytes between delimiters as raw."""
    framed = wire(raw_body)
    items = decode(framed + GOLDEN_ACK)
    assert items[1:] == [AckFrame(7)]
    assert isinstance(items[0], Rejected)
    assert items[0].reason == reason
    assert items[0].raw == framed[1:-1]
    assert items[0].detail


def test_invalid_cobs_is_bad_frame() -> None:
    """A code byte that runs past the delimiter is BAD_FRAME."""
    assert decode(b"\x00\x05\x01\x00") == [
        Rejected(Reason.BAD_FRAME, b"\x05\x01", "invalid COBS encoding")
    ]


def test_nak_carries_any_code_byte() -> None:
    """A NAK code this version does not name still decodes; senders treat it as RETRY."""
    assert decode(encode_nak(9, 0x7F)) == [NakFrame(9, 0x7F)]


def test_largest_payload_fits_the_default_bound() -> None:
    """A 4096-byte payload with no zero (COBS's worst case) fills MAX_FRAME exactly."""
    framed = encode_data(65535, b"\x01" * MAX_PAYLOAD)
    assert len(framed) - 2 == MAX_FRAME == 4123
    assert decode(framed) == [DataFrame(65535, b"\x01" * MAX_PAYLOAD)]


def test_overflow_is_reported_once_and_resynchronises() -> None:
    """An over-long run is one OVERFLOW with its first max_frame bytes; the next frame decodes."""
    decoder = FrameDecoder(max_frame=12)
    items = decoder.receive_data(b"\x00" + b"\x01" * 13)
    assert items == [
        Rejected(Reason.OVERFLOW, b"\x01" * 12, "more than 12 bytes without a delimiter")
    ]
    for _ in range(1000):  # memory stays bounded however long the run
        assert decoder.receive_data(b"\xff" * 100) == []
        assert decoder.pending == 0
    assert decoder.receive_data(GOLDEN_ACK) == [AckFrame(7)]


def test_overflow_across_reads() -> None:
    """A run that crosses the bound over several reads overflows at the bound."""
    decoder = FrameDecoder(max_frame=12)
    assert decoder.receive_data(b"\x01" * 7) == []
    assert decoder.pending == 7
    items = decoder.receive_data(b"\x02" * 7)
    assert [(i.reason, i.raw) for i in items if isinstance(i, Rejected)] == [
        (Reason.OVERFLOW, b"\x01" * 7 + b"\x02" * 5)
    ]
    assert decoder.receive_data(b"\x00" + GOLDEN_ACK[1:]) == [AckFrame(7)]


def test_run_of_exactly_max_frame_is_not_overflow() -> None:
    """max_frame bytes between delimiters are held and judged as a frame."""
    items = decode(b"\x00" + b"\x01" * 12 + b"\x00", max_frame=12)  # 11 zeros: a body, bad CRC
    assert [i.reason for i in items if isinstance(i, Rejected)] == [Reason.BAD_CRC]


def test_end_of_stream_while_discarding_is_quiet() -> None:
    """End of stream after an overflow adds nothing: the overflow was reported."""
    items = decode(b"\x01" * 20, eof=True, max_frame=12)
    assert [i.reason for i in items if isinstance(i, Rejected)] == [Reason.OVERFLOW]
    decoder = FrameDecoder(max_frame=12)
    decoder.receive_data(b"\x01" * 20)
    decoder.receive_data(b"")
    assert decoder.receive_data(GOLDEN_ACK[1:]) == [AckFrame(7)]


def test_small_bound_for_answer_readers() -> None:
    """A decoder bounded to 12 bytes still reads ACK and NAK frames."""
    assert FrameDecoder(12).max_frame == 12
    assert decode(GOLDEN_ACK + encode_nak(7, 1), max_frame=12) == [AckFrame(7), NakFrame(7, 1)]


# ----------------------------------------------------------------------- misuse


@pytest.mark.parametrize("seq", [-1, 65536, 1 << 40])
def test_seq_out_of_range_raises(seq: int) -> None:
    """Encoders and frame values refuse a seq outside 0..65535."""
    with pytest.raises(ValueError, match="seq"):
        encode_data(seq, b"")
    with pytest.raises(ValueError, match="seq"):
        encode_ack(seq)
    with pytest.raises(ValueError, match="seq"):
        encode_nak(seq)
    with pytest.raises(ValueError, match="seq"):
        DataFrame(seq, b"")
    with pytest.raises(ValueError, match="seq"):
        AckFrame(seq)
    with pytest.raises(ValueError, match="seq"):
        NakFrame(seq, 0)


def test_payload_too_large_raises() -> None:
    """Encoders and DataFrame refuse a payload over MAX_PAYLOAD bytes."""
    with pytest.raises(ValueError, match="exceeds"):
        encode_data(0, bytes(MAX_PAYLOAD + 1))
    with pytest.raises(ValueError, match="exceeds"):
        DataFrame(0, bytes(MAX_PAYLOAD + 1))


@pytest.mark.parametrize("code", [-1, 256])
def test_nak_code_out_of_range_raises(code: int) -> None:
    """A NAK code must be one byte."""
    with pytest.raises(ValueError, match="code"):
        encode_nak(0, code)
    with pytest.raises(ValueError, match="code"):
        NakFrame(0, code)


def test_wrong_types_raise() -> None:
    """Non-integer seqs and non-bytes payloads are TypeErrors, not silent coercions."""
    with pytest.raises(TypeError):
        encode_ack(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_data(0, "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_data(0, 5)  # type: ignore[arg-type]


def test_decoder_bound_too_small_raises() -> None:
    """A decoder must be able to hold at least a NAK frame (12 bytes)."""
    with pytest.raises(ValueError, match="max_frame"):
        FrameDecoder(max_frame=11)


# ------------------------------------------------------------------- properties

seqs = st.integers(0, 0xFFFF)
payloads = st.binary(max_size=300)
frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(DataFrame, seqs, payloads),
    st.builds(AckFrame, seqs),
    st.builds(NakFrame, seqs, st.integers(0, 0xFF)),
)


def encode(frame: Frame) -> bytes:
    """The wire bytes of any frame value."""
    if isinstance(frame, DataFrame):
        return encode_data(frame.seq, frame.payload)
    if isinstance(frame, AckFrame):
        return encode_ack(frame.seq)
    return encode_nak(frame.seq, frame.code)


noise = st.binary(max_size=60)
streams = st.lists(st.one_of(frames.map(encode), noise), max_size=8).map(b"".join)


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    """``stream`` cut at the given offsets into non-empty reads (an empty read is the end)."""
    points = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(points) if a < b]


def only_frames(items: list[FrameItem]) -> list[FrameItem]:
    """The items that are not rejections."""
    return [item for item in items if not isinstance(item, Rejected)]


@given(st.binary(max_size=2000))
def test_cobs_round_trip(data: bytes) -> None:
    """COBS output holds no zero, costs at most one byte per 254 (+1), and decodes back."""
    encoded = cobs_encode(data)
    assert 0 not in encoded
    assert len(encoded) <= len(data) + 1 + len(data) // 254
    assert cobs_decode(encoded) == data


@given(st.binary(min_size=1, max_size=600).map(lambda b: b.replace(b"\x00", b"\xff")))
def test_cobs_decode_is_the_exact_inverse(data: bytes) -> None:
    """Whatever COBS decoding accepts, encoding gives back byte for byte (one wire form)."""
    decoded = cobs_decode(data)
    if decoded is not None:
        assert cobs_encode(decoded) == data


@given(frames)
def test_round_trip(frame: Frame) -> None:
    """Any frame value encodes to wire bytes that decode to the same value."""
    assert decode(encode(frame)) == [frame]


@given(seqs, st.binary(max_size=MAX_PAYLOAD))
def test_round_trip_large_payloads(seq: int, payload: bytes) -> None:
    """DATA frames of any size up to MAX_PAYLOAD survive the round trip."""
    assert decode(encode_data(seq, payload)) == [DataFrame(seq, payload)]


@given(streams, st.lists(st.integers(0, 2000), max_size=12), st.booleans())
def test_any_split_points_give_the_same_items(stream: bytes, cuts: list[int], eof: bool) -> None:
    """However the stream is cut into reads, the items are the same."""
    cuts = [cut for cut in cuts if cut <= len(stream)]
    assert decode(*split(stream, cuts), eof=eof) == decode(stream, eof=eof)


@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=12))
def test_arbitrary_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    """Any bytes, any reads, any bound: only items come out, and the buffer stays bounded."""
    for max_frame in (12, 100, MAX_FRAME):
        decoder = FrameDecoder(max_frame)
        items: list[FrameItem] = []
        for chunk in split(data, [cut for cut in cuts if cut <= len(data)]):
            items += decoder.receive_data(chunk)
            assert decoder.pending <= max_frame
        items += decoder.receive_data(b"")
        for item in items:
            assert isinstance(item, DataFrame | AckFrame | NakFrame | Rejected)
            if isinstance(item, Rejected):
                assert len(item.raw) <= max_frame


def assert_damage_is_caught(damaged: bytes, original: Frame) -> None:
    """Damaged frame bytes, then a good frame: nothing but the original may come out
    of the damage, and the good frame is still decoded."""
    items = decode(damaged + GOLDEN_ACK)
    assert items[-1] == AckFrame(7)
    for item in only_frames(items[:-1]):
        assert item == original


@given(frames, st.data())
def test_any_corrupted_byte_is_caught(frame: Frame, data: st.DataObject) -> None:
    """One byte xor any mask, anywhere: no other frame comes out, the next frame survives."""
    framed = encode(frame)
    position = data.draw(st.integers(0, len(framed) - 1))
    mask = data.draw(st.integers(1, 0xFF))
    damaged = framed[:position] + bytes([framed[position] ^ mask]) + framed[position + 1 :]
    assert_damage_is_caught(damaged, frame)


@given(frames, st.data())
def test_any_truncation_is_caught(frame: Frame, data: st.DataObject) -> None:
    """A frame cut short anywhere yields no frame, and the next frame survives."""
    framed = encode(frame)
    cut = data.draw(st.integers(0, len(framed) - 2))  # keeping the last 00 is no cut
    assert only_frames(decode(framed[:cut], eof=True)) == []
    assert_damage_is_caught(framed[:cut], frame)


@given(frames, st.data())
def test_any_lost_byte_is_caught(frame: Frame, data: st.DataObject) -> None:
    """A byte lost anywhere (a UART overrun) yields no other frame; the next survives."""
    framed = encode(frame)
    position = data.draw(st.integers(1, len(framed) - 2))  # a lost delimiter loses nothing
    assert_damage_is_caught(framed[:position] + framed[position + 1 :], frame)


@given(st.binary(min_size=1, max_size=200), seqs, st.data())
def test_any_burst_up_to_32_bits_is_caught(payload: bytes, seq: int, data: st.DataObject) -> None:
    """Any error burst of at most 32 bits inside the body fails the CRC (docs/framing.md)."""
    original = body(FrameType.DATA, seq, payload)
    bits = len(original) * 8
    width = data.draw(st.integers(1, 32))
    start = data.draw(st.integers(0, bits - width))
    pattern = data.draw(st.integers(0, (1 << width) - 1)) | 1 | (1 << (width - 1))
    damaged = int.from_bytes(original, "big") ^ (pattern << (bits - start - width))
    items = decode(wire(damaged.to_bytes(len(original), "big")))
    assert only_frames(items) == []


@given(st.lists(st.tuples(noise, st.builds(DataFrame, seqs, payloads)), max_size=8), noise)
def test_frames_survive_interleaved_noise(
    pieces: list[tuple[bytes, DataFrame]], trailing: bytes
) -> None:
    """Valid frames between runs of random noise all decode, in order."""
    stream = b"".join(junk + encode(frame) for junk, frame in pieces) + trailing
    assert only_frames(decode(stream, eof=True)) == [frame for _, frame in pieces]


def test_every_single_byte_error_in_the_golden_frames_is_caught() -> None:
    """Exhaustively: every position, every xor mask, every cut, every lost byte."""
    for framed, frame in ((GOLDEN_DATA, DataFrame(1, GOLDEN_PAYLOAD)), (GOLDEN_ACK, AckFrame(7))):
        for position in range(len(framed)):
            for mask in range(1, 256):
                damaged = bytearray(framed)
                damaged[position] ^= mask
                assert_damage_is_caught(bytes(damaged), frame)
            assert_damage_is_caught(framed[:position], frame)
            if 0 < position < len(framed) - 1:
                assert_damage_is_caught(framed[:position] + framed[position + 1 :], frame)
