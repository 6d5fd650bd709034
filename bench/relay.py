"""What both bare relays share: routing by table, the dispatched body, the command line.

A bare relay is the floor the gateway is compared with (docs/benchmark.md):
subscribe to the ingress topics, decode the MessagePack map, look the device up
in a dict, publish one map to each routed topic at QoS 1, and nothing more: no
validation beyond what routing needs, no dedup, no store, no supervision, no
metrics, no logging. Routing is the contract's default policy, stated in
`bench.load` (the same oracle the accounting uses). The dispatched map carries
what the sink needs to match it (`device_id`, `event`) and the timestamps a
consumer would expect, so its size is close to the gateway's.

Relays are started as `python -m bench.relay_gmqtt --config FILE` (or
`bench.relay_aiomqtt`); they print `ready` on stdout once subscribed and run
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import msgpack

from bench.load import Home, Site, pass_topic, phone_topics
from config.loader import load_config

__all__ = ["Routes", "parse_args"]


class Routes:
    """Ingress topic → the egress topics and body of one message, by dict lookup."""

    def __init__(self, homes: Sequence[Home], sites: Sequence[Site], base: str) -> None:
        self.base = base
        self.phone_prefix = f"{base}/in/phone/"
        self.checkpoint_prefix = f"{base}/in/checkpoint/"
        self.subscriptions = (f"{base}/in/phone/+", f"{base}/in/checkpoint/+")
        self._homes = {h.id: h for h in homes}
        self._passes = {s.id: pass_topic(base, s) for s in sites}

    @classmethod
    def from_config_file(cls, path: str) -> Routes:
        """Routes for the district in a config file."""
        config = load_config(path)
        homes = [Home(h.id, h.village, h.township, h.group) for h in config.households]
        sites = [Site(c.id, c.township, c.cls.value) for c in config.checkpoints]
        return cls(homes, sites, config.mqtt.base_topic)

    def route(self, topic: str, payload: bytes) -> tuple[tuple[str, ...], bytes]:
        """(egress topics, body) for one ingress message; no topics for anything unroutable."""
        try:
            message = msgpack.unpackb(payload, raw=False)
        except (ValueError, msgpack.UnpackException):
            return (), b""
        if not isinstance(message, dict):
            return (), b""
        if topic.startswith(self.phone_prefix):
            device = topic[len(self.phone_prefix) :]
            home = self._homes.get(device)
            code = message.get("code")
            if home is None or not isinstance(code, int):
                return (), b""
            topics = phone_topics(self.base, home, code)
        elif topic.startswith(self.checkpoint_prefix):
            device = topic[len(self.checkpoint_prefix) :]
            passes = self._passes.get(device)
            if passes is None or message.get("type") != "pass":
                return (), b""
            topics = (passes,)
        else:
            return (), b""
        if not topics:
            return (), b""
        now = time.time()
        body = msgpack.packb(
            {
                "v": 1,
                "device_id": device,
                "device_ts": message.get("ts"),
                "ingress_ts": now,
                "dispatch_ts": now,
                "event": message,
            }
        )
        return topics, body


def parse_args(prog: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`--config FILE [--host H] [--port P] [--inflight N]` for a relay."""
    parser = argparse.ArgumentParser(prog=prog, description="A bare MQTT relay for the benchmark.")
    parser.add_argument("--config", required=True, help="the district's TOML file (routing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--inflight", type=int, default=1000, help="QoS 1 messages in flight")
    return parser.parse_args(argv)
