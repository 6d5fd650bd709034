"""Run the gateway's own CLI with the garbage collector's pauses written down.

    python -m bench.gcwatch PAUSES_FILE run --config FILE --log-format json [--volatile]

The gateway is exactly `gateway.cli.main(argv)`; this runner only adds a
`gc.callbacks` hook (Python's documented GC hook) that writes one JSON line per
collection that took `_RECORD_S` or longer, or reached the oldest generation:
`{"t": epoch, "gen": 0|1|2, "ms": pause, "collected": n}`. A full collection
walks every tracked container, and a district's gateway holds hundreds of
thousands of them (supervision, dedup, alarms), so these pauses are a prime
suspect for latency spikes; the benchmark puts them beside its latency figures.
The hook costs two clock reads per collection.

SIGUSR1 writes a snapshot line: how many objects the collector tracks, per
generation, and the 20 most common types among them
(`{"t", "snapshot": true, "tracked", "generations", "frozen", "top"}`; objects
moved out of the collector's sight by `gc.freeze()` are counted, not listed),
so a report can
say what a full collection has to walk. Taking it stalls the gateway for as
long as a full collection; the benchmark asks once, after its last step.
"""

from __future__ import annotations

import gc
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from types import FrameType
from typing import IO, Any, Final

__all__ = ["GcWatch", "main"]

_RECORD_S: Final = 0.005


class GcWatch:
    """A `gc.callbacks` hook that writes long or full collections to a stream."""

    def __init__(self, out: IO[str], record_s: float = _RECORD_S) -> None:
        self.out = out
        self.record_s = record_s
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = int(info.get("generation", -1))
        if pause >= self.record_s or generation == 2:
            record = {
                "t": round(time.time(), 4),
                "gen": generation,
                "ms": round(pause * 1000, 3),
                "collected": info.get("collected"),
            }
            self.out.write(json.dumps(record) + "\n")
            self.out.flush()

    def snapshot(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        """Write what the collector tracks (a signal handler for SIGUSR1)."""
        generations = [len(gc.get_objects(generation)) for generation in range(3)]
        kinds = Counter(type(item).__qualname__ for item in gc.get_objects())
        record = {
            "t": round(time.time(), 4),
            "snapshot": True,
            "tracked": sum(generations),
            "generations": generations,
            "frozen": gc.get_freeze_count(),
            "top": kinds.most_common(20),
        }
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """`PAUSES_FILE` then the gateway CLI's own arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write("usage: python -m bench.gcwatch PAUSES_FILE run --config FILE ...\n")
        return 2
    with open(args[0], "w", encoding="utf-8") as out:
        watch = GcWatch(out)
        gc.callbacks.append(watch)
        signal.signal(signal.SIGUSR1, watch.snapshot)
        try:
            from gateway.cli import main as gateway_main  # noqa: PLC0415 - after the hook

            return gateway_main(args[1:])
        finally:
            gc.callbacks.remove(watch)


if __name__ == "__main__":
    sys.exit(main())
