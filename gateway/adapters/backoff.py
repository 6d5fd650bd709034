"""Capped exponential backoff with full jitter, for everything that reconnects.

The MQTT link and the serial lines retry with the same policy: the n-th retry
waits a uniformly random time in [0, min(cap, initial * 2**n)]. Full jitter
(AWS Architecture Blog, "Exponential Backoff And Jitter") spreads gateways that
lost the same broker, or ports on the same USB hub, so they do not come back in
lockstep. The random source is the caller's, so tests can seed it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter: delay = uniform(0, min(cap, initial * 2**n))."""

    initial_s: float = 0.1
    cap_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.cap_s:
            raise ValueError(f"need 0 < initial_s <= cap_s, got {self.initial_s}, {self.cap_s}")

    def ceiling(self, failures: int) -> float:
        """The upper bound of the delay after `failures` consecutive failures (0 = first retry)."""
        if failures < 0:
            raise ValueError(f"failures must be >= 0, got {failures}")
        # The exponent is clamped: 2**1100 does not fit a float, and 2**64 * any
        # sane initial delay is far past any cap.
        return min(self.cap_s, self.initial_s * float(2 ** min(failures, 64)))

    def delay(self, failures: int, rng: random.Random) -> float:
        """A random delay in [0, ceiling(failures)]."""
        return rng.uniform(0.0, self.ceiling(failures))
