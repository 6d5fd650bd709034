"""Helpers for end-to-end tests: a demo config pointed at a test broker, a
collecting MQTT client, and a gateway running inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
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

    def __init__(self, port: int, subscriptions: tuple[str, ...], name: str = "probe") -> None:
        self.messages: list[tuple[str, bytes, float]] = []
        self._changed = asyncio.Event()
        self.link = MqttLink(
            host="127.0.0.1",
            port=port,
            client_id=f"{name}-{next(_ids)}",
            subscriptions=subscriptions,
            on_message=self._on_message,
            session_expiry_s=0,
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
