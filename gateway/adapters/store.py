"""The durable store: SQLite in WAL mode, written by one thread with group commit.

DESIGN.md principle 1, "nothing accepted is lost": a device is acknowledged only
after its event is durably recorded, and a dispatch stays in the outbox until its
sink has it, across broker outages and gateway restarts. This module is the
"durably recorded" part. It is content-agnostic: it stores opaque blobs plus the
few columns it must select or sort by (lane, state, times); the gateway owns the
encoding of its own values.

Theory of operation
-------------------
*One connection, one writer thread.* SQLite allows one writer at a time, and its
calls block; so a single daemon-less thread (``alarmgw-store``) owns every write
and the event loop never waits on SQLite. The loop calls `submit(ops)`, which
only appends to the pending batch under a lock and returns an asyncio future.

*Group commit.* The writer commits the pending batch when `commit_interval_ms`
has passed since its first op, or as soon as `commit_max_batch` ops are pending
(or at once when the interval is 0: then batches form by themselves while the
previous commit is running). One transaction, one fsync (``synchronous=FULL``)
for the whole batch; then one `call_soon_threadsafe` per batch resolves every
future of it. Many handlers wait on one commit and none commits alone, so
durability costs latency (about one interval) but does not cap throughput. An
MQTT handler awaits its future and returns, and only then does the broker get its
PUBACK (ack after store).

*Urgent submissions* (life safety) do not wait for the interval of the group:
they commit as soon as the writer is free, but no sooner than `urgent_gap_ms`
(2 ms, or the interval if shorter) after the previous commit began, and every
ordinary submission pending then rides along (up to a quarter of
`commit_max_batch` ops, so the commit a panic waits for stays short). A panic
storm is thus group-committed too: at 2,000 panics/s a commit of its own for
each panic took 0.32 cores of the writer thread and 0.12 of the loop (the WAL
pages of every table's tail, an fsync and a wake-up per panic); with the gap,
commits carry about four panics each and cost half as much
(docs/benchmark.md, "Alarm path"). A panic waits at most one gap plus the
commit in progress.

*Few statements per commit.* Python's sqlite3 releases the GIL around every
statement step, and a thread that wants the GIL back while the event loop is
busy waits up to the interpreter's switch interval (5 ms by default) for it: the
"convoy effect". With one `executemany` row per step, a commit of 256 rows took
184 ms (p50) next to a busy loop thread (an fsync here takes 0.3 ms). So rows are
written in multi-row statements of ladder sizes (a few statements per table per
commit: 10.7 ms for the same commit), and the gateway lowers the switch interval
to 0.2 ms (1.2 ms; `gateway/runner.py`). Measured by `python -m
bench.store_probe`, with a spinning thread standing in for the loop: the worst
case, not the usual one.

*Layout (schema 3): append, do not update.* In WAL mode a commit writes every
page it changed, whole (4 KiB), so what a commit costs is the number of B-tree
pages it touches, not the bytes of its rows: at least the tail leaf of each
table and index it writes, with the interior pages above. So the tables are
logs written at their tails: `seen` (dedup identities, in time order), `outbox`
(dispatches, by id, written once) and `delivered` (outbox id and time): a
delivery confirmation is an appended mark, the first one for an id wins, and
pending means "an outbox row without a mark". Schema 2 marked delivery with an
UPDATE of the outbox row, which rewrote an older row's page and moved its entry
between two partial indexes (pending, delivered): 1.4 to 2.3 KB of WAL per
event, eight times the data. `alarms` has rowids and a unique index on its text
id (schemas 1 and 2: WITHOUT ROWID, keyed by the id). Keyed by a random id,
each put wrote its whole record (~500 bytes, a few to a page) into a random
leaf, splitting leaves as they filled: 17.3 of a commit's 35.7 pages at 128
events. With rowids a new alarm goes at the table's tail, where the alarms
still changing are too, and only its index entry (id and rowid) lands on a
random leaf, of a tree of small entries: the table, its id index and
`alarms_state` write 2.1 + 7.6 + 1.6 pages a commit instead of 17.3 + 1.9.
Measured on the bench mix (per 256 events ~100 dedup rows, ~130 outbox rows,
13 new alarms; each commit also carrying the marks of the previous commit's
dispatches), one thread, schema 2 -> 3 with alarms keyed by id -> 3: WAL pages
a commit 17.6 -> 14.3 -> 13.0 at 32 events a commit, 44.4 -> 35.7 -> 27.7 at
128 (888 bytes an event); store CPU 7.4 -> 6.6 µs an event at 32, 4.5 -> 4.0
at 128, then (medians of five runs, side by side) 6.3 -> 5.9 at 32, 4.0 -> 3.3
at 128. The largest shares left are the outbox's tail (8.0 pages at 128) and
the alarm id index (7.6). The ops are named tuples, not dataclasses: the loop
builds several per event (an OutboxAdd in 0.18 µs, not 0.61), and each one, in
its statement's column order, is its own row of parameters.

*Order inside a batch.* Ops of different tables are independent, so each kind is
written in its own statements, in submission order: dedup identities, then
outbox adds, then delivered marks (a mark for an id added in the same batch must
follow its add), then alarm upserts and deletes in their original order (runs of
one kind are grouped, each run in multi-row statements; SQLite applies the rows
of an upsert in order, so the last put of an alarm wins).

*A bad op is the caller's bug, not an outage.* If a batch fails with an error
that comes from an op (a duplicate outbox id, a value SQLite cannot bind), the
writer replays the batch with one savepoint per submission: the offending
submission's future gets the error, the others commit.

*When the disk cannot be written* (``database or disk is full``, ``disk I/O
error``, ``attempt to write a readonly database``, ...), the batch is rolled
back and dropped: its futures fail with `StoreUnavailable`, so the gateway does
not acknowledge and devices keep retrying (the events live on in the devices, not
in an unbounded queue here). The store turns `writable` False, reports it through
`on_state_change` (for /readyz, the log and a metric, CONTRACT.md), fails new
submissions at once, and every `retry_s` probes with a one-row transaction; when
that commits it turns writable again by itself. On a disk with only a little room
the probe may pass and the next batch fail again: each flip is reported, and no
acknowledged event is ever lost.

*Durability trade-off.* ``synchronous=FULL`` (the default) fsyncs the WAL at every
commit: an acknowledged event survives a power cut. ``synchronous="NORMAL"`` in WAL
mode fsyncs only at checkpoints: it survives a process crash (the WAL is in the
OS), but a power cut may lose the last commits, i.e. events already acknowledged.

*Recovery and pruning.* At start-up the gateway reads what it needs back
(`load_seen`, `load_pending`, `load_alarms`, `max_outbox_id`); reads share the
connection under a lock, so they are safe at any time but block the caller for
up to one commit (use them at start-up, not on the hot path). `prune` deletes
outbox rows delivered before a horizon with their marks, old dedup identities
and alarms in final states, in small transactions on the writer thread, so it
never holds the write lock for long. The largest outbox id is kept in `meta`
before outbox rows go, so ids are never reused. Schemas 1 and 2 are upgraded at
open, in one transaction (schema 1's `seen` becomes the log; the outbox is
rebuilt without its `delivered` column, the marks moved to `delivered`;
`alarms` is rebuilt with rowids, every row kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import sqlite3
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, NamedTuple, TypeVar

__all__ = [
    "SCHEMA_VERSION",
    "AlarmDelete",
    "AlarmPut",
    "AlarmRow",
    "Op",
    "OutboxAdd",
    "OutboxDelivered",
    "OutboxRow",
    "Pruned",
    "SeenOp",
    "SeenRow",
    "Store",
    "StoreSchemaError",
    "StoreUnavailable",
    "read_alarm_data",
]

SCHEMA_VERSION: Final = 3
"""The layout this module writes; an older one is upgraded at open, a newer one refused."""

_T = TypeVar("_T")
_Rows = tuple[str, str, int, str]
"""A multi-row statement: its head, one row's parameter marks, values a row, its tail."""

_SYNCHRONOUS = frozenset({"FULL", "NORMAL", "EXTRA"})

_OUTBOX_COLUMNS: Final = (
    "id INTEGER PRIMARY KEY, lane INTEGER NOT NULL, topic TEXT NOT NULL,"
    " qos INTEGER NOT NULL, retain INTEGER NOT NULL, data BLOB NOT NULL,"
    " meta BLOB NOT NULL, created REAL NOT NULL"
)
_ALARM_COLUMNS: Final = (
    "alarm_id TEXT NOT NULL UNIQUE, data BLOB NOT NULL, state TEXT NOT NULL,"
    " deadline REAL, updated REAL NOT NULL"
)
_ALARMS_STATE: Final = "CREATE INDEX IF NOT EXISTS alarms_state ON alarms(state, updated)"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen(
    key TEXT NOT NULL, content TEXT, transport TEXT, ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_ts ON seen(ts);
CREATE TABLE IF NOT EXISTS outbox({_OUTBOX_COLUMNS});
CREATE TABLE IF NOT EXISTS delivered(id INTEGER PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alarms({_ALARM_COLUMNS});
{_ALARMS_STATE};
"""
# `seen` is an append-only log (schema 2): it is only ever appended to, read
# back by time at start-up and pruned by time, never looked up by key (dedup is
# in memory). Keyed by its text key (schema 1) every insert landed on a random
# leaf page: 20.9 µs of CPU per row at 400,000 rows, against 1.3 µs appended
# (docs/benchmark.md, "Findings"). A key seen twice has two rows;
# `load_seen` keeps the latest. `outbox` and `delivered` (schema 3): see "Layout"
# in the module docstring; neither has a secondary index, as each would be one
# more tail to rewrite at every commit (pending is read at start-up only, pruning
# scans `delivered` by id). `alarms` (schema 3): a rowid table and a unique
# index on the id, not one WITHOUT ROWID B-tree keyed by it: two trees, but a
# put writes the table's tail and a small index entry, not a ~500-byte record
# into a random leaf (see "Layout": 11.3 WAL pages a commit at 128 events, not
# 19.2). The id must be NOT NULL: UNIQUE alone would let NULLs repeat.
# `alarms_state` serves both start-up (load by state) and pruning (final states
# by age; it holds the rowids, so pruning reads no row); the deadline rides
# along in the row, escalation timing is in memory.

# Every op is written by a multi-row statement, built further down.
_SQL_PROBE = "INSERT OR REPLACE INTO meta(key, value) VALUES ('probe', ?)"
# Pending: an outbox row without a mark. Not "each outbox row, is it marked?":
# that reads the whole outbox, the delivered rows of the retention window
# included (1,000,000 rows: 373 MB, 0.25 s even from the OS cache). Unmarked ids
# lie in the gaps between consecutive marked ids, so the gaps are found in
# `delivered` (10 MB for those rows) and only they are read from the outbox, as
# id ranges: one range per pending row or unused id (0.15 s from the cache, and
# a thirty-seventh of the reading from a disk). Ids are in 1 .. 2**63 - 2.
_SQL_PENDING: Final = """
WITH gaps(lo, hi) AS (
    SELECT -9223372036854775808, coalesce((SELECT min(id) FROM delivered), 9223372036854775807)
    UNION ALL
    SELECT d.id,
        coalesce((SELECT min(n.id) FROM delivered AS n WHERE n.id > d.id), 9223372036854775807)
    FROM delivered AS d WHERE NOT EXISTS (SELECT 1 FROM delivered AS e WHERE e.id = d.id + 1)
)
SELECT outbox.id, lane, topic, qos, retain, data, meta, created
FROM gaps CROSS JOIN outbox WHERE outbox.id > gaps.lo AND outbox.id < gaps.hi
"""
_SQL_LOAD_PENDING: Final = _SQL_PENDING + " ORDER BY lane, outbox.id"
_SQL_PENDING_COUNT: Final = f"SELECT count(*) FROM ({_SQL_PENDING})"  # noqa: S608 - a constant
_SQL_HIGH_WATER = (
    "INSERT OR REPLACE INTO meta(key, value)"
    " SELECT 'outbox_max_id', max(coalesce(max(id), 0),"
    " coalesce((SELECT value FROM meta WHERE key = 'outbox_max_id'), 0)) FROM outbox"
)

# Errors that come from an op a caller built, not from the disk: the batch is
# replayed per submission so only the culprit fails (see the module docstring).
_CALLER_ERRORS: Final = (
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
    sqlite3.DataError,
    TypeError,
    ValueError,
    OverflowError,
)


class StoreUnavailable(Exception):  # noqa: N818 - a state, like ConnectionRefused
    """The store cannot write now (disk full, read-only, I/O error); nothing was recorded."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StoreSchemaError(RuntimeError):
    """The database was written by a newer alarmgw (a schema this version does not know)."""


# --------------------------------------------------------------------- operations
# Named tuples (immutable, built by the loop at every event; see "Layout"): the
# field order is the column order of each op's statement, and `_apply` binds an
# op as it is. Keep the two in step.
class SeenOp(NamedTuple):
    """Remember a dedup identity (the last one written for a key wins): the event's key,
    its content key, its path."""

    key: str
    content: str | None
    transport: str
    ts: float


class OutboxAdd(NamedTuple):
    """A dispatch owed to a sink; `id` comes from the gateway (monotonic, see max_outbox_id)."""

    id: int
    lane: int
    topic: str
    qos: int
    retain: bool
    data: bytes
    meta: bytes
    created: float


class OutboxDelivered(NamedTuple):
    """The broker confirmed outbox entry `id` at `at`: no longer pending. The first mark
    of an id wins; a mark for an id the outbox does not hold changes nothing."""

    id: int
    at: float


class AlarmPut(NamedTuple):
    """Insert or replace an alarm's record (state, next escalation deadline)."""

    alarm_id: str
    data: bytes
    state: str
    deadline: float | None
    updated: float


class AlarmDelete(NamedTuple):
    """Forget an alarm."""

    alarm_id: str


Op = SeenOp | OutboxAdd | OutboxDelivered | AlarmPut | AlarmDelete
"""One change; a submission's ops commit together or not at all."""


# --------------------------------------------------------------------- rows read back
@dataclass(frozen=True, slots=True)
class SeenRow:
    """A dedup identity read back at start-up."""

    key: str
    content: str | None
    transport: str
    ts: float


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A pending dispatch read back at start-up."""

    id: int
    lane: int
    topic: str
    qos: int
    retain: bool
    data: bytes
    meta: bytes
    created: float


@dataclass(frozen=True, slots=True)
class AlarmRow:
    """An alarm read back at start-up."""

    alarm_id: str
    data: bytes
    state: str
    deadline: float | None
    updated: float


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many rows one `prune` removed, per table."""

    outbox: int = 0
    seen: int = 0
    alarms: int = 0


_Submission = tuple[Sequence[Op], "asyncio.Future[None]"]
_Job = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]


# --------------------------------------------------------------------- the store
class Store:
    """The gateway's SQLite store: group-committed writes, start-up reads, pruning.

    Typical use by the composition root::

        store = Store(path, on_state_change=report)  # opens; creates or checks the schema
        pending = store.load_pending()               # start-up reads (before or after start)
        async with store:                            # the writer runs; exit flushes and joins
            await store.write([SeenOp(...), OutboxAdd(...), AlarmPut(...)])  # then PUBACK
            store.submit([OutboxDelivered(outbox_id, now)])  # fire and forget

    Always close it (`aclose`, `close` or the context manager): the writer thread is
    not a daemon, so that the last batch is never cut short at exit.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        commit_interval_ms: float = 2.0,
        commit_max_batch: int = 4096,
        urgent_gap_ms: float = 2.0,
        retry_s: float = 1.0,
        busy_timeout_ms: int = 5000,
        on_state_change: Callable[[bool, str | None], None] | None = None,
    ) -> None:
        """Open (creating if need be) the database; raises StoreSchemaError if it is newer."""
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}")
        if (
            commit_interval_ms < 0
            or commit_max_batch < 1
            or urgent_gap_ms < 0
            or retry_s <= 0
            or busy_timeout_ms < 0
        ):
            raise ValueError("store intervals, batch size and timeouts must be positive")
        self._interval = commit_interval_ms / 1000.0
        self._urgent_gap = min(self._interval, urgent_gap_ms / 1000.0)
        self._last_commit_at = float("-inf")
        """When the last commit began (monotonic): urgent commits keep one gap apart."""
        self._max_batch = commit_max_batch
        self._retry_s = retry_s
        self._on_state_change = on_state_change
        # check_same_thread=False: opened here, written by the writer thread; the
        # `_db_lock` makes every use exclusive. isolation_level=None: we say BEGIN.
        self._conn = sqlite3.connect(os.fspath(path), isolation_level=None, check_same_thread=False)
        try:
            journal_mode = _setup(self._conn, mode, busy_timeout_ms)
        except BaseException:
            self._conn.close()
            raise
        self.journal_mode = journal_mode
        """What SQLite reports: "wal" for a file, "memory" for ":memory:"."""
        self._db_lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._batch: list[_Submission] = []
        self._batch_ops = 0
        self._urgent: list[_Submission] = []
        self._first_at = 0.0
        self._jobs: deque[_Job] = deque()
        self._in_hand: list[asyncio.Future[Any]] = []  # taken by the writer, not yet settled
        self._writable = True
        self._last_error: str | None = None
        self._stopping = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._exited: asyncio.Future[None] | None = None
        self.commits = 0
        """Batches committed (each one transaction, one fsync)."""
        self.ops_committed = 0
        """Ops in those batches."""
        self.probes = 0
        """Probe transactions tried while not writable."""

    # -- state ---------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        """False from a failed write until a probe commits again."""
        return self._writable

    @property
    def last_error(self) -> str | None:
        """Why the store is not writable (SQLite's message); None while writable."""
        return self._last_error

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """Start the writer thread, bound to the running event loop (call it from there)."""
        if self._thread is not None or self._closed:
            raise RuntimeError("store already started or closed")
        self._loop = asyncio.get_running_loop()
        self._exited = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name="alarmgw-store", daemon=False)
        self._thread.start()

    def close(self) -> None:
        """Commit what is pending, stop and join the writer, close the database.

        Blocks for the last commit; from a coroutine prefer `aclose`. Futures of the
        last batch resolve when the loop runs again.
        """
        if self._closed:
            return
        self._request_stop()
        try:
            if self._thread is not None:
                self._thread.join()
        finally:
            self._closed = True
            self._conn.close()

    async def aclose(self) -> None:
        """`close` without blocking the loop while the last batch commits."""
        if self._closed:
            return
        if self._exited is not None:
            self._request_stop()
            try:
                await asyncio.shield(self._exited)
            finally:
                self.close()  # the thread has ended (or ends now): a short join
        else:
            self.close()

    async def __aenter__(self) -> Store:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- writes ----------------------------------------------------------------------
    def submit(self, ops: Sequence[Op], *, urgent: bool = False) -> asyncio.Future[None]:
        """Queue `ops` for the next group commit; the future resolves once they are durable.

        Never blocks. Fails (the future, with StoreUnavailable) at once while the
        store is not writable or once it is closing. The ops commit even if the
        caller stops waiting.
        A failure of a future nobody awaits is not reported as "never retrieved":
        fire-and-forget callers watch `writable` / `on_state_change` instead.
        Call it from the loop thread only.

        `urgent` (life-safety alarms): committed ahead of the pending group, as
        soon as the writer is free and one urgent gap after the previous commit
        began (see "Urgent submissions"); ordinary groups are capped at
        `commit_max_batch` ops, so "as soon as the writer is free" stays short
        even when the store is saturated.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("store not started")
        future: asyncio.Future[None] = loop.create_future()
        if not ops:
            future.set_result(None)
            return future
        with self._cond:
            refusal = self._refusal()
            if refusal is not None:
                _fail(future, StoreUnavailable(refusal))
                return future
            # The writer is woken only when its next decision changes: by the
            # first urgent submission (it sets the wake-up), the first op of a
            # group and the op that fills one; a wake-up per panic in a storm
            # would cost a thread switch each and decide nothing new.
            if urgent:
                if not self._urgent:
                    self._cond.notify()
                self._urgent.append((ops, future))
                return future
            if not self._batch:
                self._first_at = time.monotonic()
                self._cond.notify()
            self._batch.append((ops, future))
            before = self._batch_ops
            self._batch_ops += len(ops)
            if before < self._max_batch <= self._batch_ops:
                self._cond.notify()
        return future

    async def write(self, ops: Sequence[Op]) -> None:
        """Submit `ops` and wait until they are durable (or raise StoreUnavailable)."""
        await self.submit(ops)

    async def prune(
        self,
        *,
        delivered_before: float | None = None,
        seen_before: float | None = None,
        alarms_before: float | None = None,
        final_states: Collection[str] = (),
        chunk: int = 2000,
    ) -> Pruned:
        """Delete delivered outbox rows, old dedup identities and finished alarms.

        Each `None` horizon skips its table; alarms go only if their state is one
        of `final_states` and they were last updated before `alarms_before`. Runs
        on the writer thread, `chunk` rows per transaction, interleaved with batches.
        """
        if chunk < 1:
            raise ValueError("chunk must be positive")
        outbox = seen = alarms = 0
        if delivered_before is not None:
            outbox = await self._prune_delivered(delivered_before, chunk)
        if seen_before is not None:
            seen = await self._delete_chunks(
                "DELETE FROM seen WHERE rowid IN (SELECT rowid FROM seen WHERE ts < ? LIMIT ?)",
                (seen_before,),
                chunk,
            )
        states = sorted(set(final_states))
        if alarms_before is not None and states:
            # Only '?' marks are formatted in; the states are bound parameters. The
            # rowids come from `alarms_state` alone (it holds them), not the table.
            where = f"state IN ({_marks(len(states))}) AND updated < ?"
            select = f"SELECT rowid FROM alarms WHERE {where} LIMIT ?"  # noqa: S608
            alarms = await self._delete_chunks(
                f"DELETE FROM alarms WHERE rowid IN ({select})",  # noqa: S608
                (*states, alarms_before),
                chunk,
            )
        return Pruned(outbox=outbox, seen=seen, alarms=alarms)

    async def _delete_chunks(self, sql: str, params: tuple[object, ...], chunk: int) -> int:
        def step(conn: sqlite3.Connection) -> int:
            return int(conn.execute(sql, (*params, chunk)).rowcount)

        total = 0
        while True:
            done = await self._job(step)
            total += done
            if done < chunk:
                return total

    async def _prune_delivered(self, before: float, chunk: int) -> int:
        """Delete outbox rows delivered before `before`, with their marks, `chunk` a job.

        `delivered` has no index on its time (one more B-tree to rewrite at every
        commit): each job scans on by id from where the last one stopped, so one
        prune reads the table once.
        """
        total = 0
        after: int | None = -(2**63)  # below any id
        while after is not None:
            removed, after = await self._job(
                functools.partial(_prune_delivered_step, before=before, after=after, chunk=chunk)
            )
            total += removed
        return total

    def _job(self, fn: Callable[[sqlite3.Connection], _T]) -> asyncio.Future[_T]:
        loop = self._loop
        if loop is None:
            raise RuntimeError("store not started")
        future: asyncio.Future[_T] = loop.create_future()
        with self._cond:
            refusal = self._refusal()
            if refusal is not None:
                _fail(future, StoreUnavailable(refusal))
                return future
            self._jobs.append((fn, future))
            self._cond.notify()
        return future

    def _refusal(self) -> str | None:
        """Why new work is refused at once (under `_cond`), or None to queue it."""
        if self._stopping:
            # A handler racing the shutdown: like an outage, it does not acknowledge.
            return "store is closed"
        if not self._writable:
            return self._last_error or "store not writable"
        return None

    # -- reads -------------------------------------------------------------------------
    def call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `fn(connection)` exclusively, between the writer's transactions.

        For start-up reads, maintenance and tests; blocks the caller for up to one
        commit. A transaction `fn` leaves open is committed.
        """
        if self._closed:
            raise RuntimeError("store is closed")
        with self._db_lock:
            try:
                result = fn(self._conn)
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")
            return result

    def load_seen(self, since: float) -> list[SeenRow]:
        """Dedup identities recorded at or after `since`, oldest first."""
        rows = self.call(
            lambda c: c.execute(
                # The last row written for each key, as the upsert of schema 1 kept
                # it (SQLite takes the bare columns from the row that gave max()).
                "SELECT key, content, transport, ts, max(rowid) FROM seen WHERE ts >= ?"
                " GROUP BY key ORDER BY ts, key",
                (since,),
            ).fetchall()
        )
        return [SeenRow(key, content, transport, ts) for key, content, transport, ts, _ in rows]

    def load_pending(self) -> list[OutboxRow]:
        """Outbox entries not yet delivered, by lane (priority) then id (age)."""
        rows = self.call(lambda c: c.execute(_SQL_LOAD_PENDING).fetchall())
        return [OutboxRow(i, la, t, q, bool(r), d, m, cr) for i, la, t, q, r, d, m, cr in rows]

    def load_alarms(
        self, states: Collection[str] | None = None, *, updated_since: float | None = None
    ) -> list[AlarmRow]:
        """Alarms in one of `states` (all when None) or, with `updated_since`, also any
        updated since then; least recently updated first."""
        sql = "SELECT alarm_id, data, state, deadline, updated FROM alarms"
        params: tuple[object, ...] = ()
        if states is not None:
            wanted = tuple(sorted(set(states)))
            params = wanted
            where = f"state IN ({_marks(len(wanted))})"
            if updated_since is not None:
                where += " OR updated >= ?"
                params = (*wanted, updated_since)
            sql += f" WHERE {where}"
        rows = self.call(
            lambda c: c.execute(f"{sql} ORDER BY updated, alarm_id", params).fetchall()
        )
        return [AlarmRow(*row) for row in rows]

    def max_outbox_id(self) -> int:
        """The largest outbox id ever stored (0 for none): new ids start above it."""
        row = self.call(
            lambda c: c.execute(
                "SELECT max(coalesce((SELECT max(id) FROM outbox), 0),"
                " coalesce((SELECT value FROM meta WHERE key = 'outbox_max_id'), 0))"
            ).fetchone()
        )
        return int(row[0])

    def pending_count(self) -> int:
        """How many outbox entries are not delivered yet."""
        row = self.call(lambda c: c.execute(_SQL_PENDING_COUNT).fetchone())
        return int(row[0])

    # -- the writer thread ---------------------------------------------------------------
    def _request_stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def _run(self) -> None:
        try:
            while self._step():
                pass
        except Exception as exc:  # noqa: BLE001 - a bug here must fail callers, not hang them
            self._die(exc)
        finally:
            if self._exited is not None:
                self._post(_settle_exited, self._exited)

    def _step(self) -> bool:
        """One turn of the writer: commit a batch and/or run a job, or probe. False: exit."""
        job: _Job | None = None
        with self._cond:
            while True:
                if self._stopping and not self._batch and not self._jobs and not self._urgent:
                    return False
                if not self._writable:
                    batch = self._urgent + self._batch
                    self._urgent, self._batch, self._batch_ops = [], [], 0
                    jobs, self._jobs = list(self._jobs), deque()
                    break
                jobs = []
                now = time.monotonic()
                urgent_at = self._last_commit_at + self._urgent_gap
                group_due = bool(self._batch) and (
                    self._stopping
                    or self._batch_ops >= self._max_batch
                    or now >= self._first_at + self._interval
                )
                if self._urgent and (group_due or self._stopping or now >= urgent_at):
                    # Urgent first; the ordinary pending ride along, a short group.
                    batch, self._urgent = self._urgent, []
                    batch += self._take_group(max(1, self._max_batch // 4))
                    job = self._jobs.popleft() if self._jobs else None
                    break
                if group_due:
                    batch = self._take_group()
                    job = self._jobs.popleft() if self._jobs else None
                    break
                if self._jobs:
                    batch, job = [], self._jobs.popleft()
                    break
                wake = [self._first_at + self._interval] if self._batch else []
                if self._urgent:
                    wake.append(urgent_at)
                if wake:
                    self._cond.wait(max(0.0, min(wake) - now))
                else:
                    self._cond.wait()
            writable = self._writable
        if not writable:
            self._refuse(batch, jobs)
            return self._wait_and_probe()
        self._in_hand = [future for _, future in batch]
        if job is not None:
            self._in_hand.append(job[1])
        if batch:
            self._commit(batch)
        if job is not None:
            self._run_job(job)
        self._in_hand = []
        return True

    def _take_group(self, max_ops: int | None = None) -> list[_Submission]:
        """The oldest pending submissions, up to `max_ops` (`commit_max_batch`) ops
        (at least one, if any are pending)."""
        limit = self._max_batch if max_ops is None else max_ops
        taken = 0
        count = 0
        for ops, _ in self._batch:
            if count and taken + len(ops) > limit:
                break
            taken += len(ops)
            count += 1
        batch, self._batch = self._batch[:count], self._batch[count:]
        self._batch_ops -= taken
        if self._batch:
            self._first_at = time.monotonic()
        return batch

    def _refuse(self, batch: list[_Submission], jobs: list[_Job]) -> None:
        reason = self._last_error or "store not writable"
        if batch:
            self._post(_fail_all, [f for _, f in batch], reason)
        if jobs:
            self._post(_fail_all, [f for _, f in jobs], reason)

    def _wait_and_probe(self) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, self._retry_s)
            if self._stopping:
                return True  # the next step refuses what is left and exits
        self.probes += 1
        try:
            self._transaction(lambda c: c.execute(_SQL_PROBE, (time.time(),)))
        except sqlite3.Error as exc:
            with self._cond:
                self._last_error = str(exc)
            return True
        with self._cond:
            self._writable = True
            self._last_error = None
        self._post_state(writable=True, reason=None)
        return True

    def _transaction(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn
        with self._db_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (a failed COMMIT on a full disk).
                if conn.in_transaction:
                    # The original error says more; the next BEGIN starts clean anyway.
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        return result

    def _commit(self, batch: list[_Submission]) -> None:
        self._last_commit_at = time.monotonic()
        futures = [future for _, future in batch]
        try:
            self._transaction(
                lambda c: _apply(c, itertools.chain.from_iterable(ops for ops, _ in batch))
            )
        except _CALLER_ERRORS:
            try:
                outcomes = self._transaction(lambda c: _apply_each(c, batch))
            except sqlite3.Error as exc:
                self._unavailable(exc, futures)
                return
            self._count(batch, outcomes)
            self._post(_settle, futures, outcomes)
            return
        except sqlite3.Error as exc:
            self._unavailable(exc, futures)
            return
        self._count(batch, None)
        self._post(_resolve_all, futures)

    def _count(self, batch: list[_Submission], outcomes: list[Exception | None] | None) -> None:
        self.commits += 1
        if outcomes is None:
            self.ops_committed += sum(len(ops) for ops, _ in batch)
        else:
            self.ops_committed += sum(
                len(ops) for (ops, _), err in zip(batch, outcomes, strict=True) if err is None
            )

    def _run_job(self, job: _Job) -> None:
        fn, future = job
        try:
            result = self._transaction(fn)
        except sqlite3.Error as exc:
            self._unavailable(exc, [future])
            return
        self._post(_settle_job, future, result)

    def _unavailable(self, exc: sqlite3.Error, futures: Sequence[asyncio.Future[Any]]) -> None:
        reason = str(exc)
        with self._cond:
            was = self._writable
            self._writable = False
            self._last_error = reason
        self._post(_fail_all, futures, reason)
        if was:
            self._post_state(writable=False, reason=reason)

    def _die(self, exc: Exception) -> None:
        reason = f"store writer stopped: {exc!r}"
        with self._cond:
            # Not `_stopping`: submissions keep failing fast with StoreUnavailable.
            self._writable = False
            self._last_error = reason
            batch, self._batch, self._urgent = self._urgent + self._batch, [], []
            jobs, self._jobs = list(self._jobs), deque()
        # What the writer held when it failed, then what was still queued.
        self._post(_fail_all, self._in_hand, reason)
        self._refuse(batch, jobs)
        self._post_state(writable=False, reason=reason)

    def _post_state(self, *, writable: bool, reason: str | None) -> None:
        if self._on_state_change is not None:
            self._post(self._on_state_change, writable, reason)

    def _post(self, fn: Callable[..., object], *args: object) -> None:
        loop = self._loop
        if loop is None:  # pragma: no cover - the thread only runs after start()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            loop.call_soon_threadsafe(fn, *args)


def read_alarm_data(
    path: str | os.PathLike[str], *, updated_since: float, open_states: Collection[str]
) -> list[bytes]:
    """The records of alarms updated since `updated_since`, or still in one of
    `open_states`, from a store file opened read-only (a running gateway goes on
    writing; WAL lets the reader see the last commit). For reports, not the gateway.

    Raises FileNotFoundError if there is no store there, StoreSchemaError if it is
    of a layout this alarmgw does not know.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no store at {os.fspath(path)}")
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        found = int(row[0]) if row is not None else 0
        if found != SCHEMA_VERSION:
            raise StoreSchemaError(
                f"store schema {found}, this alarmgw reads {SCHEMA_VERSION}: "
                "open it once with this version's gateway to upgrade it"
            )
        states = sorted(set(open_states))
        where = f"updated >= ? OR state IN ({_marks(len(states))})" if states else "updated >= ?"
        rows = conn.execute(
            f"SELECT data FROM alarms WHERE {where} ORDER BY rowid",  # noqa: S608 - marks only
            (updated_since, *states),
        ).fetchall()
    finally:
        conn.close()
    return [bytes(data) for (data,) in rows]


# --------------------------------------------------------------------- helpers
def _setup(conn: sqlite3.Connection, synchronous: str, busy_timeout_ms: int) -> str:
    """Pragmas, schema and the version guard; returns the journal mode in effect."""
    mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-32768")  # 32 MiB: indexes of a busy day stay hot
    conn.execute("PRAGMA journal_size_limit=67108864")  # shrink the WAL after a big prune
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    found = 0
    if has_meta:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        found = int(row[0]) if row is not None else 0
    if found > SCHEMA_VERSION:
        raise StoreSchemaError(
            f"database schema version {found} is newer than this alarmgw's "
            f"({SCHEMA_VERSION}); use a newer alarmgw or another store path"
        )
    if found == SCHEMA_VERSION:
        # Nothing to write: a store on a full or read-only disk still opens (and
        # its `writable` state, not a refusal to start, reports the disk).
        return mode
    conn.execute("BEGIN IMMEDIATE")
    try:
        if found == 1:
            # Schema 1 kept `seen` keyed by its text key: move its rows to the log.
            conn.execute("ALTER TABLE seen RENAME TO seen_v1")
            conn.execute("DROP INDEX IF EXISTS seen_ts")
        # Statement by statement: executescript() would COMMIT before it starts.
        for statement in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
            conn.execute(statement)
        if found == 1:
            conn.execute(
                "INSERT INTO seen(key, content, transport, ts)"
                " SELECT key, content, transport, ts FROM seen_v1 ORDER BY ts"
            )
            conn.execute("DROP TABLE seen_v1")
        if found and "delivered" in _columns(conn, "outbox"):
            _split_delivered(conn)
        if found and _alarms_keyed_by_id(conn):
            _rebuild_alarms(conn)
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return mode


def _prune_delivered_step(
    conn: sqlite3.Connection, *, before: float, after: int, chunk: int
) -> tuple[int, int | None]:
    """One prune job: the next `chunk` marks older than `before` with ids above `after`,
    their outbox rows with them. Returns the outbox rows removed and where to go on
    (None: the scan reached the end)."""
    # Remember the largest outbox id ever used, so that ids are never reused
    # after the newest rows are pruned (max_outbox_id).
    conn.execute(_SQL_HIGH_WATER)
    found, last = conn.execute(
        "SELECT count(*), max(id) FROM"
        " (SELECT id FROM delivered WHERE id > ? AND at < ? ORDER BY id LIMIT ?)",
        (after, before, chunk),
    ).fetchone()
    if not found:
        return 0, None
    where = "id > ? AND id <= ? AND at < ?"
    params = (after, last, before)
    # Only a constant condition is formatted in.
    removed = conn.execute(
        f"DELETE FROM outbox WHERE id IN (SELECT id FROM delivered WHERE {where})",  # noqa: S608
        params,
    ).rowcount
    conn.execute(f"DELETE FROM delivered WHERE {where}", params)  # noqa: S608
    return int(removed), (int(last) if found == chunk else None)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in conn.execute("SELECT * FROM pragma_table_info(?)", (table,))}


def _split_delivered(conn: sqlite3.Connection) -> None:
    """Schemas 1 and 2 marked delivery in an outbox column: move the marks to `delivered`.

    The table is rebuilt (new, copy, drop, rename), not altered: DROP COLUMN needs
    SQLite 3.35, and the old table's two partial indexes go with it.
    """
    columns = "id, lane, topic, qos, retain, data, meta, created"
    conn.execute(f"CREATE TABLE outbox_v3({_OUTBOX_COLUMNS})")
    # Only constant column names are formatted in.
    conn.execute(
        f"INSERT INTO outbox_v3({columns}) SELECT {columns} FROM outbox ORDER BY id"  # noqa: S608
    )
    conn.execute(
        "INSERT INTO delivered(id, at)"
        " SELECT id, delivered FROM outbox WHERE delivered IS NOT NULL ORDER BY id"
    )
    conn.execute("DROP TABLE outbox")
    conn.execute("ALTER TABLE outbox_v3 RENAME TO outbox")


def _alarms_keyed_by_id(conn: sqlite3.Connection) -> bool:
    """Whether `alarms` has the layout of schemas 1 and 2 (WITHOUT ROWID, its id the key)."""
    row = conn.execute("SELECT 1 FROM pragma_index_list('alarms') WHERE origin = 'pk'").fetchone()
    return row is not None


def _rebuild_alarms(conn: sqlite3.Connection) -> None:
    """Rebuild `alarms` as a rowid table with a unique id (see "Layout"), every row kept.

    Copied oldest first, so the rowids follow age as new rows' do: the alarms still
    changing sit at the table's tail. Dropping the old table drops its index too.
    """
    columns = "alarm_id, data, state, deadline, updated"
    conn.execute(f"CREATE TABLE alarms_v3({_ALARM_COLUMNS})")
    # Only constant column names are formatted in.
    conn.execute(
        f"INSERT INTO alarms_v3({columns})"  # noqa: S608
        f" SELECT {columns} FROM alarms ORDER BY updated, alarm_id"
    )
    conn.execute("DROP TABLE alarms")
    conn.execute("ALTER TABLE alarms_v3 RENAME TO alarms")
    conn.execute(_ALARMS_STATE)


def _apply(conn: sqlite3.Connection, ops: Iterable[Op]) -> None:
    """Write ops, a few multi-row statements per kind; see "Order inside a batch"."""
    # An op is a tuple in its statement's column order: it is its own row of
    # parameters (no per-op tuple built here; sqlite3 binds a bool as 0 or 1).
    seen: list[tuple[object, ...]] = []
    adds: list[tuple[object, ...]] = []
    delivered: dict[int, float] = {}
    alarm_runs: list[tuple[_Rows, list[tuple[object, ...]]]] = []
    for op in ops:
        kind = type(op)  # exact types, most frequent first; a subclass is not an op
        if kind is OutboxAdd:
            adds.append(op)
        elif kind is SeenOp:
            seen.append(op)
        elif type(op) is OutboxDelivered:  # (spelled out: mypy narrows `op` on this)
            delivered.setdefault(op.id, op.at)  # the first mark of an id wins
        elif kind is AlarmPut:
            _run_of(alarm_runs, _SQL_ALARM_PUT_ROWS).append(op)
        elif kind is AlarmDelete:
            _run_of(alarm_runs, _SQL_ALARM_DELETE_ROWS).append(op)
        else:
            raise TypeError(f"not a store op: {op!r}")
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    if seen:
        # Repeating a row adds a copy `load_seen` folds away: the tail is padded.
        _write_rows(conn, _SQL_SEEN_ROWS, seen, pad=True, limit=limit)
    if adds:
        _write_rows(conn, _SQL_ADD_ROWS, adds, pad=False, limit=limit)
    if delivered:
        # A repeated mark changes nothing (DO NOTHING): the padded tail is harmless.
        _write_rows(conn, _SQL_DELIVERED_ROWS, list(delivered.items()), pad=True, limit=limit)
    for statement, rows in alarm_runs:
        # Runs in submission order. Within a run of puts SQLite applies the rows in
        # order, so a later put of an alarm updates over an earlier one; the padded
        # tail repeats the run's last put (or delete), which changes nothing more.
        _write_rows(conn, statement, rows, pad=True, limit=limit)


# Multi-row statements (see "Few statements per commit"): chunk sizes come from
# a fixed ladder, so each table has a handful of distinct statements, prepared
# once and then served from the connection's statement cache. No statement binds
# more values than the connection allows (999 before SQLite 3.32, 32766 since).
_LADDER: Final = (256, 128, 64, 32, 16, 8, 4, 2, 1)
_MAX_VALUES: Final = 999
# A mark is an append to `delivered`, for an id the outbox holds (a mark for an
# unknown or pruned id changes nothing, as the UPDATE of schema 2 did); the first
# mark of an id wins. DO NOTHING, not OR IGNORE: a NULL time is the caller's error.
# (The SELECT has a WHERE clause, which SQLite needs before ON CONFLICT there.)
_SQL_DELIVERED_ROWS: Final = (
    "INSERT INTO delivered(id, at) SELECT v.column1, v.column2 FROM (VALUES",
    "(?, ?)",
    2,
    (
        ") AS v WHERE EXISTS (SELECT 1 FROM outbox WHERE outbox.id = v.column1)"
        " ON CONFLICT(id) DO NOTHING"
    ),
)
# Upserts of alarms: rows apply one after the other, so the last put of an alarm
# in a statement is the one left (a later row updates the row an earlier one
# wrote; SQLite, unlike PostgreSQL, allows that). Deletes of a run go in one IN.
_SQL_ALARM_PUT_ROWS: Final = (
    "INSERT INTO alarms(alarm_id, data, state, deadline, updated) VALUES",
    "(?, ?, ?, ?, ?)",
    5,
    (
        "ON CONFLICT(alarm_id) DO UPDATE SET data = excluded.data, state = excluded.state,"
        " deadline = excluded.deadline, updated = excluded.updated"
    ),
)
_SQL_ALARM_DELETE_ROWS: Final = ("DELETE FROM alarms WHERE alarm_id IN (", "?", 1, ")")
_SQL_SEEN_ROWS: Final = (
    "INSERT INTO seen(key, content, transport, ts) VALUES",
    "(?, ?, ?, ?)",
    4,
    "",
)
_SQL_ADD_ROWS: Final = (
    "INSERT INTO outbox(id, lane, topic, qos, retain, data, meta, created) VALUES",
    "(?, ?, ?, ?, ?, ?, ?, ?)",
    8,
    "",
)


def _chunks(
    rows: Sequence[_T], width: int, *, pad: bool, max_values: int = _MAX_VALUES
) -> Iterable[Sequence[_T]]:
    """`rows` cut to ladder sizes of at most `max_values` values; with `pad`, the
    tail is one statement filled up with copies of its last row (for idempotent writes)."""
    ladder = [n for n in _LADDER if n * width <= max_values] or [1]
    start = 0
    while start < len(rows):
        left = len(rows) - start
        if pad and left < ladder[0]:
            size = min(n for n in ladder if n >= left)
        else:
            size = max(n for n in ladder if n <= left)
        chunk = rows[start : start + size]
        if len(chunk) < size:
            chunk = [*chunk, *[chunk[-1]] * (size - len(chunk))]
        yield chunk
        start += size


def _write_rows(
    conn: sqlite3.Connection,
    statement: _Rows,
    rows: Sequence[tuple[object, ...]],
    *,
    pad: bool,
    limit: int = _MAX_VALUES,
) -> None:
    head, row, width, tail = statement
    for chunk in _chunks(rows, width, pad=pad, max_values=limit):
        sql = _rows_sql(head, row, len(chunk), tail)
        conn.execute(sql, list(itertools.chain.from_iterable(chunk)))


@functools.cache
def _rows_sql(head: str, row: str, n: int, tail: str) -> str:
    return f"{head} {', '.join([row] * n)} {tail}"


def _marks(n: int) -> str:
    """`n` SQL parameter marks: the only thing ever formatted into our SQL."""
    return ", ".join("?" * n)


def _run_of(
    runs: list[tuple[_Rows, list[tuple[object, ...]]]], statement: _Rows
) -> list[tuple[object, ...]]:
    """The parameter list of the last run if it is `statement`'s, else a new run."""
    if not runs or runs[-1][0] is not statement:
        runs.append((statement, []))
    return runs[-1][1]


def _apply_each(conn: sqlite3.Connection, batch: list[_Submission]) -> list[Exception | None]:
    """Apply each submission under its own savepoint; return each one's error or None."""
    outcomes: list[Exception | None] = []
    for ops, _ in batch:
        conn.execute("SAVEPOINT submission")
        try:
            _apply(conn, ops)
        except _CALLER_ERRORS as exc:
            conn.execute("ROLLBACK TO submission")
            outcomes.append(exc)
        else:
            outcomes.append(None)
        conn.execute("RELEASE submission")
    return outcomes


# Loop-side callbacks (run by call_soon_threadsafe, one per batch).
def _fail(future: asyncio.Future[_T], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
        future.exception()  # retrieved: an unawaited failure is not logged as lost


def _resolve_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _fail_all(futures: Sequence[asyncio.Future[Any]], reason: str) -> None:
    for future in futures:
        _fail(future, StoreUnavailable(reason))  # one instance each: tracebacks stay apart


def _settle(futures: list[asyncio.Future[None]], outcomes: list[Exception | None]) -> None:
    for future, error in zip(futures, outcomes, strict=True):
        if error is None:
            if not future.done():
                future.set_result(None)
        else:
            _fail(future, error)


def _settle_job(future: asyncio.Future[_T], result: _T) -> None:
    if not future.done():
        future.set_result(result)


def _settle_exited(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
