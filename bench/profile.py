"""Where the time goes: a summary of a py-spy profile in its raw (collapsed stack) format.

`py-spy record --format raw` writes one line per distinct stack: frames from the
outermost to the innermost, separated by `;`, each `function (file:line)`, then a
space and the number of samples. Idle samples (a thread waiting in epoll or on
a lock) are left out by py-spy by default, so the shares below are shares of
the CPU time the process actually used.

The summary gives, over all sampled stacks:

* *self*: the innermost frame, i.e. the function that was running;
* *inclusive*: every function on the stack (a function counted once per sample
  even when recursive), i.e. the time spent in it and everything it called;
* samples whose innermost frame is a wait (epoll, a condition variable) are
  counted apart as `waiting_samples` and left out of the shares;
* *project inclusive*: the same for the project's own functions only, without
  the entry points (CLI, runner) that are on every stack: where the gateway's
  time goes by its own structure;
* *area*: self time grouped by where the code lives: a project module
  (`gateway/adapters/store.py`), a third-party package (`gmqtt`, `msgpack`,
  `structlog`), or a standard library module (`asyncio`, `sqlite3`).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Final

__all__ = ["area_of", "frame_key", "parse_raw", "summarise_raw"]

_FRAME: Final = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_PROJECT: Final = ("gateway/", "devices/", "protocols/", "config/", "simulators/", "bench/")
_ENTRY_POINTS: Final = ("bench/", "gateway/cli.py", "gateway/runner.py")
"""Project frames under everything (the process's entry): left out of the project view."""
_WAITS: Final = frozenset(
    {
        "EpollSelector.select (selectors.py)",
        "select (selectors.py)",
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
        "Thread.join (threading.py)",
        "Thread._wait_for_tstate_lock (threading.py)",
    }
)
"""Leaf frames that are waiting, not working: py-spy may report them as active."""


def parse_raw(text: str) -> list[tuple[list[str], int]]:
    """(frames outermost first, samples) per line of py-spy's raw output."""
    stacks: list[tuple[list[str], int]] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or not stack:
            continue
        stacks.append((stack.split(";"), int(count)))
    return stacks


def _short_file(path: str) -> str:
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1]
    for project in _PROJECT:
        at = path.find("/" + project)
        if at >= 0:
            return path[at + 1 :]
        if path.startswith(project):
            return path
    found = re.search(r"python3\.\d+/(.*)$", path)
    return found.group(1) if found else path


def frame_key(frame: str) -> str:
    """`function (short/file.py)`: a frame without its line number."""
    found = _FRAME.match(frame)
    if found is None:
        return frame
    return f"{found.group('func')} ({_short_file(found.group('file'))})"


def area_of(frame: str) -> str:
    """Where a frame's code lives: project module, third-party package, or stdlib module."""
    found = _FRAME.match(frame)
    if found is None:
        return frame
    short = _short_file(found.group("file"))
    if short.startswith(_PROJECT):
        return short
    head = short.split("/", 1)[0]
    return head.removesuffix(".py")


def _in_entry_point(key: str) -> bool:
    where = key[key.rfind("(") + 1 : -1]
    return where.startswith(_ENTRY_POINTS)


def summarise_raw(text: str, top: int = 25) -> dict[str, Any]:
    """Self, inclusive and per-area shares (percent of samples) of a raw py-spy profile."""
    stacks = parse_raw(text)
    total = sum(count for _, count in stacks)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    project: Counter[str] = Counter()
    waiting = 0
    for frames, count in stacks:
        real = [f for f in frames if _FRAME.match(f) is not None and "(" in f]
        if not real:
            continue
        if frame_key(real[-1]) in _WAITS:
            waiting += count
            continue
        own[frame_key(real[-1])] += count
        areas[area_of(real[-1])] += count
        keys = {frame_key(f) for f in real}
        for key in keys:
            inclusive[key] += count
        for key in {frame_key(f) for f in real if area_of(f).startswith(_PROJECT)}:
            if not _in_entry_point(key):
                project[key] += count

    busy = total - waiting

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        if not busy:
            return []
        return [(k, round(100.0 * v / busy, 1)) for k, v in counter.most_common(top)]

    return {
        "samples": busy,
        "waiting_samples": waiting,
        "self_pct": shares(own),
        "inclusive_pct": shares(inclusive),
        "project_inclusive_pct": shares(project),
        "area_self_pct": shares(areas),
    }
