"""The bare relay on aiomqtt (paho-mqtt underneath), for reference.

The card named asyncio-mqtt, now aiomqtt; DESIGN.md explains why the gateway
uses gmqtt instead. This relay gives that choice a figure on the same load.
MQTT 5, QoS 1 subscription, QoS 1 publishes; each message's publishes run in a
task of their own (awaiting each PUBACK in turn would serialise the relay on
the broker's round trip). Two things differ from the gmqtt relay and are
documented, not hidden: aiomqtt acknowledges a message when it enters its
queue, before the application sees it (PROTOCOLS.md, "MQTT facts that bite");
and paho leaves Nagle's algorithm on, so this relay sets TCP_NODELAY itself
(otherwise its latency would measure Nagle, ~40 ms, rather than the client).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Sequence

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from bench.relay import Routes, parse_args

__all__ = ["main", "serve"]


async def _publish_all(client: aiomqtt.Client, topics: Sequence[str], body: bytes) -> None:
    await asyncio.gather(*(client.publish(t, body, qos=1) for t in topics))


async def serve(routes: Routes, host: str, port: int, inflight: int) -> None:
    """Relay until signalled."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with aiomqtt.Client(
        host,
        port,
        identifier="bench-relay-aiomqtt",
        protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=inflight,
        socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        timeout=60,
    ) as client:
        await client.subscribe([(t, SubscribeOptions(qos=1)) for t in routes.subscriptions])
        print("ready", flush=True)
        tasks: set[asyncio.Task[None]] = set()

        async def relay() -> None:
            async for message in client.messages:
                topics, body = routes.route(str(message.topic), message.payload)
                if topics:
                    task = asyncio.create_task(_publish_all(client, topics, body))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)

        runner = asyncio.create_task(relay())
        await stop.wait()
        runner.cancel()
        await asyncio.gather(runner, *tasks, return_exceptions=True)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.relay_aiomqtt --config FILE --port P`."""
    args = parse_args("python -m bench.relay_aiomqtt", argv)
    routes = Routes.from_config_file(args.config)
    asyncio.run(serve(routes, args.host, args.port, args.inflight))
    return 0


if __name__ == "__main__":
    sys.exit(main())
