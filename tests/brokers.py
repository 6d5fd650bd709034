"""Real brokers for tests: a mosquitto process on a free loopback port.

`Mosquitto` writes a small config into a temporary directory and runs
`/usr/sbin/mosquitto -c <config>` as a child process, bound to 127.0.0.1 only,
with `set_tcp_nodelay true` (PROTOCOLS.md, "MQTT facts that bite": Nagle costs
~20 ms per hop on loopback). `persistence false`: a broker restart forgets every
session, which is what the reconnect tests want: the link must resubscribe by
itself rather than rely on a stored session. Session-redelivery tests reconnect
to the *same* broker process, where the session lives in memory.

`max_queued_messages 0` lifts mosquitto's default cap of 1000 queued messages
per offline persistent session (beyond it mosquitto drops silently); tests and
production both want nothing dropped while the gateway is away.

The broker is started on a port that was free a moment earlier and waited for
until it accepts a TCP connection (bounded); `stop()` + `start()` restart it on
the same port, `kill()` is a SIGKILL, `pause()`/`resume()` freeze it (SIGSTOP,
SIGCONT) so a test can hold a PUBACK back without any timing. Teardown always
ends the process by its own pid. If mosquitto is not installed the test fails
(never skips): CI must go red rather than silently test less.

`extra_config` lines go after the listener line (TLS files, password and ACL
files). `TEST_CERT_PEM` is a self-signed P-256 certificate for 127.0.0.1 and
localhost, valid 2000-2100, made once with `openssl ca -selfsign`; it is
public test material, never a secret.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

__all__ = [
    "TEST_CERT_PEM",
    "TEST_KEY_PEM",
    "Mosquitto",
    "find_mosquitto",
    "free_port",
    "wait_port_open",
    "write_password_file",
    "write_tls_files",
]

TEST_CERT_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBiTCCAS+gAwIBAgICEAAwCgYIKoZIzj0EAwIwHjEcMBoGA1UEAwwTYWxhcm1n
dyB0ZXN0IGJyb2tlcjAgFw0wMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAwMFow
HjEcMBoGA1UEAwwTYWxhcm1ndyB0ZXN0IGJyb2tlcjBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABH19FwnYeRb0+6yMKDPOfbaDtglnKXBIli6hv7V9wwT5yEGgUDjS
QwSUb+VCpYxT72jA6VHQRzkmTKUIkEcUGgSjWzBZMA8GA1UdEwEB/wQFMAMBAf8w
GgYDVR0RBBMwEYcEfwAAAYIJbG9jYWxob3N0MAsGA1UdDwQEAwIChDAdBgNVHQ4E
FgQUfUrp3lk1eX2noh1lYjjb1Mu+DP8wCgYIKoZIzj0EAwIDSAAwRQIgWj50eJqX
Gqt+fbNbHSf7+6qJCV2CsSdXqmOaFKJVbfYCIQDLnUzUmXyis8BdUd3hDZBh9wKR
tFe7Eh6sYN9a5ql0mw==
-----END CERTIFICATE-----
"""
TEST_KEY_PEM = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg1nLln9k4zNUbzNAe
F4mru6mOdSA2pAUgcTBHruWz9/ChRANCAAR9fRcJ2HkW9PusjCgzzn22g7YJZylw
SJYuob+1fcME+chBoFA40kMElG/lQqWMU+9owOlR0Ec5JkylCJBHFBoE
-----END PRIVATE KEY-----
"""

_READY_TIMEOUT_S = 10.0


def find_mosquitto() -> str:
    """Path of the mosquitto binary; fails the test (never skips) when absent."""
    for candidate in ("/usr/sbin/mosquitto", shutil.which("mosquitto")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("mosquitto is not installed (apt-get install mosquitto); broker tests need it")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free when asked (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port_open(port: int, timeout_s: float = _READY_TIMEOUT_S) -> bool:
    """Poll until 127.0.0.1:port accepts a connection; False if it never did in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.02)
    return False


class Mosquitto:
    """A mosquitto child process on 127.0.0.1:`port`, configured in `directory`."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        extra_config: Sequence[str] = (),
        *,
        anonymous: bool = True,
        persistence: bool = False,
    ) -> None:
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.extra_config = tuple(extra_config)
        self.anonymous = anonymous
        self.persistence = persistence
        self.binary = find_mosquitto()
        self.config_path = directory / "mosquitto.conf"
        self.log_path = directory / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.config_path.write_text(self._config(), encoding="utf-8")

    def _config(self) -> str:
        return "\n".join(
            [
                f"listener {self.port} 127.0.0.1",
                *self.extra_config,
                f"allow_anonymous {'true' if self.anonymous else 'false'}",
                # Run as whoever runs the tests: as root, mosquitto would otherwise
                # drop to user "mosquitto", which cannot read pytest's 0700 tmp dirs.
                f"user {pwd.getpwuid(os.getuid()).pw_name}",
                "set_tcp_nodelay true",
                # With persistence, sessions and queued QoS 1 messages survive a
                # broker restart (saved on SIGTERM), as in production.
                f"persistence {'true' if self.persistence else 'false'}",
                f"persistence_location {self.directory}/",
                "max_queued_messages 0",
                f"log_dest file {self.log_path}",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type information",
                "connection_messages true",
                "",
            ]
        )

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start (or restart on the same port) and wait until the port accepts."""
        if self.running:
            return
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_port_open(self.port):
            self.kill()
            log = self.log_path.read_text(encoding="utf-8") if self.log_path.exists() else ""
            pytest.fail(f"mosquitto did not listen on 127.0.0.1:{self.port}; log:\n{log}")

    def stop(self) -> None:
        """SIGTERM and wait: mosquitto disconnects its clients and exits."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._process = None

    def kill(self) -> None:
        """SIGKILL and wait, as a crash would."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        self._process = None

    def pause(self) -> None:
        """SIGSTOP: the broker holds every packet until `resume()`."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def log(self) -> str:
        """Mosquitto's log so far, for assertion messages."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def write_tls_files(directory: Path) -> tuple[Path, Path]:
    """Write the test certificate and key; returns (cert, key) paths."""
    cert = directory / "broker-cert.pem"
    key = directory / "broker-key.pem"
    cert.write_text(TEST_CERT_PEM, encoding="utf-8")
    key.write_text(TEST_KEY_PEM, encoding="utf-8")
    key.chmod(0o600)
    return cert, key


def write_password_file(directory: Path, username: str, password: str) -> Path:
    """A mosquitto password file made with mosquitto_passwd (shipped with mosquitto)."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(tool).is_file():
        pytest.fail("mosquitto_passwd is not installed (it comes with mosquitto)")
    path = directory / "passwords"
    subprocess.run(
        [tool, "-b", "-c", str(path), username, password],
        check=True,
        capture_output=True,
        timeout=10,
    )
    return path
