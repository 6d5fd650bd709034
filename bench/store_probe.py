"""Two store facts the gateway's design rests on, measured on this machine.

    python -m bench.store_probe [--dir DIR]

1. **The GIL convoy.** Python's sqlite3 releases the GIL around every statement
   step; a writer thread that wants it back while another thread is busy waits
   up to the interpreter's switch interval. The probe commits 256 rows, one
   `executemany` step per row or a few multi-row statements, next to a thread
   that spins Python code (the event loop at full load, in the worst case), at
   the default switch interval (5 ms) and at the gateway's (0.2 ms,
   `gateway/runner.py`).
2. **Random keys against an append-only log.** 500,000 dedup rows keyed by their
   text key (every insert lands on a random B-tree leaf, schema 1 of the store)
   against the same rows appended to a rowid table (schema 2), 250 rows a commit.

Prints one line per case (p50/p99 commit time, or CPU per row). Writes only to a
temporary folder (or `--dir`), which it removes. The figures are quoted in
`gateway/adapters/store.py` and docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

_ROWS = 256
_COMMITS = 200


def _connect(path: Path) -> sqlite3.Connection:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA cache_size=-32768")
    return conn


def _rows(start: int, count: int) -> list[tuple[str, None, str, float]]:
    now = time.time()
    return [
        (f"ph/H{(start + i) * 7919 % 130_000:06d}/{start + i}", None, "mqtt", now)
        for i in range(count)
    ]


def convoy(
    folder: Path, switch_interval_s: float, multi_row: bool, commits: int = _COMMITS
) -> tuple[float, float]:
    """p50 and p99 (ms) of a 256-row commit next to a spinning thread."""
    conn = _connect(folder / "convoy.db")
    conn.execute("CREATE TABLE seen(key TEXT NOT NULL, content TEXT, transport TEXT, ts REAL)")
    before = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval_s)
    stop = threading.Event()

    def spin() -> None:
        total = 0
        while not stop.is_set():
            for i in range(1000):
                total += i

    spinner = threading.Thread(target=spin, name="spinner")
    spinner.start()
    times: list[float] = []
    try:
        for n in range(commits):
            rows = _rows(n * _ROWS, _ROWS)
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            if multi_row:
                for at in range(0, _ROWS, 64):
                    chunk = rows[at : at + 64]
                    marks = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
                    conn.execute(
                        f"INSERT INTO seen VALUES {marks}",  # noqa: S608 - only '?' marks
                        [value for row in chunk for value in row],
                    )
            else:
                conn.executemany("INSERT INTO seen VALUES (?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
            times.append((time.perf_counter() - started) * 1000)
    finally:
        stop.set()
        spinner.join()
        sys.setswitchinterval(before)
        conn.close()
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99)]


def layout(
    folder: Path, *, keyed: bool, warm_rows: int = 400_000, measured: int = 100_000
) -> float:
    """CPU microseconds per dedup row, after `warm_rows` rows already stored."""
    conn = _connect(folder / "layout.db")
    if keyed:
        conn.execute(
            "CREATE TABLE seen(key TEXT PRIMARY KEY, content TEXT, transport TEXT, ts REAL)"
            " WITHOUT ROWID"
        )
        head = "INSERT OR REPLACE INTO seen VALUES "
    else:
        conn.execute("CREATE TABLE seen(key TEXT NOT NULL, content TEXT, transport TEXT, ts REAL)")
        head = "INSERT INTO seen VALUES "
    conn.execute("CREATE INDEX seen_ts ON seen(ts)")
    per_commit = 250
    sql = head + ", ".join(["(?, ?, ?, ?)"] * per_commit)

    def commit(start: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql, [v for row in _rows(start, per_commit) for v in row])
        conn.execute("COMMIT")

    done = 0
    while done < warm_rows:
        commit(done)
        done += per_commit
    started = time.process_time()
    for n in range(0, measured, per_commit):
        commit(done + n)
    conn.close()
    return (time.process_time() - started) / measured * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    """Run both probes and print their figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.store_probe", description=__doc__)
    parser.add_argument("--dir", type=Path, help="where to put the scratch databases")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a check, not a figure)")
    args = parser.parse_args(argv)
    commits, warm, measured = (10, 2_500, 2_500) if args.quick else (_COMMITS, 400_000, 100_000)
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        folder = Path(scratch)
        python = sys.version.split()[0]
        print(f"SQLite {sqlite3.sqlite_version}, Python {python}, {os.cpu_count()} cores")
        for interval in (0.005, 0.0002):
            for multi in (False, True):
                p50, p99 = convoy(folder, interval, multi, commits)
                shape = "multi-row (64)" if multi else "executemany  "
                print(
                    f"convoy: 256-row commit, {shape}, switch interval {interval * 1000:.1f} ms:"
                    f" p50 {p50:.1f} ms, p99 {p99:.1f} ms"
                )
        for keyed in (True, False):
            name = "keyed by text (schema 1)" if keyed else "append-only (schema 2)  "
            cost = layout(folder, keyed=keyed, warm_rows=warm, measured=measured)
            print(f"layout: dedup rows {name}: {cost:.1f} µs CPU per row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
