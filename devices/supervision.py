"""When a device is offline: heartbeat supervision for 130,000 phones at little cost.

Every message from a device (a heartbeat or anything else) proves it alive. A
device silent for longer than its kind's timeout is offline; its next message
brings it back online. Both transitions are reported exactly once.

Theory of operation. All devices of one kind share one timeout, so the order in
which they fall due is the order in which they were last heard. One
`OrderedDict` per kind, moved-to-end on every message, is therefore already
sorted by deadline: the front is the next device to expire. A message costs a
dict update and an O(1) `move_to_end`; expiry pops from the front only while the
front is due; `next_deadline()` is the front's deadline. No per-device timer, no
polling loop, no heap of stale entries.

A device is supervised from its first message after start: before that its state
is unknown, not offline (a gateway restart must not raise 130,000 troubles).
Pure: the caller passes `now`.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from protocols.payloads import unfrozen_builder

__all__ = ["DeviceClass", "Supervisor", "Transition"]


class DeviceClass(enum.StrEnum):
    """Kinds of supervised device (the `kind` label of `alarmgw_devices_online`)."""

    PHONE = "phone"
    CHECKPOINT = "checkpoint"
    RECEIVER = "receiver"
    SERIAL_PORT = "serial_port"


@dataclass(frozen=True, slots=True)
class Transition:
    """A device changed availability at `at` (for offline: when its deadline passed).

    `last_seen` is None for a device's first message since start: it is now known
    online, but it was never offline, so there is nothing to clear.
    """

    device_class: DeviceClass
    device_id: str
    online: bool
    at: float
    last_seen: float | None


# A first message from each of 130,000 phones after a start builds one each: built
# without the frozen cost, and as immutable (protocols.payloads.unfrozen_builder).
_new_transition = unfrozen_builder(Transition)


class Supervisor:
    """Tracks last-heard times per device and reports online/offline transitions."""

    def __init__(self, timeouts: Mapping[DeviceClass, float]) -> None:
        for cls, timeout in timeouts.items():
            if timeout <= 0:
                raise ValueError(f"timeout for {cls} must be positive, got {timeout}")
        self._timeouts = dict(timeouts)
        self._online: dict[DeviceClass, OrderedDict[str, float]] = {
            cls: OrderedDict() for cls in self._timeouts
        }
        self._offline: dict[DeviceClass, dict[str, float]] = {cls: {} for cls in self._timeouts}

    def seen(self, device_class: DeviceClass, device_id: str, now: float) -> Transition | None:
        """Record a message; returns a transition when the device was not known online."""
        online = self._online[device_class]
        if device_id in online:
            online[device_id] = now
            online.move_to_end(device_id)
            return None
        online[device_id] = now
        # First message since start (last is None): supervised from now on.
        last = self._offline[device_class].pop(device_id, None)
        # Positional: keywords would cost a tenth of a microsecond per new device.
        return _new_transition(device_class, device_id, True, now, last)  # noqa: FBT003

    def expire(self, now: float) -> list[Transition]:
        """Every device whose silence has outlasted its timeout, now offline."""
        gone: list[Transition] = []
        for cls, online in self._online.items():
            timeout = self._timeouts[cls]
            offline = self._offline[cls]
            while online:
                device_id, last = next(iter(online.items()))
                if last + timeout > now:
                    break
                online.popitem(last=False)
                offline[device_id] = last
                gone.append(
                    _new_transition(cls, device_id, online=False, at=last + timeout, last_seen=last)
                )
        return gone

    def next_deadline(self) -> float | None:
        """When the next device will be due, or None when nothing is supervised."""
        deadlines = [
            next(iter(online.values())) + self._timeouts[cls]
            for cls, online in self._online.items()
            if online
        ]
        return min(deadlines, default=None)

    def online_count(self, device_class: DeviceClass) -> int:
        """Devices of this class currently online (0 for a class not supervised here)."""
        online = self._online.get(device_class)
        return 0 if online is None else len(online)

    def offline_count(self, device_class: DeviceClass) -> int:
        """Devices of this class known to be offline."""
        return len(self._offline[device_class])

    def is_online(self, device_class: DeviceClass, device_id: str) -> bool | None:
        """True/False once known; None before the device's first message."""
        if device_id in self._online[device_class]:
            return True
        if device_id in self._offline[device_class]:
            return False
        return None
