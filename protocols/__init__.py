"""The shape of bytes: pure, sans-I/O codecs for every wire alarmgw speaks.

Nothing here imports asyncio, serial, an MQTT client, time or logging; the
architecture test holds it to that.
"""

from protocols.reasons import Reason, Rejected

__all__ = ["Reason", "Rejected"]
