"""The bare relay on gmqtt, the gateway's own MQTT client, with the gateway's client settings.

MQTT 5, `optimistic_acknowledgement=False` (gmqtt sends the PUBACK when the
async handler returns, as for the gateway), QoS 1 subscription, QoS 1
publishes through gmqtt's own `Client.publish` (which keeps each one for
redelivery until its PUBACK). The handler decodes, routes and publishes, then
returns 0 (PUBACK Success): see `bench.relay` for what "bare" leaves out.

gmqtt raises OverflowError when every packet id allowed by the broker's Receive
Maximum is in flight; the handler then yields to the loop until PUBACKs free
some, rather than dropping the message (which the benchmark would count lost).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Final

import gmqtt
from gmqtt.mqtt.constants import MQTTv50

from bench.relay import Routes, parse_args

__all__ = ["main", "serve"]

_FULL_WINDOW_PAUSE_S: Final = 0.001


async def serve(routes: Routes, host: str, port: int, inflight: int) -> None:
    """Relay until cancelled or signalled."""
    client = gmqtt.Client(
        "bench-relay-gmqtt",
        clean_session=True,
        optimistic_acknowledgement=False,
        session_expiry_interval=0,
        receive_maximum=inflight,
    )
    subscribed = asyncio.Event()
    ack_prefix = routes.ack_prefix if routes.acks else "\x00"

    async def on_message(
        _client: object, topic: str, payload: bytes, _qos: int, _properties: object
    ) -> int:
        if topic.startswith(ack_prefix):
            routes.ack(payload)
            return 0
        topics, body = routes.route(topic, payload)
        for target in topics:
            while True:
                try:
                    client.publish(target, body, qos=1)
                    break
                except OverflowError:
                    await asyncio.sleep(_FULL_WINDOW_PAUSE_S)
        return 0

    def on_subscribe(*_args: object) -> None:
        subscribed.set()

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    await client.connect(host, port, version=MQTTv50, keepalive=60)
    client.subscribe([gmqtt.Subscription(t, qos=1) for t in routes.subscriptions])
    await asyncio.wait_for(subscribed.wait(), 10.0)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await client.disconnect()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.relay_gmqtt --config FILE --port P`."""
    args = parse_args("python -m bench.relay_gmqtt", argv)
    routes = Routes.from_config_file(args.config, acks=args.acks)
    asyncio.run(serve(routes, args.host, args.port, args.inflight))
    return 0


if __name__ == "__main__":
    sys.exit(main())
