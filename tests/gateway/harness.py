"""Helpers for end-to-end tests: a demo config pointed at a test broker, a
collecting MQTT client, and a gateway running inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import msgpack

from config.loader import load_config, with_overrides
from config.model import Config, Priority
from gateway.adapters.mqtt import MqttLink
from gateway.app import Gateway

DEMO = Path(__file__).resolve().parents[2] / "config" / "examples" / "demo.toml"
_ids = itertools.count()


def demo_config(
    tmp_path: Path,
    broker_port: int,
    *,
    deadlines: Mapping[Priority, float | None] | None = None,
    phone_timeout_s: float | None = None,
    checkpoint_timeout_s: float | None = None,
) -> Config:
    """demo.toml against a test broker, HTTP on an ephemeral port, store in tmp."""
    config = with_overrides(load_config(DEMO), broker=f"mqtt://127.0.0.1:{broker_port}")
    changes: dict[str, Any] = {
        "http": dataclasses.replace(config.http, port=0),
        "store": dataclasses.replace(config.store, path=str(tmp_path / "store.sqlite")),
        "mqtt": dataclasses.replace(config.mqtt, client_id=f"alarmgw-test-{next(_ids)}"),
    }
    if deadlines is not None:
        changes["escalation"] = dataclasses.replace(config.escalation, deadline_s=deadlines)
    supervision = config.supervision
    if phone_timeout_s is not None:
        supervision = dataclasses.replace(supervision, phone_timeout_s=phone_timeout_s)
    if checkpoint_timeout_s is not None:
        supervision = dataclasses.replace(supervision, checkpoint_timeout_s=checkpoint_timeout_s)
    changes["supervision"] = supervision
    return dataclasses.replace(config, **changes)


class Collector:
    """An MQTT client that subscribes to filters and keeps every message it gets."""

    def __init__(
        self,
        port: int,
        subscriptions: tuple[str, ...],
        name: str = "probe",
        *,
        persistent: bool = False,
    ) -> None:
        self.messages: list[tuple[str, bytes, float]] = []
        self._changed = asyncio.Event()
        self.link = MqttLink(
            host="127.0.0.1",
            port=port,
            client_id=f"{name}-{next(_ids)}",
            subscriptions=subscriptions,
            on_message=self._on_message,
            session_expiry_s=600 if persistent else 0,
        )

    async def _on_message(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload, time.time()))
        self._changed.set()

    async def __aenter__(self) -> Collector:
        await self.link.start()
        await asyncio.wait_for(self.link.wait_connected(), 10)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.link.stop()

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        await self.link.publish(topic, payload, qos=1, retain=retain)

    def decoded(self, topic_filter: Callable[[str], bool]) -> list[tuple[str, Any]]:
        """(topic, decoded payload) of the messages whose topic matches."""
        out = []
        for topic, payload, _ in self.messages:
            if topic_filter(topic):
                try:
                    body = msgpack.unpackb(payload, raw=False)
                except (ValueError, msgpack.ExtraData):
                    body = payload
                out.append((topic, body))
        return out

    async def wait_for(
        self, predicate: Callable[[list[tuple[str, bytes, float]]], bool], within: float = 10.0
    ) -> None:
        """Wait until `predicate(messages)` holds, for `within` seconds at most."""
        async with asyncio.timeout(within):
            while not predicate(self.messages):
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def running(gateway: Gateway) -> AsyncIterator[Gateway]:
    """The gateway running in this loop until the block ends (then cancelled)."""
    async with anyio.create_task_group() as tg:
        await tg.start(gateway.run)
        assert gateway.link is not None
        await asyncio.wait_for(gateway.link.wait_connected(), 10)
        try:
            yield gateway
        finally:
            tg.cancel_scope.cancel()


def panic(seq: int, *, ts: float | None = None, code: int = 120, q: int = 1) -> bytes:
    """A contract phone payload (MessagePack)."""
    return msgpack.packb(
        {"v": 1, "seq": seq, "ts": time.time() if ts is None else ts, "q": q, "code": code,
         "zone": 1, "part": 1}
    )  # fmt: skip


def write_config(
    directory: Path,
    broker_port: int,
    http_port: int,
    *,
    life_safety_deadline_s: float = 30,
    client_id: str = "alarmgw-durable",
) -> Path:
    """demo.toml rewritten for a gateway process: test broker, ports and store in `directory`."""
    text = DEMO.read_text(encoding="utf-8")
    replacements = {
        'broker = "embedded"': f'broker = "mqtt://127.0.0.1:{broker_port}"',
        'listen = "127.0.0.1:9108"': f'listen = "127.0.0.1:{http_port}"',
        'path = "var/demo.sqlite"': f'path = "{directory / "store.sqlite"}"',
        'client_id = "alarmgw-demo"': f'client_id = "{client_id}"',
        "life_safety = 30\n": f"life_safety = {life_safety_deadline_s}\n",
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    path = directory / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


class GatewayProcess:
    """`alarmgw run` as a child process, killed by its own pid."""

    def __init__(self, config: Path, http_port: int, log: Path) -> None:
        self.config = config
        self.http_port = http_port
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Start and wait until /readyz answers 200."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config),
             "--log-format", "json"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gateway exited: {self.log()}")
            try:
                url = f"http://127.0.0.1:{self.http_port}/readyz"
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"gateway not ready in {timeout} s: {self.log()}")

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut of the process would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """SIGTERM and wait: the gateway shuts down cleanly."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]


async def eventually(predicate: Callable[[], object], within: float = 10.0) -> None:
    """Poll `predicate` until it is true (for state with no event to wait on, e.g. metrics)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - metrics and queues have no event
            await asyncio.sleep(0.02)
