"""The metrics and health endpoints."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Counter

from gateway.adapters.http import HealthServer


async def _get(port: int, request: bytes) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    writer.write_eof()  # one request per connection; also ends an unfinished one
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(), body


def _serve(checks: list[tuple[str, bool, str]]) -> tuple[HealthServer, CollectorRegistry]:
    registry = CollectorRegistry()
    Counter("alarmgw_probe", "a probe", registry=registry).inc()
    return HealthServer(registry, lambda: checks, "127.0.0.1", 0), registry


def test_routes() -> None:
    """/metrics, /healthz and /readyz answer; other paths and methods do not."""

    async def scenario() -> None:
        checks = [("broker", True, "connected")]
        server, _ = _serve(checks)
        await server.start()
        try:
            port = server.port
            status, body = await _get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == "HTTP/1.1 200 OK"
            assert b"alarmgw_probe_total 1.0" in body
            status, body = await _get(port, b"GET /healthz HTTP/1.1\r\n\r\n")
            assert (status, body) == ("HTTP/1.1 200 OK", b"ok\n")
            status, body = await _get(port, b"GET /readyz HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 200 OK"
            assert body == b"ok broker: connected\n"
            checks[0] = ("broker", False, "not connected")
            status, body = await _get(port, b"GET /readyz?x=1 HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 503 Service Unavailable"
            assert body == b"FAIL broker: not connected\n"
            status, _ = await _get(port, b"GET /nope HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 404 Not Found"
            status, _ = await _get(port, b"POST /metrics HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 405 Method Not Allowed"
            status, _ = await _get(port, b"garbage\r\n\r\n")
            assert status == "HTTP/1.1 400 Bad Request"
            status, _ = await _get(port, b"GET /healthz HTTP/1.1\r\n")  # never finished
            assert status == "HTTP/1.1 400 Bad Request"
        finally:
            await server.close()

    asyncio.run(scenario())


def test_port_needs_start() -> None:
    """Asking for the port before start() is a programming error."""
    server, _ = _serve([])
    with pytest.raises(AssertionError):
        _ = server.port
