"""`python -m bench.fuzz`: every decoder in protocols/ against a million hostile inputs (issue 16).

    python -m bench.fuzz                          10**6 inputs over all targets (~1 minute)
    python -m bench.fuzz --seconds 30             about 30 s over all targets instead
    python -m bench.fuzz --targets frames.stream,payloads.phone --inputs 200000
    python -m bench.fuzz --replay bench/results/fuzz-.../findings/x.bin --target NAME
    python -m bench.fuzz --list                   the targets

Theory of operation. protocols/ promises that peer bytes come back as frozen
values or as `Rejected`, never as an exception (STYLE.md 3). This module holds
every public decoder to that promise with seeded, atheris-style mutation
fuzzing written with `random.Random` alone: no coverage instrumentation and no
dependency beyond what the project already has.

1. A `Target` is one public entry point that takes peer bytes or text (see
   `TARGETS`), a corpus of valid inputs built with the project's own builders
   and taken from docs/captures, a dictionary of tokens its format is made of,
   and a `check`: feed one input, verify the invariants, return one outcome
   label per item (``ok:<type>`` or ``rej:<reason>[/<key>]``).
2. Inputs come three ways: a stack of 1-8 byte mutators (`MUTATORS`: bit
   flips, interesting bytes and words, arithmetic, insertion, deletion,
   duplication, splicing, truncation, tokens) on a pool item; a structured
   generator per format (MessagePack and JSON type confusion for payloads,
   frames with a valid CRC around hostile headers, streams of several records);
   and purely random bytes. An input whose set of outcomes is new joins the
   target's pool, so later mutations start from deeper places: outcome novelty
   is the only feedback, a poor man's coverage.
3. Invariants, where cheap: a stream decoder yields the same items whole and
   in random reads (one byte at a time included), keeps its buffer within its
   bound and ends cleanly; an accepted value, re-encoded with the project's
   builder, decodes to the same value (for COBS frames, to the same bytes);
   two entry points that promise the same answer give it; a `Rejected` keeps
   the bytes it refused (bounded); an accepted value obeys the contract's types
   and ranges.
4. An exception that escapes a decoder, or a failed invariant (`Violation`),
   is counted by signature; the first inputs of each are saved under
   ``--out``/findings as raw bytes plus a .txt with the repr, the traceback and
   the replay command. A check is a pure function of the input's bytes (read
   sizes and decoder bounds are drawn from a generator seeded by the bytes'
   CRC), so ``--replay FILE --target NAME`` reproduces it exactly.

Exit code: 0 when no exception escaped and no invariant failed, 1 otherwise,
2 on a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import random
import re
import struct
import sys
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Final, TypeAlias, TypeVar

import msgpack

from protocols.contact_id import (
    ContactId,
    build_contact_id,
    checksum_char,
    family,
    parse_contact_id,
)
from protocols.frames import (
    DELIMITER,
    MAX_FRAME,
    AckFrame,
    DataFrame,
    FrameDecoder,
    FrameItem,
    NakFrame,
    cobs_decode,
    cobs_encode,
    encode_ack,
    encode_data,
    encode_nak,
)
from protocols.frames import (
    MAX_PAYLOAD as MAX_FRAME_PAYLOAD,
)
from protocols.frames import (
    VERSION as FRAME_VERSION,
)
from protocols.payloads import (
    MAX_PAYLOAD,
    AckMessage,
    CheckpointEventType,
    CheckpointMessage,
    PhoneMessage,
    ack_payload,
    checkpoint_payload,
    decode_ack,
    decode_checkpoint,
    decode_map,
    decode_native,
    decode_phone,
    decode_phone_fields,
    encode,
    native_payload,
    phone_payload,
)
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
from protocols.topics import AckTopic, IngressKind, IngressTopic, RequestTopic, Topics, validate_id

__all__ = [
    "DEFAULT_INPUTS",
    "MAX_INPUT",
    "MUTATORS",
    "TARGETS",
    "Pool",
    "Report",
    "Source",
    "Target",
    "TargetStats",
    "Violation",
    "chunks",
    "generate",
    "inputs",
    "main",
    "mutate",
    "replay",
    "run",
]

_T = TypeVar("_T")

REPO: Final = Path(__file__).resolve().parent.parent
CAPTURES: Final = REPO / "docs" / "captures"
DEFAULT_INPUTS: Final = 1_000_000
"""The default budget: inputs over all targets together, split evenly."""
MAX_INPUT: Final = 16_384
"""No generated input is longer: twice the payload limit, four times a frame's."""
_POOL_LIMIT: Final = 512  # seeds plus inputs with new outcomes
_POOL_ITEM_LIMIT: Final = 4096  # longer inputs are not kept: streams of streams would only grow
_STREAM_LIMIT: Final = 2048  # a structured stream stops growing past this
_RANDOM_SHARE: Final = 0.08  # inputs that are purely random bytes
_SAVED_PER_SIGNATURE: Final = 3
_INTERESTING_BYTES: Final = (0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE, 0x81, 0x20, 0x14, 0x7B)
_INTERESTING_WORDS: Final = (
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    0x7FFFFFFFFFFFFFFF,
    0x8000000000000000,
    0xFFFFFFFFFFFFFFFF,
)
_KEY_IN_DETAIL: Final = re.compile(r"'(\w{1,16})'")


class Violation(Exception):  # noqa: N818 - a failed invariant, not an error of ours
    """A failed invariant: a decoder bug that did not raise (or a builder that did)."""

    def __init__(self, what: str, detail: str = "") -> None:
        super().__init__(f"{what}: {detail}" if detail else what)
        self.what = what
        """Stable text: the signature findings are grouped by."""


def _expect(condition: bool, what: str, detail: str = "") -> None:
    if not condition:
        raise Violation(what, detail)


def _short(value: object, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rebuilt(what: str, build: Callable[[], _T]) -> _T:
    """Run a builder on an accepted value; that it raises is a violation, not a crash."""
    try:
        return build()
    except Exception as exc:
        raise Violation(f"{what} raised {type(exc).__name__}", str(exc)) from exc


def _label(item: object) -> str:
    if isinstance(item, Rejected):
        match = _KEY_IN_DETAIL.search(item.detail)
        key = f"/{match[1]}" if match and item.reason is not Reason.BAD_ENCODING else ""
        return f"rej:{item.reason.value}{key}"
    return f"ok:{type(item).__name__}"


def _check_rejected(item: Rejected, bound: int) -> None:
    _expect(isinstance(item.reason, Reason), "reason is not a Reason", _short(item))
    _expect(type(item.raw) is bytes, "raw is not bytes", _short(item))
    _expect(type(item.detail) is str, "detail is not str", _short(item))
    _expect(len(item.raw) <= bound, "raw exceeds the bound", f"{len(item.raw)} > {bound}")


# ------------------------------------------------------------------ mutators

Mutator: TypeAlias = Callable[[random.Random, bytes, "Pool"], bytes]


@dataclass(slots=True)
class Pool:
    """What a target's mutations start from: its corpus, then inputs with new outcomes."""

    items: list[bytes]
    tokens: tuple[bytes, ...] = ()
    seen: set[frozenset[str]] = field(default_factory=set)
    seeds: int = 0

    def __post_init__(self) -> None:
        if not self.items:
            self.items.append(b"")
        self.seeds = len(self.items)

    def offer(self, rng: random.Random, data: bytes, labels: Sequence[str]) -> None:
        """Keep `data` if its set of outcomes was never seen and it is not long.

        Seeds are never evicted; past `_POOL_LIMIT` items a newcomer replaces one
        kept earlier, at random."""
        key = frozenset(labels)
        if key in self.seen or len(data) > _POOL_ITEM_LIMIT:
            return
        self.seen.add(key)
        if len(self.items) < _POOL_LIMIT:
            self.items.append(data)
        elif len(self.items) > self.seeds:
            self.items[rng.randrange(self.seeds, len(self.items))] = data


def _bounded(data: bytes) -> bytes:
    return data[:MAX_INPUT]


def _position(rng: random.Random, data: bytes) -> int:
    return rng.randrange(len(data) + 1)


def _other_byte(rng: random.Random, current: int, choices: Sequence[int]) -> int:
    options = [b for b in choices if b != current]
    return rng.choice(options)


def _insert_random(rng: random.Random, data: bytes, pool: Pool) -> bytes:
    """Insert 1-8 random bytes (the fallback of mutators that need bytes to work on)."""
    at = _position(rng, data)
    return _bounded(data[:at] + rng.randbytes(rng.randint(1, 8)) + data[at:])


def flip_bit(rng: random.Random, data: bytes, pool: Pool) -> bytes:
    """Flip one bit."""
    if not data:
        return _insert_random(rng, data, pool)
    at = rng.randrange(len(data))
    return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]


def set_interesting_byte(rng: random.Random, data: bytes, pool: Pool) -> bytes:
    """Overwrite one byte with 0x00, 0xff, 0x7f, 0x80 or another boundary value."""
    if not data:
        return bytes([rng.choice(_INTERESTING_BYTES)])
    at = rng.randrange(len(data))
    value = _other_byte(rng, data[at], _INTERESTING_BYTES)
    return data[:at] + bytes([value]) + data[at + 1 :]


def set_interesting_word(rng: random.Random, data: bytes, pool: Pool) -> bytes:
    """Overwrite 2, 4 or 8 bytes with a boundary integer, big- or little-endian."""
    size = rng.choice((2, 4, 8))
    value = rng.choice(_INTERESTING_WORDS) & ((1 << (8 * size)) - 1)
    word = value.to_bytes(size, rng.choice(("big", "little")))
    if len(data) < size:
        return _bounded(data + word)
    at = rng.randrange(len(data) - size + 1)
    out = data[:at] + word + data[at + size :]
    return out if out != data else flip_bit(rng, data, pool)


def add_to_byte(rng: random.Random, data: bytes, pool: Pool) -> bytes:
    """Add or subtract 1-35 from one byte (length fields, digits, type codes)."""
    if not data:
        return _insert_random(rng, data, pool)
    at = rng.randrange(len(data))
    delta = rng.choice((-1, 1)) * rng.randint(1, 35)
    return data[:at] + bytes([(data[at] + delta) % 256]) + data[at + 1 :]


def set_random_byte(rng: random.Random, data: bytes, pool: Pool) -> bytes:
    """Overwrite one byte with a different random byte."""
    if not data:
        return _insert_random(rng, data, pool)
    at = rng.randrange(len(data))
    value = (data[at] + rng.randint(1, 255)) % 256
    return data[:at] + bytes([value]) + data[at + 1 :]


def insert_bytes(rng: random.Random, data: bytes, pool: Pool) -> bytes:
    """Insert 1-32 random bytes, or a run of one interesting byte."""
    at = _position(rng, data)
    if rng.random() < 0.5:
        chunk = rng.randbytes(rng.randint(1, 32))
    else:
        chunk = bytes([rng.choice(_INTERESTING_BYTES)]) * rng.randint(1, 64)
    return _bounded(data[:at] + chunk + data[at:])


def insert_token(rng: random.Random, data: bytes, pool: Pool) -> bytes:
    """Insert a token of the target's format (a delimiter, a marker, a packed key)."""
    if not pool.tokens:
        return insert_bytes(rng, data, pool)
    at = _position(rng, data)
    return _bounded(data[:at] + rng.choice(pool.tokens) + data[at:])


def delete_bytes(rng: random.Random, data: bytes, pool: Pool) -> bytes:
    """Delete a run of 1-16 bytes (sometimes more)."""
    if not data:
        return _insert_random(rng, data, pool)
    at = rng.randrange(len(data))
    most = len(data) - at
    size = rng.randint(1, min(most, 16 if rng.random() < 0.9 else most))
    return data[:at] + data[at + size :]


def duplicate_bytes(rng: random.Random, data: bytes, pool: Pool) -> bytes:
    """Copy a run of bytes and insert it elsewhere (or right after itself)."""
    if not data:
        return _insert_random(rng, data, pool)
    start = rng.randrange(len(data))
    run = data[start : start + rng.randint(1, min(len(data) - start, 64))]
    at = _position(rng, data)
    return _bounded(data[:at] + run * rng.randint(1, 4) + data[at:])


def splice(rng: random.Random, data: bytes, pool: Pool) -> bytes:
    """The head of this input and the tail of another pool item."""
    other = rng.choice(pool.items)
    out = _bounded(data[: _position(rng, data)] + other[_position(rng, other) :])
    return out if out != data else insert_token(rng, data, pool)


def truncate(rng: random.Random, data: bytes, pool: Pool) -> bytes:
    """Cut the input short (a frame or record the line lost the end of)."""
    if not data:
        return _insert_random(rng, data, pool)
    return data[: rng.randrange(len(data))]


MUTATORS: Final[tuple[Mutator, ...]] = (
    flip_bit,
    set_interesting_byte,
    set_interesting_word,
    add_to_byte,
    set_random_byte,
    insert_bytes,
    insert_token,
    delete_bytes,
    duplicate_bytes,
    splice,
    truncate,
)
"""Every byte mutator: each changes a non-empty input shorter than `MAX_INPUT`,
and none returns more than `MAX_INPUT` bytes."""


def mutate(rng: random.Random, data: bytes, pool: Pool) -> bytes:
    """A stack of 1, 2, 4 or 8 random mutators (libFuzzer's and AFL's "havoc")."""
    for _ in range(1 << rng.randrange(4)):
        data = rng.choice(MUTATORS)(rng, data, pool)
    return data


def _random_bytes(rng: random.Random, pool: Pool) -> bytes:
    size = rng.choice((rng.randrange(9), rng.randrange(65), rng.randrange(1025)))
    if rng.random() < 0.01:
        size = rng.randrange(MAX_INPUT + 1)
    if rng.random() < 0.5 or not pool.tokens:
        return rng.randbytes(size)
    # Bytes of the format's own alphabet reach further than noise does.
    alphabet = b"".join(pool.tokens) + b"0123456789 "
    return bytes(rng.choice(alphabet) for _ in range(min(size, 512)))


def chunks(rng: random.Random, data: bytes) -> list[bytes]:
    """Split `data` into the reads a serial port might return: never an empty read."""
    if not data:
        return []
    mode = rng.randrange(8)
    if mode == 0 and len(data) <= 512:
        return [data[i : i + 1] for i in range(len(data))]
    if mode == 1:
        size = rng.choice((2, 3, 7, 64, 1000))
        return [data[i : i + size] for i in range(0, len(data), size)]
    cuts = sorted(
        {rng.randrange(1, len(data)) for _ in range(rng.randint(1, 8))} if len(data) > 1 else set()
    )
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _input_rng(data: bytes) -> random.Random:
    """The generator a check draws its read sizes and bounds from: the bytes decide."""
    return random.Random(zlib.crc32(data) ^ (len(data) << 32))


# ------------------------------------------------------------------ targets


@dataclass(frozen=True, slots=True)
class Target:
    """One decoder entry point, its corpus and how to judge one input."""

    name: str
    summary: str
    check: Callable[[bytes], list[str]]
    """Feed one input; return one label per item; raise `Violation` on a failed invariant."""
    corpus: Callable[[], list[bytes]]
    tokens: tuple[bytes, ...] = ()
    structured: Callable[[random.Random, Pool], bytes] | None = None
    structured_share: float = 0.15

    def pool(self) -> Pool:
        """A fresh pool of this target's corpus."""
        return Pool(list(self.corpus()), self.tokens)


def generate(rng: random.Random, target: Target, pool: Pool) -> bytes:
    """One input: random bytes, a structured one, or a mutated pool item."""
    roll = rng.random()
    if roll < _RANDOM_SHARE:
        return _random_bytes(rng, pool)
    if target.structured is not None and roll < _RANDOM_SHARE + target.structured_share:
        return _bounded(target.structured(rng, pool))
    return mutate(rng, rng.choice(pool.items), pool)


class Source:
    """A target's inputs for one seed: its corpus as it is, then generated ones.

    `outcome` is the feedback: an input whose outcomes are new joins the pool.
    """

    __slots__ = ("_seeds", "pool", "rng", "target")

    def __init__(self, target: Target, seed: int) -> None:
        self.target = target
        # A str seed hashes with SHA-512: stable across runs, independent per target.
        self.rng = random.Random(f"{seed}:{target.name}")
        self.pool = target.pool()
        # The seeds first, unmutated: a valid input that fails is the plainest finding.
        self._seeds = list(reversed(self.pool.items))

    def next(self) -> bytes:
        """The next input."""
        if self._seeds:
            return self._seeds.pop()
        return generate(self.rng, self.target, self.pool)

    def outcome(self, data: bytes, labels: Sequence[str]) -> None:
        """What `data` came to; keeps it if that is new."""
        self.pool.offer(self.rng, data, labels)


def inputs(target: Target, seed: int, count: int) -> list[bytes]:
    """The first `count` inputs a run with `seed` feeds `target` (feedback included)."""
    source = Source(target, seed)
    out: list[bytes] = []
    for _ in range(count):
        data = source.next()
        out.append(data)
        try:
            source.outcome(data, target.check(data))
        except Exception:  # noqa: BLE001, S112 - the run reports these; here only inputs matter
            continue
    return out


# --- Contact ID ---------------------------------------------------------------------

_CID_EXAMPLES: Final = (
    # PROTOCOLS.md worked examples, valid and invalid.
    "5678181120010019",
    "5678183120010017",
    "567818112101012B",
    "5678181602000001",
    "BEEF181110010049",
    "567818112001014F",
    "5678181120010010",
    "12A4181120010015",
    "567818112001001",
    "5678182120010018",
)


def _contact_id_corpus() -> list[bytes]:
    out = [text.encode("ascii") for text in _CID_EXAMPLES]
    for account, q, code, group, zone, mt in (
        ("1234", 1, 120, 1, 1, 18),
        ("0000", 3, 100, 0, 0, 98),
        ("FFFF", 6, 999, 99, 999, 18),
        ("B0C9", 1, 602, 0, 0, 18),
        ("DDDD", 1, 137, 12, 345, 98),
    ):
        text = build_contact_id(account, q, code, group, zone, message_type=mt)
        out += [text.encode("ascii"), text.lower().encode("ascii")]
    return out


_CID_ALPHABET: Final = "0123456789BCDEFbcdefAa \x00\xb2\xff"


def _forged_contact_id(rng: random.Random, pool: Pool) -> bytes:
    """A valid message with one or two characters replaced, its checksum often made right."""
    text = list(build_contact_id("1234", rng.choice((1, 3, 6)), rng.randrange(100, 1000), 1, 1))
    for _ in range(rng.randint(1, 2)):
        text[rng.randrange(16)] = rng.choice(_CID_ALPHABET)
    if rng.random() < 0.6:
        with contextlib.suppress(ValueError):  # past the checksum, the field checks decide
            text[15] = checksum_char("".join(text[:15]).upper())
    return "".join(text).encode("latin-1")


def _check_contact_id(data: bytes) -> list[str]:
    result = parse_contact_id(data)
    text = data.decode("latin-1")
    again = parse_contact_id(text)
    if isinstance(result, Rejected):
        _check_rejected(result, len(data))
        _expect(result.raw == data, "raw is not the input", _short(result))
        _expect(
            isinstance(again, Rejected)
            and (again.reason, again.detail) == (result.reason, result.detail),
            "bytes and str parse differently",
            f"{_short(result)} / {_short(again)}",
        )
    else:
        _expect(type(result) is ContactId, "not a ContactId", _short(result))
        _expect(again == result, "bytes and str parse differently", f"{result} / {again}")
        _expect(result.text == text.upper(), "text is not the canonical input", result.text)
        _expect(parse_contact_id(result.text) == result, "text does not parse back", result.text)
        _rebuilt("family(code)", lambda: family(result.code))
    return [_label(result)]


# --- alarm receiver -----------------------------------------------------------------

_RECEIVER_BOUNDS: Final = (256, 256, 256, 28, 40)
_REBUILT_PER_INPUT: Final = 4  # a stream of many records: rebuilding the first few is enough


def _split_records(stream: bytes) -> list[bytes]:
    return [part + DC4 for part in stream.split(DC4) if part]


def _receiver_corpus() -> list[bytes]:
    out: list[bytes] = []
    capture = CAPTURES / "receiver.bin"
    if capture.exists():
        out.append(capture.read_bytes())
        out += _split_records(capture.read_bytes())
    out += [
        build_record("01", "100", "1234", 1, 121, 1, 1),
        build_record("01", "1", "BEEF", 3, 130, 0, 12),
        build_record("99", "1234567", "12345B", 6, 602, 99, 999),
        build_record("02", "12", "00000", 1, 100, 0, 0),
        build_heartbeat("01"),
        b"1011" + b" " * 11 + b"@" + b" " * 4 + DC4,
        b"\r\n" + build_record("01", "100", "1234", 1, 110, 1, 3)[:-1] + b"   \r\n" + DC4,
        b"501100 181234e12101001" + DC4,
    ]
    return out


def _feed_receiver(bound: int, reads: Sequence[bytes]) -> list[ReceiverItem]:
    decoder = ReceiverDecoder(max_record=bound)
    items: list[ReceiverItem] = []
    for read in reads:
        items += decoder.receive_data(read)
        _expect(
            len(decoder.pending) <= bound, "pending exceeds max_record", str(len(decoder.pending))
        )
    items += decoder.receive_data(b"")
    _expect(decoder.pending == b"", "pending after the end of the stream")
    _expect(decoder.receive_data(b"") == [], "a second end of stream yields items")
    return items


def _same_items(whole: Sequence[object], chunked: Sequence[object], reads: Sequence[bytes]) -> None:
    if list(whole) == list(chunked):
        return
    at = next((i for i, (a, b) in enumerate(zip(whole, chunked, strict=False)) if a != b), None)
    at = min(len(whole), len(chunked)) if at is None else at
    sizes = [len(r) for r in reads][:20]
    detail = (
        f"{len(whole)} items whole, {len(chunked)} in reads of {sizes}; first difference at "
        f"{at}: {_short(whole[at : at + 1])} vs {_short(chunked[at : at + 1])}"
    )
    raise Violation("chunking changes the items", detail)


def _check_receiver(data: bytes) -> list[str]:
    rng = _input_rng(data)
    bound = rng.choice(_RECEIVER_BOUNDS)
    whole = _feed_receiver(bound, [data] if data else [])
    reads = chunks(rng, data)
    _same_items(whole, _feed_receiver(bound, reads), reads)
    rebuilt = 0
    for item in whole:
        if isinstance(item, Rejected):
            _check_rejected(item, bound)
            _expect(answer_for(item) == NAK, "a rejection is not NAKed")
            continue
        _expect(answer_for(item) == ACK, "an item is not ACKed", _short(item))
        rebuilt += 1
        if rebuilt > _REBUILT_PER_INPUT:
            continue
        if isinstance(item, ReceiverEvent):
            record = _rebuilt(
                "build_record(event)",
                partial(
                    build_record,
                    item.receiver,
                    item.line,
                    item.account,
                    item.qualifier,
                    item.code,
                    item.group,
                    item.zone,
                ),
            )
            back = ReceiverDecoder().receive_data(record)
            _expect(
                len(back) == 1
                and isinstance(back[0], ReceiverEvent)
                and _event_fields(back[0]) == _event_fields(item),
                "a rebuilt record decodes differently",
                f"{_short(item)} -> {record!r} -> {_short(back)}",
            )
        else:
            _expect(type(item) is ReceiverHeartbeat, "not a declared item", _short(item))
            beat = _rebuilt("build_heartbeat(receiver)", partial(build_heartbeat, item.receiver))
            _expect(
                ReceiverDecoder().receive_data(beat)
                == [ReceiverHeartbeat(item.receiver, beat[:-1])],
                "a rebuilt heartbeat decodes differently",
                _short(item),
            )
    return [_label(item) for item in whole]


def _event_fields(event: ReceiverEvent) -> tuple[object, ...]:
    return (
        event.receiver,
        event.line,
        event.account,
        event.qualifier,
        event.code,
        event.group,
        event.zone,
    )


def _stream_of(rng: random.Random, pool: Pool) -> bytes:
    """Several pool items back to back, with noise between some, sometimes mutated."""
    parts: list[bytes] = []
    size = 0
    for _ in range(rng.randint(2, 8)):
        parts.append(rng.choice(pool.items))
        size += len(parts[-1])
        if pool.tokens and rng.random() < 0.2:
            parts.append(rng.choice(pool.tokens))
        if size > _STREAM_LIMIT:
            break
    stream = b"".join(parts)
    return mutate(rng, stream, pool) if rng.random() < 0.5 else stream


# --- native frames ------------------------------------------------------------------

# Above MAX_FRAME too: a reader may allow more, and only then can a frame be TOO_LARGE.
_FRAME_BOUNDS: Final = (MAX_FRAME, MAX_FRAME, MAX_FRAME, 12, 64, 300, 2 * MAX_FRAME)
_FRAME_HEADER: Final = struct.Struct(">BBHH")


def _frames_corpus() -> list[bytes]:
    out: list[bytes] = []
    capture = CAPTURES / "frames.bin"
    if capture.exists():
        out.append(capture.read_bytes())
        out += [
            DELIMITER + part + DELIMITER for part in capture.read_bytes().split(DELIMITER) if part
        ]
    payloads = [encode(m) for m in (_NATIVE_MAPS[0], _NATIVE_MAPS[-1])]
    # COBS block boundaries: 253, 254 and 255 non-zero bytes, and all zeros.
    payloads += [b"", b"\x00", b"\x01" * 244, b"\x01" * 245, b"\x01" * 246, bytes(300)]
    payloads.append(b"\x5a" * MAX_FRAME_PAYLOAD)
    out += [
        encode_data(seq, p)
        for seq, p in zip((0, 1, 7, 0xFFFF, 0x8000, 42, 3, 9, 10), payloads, strict=False)
    ]
    out += [
        encode_ack(0),
        encode_ack(0xFFFF),
        encode_nak(5, 0),
        encode_nak(6, 1),
        encode_nak(7, 0xFF),
    ]
    return out


def _frame_bodies_corpus() -> list[bytes]:
    return [part for frame in _frames_corpus() for part in frame.split(DELIMITER) if part]


def _forged_body(rng: random.Random) -> bytes:
    """A frame body whose CRC is right around fields that may be wrong: past the CRC check."""
    version = rng.choice((FRAME_VERSION,) * 4 + (0xA0, 0xA2, 0x00, 0xFF, rng.randrange(256)))
    frame_type = rng.choice((0x02, 0x02, 0x06, 0x15, 0x00, 0x03, 0xFF, rng.randrange(256)))
    seq = rng.choice((0, 1, 0x7FFF, 0x8000, 0xFFFF, rng.randrange(0x10000)))
    payload = rng.choice(
        (
            b"",
            bytes([rng.randrange(256)]),
            rng.randbytes(rng.randrange(64)),
            encode(rng.choice(_NATIVE_MAPS)),
            bytes(rng.randrange(600)),
            b"\x01" * (MAX_FRAME_PAYLOAD + rng.choice((0, 1, 100))),
        )
    )
    length = len(payload)
    if rng.random() < 0.3:
        length = rng.choice((0, 1, length - 1, length + 1, 0xFFFF, rng.randrange(0x10000))) & 0xFFFF
    content = _FRAME_HEADER.pack(version, frame_type, seq, length) + payload
    if rng.random() < 0.05:
        content = content[: rng.randrange(len(content))]  # shorter than a header
    crc = zlib.crc32(content)
    if rng.random() < 0.05:
        crc ^= 1 << rng.randrange(32)
    return cobs_encode(content + crc.to_bytes(4, "big"))


def _forged_frames(rng: random.Random, pool: Pool) -> bytes:
    parts = [DELIMITER + _forged_body(rng) + DELIMITER for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.5:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(pool.items))
    return b"".join(parts)


def _forged_frame_body(rng: random.Random, pool: Pool) -> bytes:
    return _forged_body(rng)


def _reencode(frame: DataFrame | AckFrame | NakFrame) -> bytes:
    if isinstance(frame, DataFrame):
        return encode_data(frame.seq, frame.payload)
    if isinstance(frame, AckFrame):
        return encode_ack(frame.seq)
    return encode_nak(frame.seq, frame.code)


def _feed_frames(decoder: FrameDecoder, reads: Sequence[bytes]) -> list[FrameItem]:
    items: list[FrameItem] = []
    for read in reads:
        items += decoder.receive_data(read)
        _expect(
            decoder.pending <= decoder.max_frame, "pending exceeds max_frame", str(decoder.pending)
        )
    items += decoder.receive_data(b"")
    _expect(decoder.pending == 0, "pending after the end of the stream")
    return items


def _check_frame_items(items: Sequence[FrameItem], bound: int) -> None:
    for item in items:
        if isinstance(item, Rejected):
            _check_rejected(item, bound)
            continue
        _expect(type(item) in (DataFrame, AckFrame, NakFrame), "not a declared item", _short(item))
        wire = _rebuilt("encode(frame)", partial(_reencode, item))
        _expect(
            FrameDecoder().receive_data(wire) == [item],
            "a re-encoded frame decodes differently",
            _short(item),
        )


def _check_frames_stream(data: bytes) -> list[str]:
    rng = _input_rng(data)
    decoder = FrameDecoder(rng.choice(_FRAME_BOUNDS))
    whole = _feed_frames(decoder, [data] if data else [])
    # After b"" the decoder starts afresh (a reopened port): the same stream, the same items.
    _same_items(whole, _feed_frames(decoder, [data] if data else []), [data])
    reads = chunks(rng, data)
    _same_items(whole, _feed_frames(FrameDecoder(decoder.max_frame), reads), reads)
    _check_frame_items(whole, decoder.max_frame)
    return [_label(item) for item in whole]


def _check_frame(data: bytes) -> list[str]:
    """The bytes between two delimiters: one frame, and COBS both ways."""
    wire = DELIMITER + data + DELIMITER
    decoder = FrameDecoder()
    items = decoder.receive_data(wire) + decoder.receive_data(b"")
    if data and DELIMITER not in data:
        _expect(len(items) == 1, "one delimited run is not one item", _short(items))
        first = items[0]
        if not isinstance(first, Rejected):
            again = _rebuilt("encode(frame)", partial(_reencode, first))
            _expect(again == wire, "a frame has a second wire form", f"{data!r} -> {again!r}")
    _check_frame_items(items, MAX_FRAME)
    body = cobs_decode(data)
    if body is not None:
        _expect(
            cobs_encode(body) == data, "COBS decoding is not the inverse of encoding", _short(data)
        )
    _expect(cobs_decode(cobs_encode(data)) == data, "COBS does not round-trip", _short(data))
    return [_label(item) for item in items] or ["ok:nothing"]


# --- payloads -----------------------------------------------------------------------

_PHONE_MAPS: Final[tuple[dict[str, object], ...]] = (
    {"v": 1, "seq": 7, "ts": 1_700_000_000.25, "q": 1, "code": 120, "zone": 1, "part": 1},
    {"v": 1, "seq": 0, "ts": 1_700_000_000, "q": 3, "code": 121, "zone": 12},
    {"v": 1, "seq": 2**63 - 1, "ts": -1.5, "q": 6, "code": 602, "zone": 0, "part": None},
    {"v": 1, "seq": 123456, "ts": 0.0, "q": 1, "code": 999, "zone": 999, "part": 99, "fw": "2.1"},
)
_CHECKPOINT_MAPS: Final[tuple[dict[str, object], ...]] = (
    {
        "v": 1,
        "id": "r-000123",
        "type": "pass",
        "ts": 1_700_000_000.5,
        "plate": "苏A12345",
        "conf": 0.93,
        "lane": 2,
        "dir": "in",
        "speed": 54.5,
        "vtype": "car",
        "color": "white",
        "img": "https://cam.example/1.jpg",
    },
    {"v": 1, "id": "x", "type": "pass", "ts": 1.0, "plate": "", "conf": 0},
    {"v": 1, "id": "hb-9", "type": "heartbeat", "ts": 1_700_000_000.0},
    {"v": 1, "id": "f-1", "type": "fault", "ts": 1_700_000_000, "fault": "lens fogged", "img": ""},
)
_ACK_MAPS: Final[tuple[dict[str, object], ...]] = (
    {"alarm_id": "a-1700000000-000001", "by": "op-7", "ts": 1_700_000_001.0},
    {"v": 1, "alarm_id": "x", "by": "值班员", "ts": 5},
)
_NATIVE_MAPS: Final[tuple[dict[str, object], ...]] = (
    {**_PHONE_MAPS[0], "kind": "phone", "device": "h0101"},
    {**_PHONE_MAPS[1], "kind": "phone", "device": "户-12"},
    {**_CHECKPOINT_MAPS[0], "kind": "checkpoint", "device": "kA01"},
    {**_CHECKPOINT_MAPS[2], "kind": "checkpoint", "device": "kk-1"},
)
_ALL_MAPS: Final = _PHONE_MAPS + _CHECKPOINT_MAPS + _ACK_MAPS + _NATIVE_MAPS
_ALL_KEYS: Final = tuple(sorted({key for m in _ALL_MAPS for key in m} | {"fault", "device"}))


@dataclass(frozen=True, slots=True)
class _Raw:
    """A value written literally: its JSON text and its MessagePack bytes."""

    json: str
    packed: bytes


_NAN: Final = math.nan
_EDGE_INTS: Final = (
    0, 1, -1, 2, 3, 6, 99, 100, 999, 1000, 127, 128, 255, 256, -32, -33,
    2**15, 2**16, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**31), -(2**63),
)  # fmt: skip
_EDGE_FLOATS: Final = (
    _NAN, math.inf, -math.inf, 0.0, -0.0, 0.5, 1.0, 1.0000000000000002, 0.9999999999999999,
    1e308, 5e-324, -1.0, 1.7e9, 3.4028235e38, 1e39,
)  # fmt: skip
_EDGE_LENGTHS: Final = (
    0,
    1,
    15,
    16,
    17,
    31,
    32,
    33,
    63,
    64,
    65,
    128,
    129,
    256,
    257,
    1024,
    1025,
    8193,
)
_CHARS: Final = (
    "x",
    "苏",
    "\x00",
    "\u202e",
    "\ud800",
    "\U0001f600",
    " ",
    "/",
    "+",
    "\x85",
    "\ufffe",
)
_WORDS: Final = (
    "pass", "heartbeat", "fault", "in", "out", "phone", "checkpoint", "", "PASS", "h-1", " h",
    "a/b",
)  # fmt: skip
_RAWS: Final = (
    _Raw("9" * 5000, b"\xcf" + b"\xff" * 8),  # more digits than int() takes
    _Raw("-" + "9" * 400, b"\xd3\x80" + bytes(7)),  # an int no float holds
    _Raw("1e400", b"\xcb\x7f\xf0" + bytes(6)),  # overflows to infinity
    _Raw("NaN", b"\xcb\x7f\xf8" + bytes(6)),
    _Raw("-Infinity", b"\xcb\xff\xf0" + bytes(6)),
    _Raw("1E2", b"\xca\x42\xc8\x00\x00"),
    _Raw("-0", b"\xd3" + bytes(8)),
    _Raw("[" * 1100 + "]" * 1100, b"\x91" * 1100 + b"\xc0"),  # nesting past the stacks
    _Raw('{"a":' * 40 + "1" + "}" * 40, b"\x81\xa1a" * 40 + b"\x01"),
    _Raw('"\\u0000"', b"\xa1\x00"),
    _Raw('"\\ud800"', b"\xa3\xed\xa0\x80"),  # a lone surrogate: JSON may say it, UTF-8 may not
    _Raw("true", b"\xc1"),  # 0xc1: the one byte MessagePack never uses
)


def _confusing(rng: random.Random, depth: int = 0) -> object:
    """A value of any MessagePack type, biased to boundaries: the type-confusion alphabet."""
    kind = rng.randrange(13 if depth < 2 else 9)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice(_EDGE_INTS)
    if kind == 3:
        value = rng.getrandbits(rng.choice((7, 8, 16, 32, 63)))
        return -value if rng.random() < 0.3 else value
    if kind == 4:
        return rng.choice(_EDGE_FLOATS)
    if kind == 5:
        (value,) = struct.unpack(">d", rng.randbytes(8))  # any bits: NaN payloads, subnormals
        return value
    if kind == 6:
        return rng.choice(_CHARS) * rng.choice(_EDGE_LENGTHS)
    if kind == 7:
        return rng.choice(_WORDS)
    if kind == 8:
        return rng.choice(_RAWS)
    if kind == 9:
        return rng.randbytes(rng.choice((0, 1, 8, 300)))
    if kind == 10:
        return [_confusing(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 11:
        return [
            (rng.choice(_ALL_KEYS), _confusing(rng, depth + 1)) for _ in range(rng.randrange(4))
        ]
    if rng.random() < 0.5:  # ext -1 is the timestamp: 4, 8 or 12 bytes, anything else is bad
        size = rng.choice((4, 8, 12, 3))
        head = {4: b"\xd6\xff", 8: b"\xd7\xff"}.get(size, bytes([0xC7, size, 0xFF]))
        return _Raw("null", head + rng.randbytes(size))
    return msgpack.ExtType(rng.choice((0, 1, 127)), rng.randbytes(rng.choice((1, 4, 8, 12, 3))))


_Pairs: TypeAlias = list[tuple[object, object]]
"""A map as written: its entries in order, keys of any type, duplicates allowed."""


def _structured_payload(
    maps: Sequence[dict[str, object]],
) -> Callable[[random.Random, Pool], bytes]:
    def build(rng: random.Random, pool: Pool) -> bytes:
        pairs: _Pairs = list(rng.choice(maps).items())
        for _ in range(rng.randint(1, 3)):
            _edit_pairs(rng, pairs)
        roll = rng.random()
        if roll < 0.7:
            return _pack_map(pairs, rng)
        if roll < 0.9:
            return _json_text(pairs, rng).encode("utf-8", "surrogatepass")
        try:
            return encode({str(k): v for k, v in pairs})
        except (TypeError, ValueError, OverflowError):  # a value msgpack cannot pack
            return _pack_map(pairs, rng)

    return build


def _edit_pairs(rng: random.Random, pairs: _Pairs) -> None:
    op = rng.randrange(8)
    at = rng.randrange(len(pairs)) if pairs else -1
    if at < 0 or op == 0:
        pairs.append((rng.choice(_ALL_KEYS), _confusing(rng)))
    elif op in (1, 2, 3):
        pairs[at] = (pairs[at][0], _confusing(rng))
    elif op == 4:
        del pairs[at]
    elif op == 5:  # rename, sometimes to a key of another type
        renamed: object = rng.choice((*_ALL_KEYS, 1, b"v", None, 1.5, "V", "v "))
        pairs[at] = (renamed, pairs[at][1])
    elif op == 6:  # the same key twice: which value wins?
        pairs.insert(rng.randrange(len(pairs) + 1), (pairs[at][0], _confusing(rng)))
    else:  # nest
        key, value = pairs[at]
        pairs[at] = (key, [value] if rng.random() < 0.5 else [(key, value)])


def _pack_int(value: int, rng: random.Random) -> bytes:
    value = max(-(2**63), min(value, 2**64 - 1))
    forms: list[bytes] = []
    if 0 <= value < 0x80:
        forms.append(bytes([value]))
    if -32 <= value < 0:
        forms.append(struct.pack(">b", value))
    for code, fmt, lo, hi in (
        (0xCC, ">B", 0, 0xFF),
        (0xCD, ">H", 0, 0xFFFF),
        (0xCE, ">I", 0, 0xFFFFFFFF),
        (0xCF, ">Q", 0, 2**64 - 1),
        (0xD0, ">b", -(2**7), 2**7 - 1),
        (0xD1, ">h", -(2**15), 2**15 - 1),
        (0xD2, ">i", -(2**31), 2**31 - 1),
        (0xD3, ">q", -(2**63), 2**63 - 1),
    ):
        if lo <= value <= hi:
            forms.append(bytes([code]) + struct.pack(fmt, value))
    # Mostly the shortest form, as packers write; sometimes a longer legal one.
    return forms[0] if rng.random() < 0.7 else rng.choice(forms)


def _header(
    rng: random.Random, size: int, fix: int | None, fix_limit: int, codes: Sequence[int]
) -> bytes:
    forms: list[bytes] = []
    if fix is not None and size < fix_limit:
        forms.append(bytes([fix | size]))
    for code, width in zip(codes, (1, 2, 4), strict=False):
        if size < 1 << (8 * width):
            forms.append(bytes([code]) + size.to_bytes(width, "big"))
    return forms[0] if rng.random() < 0.8 else rng.choice(forms)


def _pack(value: object, rng: random.Random) -> bytes:
    """MessagePack with the writer's freedoms: any legal width, float 32 or 64."""
    if value is None:
        return b"\xc0"
    if value is True or value is False:
        return b"\xc3" if value else b"\xc2"
    if isinstance(value, _Raw):
        return value.packed
    if isinstance(value, int):
        return _pack_int(value, rng)
    if isinstance(value, float):
        if rng.random() < 0.2 and (not math.isfinite(value) or abs(value) < 3.4e38):
            return struct.pack(">Bf", 0xCA, value)
        return struct.pack(">Bd", 0xCB, value)
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        return _header(rng, len(data), 0xA0, 32, (0xD9, 0xDA, 0xDB)) + data
    if isinstance(value, bytes):
        return _header(rng, len(value), None, 0, (0xC4, 0xC5, 0xC6)) + value
    if isinstance(value, msgpack.ExtType):
        fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}.get(len(value.data))
        head = bytes([fixed]) if fixed else bytes([0xC7, len(value.data)])
        return head + struct.pack(">b", value.code) + value.data
    if isinstance(value, list) and value and all(type(v) is tuple for v in value):
        return _pack_map(value, rng)
    if isinstance(value, list):
        return _header(rng, len(value), 0x90, 16, (0xDC, 0xDD)) + b"".join(
            _pack(v, rng) for v in value
        )
    raise TypeError(f"cannot pack {type(value).__name__}")


def _pack_map(pairs: _Pairs, rng: random.Random) -> bytes:
    head = _header(rng, len(pairs), 0x80, 16, (0xDE, 0xDF))
    return head + b"".join(_pack(k, rng) + _pack(v, rng) for k, v in pairs)


def _json_text(value: object, rng: random.Random) -> str:
    """JSON as a hand-typing operator or a sloppy device might write it."""
    if isinstance(value, _Raw):
        return value.json
    if value is None or isinstance(value, msgpack.ExtType):
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, str | bytes):
        text = value if isinstance(value, str) else value.decode("latin-1")
        return json.dumps(text, ensure_ascii=rng.random() < 0.7)
    space = rng.choice(("", " ", "\n\t"))
    if isinstance(value, list) and value and all(type(v) is tuple for v in value):
        entries = (
            f"{_json_text(k if isinstance(k, str) else str(k), rng)}:{space}{_json_text(v, rng)}"
            for k, v in value
        )
        return rng.choice(("", " ", "\r\n")) + "{" + f",{space}".join(entries) + "}"
    if isinstance(value, list):
        return "[" + f",{space}".join(_json_text(v, rng) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _payload_corpus(maps: Sequence[dict[str, object]]) -> Callable[[], list[bytes]]:
    def corpus() -> list[bytes]:
        out: list[bytes] = []
        for m in maps:
            out += [
                encode(m),
                json.dumps(m).encode(),
                b" \n" + json.dumps(m, ensure_ascii=False).encode(),
            ]
        return out

    return corpus


_PAYLOAD_TOKENS: Final = (
    b"\x80", b"\x8f", b"\xde\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xc0", b"\xc1", b"\xc2", b"\xc3",
    b"\xd9\xff", b"\xdb\xff\xff\xff\xff", b"\xdc\xff\xff", b"\xc4\x10", b"\xd4\x01\x00",
    b"\xd6\xff\x00\x00\x00\x01", b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\xa1v", b"\xa3seq", b"\xa2ts", b"\xa4type", b"\xa4kind", b"\xa6device", b"\xa4zone",
    b"{", b"}", b"[", b"]", b'"', b":", b",", b"\\u", b"\\ud800", b"NaN", b"1e400", b"null", b"-0",
    b'"v":1', b'"ts":', b"\xed\xa0\x80", b"\xff",
)  # fmt: skip

_HOUSEHOLD: Final = "h-0001"
_CHECKPOINT: Final = "cp-a"


def _int_in(value: object, lo: int, hi: int) -> bool:
    return type(value) is int and lo <= value <= hi


def _float_in(value: object, lo: float, hi: float) -> bool:
    return type(value) is float and math.isfinite(value) and lo <= value <= hi


def _str_in(value: object, lo: int, hi: int) -> bool:
    return type(value) is str and lo <= len(value) <= hi


def _opt(check: Callable[[object], bool], value: object) -> bool:
    return value is None or check(value)


def _check_payload_rejected(result: Rejected, data: bytes) -> None:
    _check_rejected(result, MAX_PAYLOAD)
    _expect(result.raw == data[:MAX_PAYLOAD], "raw is not the payload", _short(result))


def _phone_ok(msg: PhoneMessage) -> None:
    ok = (
        type(msg) is PhoneMessage
        and _int_in(msg.seq, 0, 2**63 - 1)
        and _float_in(msg.ts, -math.inf, math.inf)
        and msg.q in (1, 3, 6)
        and type(msg.q) is int
        and _int_in(msg.code, 100, 999)
        and _int_in(msg.zone, 0, 999)
        and _int_in(msg.part, 0, 99)
    )
    _expect(ok, "an accepted phone message breaks the contract", _short(msg))


def _json_bytes(m: dict[str, object]) -> bytes:
    return json.dumps(m, ensure_ascii=False).encode("utf-8")


def _round_trip(
    what: str, decoded: object, again: Callable[[bytes], object], payload: Callable[[], bytes]
) -> None:
    wire = _rebuilt(what, payload)
    if len(wire) > MAX_PAYLOAD:
        return  # longer than the input (ints widened to floats, JSON escapes): TOO_LARGE is right
    back = again(wire)
    _expect(back == decoded, f"{what} decodes differently", f"{_short(decoded)} -> {_short(back)}")


def _check_phone(data: bytes) -> list[str]:
    result = decode_phone(_HOUSEHOLD, data)
    fields = decode_phone_fields(data)
    if isinstance(result, Rejected):
        _check_payload_rejected(result, data)
        _expect(
            fields == result,
            "decode_phone_fields refuses differently",
            f"{_short(fields)} / {_short(result)}",
        )
        return [_label(result)]
    _phone_ok(result)
    expected = (result.seq, result.ts, result.q, result.code, result.zone, result.part)
    _expect(
        fields == expected,
        "decode_phone_fields decodes differently",
        f"{_short(fields)} / {_short(result)}",
    )

    def again(wire: bytes) -> object:
        return decode_phone(_HOUSEHOLD, wire)

    _round_trip("encode(phone_payload)", result, again, lambda: encode(phone_payload(result)))
    _round_trip("json(phone_payload)", result, again, lambda: _json_bytes(phone_payload(result)))
    return [_label(result)]


def _checkpoint_ok(msg: CheckpointMessage) -> None:
    common = (
        type(msg) is CheckpointMessage
        and _str_in(msg.id, 1, 64)
        and isinstance(msg.type, CheckpointEventType)
        and _float_in(msg.ts, -math.inf, math.inf)
        and _opt(lambda v: _str_in(v, 0, 1024), msg.img)
    )
    details = (msg.plate, msg.conf, msg.lane, msg.dir, msg.speed, msg.vtype, msg.color)
    if msg.type is CheckpointEventType.PASS:
        ok = (
            _str_in(msg.plate, 0, 16)
            and _float_in(msg.conf, 0.0, 1.0)
            and _opt(lambda v: _int_in(v, 0, 999), msg.lane)
            and msg.dir in (None, "in", "out")
            and _opt(lambda v: _float_in(v, 0.0, math.inf), msg.speed)
            and _opt(lambda v: _str_in(v, 0, 32), msg.vtype)
            and _opt(lambda v: _str_in(v, 0, 32), msg.color)
            and msg.fault is None
        )
    elif msg.type is CheckpointEventType.FAULT:
        ok = _str_in(msg.fault, 0, 256) and details == (None,) * 7
    else:
        ok = msg.fault is None and details == (None,) * 7
    _expect(common and ok, "an accepted checkpoint message breaks the contract", _short(msg))


def _check_checkpoint(data: bytes) -> list[str]:
    result = decode_checkpoint(_CHECKPOINT, data)
    if isinstance(result, Rejected):
        _check_payload_rejected(result, data)
        return [_label(result)]
    _checkpoint_ok(result)

    def again(wire: bytes) -> object:
        return decode_checkpoint(_CHECKPOINT, wire)

    _round_trip(
        "encode(checkpoint_payload)", result, again, lambda: encode(checkpoint_payload(result))
    )
    _round_trip(
        "json(checkpoint_payload)",
        result,
        again,
        lambda: _json_bytes(checkpoint_payload(result)),
    )
    return [f"{_label(result)}/{result.type.value}"]


def _check_ack(data: bytes) -> list[str]:
    result = decode_ack(data)
    if isinstance(result, Rejected):
        _check_payload_rejected(result, data)
        return [_label(result)]
    ok = (
        type(result) is AckMessage
        and _str_in(result.alarm_id, 1, 128)
        and _str_in(result.by, 1, 64)
        and _float_in(result.ts, -math.inf, math.inf)
    )
    _expect(ok, "an accepted ack breaks the contract", _short(result))
    _round_trip("encode(ack_payload)", result, decode_ack, lambda: encode(ack_payload(result)))
    _round_trip("json(ack_payload)", result, decode_ack, lambda: _json_bytes(ack_payload(result)))
    return [_label(result)]


def _check_native(data: bytes) -> list[str]:
    result = decode_native(data)
    if isinstance(result, Rejected):
        _check_payload_rejected(result, data)
        return [_label(result)]
    if isinstance(result, PhoneMessage):
        _phone_ok(result)
        device = result.household
    else:
        _checkpoint_ok(result)
        device = result.checkpoint
    _expect(validate_id(device) is None, "an accepted device id is not a valid id", _short(device))
    _round_trip(
        "encode(native_payload)", result, decode_native, lambda: encode(native_payload(result))
    )
    return [_label(result)]


def _check_map(data: bytes) -> list[str]:
    result = decode_map(data)
    if isinstance(result, Rejected):
        _check_payload_rejected(result, data)
        return [_label(result)]
    _expect(type(result) is dict, "not a dict", _short(result))
    _expect(all(type(k) is str for k in result), "a key is not a str", _short(result))
    return ["ok:map"]


# --- topics -------------------------------------------------------------------------

_TOPICS: Final = (Topics(), Topics("city/district7/alarmgw"))


def _topics_corpus() -> list[bytes]:
    out: list[str] = []
    for topics in _TOPICS:
        out += [
            topics.phone_in("h-0001"),
            topics.phone_in("户-12"),
            topics.checkpoint_in("东山村-03"),
            topics.checkpoint_in("kA01"),
            topics.ack("village", "v001"),
            topics.ack("township", "镇-1"),
            topics.alarms("village", "v001"),
            topics.passes("station", "s1"),
            topics.availability("h-0001"),
            topics.state,
            topics.deadletter,
            *topics.subscriptions(),
            topics.base + "/in/phone/",
            topics.base + "/in/phone/a/b",
            topics.base + "/ack/village",
            topics.base + "/ack/village/v1/x",
        ]
    return [t.encode("utf-8") for t in (*out, "$SYS/broker/load", "", "/")]


_TOPIC_TOKENS: Final = tuple(
    t.encode("utf-8", "surrogatepass")
    for t in (
        "/", "+", "#", "alarmgw", "in", "phone", "checkpoint", "ack", "$", " ", "\x00", "\x7f",
        "\u200b", "\x85", "\ufffe", "\ud800", "\U0001f600", "\t", "/in/phone/", "/ack/",
    )
)  # fmt: skip


def _check_topic_text(topics: Topics, topic: str) -> str:
    result = topics.parse(topic)
    if isinstance(result, Rejected):
        _check_rejected(result, 4 * len(topic))
        _expect(
            result.raw == topic.encode("utf-8", "surrogatepass"),
            "raw is not the topic",
            _short(result),
        )
        _expect(
            result.reason in (Reason.BAD_TOPIC, Reason.BAD_ID),
            "an unexpected reason",
            _short(result),
        )
        return _label(result)
    if isinstance(result, IngressTopic):
        _expect(
            validate_id(result.device_id) is None, "an accepted id is not valid", _short(result)
        )
        build = topics.phone_in if result.kind is IngressKind.PHONE else topics.checkpoint_in
        again = _rebuilt("Topics.<kind>_in(id)", lambda: build(result.device_id))
    elif isinstance(result, RequestTopic):
        request = result
        again = _rebuilt("Topics.request(api, op)", lambda: topics.request(request.api, request.op))
    else:
        _expect(type(result) is AckTopic, "not a declared result", _short(result))
        ack = result
        again = _rebuilt("Topics.ack(kind, id)", lambda: topics.ack(ack.sink_kind, ack.sink_id))
    _expect(again == topic, "a parsed topic rebuilds differently", f"{topic!r} -> {again!r}")
    if isinstance(result, IngressTopic):
        return _label(result) + f"/{result.kind.value}"
    return _label(result)


def _check_topic(data: bytes) -> list[str]:
    # A client library hands the topic over as text; invalid UTF-8 becomes lone
    # surrogates (surrogateescape), and latin-1 gives every C1 control.
    texts = (data.decode("utf-8", "surrogateescape"), data.decode("latin-1"))
    return [_check_topic_text(topics, text) for topics in _TOPICS for text in texts]


# --- the table of targets -----------------------------------------------------------

_STREAM_NOISE: Final = (DC4, b"\r\n", b"\x00", b"\x06", b"\x15")

TARGETS: Final[dict[str, Target]] = {
    t.name: t
    for t in (
        Target(
            "contact_id.parse",
            "parse_contact_id on bytes and on the same text",
            _check_contact_id,
            _contact_id_corpus,
            tokens=(b"18", b"98", b"A", b"b", b"f", b"0", b"1", b"3", b"6", b"\xb2", b"\x00"),
            structured=_forged_contact_id,
            structured_share=0.3,
        ),
        Target(
            "receiver.stream",
            "ReceiverDecoder: whole and in random reads, rebuilt with build_record",
            _check_receiver,
            _receiver_corpus,
            tokens=(
                *_STREAM_NOISE,
                b" ",
                b"@",
                b"18",
                b"98",
                b"E",
                b"R",
                b"P",
                b"5011",
                b"101000",
                b" " * 11,
                b"b",
                b"A",
            ),
            structured=_stream_of,
            structured_share=0.25,
        ),
        Target(
            "frames.stream",
            "FrameDecoder: whole, again after b'', and in random reads; frames re-encoded",
            _check_frames_stream,
            _frames_corpus,
            tokens=(
                *_STREAM_NOISE,
                b"\xff",
                b"\x01",
                b"\xa1",
                b"\x02",
                b"\xa1\x02\x00\x01\x00\x00",
            ),
            structured=lambda rng, pool: (
                _forged_frames(rng, pool) if rng.random() < 0.6 else _stream_of(rng, pool)
            ),
            structured_share=0.35,
        ),
        Target(
            "frames.frame",
            "one frame between two delimiters, cobs_decode and cobs_encode",
            _check_frame,
            _frame_bodies_corpus,
            tokens=(b"\xff", b"\x01", b"\x02", b"\xa1", b"\x06", b"\x15", b"\x00"),
            structured=_forged_frame_body,
            structured_share=0.35,
        ),
        Target(
            "payloads.phone",
            "decode_phone and decode_phone_fields (in/phone/<household>)",
            _check_phone,
            _payload_corpus(_PHONE_MAPS),
            tokens=_PAYLOAD_TOKENS,
            structured=_structured_payload(_PHONE_MAPS),
            structured_share=0.45,
        ),
        Target(
            "payloads.checkpoint",
            "decode_checkpoint (in/checkpoint/<checkpoint>)",
            _check_checkpoint,
            _payload_corpus(_CHECKPOINT_MAPS),
            tokens=_PAYLOAD_TOKENS,
            structured=_structured_payload(_CHECKPOINT_MAPS),
            structured_share=0.45,
        ),
        Target(
            "payloads.ack",
            "decode_ack (ack/<sink_kind>/<sink_id>)",
            _check_ack,
            _payload_corpus(_ACK_MAPS),
            tokens=_PAYLOAD_TOKENS,
            structured=_structured_payload(_ACK_MAPS),
            structured_share=0.45,
        ),
        Target(
            "payloads.native",
            "decode_native (the payload of a native serial DATA frame)",
            _check_native,
            _payload_corpus(_NATIVE_MAPS),
            tokens=_PAYLOAD_TOKENS,
            structured=_structured_payload(_NATIVE_MAPS),
            structured_share=0.45,
        ),
        Target(
            "payloads.map",
            "decode_map (the tail's acks, `alarmgw decode`)",
            _check_map,
            _payload_corpus(_ALL_MAPS),
            tokens=_PAYLOAD_TOKENS,
            structured=_structured_payload(_ALL_MAPS),
            structured_share=0.45,
        ),
        Target(
            "topics.parse",
            "Topics.parse under two bases, of the topic read as UTF-8 and as latin-1",
            _check_topic,
            _topics_corpus,
            tokens=_TOPIC_TOKENS,
        ),
    )
}
"""Every public entry point of protocols/ that takes peer bytes or text."""


# ------------------------------------------------------------------ running


@dataclass(slots=True)
class Finding:
    """Every input of one signature: what escaped or failed, where, and the saved inputs."""

    target: str
    kind: str  # "exception" or "violation"
    type: str
    message: str
    where: str
    traceback: str
    count: int = 0
    saved: list[str] = field(default_factory=list)


@dataclass(slots=True)
class TargetStats:
    """One target's part of a run."""

    name: str
    inputs: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    exceptions: int = 0
    violations: int = 0

    @property
    def rate(self) -> float:
        """Inputs per second."""
        return self.inputs / self.seconds if self.seconds > 0 else 0.0

    @property
    def accepted(self) -> int:
        """Items decoded into values."""
        return sum(n for label, n in self.outcomes.items() if label.startswith("ok:"))

    def rejected(self) -> Counter[str]:
        """Rejected items by reason (the key named in the detail folded in)."""
        out: Counter[str] = Counter()
        for label, n in self.outcomes.items():
            if label.startswith("rej:"):
                out[label[4:].split("/")[0]] += n
        return out


@dataclass(slots=True)
class Report:
    """A whole run: per-target statistics and every finding."""

    seed: int
    out: Path
    targets: list[TargetStats] = field(default_factory=list)
    findings: dict[tuple[str, str, str, str], Finding] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failures(self) -> int:
        """Exceptions plus invariant violations."""
        return sum(t.exceptions + t.violations for t in self.targets)


def _describe(exc: Exception) -> tuple[str, str, str]:
    """(where, short traceback, full traceback) of an exception."""
    frames = traceback.extract_tb(exc.__traceback__)
    inner = frames[-1] if frames else None
    where = f"{Path(inner.filename).name}:{inner.lineno} in {inner.name}" if inner else "?"
    short = " <- ".join(
        f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-6:])
    )
    full = "".join(traceback.format_exception(exc))
    return where, short, full


def _record(report: Report, target: Target, data: bytes, exc: Exception) -> None:
    kind = "violation" if isinstance(exc, Violation) else "exception"
    where, short, full = _describe(exc)
    what = exc.what if isinstance(exc, Violation) else where
    key = (target.name, kind, type(exc).__name__, what)
    finding = report.findings.get(key)
    if finding is None:
        finding = Finding(target.name, kind, type(exc).__name__, str(exc)[:2000], where, short)
        report.findings[key] = finding
    finding.count += 1
    if len(finding.saved) < _SAVED_PER_SIGNATURE:
        finding.saved.append(
            _save(report.out, target, data, kind=kind, exc=exc, full=full, n=len(report.findings))
        )


def _save(
    out: Path, target: Target, data: bytes, *, kind: str, exc: Exception, full: str, n: int
) -> str:
    folder = out / "findings"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{target.name}-{kind}-{n:03d}-{zlib.crc32(data):08x}"
    path = folder / f"{stem}.bin"
    path.write_bytes(data)
    text = (
        f"target: {target.name} ({target.summary})\n"
        f"kind: {kind}\n"
        f"exception: {type(exc).__name__}: {exc}\n\n"
        f"input ({len(data)} bytes):\n{data!r}\n\n"
        f"reproduce:\n    python -m bench.fuzz --replay {path} --target {target.name}\n\n"
        f"{full}"
    )
    (folder / f"{stem}.txt").write_text(text, encoding="utf-8")
    return str(path)


def run_target(
    report: Report, target: Target, budget: int | None, seconds: float | None, seed: int
) -> TargetStats:
    """Fuzz one target until `budget` inputs or `seconds` have gone, whichever comes first."""
    stats = TargetStats(target.name)
    source = Source(target, seed)
    check = target.check
    start = time.perf_counter()
    deadline = math.inf if seconds is None else start + seconds
    limit = sys.maxsize if budget is None else budget
    outcomes = stats.outcomes
    count = 0
    while count < limit:
        if count & 63 == 0 and time.perf_counter() >= deadline:
            break
        data = source.next()
        count += 1
        try:
            labels = check(data)
        except Violation as exc:
            stats.violations += 1
            _record(report, target, data, exc)
            continue
        except Exception as exc:  # noqa: BLE001 - escaping a decoder is what is being counted
            stats.exceptions += 1
            _record(report, target, data, exc)
            continue
        outcomes.update(labels)
        source.outcome(data, labels)
    stats.inputs = count
    stats.seconds = time.perf_counter() - start
    return stats


def run(
    targets: Sequence[Target],
    *,
    inputs: int | None = DEFAULT_INPUTS,
    seconds: float | None = None,
    seed: int = 0,
    out: Path,
    progress: Callable[[TargetStats], None] | None = None,
) -> Report:
    """Fuzz `targets` with `inputs` in total, or for `seconds` in total, split evenly."""
    report = Report(seed=seed, out=out)
    started = time.perf_counter()
    n = len(targets)
    for index, target in enumerate(targets):
        budget = None if inputs is None else inputs // n + (1 if index < inputs % n else 0)
        share = None if seconds is None else seconds / n
        stats = run_target(report, target, budget, share, seed)
        report.targets.append(stats)
        if progress is not None:
            progress(stats)
    report.seconds = time.perf_counter() - started
    return report


# ------------------------------------------------------------------ output


def _count(n: float) -> str:
    return f"{n:,.0f}"


def _reasons(stats: TargetStats) -> str:
    return ", ".join(f"{reason} {_count(n)}" for reason, n in stats.rejected().most_common()) or "-"


def table(report: Report) -> str:
    """The run's table: one row per target, then the total."""
    header = (
        "target",
        "inputs",
        "inputs/s",
        "accepted",
        "exceptions",
        "violations",
        "rejected by reason",
    )
    rows = [
        (
            t.name,
            _count(t.inputs),
            _count(t.rate),
            _count(t.accepted),
            str(t.exceptions),
            str(t.violations),
            _reasons(t),
        )
        for t in report.targets
    ]
    total_inputs = sum(t.inputs for t in report.targets)
    rows.append(
        (
            "total",
            _count(total_inputs),
            _count(total_inputs / report.seconds if report.seconds else 0),
            _count(sum(t.accepted for t in report.targets)),
            str(sum(t.exceptions for t in report.targets)),
            str(sum(t.violations for t in report.targets)),
            f"{report.seconds:.1f} s",
        )
    )
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]

    def line(row: Sequence[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:-1], widths[1:], strict=True)
        ]
        return "| " + " | ".join([*cells, row[-1]]) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|---|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def findings_text(report: Report) -> str:
    """One paragraph per finding signature."""
    parts = []
    for f in report.findings.values():
        saved = "\n".join(f"    {p}" for p in f.saved)
        parts.append(
            f"{f.kind.upper()} in {f.target}: {f.type}: {f.message[:300]}\n"
            f"  {f.count} inputs; raised at {f.where}\n  traceback: {f.traceback}\n"
            f"  saved:\n{saved}\n"
            f"  replay: python -m bench.fuzz --replay {f.saved[0] if f.saved else 'FILE'} "
            f"--target {f.target}"
        )
    return "\n\n".join(parts)


def _write_results(report: Report, argv: Sequence[str]) -> None:
    report.out.mkdir(parents=True, exist_ok=True)
    results = {
        "command": ["python", "-m", "bench.fuzz", *argv],
        "seed": report.seed,
        "seconds": report.seconds,
        "failures": report.failures,
        "targets": [
            {
                "name": t.name,
                "summary": TARGETS[t.name].summary if t.name in TARGETS else "",
                "inputs": t.inputs,
                "seconds": t.seconds,
                "inputs_per_s": t.rate,
                "accepted": t.accepted,
                "rejected": dict(t.rejected()),
                "outcomes": dict(sorted(t.outcomes.items())),
                "exceptions": t.exceptions,
                "violations": t.violations,
            }
            for t in report.targets
        ],
        "findings": [
            {
                "target": f.target,
                "kind": f.kind,
                "type": f.type,
                "message": f.message,
                "where": f.where,
                "traceback": f.traceback,
                "count": f.count,
                "saved": f.saved,
            }
            for f in report.findings.values()
        ],
    }
    (report.out / "results.json").write_text(
        json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    (report.out / "table.md").write_text(table(report) + "\n", encoding="utf-8")


def replay(path: Path, target: Target) -> int:
    """Run one saved input through `target`: 0 if it passes, 1 if it raises or violates."""
    data = path.read_bytes()
    print(f"{target.name}: {len(data)} bytes from {path}")
    try:
        labels = target.check(data)
    except Exception as exc:  # noqa: BLE001 - the point of a replay is to show it
        kind = "violation" if isinstance(exc, Violation) else "exception"
        print(f"{kind}:")
        print("".join(traceback.format_exception(exc)), end="")
        return 1
    print("outcomes: " + ", ".join(f"{label} x{n}" for label, n in Counter(labels).most_common()))
    return 0


def _targets(text: str) -> list[Target]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    return [TARGETS[n] for n in names]


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz",
        description="Mutation fuzzing of every decoder in protocols/ (issue 16).",
    )
    parser.add_argument(
        "--inputs",
        type=_positive_int,
        help=f"inputs over all targets, split evenly (default {DEFAULT_INPUTS:,} unless --seconds)",
    )
    parser.add_argument(
        "--seconds", type=_positive_float, help="time over all targets, split evenly"
    )
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
    parser.add_argument("--targets", type=_targets, help=f"subset of {', '.join(TARGETS)}")
    parser.add_argument(
        "--out", type=Path, help="output folder (default bench/results/fuzz-<time>)"
    )
    parser.add_argument(
        "--replay", type=Path, metavar="FILE", help="run one saved input (with --target)"
    )
    parser.add_argument("--target", help="the target of --replay (see --list)")
    parser.add_argument("--list", action="store_true", help="list the targets")
    return parser


def main(argv: Sequence[str] | None = None, *, targets: Sequence[Target] | None = None) -> int:
    """The command line; `targets` replaces the whole table (tests inject fakes)."""
    parser = _parser()
    args = parser.parse_args(argv)
    table_of = {t.name: t for t in targets} if targets is not None else TARGETS
    if args.list:
        for t in table_of.values():
            print(f"{t.name:20} {t.summary}")
        return 0
    if args.replay is not None:
        if args.target is None:
            parser.error("--replay needs --target")
        if args.target not in table_of:
            parser.error(f"unknown target {args.target!r}; known: {', '.join(table_of)}")
        return replay(args.replay, table_of[args.target])
    chosen = args.targets or list(table_of.values())
    inputs_budget = (
        args.inputs if args.inputs is not None or args.seconds is not None else DEFAULT_INPUTS
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out if args.out is not None else REPO / "bench" / "results" / f"fuzz-{stamp}"

    def progress(stats: TargetStats) -> None:
        print(
            f"fuzz: {stats.name}: {stats.inputs:,} inputs in {stats.seconds:.1f} s, "
            f"{stats.exceptions} exceptions, {stats.violations} violations",
            file=sys.stderr,
        )

    report = run(
        chosen,
        inputs=inputs_budget,
        seconds=args.seconds,
        seed=args.seed,
        out=out,
        progress=progress,
    )
    _write_results(report, sys.argv[1:] if argv is None else list(argv))
    print(table(report))
    if report.findings:
        print()
        print(findings_text(report))
    print(f"\nresults: {out}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
