"""The metrics and health endpoints: `GET /metrics`, `/healthz`, `/readyz`.

A deliberately small HTTP/1.1 server on asyncio streams: three read-only
routes, one request per connection, bounded request size and time. Prometheus
and a load balancer's health check need nothing more, and it keeps a web
framework out of the dependency list. Binds 127.0.0.1 by default (config
`[http] listen`).

`/healthz` answers 200 while the process runs. `/readyz` answers 200 only when
every readiness check passes (broker connected, outbox writable, ...) and 503
otherwise, with one line per check either way, so an operator sees why.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["HealthServer", "Readiness"]

Readiness = Callable[[], list[tuple[str, bool, str]]]
"""Returns (check name, ok, detail) for each readiness check."""

_MAX_REQUEST = 8192
_READ_TIMEOUT_S = 5.0


class HealthServer:
    """Serves the registry's metrics and the health checks until closed."""

    def __init__(
        self, registry: CollectorRegistry, readiness: Readiness, host: str, port: int
    ) -> None:
        self._registry = registry
        self._readiness = readiness
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        assert self._server is not None, "start() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Bind and start serving in the background."""
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def close(self) -> None:
        """Stop serving and wait for the listener to close."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            status, ctype, body = self._respond(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, ctype, body = "400 Bad Request", "text/plain", b"bad request\n"
        except ConnectionError:
            writer.close()
            return
        header = (
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(header.encode() + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    def _respond(self, head: bytes) -> tuple[str, str, bytes]:
        if len(head) > _MAX_REQUEST:
            return "431 Request Header Fields Too Large", "text/plain", b"too large\n"
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3:
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if target == b"/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if target == b"/healthz":
            return "200 OK", "text/plain", b"ok\n"
        if target == b"/readyz":
            checks = self._readiness()
            lines = "".join(
                f"{'ok' if ok else 'FAIL'} {name}: {detail}\n" for name, ok, detail in checks
            )
            status = "200 OK" if all(ok for _, ok, _ in checks) else "503 Service Unavailable"
            return status, "text/plain; charset=utf-8", lines.encode()
        return "404 Not Found", "text/plain", b"not found: try /metrics, /healthz, /readyz\n"
