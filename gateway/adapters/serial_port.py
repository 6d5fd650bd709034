"""Serial ingress: one port, read forever, answered per record, reopened when it vanishes.

Theory of operation (CONTRACT.md, "Serial ingress"; PROTOCOLS.md, "Alarm
receiver output"; docs/framing.md). One `SerialLine` owns one configured port
(`config.model.SerialPort`) and runs as one long-lived task in the gateway's
task group. It is anyio code: inside the gateway it runs on asyncio, and a
serial-only deployment (or a test) runs it on trio (DESIGN.md, "Dependencies").

**Reading.** The port is opened non-blocking (pyserial, ``timeout=0``); the
line waits with `anyio.wait_readable` on its file descriptor, then reads
``in_waiting`` bytes (at least one). A read is never a message (STYLE.md 2): the
bytes go to the protocol's sans-I/O decoder, which yields whole items whatever
the reads were. One decoder per opening: a record half-read when the port
vanished is reported as TRUNCATED, never glued to the bytes of the next opening
(pyserial also flushes the input queue on open).

**Answering, in order.** Items are handled one after the other, each answer
written before the next item is looked at: a receiver and a native sender are
both stop-and-wait, so nothing is gained by overlapping, and order is kept.
The line decides nothing: the gateway's callbacks do, and return the answer.

- Protocol ``receiver`` (Sur-Gard style output): every `ReceiverEvent`,
  `ReceiverHeartbeat` and `Rejected` record goes to ``on_receiver``, which
  returns the byte to send: ACK (0x06) once the event is durably accepted (or
  for a heartbeat, or for an unknown account, which is dead-lettered but
  acknowledged so that the receiver does not retry forever), NAK (0x15) for a
  `Rejected` record (the documented answer: the receiver sends it again), or
  None to say nothing (the store is down: silence makes the receiver retry 3
  more times, then buffer and replay after the next acknowledged heartbeat,
  so the event is not lost). The receiver waits 4 s for the answer; the time
  from the read that completed a record to its answer written is reported to
  ``on_answer`` so that the gateway can export it.
- Protocol ``native`` (docs/framing.md): each intact `DataFrame` goes to
  ``on_frame(name, seq, payload)``, which returns ``encode_ack(seq)``,
  ``encode_nak(seq, code)`` or None. ACK and NAK frames from the device are
  ignored (the gateway sends no DATA in v1). A frame that fails its checks is
  never answered (its seq cannot be trusted; the sender's timeout covers it)
  and goes to ``on_rejected``.

Either way, what nobody can answer (a record or frame cut off when the port
vanished) goes to ``on_rejected`` too, so it is still counted.

**Parity.** On a line with parity (the receivers' 7E1) the default opener turns
on the input parity check that pyserial leaves off (termios INPCK, without
IGNPAR and PARMRK): a character hit on the line then reads as NUL instead of
as another, plausible digit, and the decoder refuses the record, so a line hit
becomes a NAK and a retry, not a wrong event (the receiver output carries no
checksum of its own, PROTOCOLS.md).

**Failure and reopening.** Any OSError (pyserial's SerialException is one) from
opening, reading or writing, such as a USB adapter unplugged or EIO from a
hung-up pty, closes the port, reports `LineState.ERROR` and reopens after a
capped exponential backoff with full jitter (`Backoff`, seeded `rng`). The
failure count resets once an opening has read data or stayed open longer than
the cap. Nothing but cancellation ends `run`: the gateway never exits for a
port. Every state change goes to ``on_state`` (a metric and a retained
availability topic, in the gateway); ``state`` has the current one.
"""

from __future__ import annotations

import contextlib
import enum
import random
import termios
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeAlias

import anyio
import serial
import structlog
from anyio.abc import TaskStatus

from config.model import SerialPort
from gateway.adapters.backoff import Backoff
from protocols.frames import AckFrame, DataFrame, FrameDecoder, FrameItem, NakFrame
from protocols.reasons import Rejected
from protocols.receiver import ReceiverDecoder, ReceiverItem

__all__ = [
    "Answer",
    "Backoff",
    "LineState",
    "OnAnswer",
    "OnFrame",
    "OnReceiver",
    "OnRejected",
    "OnState",
    "Opener",
    "PortIO",
    "SerialLine",
    "open_serial",
]

Answer: TypeAlias = bytes | None
"""What to write back: the answer bytes, or None to stay silent (the peer retries)."""


class LineState(enum.StrEnum):
    """A serial line's state; the values are metric labels and availability payloads."""

    OPEN = "open"
    """The port is open and being read."""
    CLOSED = "closed"
    """Not opened yet, or closed because the line was stopped."""
    ERROR = "error"
    """The port failed (vanished, refused to open, I/O error); reopening with backoff."""


class PortIO(Protocol):
    """What the line needs of an open port (a `serial.Serial` fits)."""

    def fileno(self) -> int:
        """The descriptor to wait on."""
        ...

    @property
    def in_waiting(self) -> int:
        """Bytes ready to read."""
        ...

    def read(self, size: int = 1, /) -> bytes:
        """Up to `size` bytes without blocking."""
        ...

    def write(self, b: bytes, /) -> int | None:
        """Write without blocking; the count written (None: all of it)."""
        ...

    def close(self) -> None:
        """Release the port."""
        ...


Opener: TypeAlias = Callable[[SerialPort], PortIO]
OnReceiver: TypeAlias = Callable[[str, ReceiverItem], Awaitable[Answer]]
OnFrame: TypeAlias = Callable[[str, int, bytes], Awaitable[Answer]]
OnRejected: TypeAlias = Callable[[str, Rejected], Awaitable[None]]
OnState: TypeAlias = Callable[[str, LineState], None]
OnAnswer: TypeAlias = Callable[[str, float], None]

_PROTOCOLS = frozenset({"receiver", "native"})


class _Logger(Protocol):
    """What the line needs of a structlog logger."""

    def debug(self, event: str, /, **kw: object) -> object: ...
    def info(self, event: str, /, **kw: object) -> object: ...
    def warning(self, event: str, /, **kw: object) -> object: ...


def open_serial(settings: SerialPort) -> serial.Serial:
    """Open the configured port non-blocking, exclusively, with input parity checking on."""
    port = serial.Serial(
        settings.device,
        baudrate=settings.baud,
        bytesize=settings.bytesize,
        parity=settings.parity,
        stopbits=settings.stopbits,
        timeout=0,
        write_timeout=0,
        exclusive=True,
    )
    if settings.parity != serial.PARITY_NONE:
        try:
            attrs = termios.tcgetattr(port.fileno())
            attrs[0] = (attrs[0] | termios.INPCK) & ~(termios.IGNPAR | termios.PARMRK)
            termios.tcsetattr(port.fileno(), termios.TCSANOW, attrs)
        except termios.error as exc:
            port.close()
            raise OSError(f"cannot enable parity checking on {settings.device}: {exc}") from exc
    return port


class SerialLine:
    """One serial port, read and answered forever; see the module docstring."""

    def __init__(
        self,
        settings: SerialPort,
        *,
        on_receiver: OnReceiver | None = None,
        on_frame: OnFrame | None = None,
        on_rejected: OnRejected | None = None,
        on_state: OnState | None = None,
        on_answer: OnAnswer | None = None,
        opener: Opener = open_serial,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        logger: _Logger | None = None,
    ) -> None:
        if settings.protocol not in _PROTOCOLS:
            raise ValueError(
                f"serial protocol must be receiver or native, not {settings.protocol!r}"
            )
        if settings.protocol == "receiver" and on_receiver is None:
            raise ValueError("a receiver line needs on_receiver")
        if settings.protocol == "native" and on_frame is None:
            raise ValueError("a native line needs on_frame")
        self.settings = settings
        self._on_receiver = on_receiver
        self._on_frame = on_frame
        self._on_rejected = on_rejected
        self._on_state = on_state
        self._on_answer = on_answer
        self._opener = opener
        self._backoff = backoff if backoff is not None else Backoff(initial_s=0.5, cap_s=30.0)
        self._rng = rng if rng is not None else random.Random()
        self._log: _Logger = (
            logger if logger is not None else structlog.get_logger("alarmgw.serial")
        )
        self._state = LineState.CLOSED
        self._opens = 0
        self._failures = 0

    @property
    def name(self) -> str:
        """The port's name from the config (a log field, never a metric label value)."""
        return self.settings.name

    @property
    def state(self) -> LineState:
        """The current state."""
        return self._state

    @property
    def opens(self) -> int:
        """How many times the port was opened successfully."""
        return self._opens

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Open, read and answer until cancelled; reopen with backoff after any failure.

        Readiness (``task_status.started()``) is signalled after the first attempt to
        open, whether it worked or not: a port unplugged at start must not hold up
        the gateway, which never exits for a port.
        """
        started = False
        try:
            while True:
                port = self._open()
                if not started:
                    started = True
                    task_status.started()
                if port is not None:
                    await self._serve(port)
                delay = self._backoff.delay(self._failures, self._rng)
                self._failures += 1
                self._log.info("serial_reopen_wait", port=self.name, delay_s=round(delay, 3))
                await anyio.sleep(delay)
        finally:
            self._set_state(LineState.CLOSED)

    # -------------------------------------------------------------- internals

    def _set_state(self, state: LineState) -> None:
        if state is self._state:
            return
        self._state = state
        if self._on_state is not None:
            self._on_state(self.name, state)

    def _open(self) -> PortIO | None:
        try:
            port = self._opener(self.settings)
        except OSError as exc:
            self._log.warning("serial_open_failed", port=self.name, error=str(exc))
            self._set_state(LineState.ERROR)
            return None
        self._opens += 1
        self._log.info("serial_open", port=self.name, device=self.settings.device)
        self._set_state(LineState.OPEN)
        return port

    async def _serve(self, port: PortIO) -> None:
        """Read and answer until the port fails (returns) or the task is cancelled."""
        decoder: ReceiverDecoder | FrameDecoder = (
            ReceiverDecoder() if self.settings.protocol == "receiver" else FrameDecoder()
        )
        opened_at = anyio.current_time()
        got_data = False
        try:
            fd = port.fileno()
            while True:
                await anyio.wait_readable(fd)
                data = port.read(port.in_waiting or 1)
                if not data:
                    continue
                read_at = anyio.current_time()
                got_data = True
                for item in decoder.receive_data(data):
                    await self._handle(port, fd, item, read_at)
        except OSError as exc:
            self._log.warning("serial_failed", port=self.name, error=str(exc))
            self._set_state(LineState.ERROR)
        finally:
            with anyio.CancelScope(shield=True):
                _close_quietly(port)
                # What was cut off can get no answer, but is still counted.
                for item in decoder.receive_data(b""):
                    if isinstance(item, Rejected) and self._on_rejected is not None:
                        await self._on_rejected(self.name, item)
        if got_data or anyio.current_time() - opened_at >= self._backoff.cap_s:
            self._failures = 0

    async def _handle(
        self, port: PortIO, fd: int, item: ReceiverItem | FrameItem, read_at: float
    ) -> None:
        answer: Answer
        if isinstance(item, DataFrame):
            assert self._on_frame is not None  # checked in __init__
            answer = await self._on_frame(self.name, item.seq, item.payload)
        elif isinstance(item, AckFrame | NakFrame):
            # The gateway sends no DATA frames in v1: an answer from the device is stray.
            self._log.debug("serial_stray_answer", port=self.name, frame=repr(item))
            return
        elif isinstance(item, Rejected) and self.settings.protocol == "native":
            # docs/framing.md: nothing answers a frame that fails its checks.
            if self._on_rejected is not None:
                await self._on_rejected(self.name, item)
            return
        else:
            assert self._on_receiver is not None  # checked in __init__
            answer = await self._on_receiver(self.name, item)
        if answer:
            await _write_all(port, fd, answer)
            if self._on_answer is not None:
                self._on_answer(self.name, anyio.current_time() - read_at)


async def _write_all(port: PortIO, fd: int, data: bytes) -> None:
    """Write every byte without ever blocking the event loop.

    pyserial's own write spins on EAGAIN, so the line first waits until the
    descriptor has room; a tty reports writable only with room to spare, so the
    non-blocking write then takes at least part of the answer.
    """
    view = data
    while view:
        await anyio.wait_writable(fd)
        written = port.write(view)
        view = b"" if written is None else view[written:]


def _close_quietly(port: PortIO) -> None:
    with contextlib.suppress(OSError):  # a vanished port may fail to close; it is gone anyway
        port.close()
