"""Drive a stand-in device over a file descriptor: a pseudo-terminal or a real serial port.

Theory of operation. `simulators.receiver.ReceiverStandIn` is sans-I/O; this thin
shell gives it a clock (`anyio.current_time`) and a file descriptor, and runs
it under asyncio or trio. A field technician points it at a serial port wired
to the gateway (the fd of ``/dev/ttyUSB0`` opened raw); tests point it at the
master side of a pseudo-terminal whose slave side the gateway opens as if it
were the port (CONTRACT.md, "Serial ingress").

`open_pty` makes such a pair. The slave is put in raw mode at once (no echo,
no CR/LF mapping, no line editing: a serial line carries bytes, not lines) and
one slave descriptor stays open for the life of the pair, like the cable still
plugged in: the pty then keeps its raw settings, and the master sees silence,
not EIO, while the gateway has the port closed. Closing the pair (`Pty.close`)
is the cable pulled out: the gateway's reads fail with EIO and the slave's path
disappears.

`run_receiver` is bounded in time (``duration_s``) and can stop earlier when
``stop_when`` holds; it never leaves a task behind.
"""

from __future__ import annotations

import os
import tty
from collections.abc import Callable

import anyio

from simulators.receiver import ReceiverStandIn

__all__ = ["Pty", "open_pty", "run_receiver", "write_all"]


class Pty:
    """A pseudo-terminal pair: the device's end (master) and the port's path (slave)."""

    __slots__ = ("_closed", "master_fd", "slave_fd", "slave_path")

    def __init__(self, master_fd: int, slave_fd: int, slave_path: str) -> None:
        self.master_fd = master_fd
        """The stand-in device's end; non-blocking."""
        self.slave_fd = slave_fd
        """Held open so the pty keeps its raw settings while the gateway's port is closed."""
        self.slave_path = slave_path
        """What the gateway opens as its serial port (e.g. ``/dev/pts/3``)."""
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._closed

    def close(self) -> None:
        """Pull the cable: close both ends (the gateway's next read fails with EIO).

        Idempotent: a descriptor number is reused by the next open, so closing
        it twice could close somebody else's file.
        """
        if self._closed:
            return
        self._closed = True
        os.close(self.master_fd)
        os.close(self.slave_fd)


def open_pty() -> Pty:
    """Open a pseudo-terminal with a raw slave and a non-blocking master."""
    master_fd, slave_fd = os.openpty()
    tty.setraw(slave_fd)
    os.set_blocking(master_fd, False)
    return Pty(master_fd, slave_fd, os.ttyname(slave_fd))


async def write_all(fd: int, data: bytes) -> None:
    """Write every byte to a non-blocking fd, waiting for room as needed."""
    view = memoryview(data)
    while view:
        await anyio.wait_writable(fd)
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[written:]


async def run_receiver(
    standin: ReceiverStandIn,
    fd: int,
    *,
    duration_s: float,
    stop_when: Callable[[ReceiverStandIn], bool] | None = None,
) -> None:
    """Run `standin` against the non-blocking `fd` for at most ``duration_s`` seconds.

    Returns early once ``stop_when(standin)`` is true (checked after each step).
    OSError from the fd (a serial adapter unplugged) propagates: a field tool
    should say so rather than carry on talking to nothing.
    """
    with anyio.move_on_after(duration_s):
        while True:
            data = standin.poll(anyio.current_time())
            if data:
                await write_all(fd, data)
            if stop_when is not None and stop_when(standin):
                return
            deadline = standin.next_deadline()
            assert deadline is not None  # set by the poll above
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                await anyio.wait_readable(fd)
                try:
                    answer = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                standin.receive(answer, anyio.current_time())
