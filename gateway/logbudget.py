"""How many log lines of each kind the gateway writes in a storm.

A district's alarms come a few a minute, and each one's log lines (accepted,
dispatched to each sink, acknowledged, escalated) are what an engineer reads
afterwards. In a storm (a power cut: 130,000 AC-loss troubles in a minute; a
panic storm: 2,000 panics a second) the same lines would be thousands a
second, each a JSON rendering on the event loop: at 2,000 panics/s they took
0.12 of a core, a fifth of the loop's time, while the counters and histograms
of /metrics already carry every figure (docs/benchmark.md, "Alarm path").

So each kind of line has a budget, a token bucket: `rate` lines a second
sustained, bursts of up to `burst`; past it a line is counted instead of
written, and `held()` hands the counts over for one summary line a second
("log lines held back"). Below the budget, which is far above what a district
sends outside a storm, every line is written as before.

Pure: the caller passes `now`.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_BURST", "DEFAULT_RATE", "LogBudget"]

DEFAULT_RATE: Final = 20.0
"""Lines a second of one kind, sustained."""
DEFAULT_BURST: Final = 200.0
"""Lines of one kind written at once after a quiet spell (an alarm's whole story
during a small burst of alarms)."""


class LogBudget:
    """A token bucket per kind of log line, and the count of lines held back."""

    __slots__ = ("_buckets", "_burst", "_held", "_rate")

    def __init__(self, rate: float = DEFAULT_RATE, burst: float = DEFAULT_BURST) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a log budget needs rate > 0 and burst >= 1: {rate}, {burst}")
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, list[float]] = {}
        """Kind → [tokens, when they were counted]."""
        self._held: dict[str, int] = {}

    def allow(self, kind: str, now: float) -> bool:
        """Whether a line of `kind` may be written at `now` (else it is counted)."""
        bucket = self._buckets.get(kind)
        if bucket is None:
            bucket = self._buckets[kind] = [self._burst, now]
        tokens = bucket[0] + (now - bucket[1]) * self._rate
        tokens = min(tokens, self._burst)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        self._held[kind] = self._held.get(kind, 0) + 1
        return False

    def held(self) -> dict[str, int]:
        """The lines held back since the last call, by kind (and forget them)."""
        held, self._held = self._held, {}
        return held
