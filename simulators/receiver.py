"""An alarm-receiver stand-in: the far end of a receiver output line, sans-I/O and seeded.

Theory of operation (PROTOCOLS.md, "Alarm receiver output to automation
software"; CONTRACT.md, "Serial ingress"). A receiver that answers alarm phones
prints one record per event for the automation software, each ending with DC4,
and waits for the answer: ACK (0x06) means stored, NAK (0x15) means "send
again". This class behaves as such a receiver does, so that the gateway's
serial adapter can be tested, and a field technician can exercise a real port,
against the behaviour the gateway must survive:

- **Stop and wait.** One record at a time: the next is sent only once the
  current one is acknowledged.
- **Retries.** On NAK the record is sent again at once; with no answer within
  ``answer_timeout_s`` (4 s on real units) it is sent again at the deadline.
  After ``retries`` more attempts (3 on real units) without an ACK the receiver
  declares the link to the automation down.
- **Buffering.** While the link is down no records are sent. Events stay in a
  bounded buffer (``buffer_size``, "hundreds" on real units); when it is full
  the oldest event not on the wire is dropped and counted.
- **Heartbeats.** Every ``heartbeat_s`` (about 30 s) a heartbeat is sent
  (when nothing else is on the wire) and must be acknowledged; a heartbeat that
  gets NAK or no answer takes the link down too. When a heartbeat is next
  acknowledged the link is up again and the buffer is replayed in order: the
  event that was on the wire when the link went down comes again, so duplicates
  after an outage are normal (the gateway de-duplicates by content).

Faults, for field technicians and tests, all drawn from one seeded
`random.Random` (STYLE.md 5), so a run can be replayed exactly:

- ``corrupt_rate``: each outgoing byte is hit with this probability, one bit
  flipped. With ``line_parity`` (the default: 7E1, the commonest receiver
  setting) the flipped bit breaks the character's parity, which the
  automation's UART checks, and the character reads as NUL (POSIX termios
  with INPCK, without IGNPAR and PARMRK); the stand-in writes that NUL, which
  is what the gateway sees on a real line. Without ``line_parity`` (8N1) the
  flipped byte arrives as another byte: the receiver output carries no
  checksum (PROTOCOLS.md), so on 8N1 a hit digit can become another valid
  digit and nothing on this link can tell.
- ``duplicate_rate``: after an ACK, the record is sent once more, as a receiver
  does when it missed the ACK.

The class is sans-I/O: the caller reads the clock and moves the bytes. `poll`
returns what to write now, `receive` takes what the automation answered, and
`next_deadline` says when `poll` has something to do next. `simulators.pty_driver`
runs it against a file descriptor.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass

from protocols.contact_id import Qualifier
from protocols.receiver import ACK, DC4, NAK, build_heartbeat, build_record

__all__ = ["ReceiverStandIn", "Signal", "StandInStats"]


@dataclass(frozen=True, slots=True)
class Signal:
    """One event as an alarm phone reported it to the receiver (Contact ID fields)."""

    account: str
    """4-6 characters of 0-9, B-F, upper case."""
    qualifier: Qualifier
    code: int
    group: int
    zone: int


@dataclass(frozen=True, slots=True)
class StandInStats:
    """Counters since the stand-in was made; all only grow."""

    sent: int = 0
    """Record transmissions, retries and duplicates included (heartbeats not)."""
    acked: int = 0
    """Records acknowledged (each queued record at most once)."""
    naks: int = 0
    """NAKs received, for records and heartbeats."""
    retries: int = 0
    """Record transmissions after a NAK or a missing answer."""
    timeouts: int = 0
    """Answers not received within ``answer_timeout_s``."""
    buffered: int = 0
    """Records held in the buffer through a link outage (counted once per outage)."""
    dropped: int = 0
    """Records dropped because the buffer was full."""
    duplicates: int = 0
    """Records sent once more after their ACK (the ``duplicate_rate`` fault)."""
    corrupted: int = 0
    """Outgoing bytes hit by the ``corrupt_rate`` fault."""
    heartbeats: int = 0
    """Heartbeats sent."""
    heartbeats_acked: int = 0
    """Heartbeats acknowledged."""
    link_downs: int = 0
    """Times the link to the automation was declared down."""


class _Wait(enum.Enum):
    """What is on the wire, awaiting its answer."""

    NOTHING = enum.auto()
    RECORD = enum.auto()
    HEARTBEAT = enum.auto()


@dataclass(frozen=True, slots=True)
class _Record:
    """A record waiting to be acknowledged: its bytes and, unless raw, its signal."""

    data: bytes
    signal: Signal | None


class ReceiverStandIn:
    """A seeded alarm receiver speaking its output protocol; feed it time and answers."""

    def __init__(  # noqa: PLR0917 - a receiver's programming options, in the manual's order
        self,
        receiver: str = "01",
        line: str = "100",
        heartbeat_s: float = 30.0,
        answer_timeout_s: float = 4.0,
        retries: int = 3,
        buffer_size: int = 500,
        *,
        corrupt_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        line_parity: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        build_record(receiver, line, "1234", Qualifier.NEW, 100, 0, 0)  # validates both
        if not heartbeat_s > 0 or not answer_timeout_s > 0:
            raise ValueError("heartbeat_s and answer_timeout_s must be positive")
        if retries < 0 or buffer_size < 1:
            raise ValueError("retries must be >= 0 and buffer_size >= 1")
        if not 0.0 <= corrupt_rate <= 1.0 or not 0.0 <= duplicate_rate <= 1.0:
            raise ValueError("corrupt_rate and duplicate_rate must be in 0..1")
        self._receiver = receiver
        self._line = line
        self._heartbeat_s = float(heartbeat_s)
        self._answer_timeout_s = float(answer_timeout_s)
        self._retries = retries
        self._buffer_size = buffer_size
        self._corrupt_rate = corrupt_rate
        self._duplicate_rate = duplicate_rate
        self._line_parity = line_parity
        self._rng = rng if rng is not None else random.Random(0)
        self._heartbeat = build_heartbeat(receiver)
        self._queue: deque[_Record] = deque()  # head = the record on the wire or next
        self._link_up = True
        self._wait = _Wait.NOTHING
        self._sent_at = 0.0  # when what is on the wire was sent
        self._attempts = 0  # transmissions of the head record in this round
        self._send_now = False  # a retry or duplicate of the head is due
        self._head_acked = False  # the head was acknowledged; this send is a duplicate
        self._next_heartbeat: float | None = None  # set by the first poll
        self._now: float | None = None  # latest time seen
        self._stats: dict[str, int] = dict.fromkeys(StandInStats.__slots__, 0)

    # ----------------------------------------------------------------- inputs

    def queue(self, signal: Signal) -> None:
        """Add an event to send; ValueError/TypeError if its fields cannot be printed."""
        data = build_record(
            self._receiver,
            self._line,
            signal.account,
            signal.qualifier,
            signal.code,
            signal.group,
            signal.zone,
        )
        self._enqueue(_Record(data, signal))

    def queue_raw(self, record: bytes) -> None:
        """Add a record to send exactly as given (DC4 appended if missing), e.g. garbage."""
        if not isinstance(record, bytes):
            raise TypeError(f"record must be bytes, not {type(record).__name__}")
        self._enqueue(_Record(record if record.endswith(DC4) else record + DC4, None))

    def _enqueue(self, record: _Record) -> None:
        if not self._link_up:
            self._count("buffered")
        if len(self._queue) >= self._buffer_size:
            # Drop the oldest record not on the wire: an ACK must still match the head.
            on_wire = self._wait is _Wait.RECORD or self._send_now or self._head_acked
            if on_wire and len(self._queue) == 1:
                self._count("dropped")
                return
            del self._queue[1 if on_wire else 0]
            self._count("dropped")
        self._queue.append(record)

    def receive(self, data: bytes, now: float) -> None:
        """Take the automation's answer bytes; anything but ACK and NAK is ignored."""
        self._advance(now)
        for byte in data:
            if byte == ACK[0]:
                self._on_ack()
            elif byte == NAK[0]:
                self._on_nak()

    def poll(self, now: float) -> bytes:
        """The bytes to write now (a record, a retry, a heartbeat), or b"" for nothing."""
        self._advance(now)
        if self._wait is not _Wait.NOTHING:
            return b""
        if self._link_up and self._queue and self._send_now:
            return self._send_record(now)
        assert self._next_heartbeat is not None  # set by _advance
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self._heartbeat_s
            self._wait = _Wait.HEARTBEAT
            self._sent_at = now
            self._count("heartbeats")
            return self._corrupt(self._heartbeat)
        if self._link_up and self._queue:
            return self._send_record(now)
        return b""

    # ---------------------------------------------------------------- outputs

    def next_deadline(self) -> float | None:
        """When `poll` next has something to do; None before the first `poll`."""
        if self._next_heartbeat is None or self._now is None:
            return None
        if self._wait is not _Wait.NOTHING:
            return self._sent_at + self._answer_timeout_s
        if self._link_up and self._queue:
            return self._now  # a record is ready to go
        return self._next_heartbeat

    @property
    def link_up(self) -> bool:
        """False from a record's last failed attempt until a heartbeat is acknowledged."""
        return self._link_up

    @property
    def pending(self) -> tuple[Signal | None, ...]:
        """The records not yet acknowledged, oldest first (None for a raw record)."""
        return tuple(r.signal for r in self._queue)

    @property
    def idle(self) -> bool:
        """True when every queued record was acknowledged (a duplicate included)."""
        return not self._queue

    @property
    def stats(self) -> StandInStats:
        """A snapshot of the counters."""
        return StandInStats(**self._stats)

    # -------------------------------------------------------------- internals

    def _count(self, name: str, n: int = 1) -> None:
        self._stats[name] += n

    def _advance(self, now: float) -> None:
        """Bring the machine to `now`: start the heartbeat clock, expire a missed answer."""
        if self._now is not None and now < self._now:
            raise ValueError(f"time went backwards: {now} < {self._now}")
        self._now = now
        if self._next_heartbeat is None:
            self._next_heartbeat = now + self._heartbeat_s
        if self._wait is not _Wait.NOTHING and now >= self._sent_at + self._answer_timeout_s:
            self._count("timeouts")
            self._failed()

    def _send_record(self, now: float) -> bytes:
        head = self._queue[0]
        if self._head_acked:
            self._count("duplicates")
        elif self._attempts:
            self._count("retries")
        self._attempts += 1
        self._send_now = False
        self._wait = _Wait.RECORD
        self._sent_at = now
        self._count("sent")
        return self._corrupt(head.data)

    def _on_ack(self) -> None:
        if self._wait is _Wait.HEARTBEAT:
            self._wait = _Wait.NOTHING
            self._count("heartbeats_acked")
            if not self._link_up:
                # The link is back: replay the buffer, the interrupted record first.
                self._link_up = True
                self._attempts = 0
                self._send_now = bool(self._queue)
            return
        if self._wait is not _Wait.RECORD:
            return  # a stray answer (late, or to noise): a receiver ignores it
        self._wait = _Wait.NOTHING
        self._attempts = 0
        if self._head_acked:
            self._head_acked = False
            self._queue.popleft()
            return
        self._count("acked")
        if self._duplicate_rate and self._rng.random() < self._duplicate_rate:
            self._head_acked = True  # it missed the ACK: the same record goes again
            self._send_now = True
            return
        self._queue.popleft()

    def _on_nak(self) -> None:
        if self._wait is _Wait.NOTHING:
            return
        self._count("naks")
        self._failed()

    def _failed(self) -> None:
        """The thing on the wire was refused or not answered."""
        waited = self._wait
        self._wait = _Wait.NOTHING
        if waited is _Wait.HEARTBEAT:
            self._link_down()
        elif self._attempts <= self._retries:
            self._send_now = True  # "send again": at once after a NAK or the deadline
        else:
            self._link_down()

    def _link_down(self) -> None:
        if self._link_up:
            self._link_up = False
            self._count("link_downs")
            self._count("buffered", len(self._queue))
        self._attempts = 0
        self._send_now = False
        if self._head_acked:
            # The duplicate was never answered; the original was acknowledged.
            self._head_acked = False
            self._queue.popleft()

    def _corrupt(self, data: bytes) -> bytes:
        """Apply the line-hit fault to outgoing bytes (see the module docstring)."""
        if not self._corrupt_rate:
            return data
        out = bytearray(data)
        for index, byte in enumerate(out):
            if self._rng.random() < self._corrupt_rate:
                self._count("corrupted")
                out[index] = 0 if self._line_parity else byte ^ (1 << self._rng.randrange(8))
        return bytes(out)
