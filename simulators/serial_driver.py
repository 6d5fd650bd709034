"""A phone base station on a serial line: native frames, stop and wait, sans-I/O, seeded faults.

Theory of operation (docs/framing.md, "The link protocol"; CONTRACT.md, "Serial
ingress → Native device frames"). A household alarm phone's base station (or a
roadside controller) concentrates many devices on one RS-232/RS-485 link and sends
each event as a DATA frame (`protocols.frames.encode_data`) whose payload is the
contract map plus `kind` and `device` (`protocols.payloads.native_payload`).
`NativeSender` behaves as such a sender must:

- **Stop and wait.** At most one DATA frame is on the wire. The next new frame
  takes `seq + 1` (65535 wraps to 0), and is chosen by priority: a life-safety
  event (`urgent`) goes before anything else that is due, so an alarm never
  waits behind more than the one frame on the wire (DESIGN.md, "alarms first").
- **Answers.** ACK with the frame's seq: done (the gateway stored it). NAK
  REFUSED: the content can never be accepted (the gateway dead-lettered it), so
  the frame is dropped and reported, and the next one goes. NAK RETRY, or a NAK
  code this sender does not know: the gateway could not store it now; the frame
  is sent again at its timeout (a NAK does not shorten the wait). An answer
  with another seq is stale (a delayed answer to an earlier copy) and ignored;
  a damaged answer is ignored too: the timeout covers both.
- **Timeout.** T = 1 s + twice the frame's wire time (10 bit times per byte on
  an 8N1 line at `baud`): 1.2 s for a 70-byte event at 9600 baud. Without an
  answer the same bytes go again, the wait doubling each time up to 30 s, for as
  long as it takes: an alarm is never given up on. (The tool that drives this
  class decides when to stop trying.)

Faults, drawn from one seeded `random.Random` (STYLE.md 5), each per
transmission, so a run can be replayed exactly:

- ``corrupt_rate``: one byte between the delimiters is changed, as line noise
  would. The gateway drops the frame without answering (bad CRC or COBS), the
  timeout expires, and the intact frame goes again.
- ``split_rate``: the frame is written in 2 or 3 pieces (a USB-serial adapter
  or an RS-485 converter delivering it in batches); the gateway must put it
  together again.
- ``merge_rate``: the frame is written together with a copy of the previous
  acknowledged frame, in one write (a converter replaying its buffer): two
  frames in one read. The gateway must answer both and dispatch the old event
  only once (it de-duplicates by the event's identity, never by frame seq).

The class is sans-I/O: the caller reads the clock and moves the bytes. `poll`
returns the writes to make now (each element one write), `receive` takes what
the gateway answered, `next_deadline` says when `poll` has something to do, and
`take_reports` returns what happened (`Sent`, `Answered`, `TimedOut`) for
printing. `run_sender` is the thin anyio driver over a non-blocking file
descriptor (a pseudo-terminal's master, or a serial port opened raw).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import anyio

from protocols.contact_id import Family, family
from protocols.frames import AckFrame, FrameDecoder, NakCode, NakFrame, encode_data
from protocols.payloads import CheckpointMessage, PhoneMessage, encode, native_payload
from protocols.reasons import Rejected
from simulators.pty_driver import write_all

__all__ = [
    "Answered",
    "NativeSender",
    "Report",
    "SenderStats",
    "Sent",
    "TimedOut",
    "answer_timeout",
    "run_sender",
]

_SEQ_MODULO: Final = 1 << 16
_BITS_PER_BYTE: Final = 10  # 8N1: start bit, 8 data bits, stop bit
_BASE_TIMEOUT_S: Final = 1.0
_MAX_TIMEOUT_S: Final = 30.0


def answer_timeout(frame_size: int, baud: int, base_s: float = _BASE_TIMEOUT_S) -> float:
    """docs/framing.md: T = 1 s + twice the frame's wire time at `baud` (8N1)."""
    if baud <= 0 or frame_size < 0:
        raise ValueError(f"baud must be > 0 and frame_size >= 0, got {baud}, {frame_size}")
    return base_s + 2 * frame_size * _BITS_PER_BYTE / baud


@dataclass(frozen=True, slots=True)
class Sent:
    """A DATA frame went on the wire (its first transmission, or again)."""

    seq: int
    label: str
    attempt: int
    """1 for the first transmission."""
    at: float
    size: int
    """Bytes written, a merged copy included."""
    faults: tuple[str, ...] = ()
    """`corrupt`, `split N` (written in N pieces), `merged` (with the previous frame)."""


@dataclass(frozen=True, slots=True)
class Answered:
    """The gateway answered the frame on the wire: `ack`, `refused`, or `retry`."""

    seq: int
    label: str
    answer: str
    latency_s: float
    """From the frame's latest transmission to this answer."""
    attempts: int
    at: float


@dataclass(frozen=True, slots=True)
class TimedOut:
    """No answer within the timeout: the same frame goes again."""

    seq: int
    label: str
    attempt: int
    waited_s: float
    at: float


Report = Sent | Answered | TimedOut


@dataclass(frozen=True, slots=True)
class SenderStats:
    """Counters since the sender was made; all only grow."""

    queued: int = 0
    """Frames (events) queued."""
    sent: int = 0
    """Transmissions, resends included."""
    acked: int = 0
    refused: int = 0
    """Frames dropped on NAK REFUSED."""
    retry_naks: int = 0
    """NAK RETRY (or unknown NAK codes) received."""
    timeouts: int = 0
    resent: int = 0
    corrupted: int = 0
    split: int = 0
    merged: int = 0
    stale: int = 0
    """Answers with another seq, or with nothing on the wire."""
    damaged: int = 0
    """Answers that failed the frame checks."""


@dataclass(slots=True)
class _Entry:
    payload: bytes
    label: str
    at: float
    urgent: bool
    order: int


@dataclass(slots=True)
class _OnWire:
    entry: _Entry
    seq: int
    frame: bytes
    attempt: int
    sent_at: float
    deadline: float


class NativeSender:
    """A seeded base station speaking native frames; feed it time and the gateway's answers."""

    def __init__(
        self,
        *,
        baud: int = 9600,
        seq_start: int = 1,
        base_timeout_s: float = _BASE_TIMEOUT_S,
        max_timeout_s: float = _MAX_TIMEOUT_S,
        corrupt_rate: float = 0.0,
        split_rate: float = 0.0,
        merge_rate: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if baud <= 0:
            raise ValueError(f"baud must be > 0, got {baud}")
        if not 0 <= seq_start < _SEQ_MODULO:
            raise ValueError(f"seq_start must be 0..65535, got {seq_start}")
        if not (0 < base_timeout_s <= max_timeout_s and math.isfinite(max_timeout_s)):
            raise ValueError("timeouts must satisfy 0 < base_timeout_s <= max_timeout_s < inf")
        for name, rate in (("corrupt", corrupt_rate), ("split", split_rate), ("merge", merge_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name}_rate must be in 0..1, got {rate}")
        self._baud = baud
        self._next_seq = seq_start
        self._base_timeout_s = base_timeout_s
        self._max_timeout_s = max_timeout_s
        self._corrupt_rate = corrupt_rate
        self._split_rate = split_rate
        self._merge_rate = merge_rate
        self._rng = rng if rng is not None else random.Random(0)
        self._waiting: list[_Entry] = []
        self._wire: _OnWire | None = None
        self._previous: bytes | None = None  # the last acknowledged frame, for merges
        self._decoder = FrameDecoder()
        self._reports: list[Report] = []
        self._order = 0
        self._now = -math.inf
        self._stats: dict[str, int] = dict.fromkeys(SenderStats.__slots__, 0)

    # ----------------------------------------------------------------- inputs

    def queue(
        self, message: PhoneMessage | CheckpointMessage, *, at: float = 0.0, label: str = ""
    ) -> None:
        """Queue an event, due at `at`; a life-safety Contact ID code is urgent."""
        urgent = isinstance(message, PhoneMessage) and family(message.code) is Family.LIFE_SAFETY
        if not label:
            label = (
                f"{message.household} seq={message.seq} code={message.code} zone={message.zone}"
                if isinstance(message, PhoneMessage)
                else f"{message.checkpoint} id={message.id} {message.type.value}"
            )
        self.queue_payload(encode(native_payload(message)), label=label, at=at, urgent=urgent)

    def queue_payload(
        self, payload: bytes, *, label: str, at: float = 0.0, urgent: bool = False
    ) -> None:
        """Queue a payload exactly as given (e.g. one the gateway must refuse)."""
        encode_data(0, payload)  # ValueError now, not at send time, if it cannot be framed
        self._order += 1
        self._waiting.append(_Entry(bytes(payload), label, at, urgent, self._order))
        self._count("queued")

    def receive(self, data: bytes, now: float) -> None:
        """Take the gateway's answer bytes (any split); stale and damaged answers are ignored."""
        now = self._advance(now)
        for item in self._decoder.receive_data(data):
            if isinstance(item, Rejected):
                self._count("damaged")
                continue
            if not isinstance(item, AckFrame | NakFrame):
                continue  # the gateway sends no DATA frames in v1
            wire = self._wire
            if wire is None or item.seq != wire.seq:
                self._count("stale")
                continue
            if isinstance(item, AckFrame):
                self._answered(wire, "ack", now)
                self._count("acked")
                self._previous = wire.frame
                self._wire = None
            elif item.code == NakCode.REFUSED:
                self._answered(wire, "refused", now)
                self._count("refused")
                self._wire = None
            else:
                # RETRY, or a code we do not know (which means RETRY): wait for
                # the timeout; a NAK does not shorten it (docs/framing.md).
                self._answered(wire, "retry", now)
                self._count("retry_naks")

    def poll(self, now: float) -> list[bytes]:
        """The writes to make now (each element one write), or [] for nothing."""
        now = self._advance(now)
        wire = self._wire
        if wire is not None:
            if now < wire.deadline:
                return []
            self._count("timeouts")
            self._reports.append(
                TimedOut(wire.seq, wire.entry.label, wire.attempt, now - wire.sent_at, now)
            )
            wire.attempt += 1
            self._count("resent")
            return self._transmit(wire, now)
        entry = self._next_due(now)
        if entry is None:
            return []
        self._waiting.remove(entry)
        seq = self._next_seq
        self._next_seq = (seq + 1) % _SEQ_MODULO
        frame = encode_data(seq, entry.payload)
        wire = _OnWire(entry, seq, frame, 1, now, now)
        self._wire = wire
        return self._transmit(wire, now)

    # ---------------------------------------------------------------- outputs

    def next_deadline(self) -> float | None:
        """When `poll` next has something to do (maybe already past); None when idle."""
        if self._wire is not None:
            return self._wire.deadline
        if not self._waiting:
            return None
        return min(entry.at for entry in self._waiting)

    @property
    def idle(self) -> bool:
        """Nothing on the wire and nothing queued: every frame was answered."""
        return self._wire is None and not self._waiting

    @property
    def pending(self) -> tuple[str, ...]:
        """Labels of the frames not answered yet: the one on the wire first."""
        on_wire = (self._wire.entry.label,) if self._wire is not None else ()
        return on_wire + tuple(entry.label for entry in self._waiting)

    @property
    def stats(self) -> SenderStats:
        """A snapshot of the counters."""
        return SenderStats(**self._stats)

    def take_reports(self) -> list[Report]:
        """What happened since the last call, in order."""
        reports, self._reports = self._reports, []
        return reports

    # -------------------------------------------------------------- internals

    def _count(self, name: str, n: int = 1) -> None:
        self._stats[name] += n

    def _advance(self, now: float) -> float:
        # A wall clock may step back (NTP); this machine's time does not.
        self._now = max(self._now, now)
        return self._now

    def _next_due(self, now: float) -> _Entry | None:
        due = [entry for entry in self._waiting if entry.at <= now]
        if not due:
            return None
        return min(due, key=lambda e: (not e.urgent, e.at, e.order))

    def _timeout(self, frame: bytes, attempt: int) -> float:
        first = answer_timeout(len(frame), self._baud, self._base_timeout_s)
        return min(first * float(2 ** (attempt - 1)), self._max_timeout_s)

    def _transmit(self, wire: _OnWire, now: float) -> list[bytes]:
        """The bytes of one transmission, with the faults drawn for it."""
        faults: list[str] = []
        data = wire.frame
        rng = self._rng
        if self._corrupt_rate and rng.random() < self._corrupt_rate:
            damaged = bytearray(data)
            index = rng.randrange(1, len(damaged) - 1)  # between the delimiters
            damaged[index] ^= rng.randrange(1, 256)
            data = bytes(damaged)
            faults.append("corrupt")
            self._count("corrupted")
        if (
            self._merge_rate
            and wire.attempt == 1
            and self._previous is not None
            and rng.random() < self._merge_rate
        ):
            data = self._previous + data
            faults.append("merged")
            self._count("merged")
        writes = [data]
        if self._split_rate and rng.random() < self._split_rate and len(data) >= 3:
            pieces = rng.choice((2, 3))
            cuts = sorted(rng.sample(range(1, len(data)), pieces - 1))
            writes = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
            faults.append(f"split {pieces}")
            self._count("split")
        wire.sent_at = now
        wire.deadline = now + self._timeout(wire.frame, wire.attempt)
        self._count("sent")
        self._reports.append(
            Sent(wire.seq, wire.entry.label, wire.attempt, now, len(data), tuple(faults))
        )
        return writes

    def _answered(self, wire: _OnWire, answer: str, now: float) -> None:
        self._reports.append(
            Answered(wire.seq, wire.entry.label, answer, now - wire.sent_at, wire.attempt, now)
        )


async def run_sender(
    sender: NativeSender,
    fd: int,
    *,
    duration_s: float = math.inf,
    stop_when: Callable[[NativeSender], bool] | None = None,
    on_report: Callable[[Report], None] | None = None,
    clock: Callable[[], float] = time.time,
    chunk_gap_s: float = 0.02,
) -> None:
    """Run `sender` against the non-blocking `fd` for at most ``duration_s`` seconds.

    The clock is the wall clock by default, since scenarios schedule sends in
    epoch seconds. Pieces of a split frame are written ``chunk_gap_s`` apart, so
    the far end reads them separately. Returns early once ``stop_when(sender)``
    holds (checked after each step). OSError from the fd (an adapter unplugged)
    propagates.
    """
    with anyio.move_on_after(duration_s):
        while True:
            writes = sender.poll(clock())
            for index, data in enumerate(writes):
                if index:
                    await anyio.sleep(chunk_gap_s)
                await write_all(fd, data)
            if on_report is not None:
                for report in sender.take_reports():
                    on_report(report)
            if stop_when is not None and stop_when(sender):
                return
            deadline = sender.next_deadline()
            wait = math.inf if deadline is None else max(0.0, deadline - clock())
            with anyio.move_on_after(wait):
                await anyio.wait_readable(fd)
                try:
                    answer = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                sender.receive(answer, clock())
                if on_report is not None:
                    for report in sender.take_reports():
                        on_report(report)
