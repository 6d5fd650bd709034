"""Processes the benchmark starts and what it measures of them.

Every process is a child of the coordinator and is ended by its own pid
(SIGTERM, then SIGKILL after a grace period); nothing is ever looked up or
killed by name. Mosquitto listens on 127.0.0.1 only, on a port the OS picked a
moment earlier.

Mosquitto settings (docs/benchmark.md, "Broker"): `set_tcp_nodelay true`
(PROTOCOLS.md: Nagle turned a 0.9 ms p50 into 21 ms); `max_inflight_messages`
raised from 20 to the benchmark's `inflight` (1000 by default): it is the
Receive Maximum mosquitto 2 grants each publisher in CONNACK, and its window of
unacknowledged QoS 1 messages towards MQTT 3.1.1 subscribers; at 20 one QoS 1
publisher is capped near 20 messages per round trip, which would measure the
broker's default rather than the systems. Towards an MQTT 5 subscriber
mosquitto 2.0.11 uses the subscriber's own Receive Maximum instead (checked: a
v5 client announcing none, i.e. 65,535, got 5,000 unacknowledged messages at
once; one announcing 100 got 100); `max_queued_messages 0`
(no cap: at the default of 1000 mosquitto silently drops QoS 1 messages queued
beyond it, which the accounting would report as loss by the system);
`persistence false`: each system gets a fresh broker.

CPU time and memory come from Linux's /proc (proc(5)): user + system CPU
seconds of the process itself, its RSS, and the kernel's own record of its peak
RSS (`VmHWM`). The benchmark runs on Linux only (it starts /usr/sbin/mosquitto).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import pwd
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Final

__all__ = [
    "MOSQUITTO",
    "Child",
    "RssSampler",
    "cpu_seconds",
    "free_port",
    "http_get",
    "metric_total",
    "mosquitto_config",
    "peak_rss_bytes",
    "rss_bytes",
    "start_mosquitto",
    "thread_cpu_seconds",
    "wait_port",
]

MOSQUITTO: Final = "/usr/sbin/mosquitto"
_STOP_GRACE_S: Final = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free when asked (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout_s: float = 10.0) -> bool:
    """Poll until 127.0.0.1:port accepts a connection; False if it never did in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.02)
    return False


class Child:
    """A child process started by the benchmark; stdout/stderr go to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdout_pipe: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(  # noqa: S603 - our own argv, no shell
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            cwd=cwd,
            env=None if env is None else dict(env),
        )
        self.pid = self.popen.pid

    @property
    def running(self) -> bool:
        """Whether the process is still alive."""
        return self.popen.poll() is None

    def wait_line(self, text: str, timeout_s: float) -> bool:
        """Read stdout (a pipe) until a line equal to `text`; False on timeout or exit."""
        stream = self.popen.stdout
        if stream is None:
            raise ValueError(f"{self.name}: stdout is not a pipe")
        found = threading.Event()

        def read() -> None:
            for raw in stream:
                if raw.decode("utf-8", "replace").strip() == text:
                    found.set()
                    return

        reader = threading.Thread(target=read, name=f"{self.name}-stdout", daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.running and not found.is_set():
            found.wait(0.05)
        return found.is_set()

    def stop(self) -> int | None:
        """SIGTERM, wait up to the grace period, then SIGKILL; the exit code."""
        process = self.popen
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=_STOP_GRACE_S)
        if process.stdout is not None:
            process.stdout.close()
        self._log.close()
        return process.returncode

    def tail(self, lines: int = 20) -> str:
        """The last lines of its log, for error messages."""
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def mosquitto_config(port: int, inflight: int, directory: Path) -> str:
    """The benchmark broker's configuration (see the module docstring)."""
    return "\n".join(
        [
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            # As root mosquitto would drop to user "mosquitto", which may not
            # read the benchmark's folders: run as whoever runs the benchmark.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "set_tcp_nodelay true",
            f"max_inflight_messages {inflight}",
            "max_queued_messages 0",
            "persistence false",
            f"log_dest file {directory / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",  # connections and disconnections, with the reason
            "",
        ]
    )


def start_mosquitto(directory: Path, inflight: int) -> tuple[Child, int]:
    """A fresh mosquitto on a free loopback port; (process, port)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "mosquitto.conf"
    config.write_text(mosquitto_config(port, inflight, directory), encoding="utf-8")
    child = Child("mosquitto", [MOSQUITTO, "-c", str(config)], directory / "mosquitto.out")
    if not wait_port(port):
        child.stop()
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{port}: {child.tail()}")
    return child, port


_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process itself has used (0 if it is gone).

    proc(5): fields 14 and 15 of /proc/PID/stat, in clock ticks; the command
    name (field 2) may hold spaces, so fields are counted after its `)`.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """(main thread, all other threads) CPU seconds of a process; (0, 0) if it is gone.

    The gateway's main thread runs the event loop; its store runs SQLite in a
    thread of its own, so the split says which of the two is the bottleneck.
    """
    main = others = 0.0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0, 0.0
    for task in tasks:
        try:
            text = (task / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / _TICKS
        if task.name == str(pid):
            main += seconds
        else:
            others += seconds
    return main, others


def rss_bytes(pid: int) -> int:
    """Resident set size now (0 if the process is gone): /proc/PID/statm's second field."""
    try:
        text = Path(f"/proc/{pid}/statm").read_text(encoding="ascii")
    except OSError:
        return 0
    return int(text.split()[1]) * _PAGE


def peak_rss_bytes(pid: int) -> int | None:
    """The kernel's peak RSS of the process (Linux `VmHWM`), None where unavailable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+)\s+kB", text, re.MULTILINE)
    return None if found is None else int(found.group(1)) * 1024


class RssSampler:
    """Samples one process's RSS in a thread; `peak` is the largest sample seen."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def stop(self) -> int:
        """Stop sampling; the peak (including one last sample)."""
        self.peak = max(self.peak, rss_bytes(self.pid))
        self._stop.set()
        self._thread.join(timeout=2.0)
        return self.peak


def http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path; (status, body), status 0 when nothing answered."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    except OSError:
        return 0, ""
    finally:
        connection.close()


def metric_total(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum of a Prometheus metric's samples whose labels include `labels`."""
    total = 0.0
    wanted = labels or {}
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if all(found.get(k) == v for k, v in wanted.items()):
            total += float(value)
    return total
