"""Helpers for tests of a secured broker: a throwaway CA, mosquitto with the files
`alarmgw broker-config` wrote, clients that log in, and a gateway config that does.

`make_tls` runs Debian's `openssl` CLI (no Python dependency): a CA and a server
certificate for 127.0.0.1 and localhost, valid one day, made fresh for each test.

`SecuredBroker` is the production layout in miniature: a plain listener on
loopback (tests.brokers.Mosquitto's own) and, through `include_dir`, the
generated alarmgw.conf with its TLS listener, `allow_anonymous false`,
password_file and acl_file, which (per_listener_settings false) apply to both.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from config.loader import load_config
from config.model import Config
from gateway.adapters.mqtt import MqttLink
from gateway.broker_config import ListenerOptions, generate
from tests.brokers import Mosquitto, free_port, wait_port_open
from tests.gateway.harness import DEMO

_ids = itertools.count()
USER_ENV = "ALARMGW_MQTT_USER"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A throwaway CA and the broker's certificate and key it signed."""

    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    tool = shutil.which("openssl") or "/usr/bin/openssl"
    if not Path(tool).is_file():
        pytest.fail("openssl is not installed (apt-get install openssl); TLS tests need it")
    subprocess.run([tool, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_tls(directory: Path) -> TlsFiles:
    """A P-256 CA and a server certificate for 127.0.0.1 / localhost, valid for a day."""
    directory.mkdir(parents=True, exist_ok=True)
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl(
        "req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=alarmgw test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", *curve, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
        cwd=directory,
    )  # fmt: skip
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n",
        encoding="utf-8",
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "server.ext",
        cwd=directory,
    )  # fmt: skip
    return TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")


def read_passwords(out_dir: Path) -> dict[str, str]:
    """username -> password from the credentials.csv the tool wrote."""
    with (out_dir / "credentials.csv").open(encoding="utf-8", newline="") as handle:
        return {row["username"]: row["password"] for row in csv.DictReader(handle)}


class SecuredBroker:
    """mosquitto with a plain loopback listener plus the generated alarmgw.conf (TLS)."""

    def __init__(self, tmp_path: Path, config: Config | None = None) -> None:
        self.config = config or load_config(DEMO)
        self.tls = make_tls(tmp_path / "tls")
        self.tls_port = free_port()
        self.out = tmp_path / "broker-config"
        self.result = generate(
            self.config,
            self.out,
            listener=ListenerOptions(
                port=self.tls_port,
                bind="127.0.0.1",
                tls_cert=str(self.tls.cert),
                tls_key=str(self.tls.key),
            ),
        )
        self.passwords = read_passwords(self.out)
        # include_dir reads every *.conf in the folder: alarmgw.conf alone.
        include = tmp_path / "conf.d"
        include.mkdir()
        shutil.copy(self.out / "alarmgw.conf", include / "alarmgw.conf")
        directory = tmp_path / "mosquitto"
        directory.mkdir()
        self.mosquitto = Mosquitto(
            directory, extra_config=[f"include_dir {include}"], anonymous=False
        )

    @property
    def plain_port(self) -> int:
        """The loopback listener without TLS (production's 127.0.0.1:1883)."""
        return self.mosquitto.port

    def start(self) -> None:
        self.mosquitto.start()
        if not wait_port_open(self.tls_port):
            self.mosquitto.kill()
            pytest.fail(f"no TLS listener on {self.tls_port}: {self.mosquitto.log()}")

    def kill(self) -> None:
        self.mosquitto.kill()

    def context(self) -> ssl.SSLContext:
        """What a device or the gateway uses: verify the broker against the test CA."""
        return ssl.create_default_context(cafile=str(self.tls.ca))

    def gateway_config(self, tmp_path: Path, *, password: str | None = None) -> Config:
        """demo.toml as an operator would write it for this broker: mqtts://, username_env,
        password_file and tls_ca; `password` overrides the generated one (wrong ones)."""
        secret = tmp_path / "gateway.password"
        secret.write_text(
            (password or self.passwords[self.config.mqtt.client_id]) + "\n", encoding="utf-8"
        )
        secret.chmod(0o600)
        text = DEMO.read_text(encoding="utf-8")
        replacements = {
            'broker = "embedded"': (
                f'broker = "mqtts://127.0.0.1:{self.tls_port}"\n'
                f'username_env = "{USER_ENV}"\n'
                f'password_file = "{secret}"\n'
                f'tls_ca = "{self.tls.ca}"'
            ),
            'listen = "127.0.0.1:9108"': 'listen = "127.0.0.1:0"',
            'path = "var/demo.sqlite"': f'path = "{tmp_path / "store.sqlite"}"',
        }
        for old, new in replacements.items():
            assert old in text, old
            text = text.replace(old, new)
        path = tmp_path / "secured.toml"
        path.write_text(text, encoding="utf-8")
        return load_config(path, environ={USER_ENV: self.config.mqtt.client_id})


class Client:
    """A device or console that logs in with a username and password (over TLS by default)."""

    def __init__(
        self,
        broker: SecuredBroker,
        username: str,
        password: str | None = None,
        subscriptions: tuple[str, ...] = (),
        *,
        tls: bool = True,
        mqtt_version: int | None = None,
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()
        self.link = MqttLink(
            host="127.0.0.1",
            port=broker.tls_port if tls else broker.plain_port,
            client_id=f"{username}-{next(_ids)}",
            username=username,
            password=broker.passwords[username] if password is None else password,
            ssl_context=broker.context() if tls else None,
            subscriptions=subscriptions,
            on_message=self._on_message,
            session_expiry_s=0,
            mqtt_version=mqtt_version,
        )

    async def _on_message(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def logged_in(client: Client, within: float = 10.0) -> AsyncIterator[Client]:
    """The client connected (and subscribed) for the block; fails if it cannot log in."""
    await client.link.start()
    try:
        await asyncio.wait_for(client.link.wait_connected(), within)
        yield client
    finally:
        await client.link.stop()
