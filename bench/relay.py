"""What both bare relays share: routing by table, the dispatched body, the command line.

A bare relay is the floor the gateway is compared with (docs/benchmark.md):
subscribe to the ingress topics, decode the MessagePack map, look the device up
in a dict, publish one map to each routed topic at QoS 1, and nothing more: no
validation beyond what routing needs, no dedup, no store, no supervision, no
metrics, no logging. Routing is the contract's default policy, stated in
`bench.load` (the same oracle the accounting uses). The dispatched map carries
what the sink needs to match it (`device_id`, `event`) and the timestamps a
consumer would expect, so its size is close to the gateway's.

With `--acks` (the scenarios where an acker plays the operators) a relay does
the bare equivalent of the gateway's alarm bookkeeping: each dispatched phone
alarm carries the gateway's `alarm_id` (`ph/<household>/<seq>`,
devices/phone.py) and is remembered in a dict; the relay also subscribes to
`<base>/ack/#`, decodes each acknowledgement and pops its alarm id (`Routes.ack`).
It never escalates.

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

    def __init__(
        self,
        homes: Sequence[Home],
        sites: Sequence[Site],
        base: str,
        *,
        routed_classes: frozenset[str] = frozenset({"A", "B"}),
        acks: bool = False,
    ) -> None:
        self.base = base
        self.phone_prefix = f"{base}/in/phone/"
        self.checkpoint_prefix = f"{base}/in/checkpoint/"
        self.subscriptions: tuple[str, ...] = (f"{base}/in/phone/+", f"{base}/in/checkpoint/+")
        if acks:
            self.subscriptions += (f"{base}/ack/#",)
        self.ack_prefix = f"{base}/ack/"
        self.acks = acks
        self.open_alarms: dict[str, float] = {}
        """Alarm id → dispatch time, while unacknowledged (only with `acks`)."""
        self.acked = 0
        self._homes = {h.id: h for h in homes}
        self._passes = {s.id: pass_topic(base, s, routed_classes) for s in sites}

    @classmethod
    def from_config_file(cls, path: str, *, acks: bool = False) -> Routes:
        """Routes for the district in a config file (its `[routing.passes]` classes)."""
        config = load_config(path)
        homes = [Home(h.id, h.village, h.township, h.group) for h in config.households]
        sites = [Site(c.id, c.township, c.cls.value) for c in config.checkpoints]
        routed = frozenset(cls.value for cls, on in config.routing.passes.items() if on)
        return cls(homes, sites, config.mqtt.base_topic, routed_classes=routed, acks=acks)

    def ack(self, payload: bytes) -> bool:
        """An operator's acknowledgement: decode it, pop its alarm; whether it was open."""
        try:
            message = msgpack.unpackb(payload, raw=False)
        except (ValueError, msgpack.UnpackException):
            return False
        if not isinstance(message, dict):
            return False
        alarm_id = message.get("alarm_id")
        if not isinstance(alarm_id, str):
            return False
        found = self.open_alarms.pop(alarm_id, None) is not None
        self.acked += found
        return found

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
            alarm_id = f"ph/{device}/{message.get('seq')}" if self.acks and topics else None
        elif topic.startswith(self.checkpoint_prefix):
            device = topic[len(self.checkpoint_prefix) :]
            passes = self._passes.get(device)
            if passes is None or message.get("type") != "pass":
                return (), b""
            topics = (passes,)
            alarm_id = None
        else:
            return (), b""
        if not topics:
            return (), b""
        now = time.time()
        body: dict[str, object] = {
            "v": 1,
            "device_id": device,
            "device_ts": message.get("ts"),
            "ingress_ts": now,
            "dispatch_ts": now,
            "event": message,
        }
        if alarm_id is not None:
            body = {"alarm_id": alarm_id, **body}
            self.open_alarms[alarm_id] = now
        return topics, msgpack.packb(body)


def parse_args(prog: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`--config FILE [--host H] [--port P] [--inflight N]` for a relay."""
    parser = argparse.ArgumentParser(prog=prog, description="A bare MQTT relay for the benchmark.")
    parser.add_argument("--config", required=True, help="the district's TOML file (routing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--inflight", type=int, default=1000, help="QoS 1 messages in flight")
    parser.add_argument(
        "--acks", action="store_true", help="alarm ids, and take acknowledgements on <base>/ack/#"
    )
    return parser.parse_args(argv)
