"""The durable store: group commit, recovery reads, pruning, and an unwritable disk.

An unwritable store is made with SQLite's own switches on the store's connection
(through `Store.call`, which runs between the writer's transactions), because
file modes do not stop root: `PRAGMA query_only` makes every write fail with
SQLITE_READONLY ("attempt to write a readonly database"), and `PRAGMA
max_page_count` makes a growing write fail with SQLITE_FULL ("database or disk is
full"), the same errors and code paths as a read-only mount or a full disk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import sqlite3
import tempfile
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters import store as store_module
from gateway.adapters.store import (
    SCHEMA_VERSION,
    AlarmDelete,
    AlarmPut,
    AlarmRow,
    Op,
    OutboxAdd,
    OutboxDelivered,
    OutboxRow,
    Pruned,
    SeenOp,
    SeenRow,
    Store,
    StoreSchemaError,
    StoreUnavailable,
    read_alarm_data,
)

_WAIT_S = 10.0  # generous upper bound for a wake-up; never a timing assertion


def _add(i: int, lane: int = 1, created: float = 100.0) -> OutboxAdd:
    return OutboxAdd(i, lane, f"t/{i}", 1, i % 2 == 0, b"d%d" % i, b"m", created)


def _row(add: OutboxAdd) -> OutboxRow:
    return OutboxRow(
        add.id, add.lane, add.topic, add.qos, add.retain, add.data, add.meta, add.created
    )


def _event(n: int, now: float = 100.0) -> list[Op]:
    """One accepted event's ops: its identity, two dispatches, its alarm."""
    return [
        SeenOp(f"k{n}", f"c{n}", "mqtt", now),
        _add(2 * n + 1, created=now),
        _add(2 * n + 2, created=now),
        AlarmPut(f"a{n}", b"alarm", "raised", now + 60, now),
    ]


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await scenario()

    asyncio.run(main())


def _delivered_at(store: Store, outbox_id: int) -> float | None:
    row = store.call(
        lambda c: c.execute("SELECT at FROM delivered WHERE id = ?", (outbox_id,)).fetchone()
    )
    return None if row is None else row[0]


async def _until(condition: Callable[[], bool]) -> None:
    """Wait until `condition()` holds, polling the writer's counters (bounded by _WAIT_S)."""
    for _ in range(int(_WAIT_S / 0.002)):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition never held")


def _health(store: Store) -> tuple[bool, str | None]:
    return store.writable, store.last_error


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "alarmgw-store"]


# ----------------------------------------------------------------- durability
def test_every_op_survives_a_restart(tmp_path: Path) -> None:
    """Each kind of op is read back, unchanged, after close and reopen."""
    path = tmp_path / "gw.db"

    async def scenario() -> None:
        async with Store(path) as store:
            await store.write(
                [
                    SeenOp("k1", "c1", "mqtt", 10.0),
                    SeenOp("k2", None, "serial", 20.0),
                    _add(1, lane=0),
                    _add(2, lane=2),
                    _add(3, lane=1),
                    AlarmPut("a1", b"one", "raised", 70.0, 10.0),
                    AlarmPut("a2", b"two", "acknowledged", None, 11.0),
                    AlarmPut("gone", b"x", "raised", 1.0, 1.0),
                ]
            )
            await store.write([OutboxDelivered(3, 50.0), AlarmDelete("gone")])

    _run(scenario)
    store = Store(path)
    try:
        assert store.load_seen(0.0) == [
            SeenRow("k1", "c1", "mqtt", 10.0),
            SeenRow("k2", None, "serial", 20.0),
        ]
        assert store.load_seen(15.0) == [SeenRow("k2", None, "serial", 20.0)]
        assert store.load_pending() == [_row(_add(1, lane=0)), _row(_add(2, lane=2))]
        assert store.pending_count() == 2
        assert store.max_outbox_id() == 3
        assert _delivered_at(store, 3) == 50.0
        assert store.load_alarms() == [
            AlarmRow("a1", b"one", "raised", 70.0, 10.0),
            AlarmRow("a2", b"two", "acknowledged", None, 11.0),
        ]
        assert store.load_alarms({"raised", "escalated"}) == [
            AlarmRow("a1", b"one", "raised", 70.0, 10.0)
        ]
        # Open ones, and whatever changed since a moment (a restart's read-back).
        assert store.load_alarms({"escalated"}, updated_since=10.5) == [
            AlarmRow("a2", b"two", "acknowledged", None, 11.0)
        ]
        assert store.load_alarms({"raised"}, updated_since=10.5) == [
            AlarmRow("a1", b"one", "raised", 70.0, 10.0),
            AlarmRow("a2", b"two", "acknowledged", None, 11.0),
        ]
        assert store.journal_mode == "wal"
    finally:
        store.close()
    # A report reads the same file read-only.
    assert read_alarm_data(path, updated_since=10.5, open_states=()) == [b"two"]
    assert read_alarm_data(path, updated_since=99.0, open_states=("raised",)) == [b"one"]
    with pytest.raises(FileNotFoundError, match="no store at"):
        read_alarm_data(path.with_name("nope.sqlite"), updated_since=0.0, open_states=())


def test_a_report_refuses_a_store_of_another_layout(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value)")
    conn.execute("INSERT INTO meta VALUES ('schema', 2)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreSchemaError, match="store schema 2"):
        read_alarm_data(path, updated_since=0.0, open_states=())


def test_close_commits_what_is_pending(tmp_path: Path) -> None:
    """A batch still inside its interval is committed by close, and its future resolves."""
    path = tmp_path / "gw.db"

    async def scenario() -> None:
        store = Store(path, commit_interval_ms=3_600_000)
        store.start()
        future = store.submit(_event(1))
        await store.aclose()
        assert future.done()
        assert future.result() is None
        assert store.commits == 1

    _run(scenario)
    store = Store(path)
    try:
        assert store.pending_count() == 2
    finally:
        store.close()


def test_sync_close_after_the_loop_ended(tmp_path: Path) -> None:
    """close() from plain code commits the last batch even when its loop is gone."""
    path = tmp_path / "gw.db"
    store = Store(path, commit_interval_ms=3_600_000)

    async def scenario() -> None:
        store.start()
        store.submit(_event(1))

    _run(scenario)
    store.close()
    store.close()  # idempotent
    assert not _store_threads()
    reopened = Store(path)
    try:
        assert reopened.pending_count() == 2
    finally:
        reopened.close()


def test_synchronous_normal_is_accepted(tmp_path: Path) -> None:
    """synchronous="normal" opens and writes (durable across a crash, not a power cut)."""

    async def scenario() -> None:
        async with Store(tmp_path / "gw.db", synchronous="normal") as store:
            await store.write(_event(1))
            assert store.call(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 1

    _run(scenario)


# ----------------------------------------------------------------- group commit
def test_submissions_inside_one_interval_share_one_commit() -> None:
    """N events submitted before the batch is full commit in exactly one transaction."""

    async def scenario() -> None:
        events = 50
        # The interval never ends; the batch-size bound alone triggers the commit.
        async with Store(
            ":memory:", commit_interval_ms=3_600_000, commit_max_batch=4 * events
        ) as store:
            futures = [store.submit(_event(n)) for n in range(events)]
            await asyncio.wait_for(asyncio.gather(*futures), _WAIT_S)
            assert store.commits == 1
            assert store.ops_committed == 4 * events
            assert store.pending_count() == 2 * events

    _run(scenario)


def test_a_lone_submission_commits_when_its_interval_ends() -> None:
    """A batch that never fills is committed once its interval has passed."""

    async def scenario() -> None:
        async with Store(":memory:", commit_interval_ms=1, commit_max_batch=10**6) as store:
            await asyncio.wait_for(store.write(_event(1)), _WAIT_S)
            assert store.commits == 1

    _run(scenario)


def test_interval_zero_commits_at_once() -> None:
    """With no interval every submission is written as soon as the writer is free."""

    async def scenario() -> None:
        async with Store(":memory:", commit_interval_ms=0) as store:
            for n in range(3):
                await asyncio.wait_for(store.write(_event(n)), _WAIT_S)
            assert store.commits == 3

    _run(scenario)


def test_empty_submission_is_already_durable() -> None:
    """Nothing to write resolves at once and costs no commit."""

    async def scenario() -> None:
        async with Store(":memory:") as store:
            future = store.submit([])
            assert future.done()
            await future
            assert store.commits == 0

    _run(scenario)


def test_a_cancelled_waiter_does_not_unwrite() -> None:
    """Ops whose caller stopped waiting are committed all the same."""

    async def scenario() -> None:
        async with Store(":memory:", commit_interval_ms=3_600_000, commit_max_batch=8) as store:
            first = store.submit(_event(1))
            first.cancel()
            await asyncio.wait_for(store.write(_event(2)), _WAIT_S)
            assert store.pending_count() == 4

    _run(scenario)


# ----------------------------------------------------------------- order and semantics
def test_pending_is_ordered_by_lane_then_id() -> None:
    """load_pending gives priority lanes first, oldest first in a lane; delivered ones never."""

    async def scenario() -> None:
        async with Store(":memory:") as store:
            adds = [_add(5, 2), _add(1, 1), _add(4, 0), _add(2, 2), _add(3, 1), _add(6, 0)]
            await store.write(adds)
            await store.write([OutboxDelivered(6, 200.0)])
            assert [r.id for r in store.load_pending()] == [4, 1, 3, 2, 5]
            assert store.pending_count() == 5

    _run(scenario)


def test_delivered_mark_follows_its_add_in_one_batch() -> None:
    """A mark for an entry added in the same batch applies; the first mark's time stays."""

    async def scenario() -> None:
        async with Store(":memory:", commit_interval_ms=3_600_000, commit_max_batch=4) as store:
            # One batch: the mark is submitted first, its add second.
            mark = store.submit([OutboxDelivered(1, 5.0)])
            added = store.submit([_add(1), _add(2), OutboxDelivered(99, 1.0)])
            await asyncio.wait_for(asyncio.gather(mark, added), _WAIT_S)
            assert store.commits == 1
            await store.write([OutboxDelivered(1, 9.0)] * 4)  # a full batch: commits at once
            assert _delivered_at(store, 1) == 5.0
            assert [r.id for r in store.load_pending()] == [2]

    _run(scenario)


def test_alarm_ops_apply_in_submission_order() -> None:
    """Puts and deletes of one alarm in one batch leave what the last op says."""

    async def scenario() -> None:
        async with Store(":memory:", commit_interval_ms=3_600_000, commit_max_batch=5) as store:
            await asyncio.wait_for(
                store.write(
                    [
                        AlarmPut("a", b"1", "raised", 1.0, 1.0),
                        AlarmDelete("a"),
                        AlarmPut("a", b"2", "dispatched", 2.0, 2.0),
                        AlarmPut("b", b"1", "raised", 1.0, 1.0),
                        AlarmDelete("b"),
                    ]
                ),
                _WAIT_S,
            )
            assert store.load_alarms() == [AlarmRow("a", b"2", "dispatched", 2.0, 2.0)]

    _run(scenario)


def test_a_bad_op_fails_only_its_own_submission() -> None:
    """A duplicate outbox id or a non-op fails its submission; the batch's others commit."""

    async def scenario() -> None:
        async with Store(":memory:", commit_interval_ms=3_600_000, commit_max_batch=8) as store:
            good = store.submit([_add(1), _add(2), SeenOp("k", None, "mqtt", 1.0)])
            duplicate = store.submit([_add(3), _add(1)])
            wrong: Any = "not an op"
            alien = store.submit([wrong])
            later = store.submit([_add(4), _add(5)])
            results = await asyncio.wait_for(
                asyncio.gather(good, duplicate, alien, later, return_exceptions=True), _WAIT_S
            )
            assert results[0] is None
            assert isinstance(results[1], sqlite3.IntegrityError)
            assert isinstance(results[2], TypeError)
            assert results[3] is None
            assert [r.id for r in store.load_pending()] == [1, 2, 4, 5]
            assert store.writable
            assert store.commits == 1
            assert store.ops_committed == 3 + 2

    _run(scenario)


# ----------------------------------------------------------------- pruning
def test_prune_removes_only_what_is_old_and_finished() -> None:
    """Delivered rows, old identities and final alarms before their horizons go; no more."""

    async def scenario() -> None:
        async with Store(":memory:") as store:
            ops: list[Op] = [_add(i, created=float(i)) for i in range(1, 11)]
            ops += [OutboxDelivered(i, float(i)) for i in (1, 2, 3, 4, 5, 9, 10)]
            ops += [SeenOp(f"k{i}", None, "mqtt", float(i)) for i in range(1, 8)]
            ops += [
                AlarmPut("old-ack", b"", "acknowledged", None, 1.0),
                AlarmPut("old-clear", b"", "cleared", None, 2.0),
                AlarmPut("old-raised", b"", "raised", 9.0, 3.0),
                AlarmPut("new-ack", b"", "acknowledged", None, 50.0),
            ]
            await store.write(ops)
            pruned = await store.prune(
                delivered_before=9.5,
                seen_before=5.0,
                alarms_before=10.0,
                final_states=("acknowledged", "cleared"),
                chunk=2,
            )
            assert pruned == Pruned(outbox=6, seen=4, alarms=2)
            assert [r.id for r in store.load_pending()] == [6, 7, 8]
            assert _delivered_at(store, 10) == 10.0
            assert [r.key for r in store.load_seen(0.0)] == ["k5", "k6", "k7"]
            assert [a.alarm_id for a in store.load_alarms()] == ["old-raised", "new-ack"]
            assert await store.prune() == Pruned()
            # Pruning the newest rows never lowers where new ids start.
            await store.write([OutboxDelivered(i, 20.0) for i in (6, 7, 8)])
            assert (await store.prune(delivered_before=100.0)).outbox == 4
            assert store.pending_count() == 0
            assert store.max_outbox_id() == 10

    _run(scenario)


def test_prune_rejects_a_zero_chunk() -> None:
    """A chunk must hold at least one row."""

    async def scenario() -> None:
        async with Store(":memory:") as store:
            with pytest.raises(ValueError, match="chunk"):
                await store.prune(seen_before=1.0, chunk=0)

    _run(scenario)


# ----------------------------------------------------------------- an unwritable store
def test_read_only_store_refuses_then_recovers_by_itself() -> None:
    """Writes fail with StoreUnavailable while read-only; a probe restores writability."""

    async def scenario() -> None:
        states: asyncio.Queue[tuple[bool, str | None]] = asyncio.Queue()
        async with Store(
            ":memory:",
            retry_s=0.01,
            on_state_change=lambda ok, why: states.put_nowait((ok, why)),
        ) as store:
            await store.write(_event(1))
            store.call(lambda c: c.execute("PRAGMA query_only=ON"))
            with pytest.raises(StoreUnavailable, match="readonly") as failed:
                await asyncio.wait_for(store.write(_event(2)), _WAIT_S)
            assert "readonly" in failed.value.reason
            writable, error = _health(store)
            assert not writable
            assert error is not None
            assert "readonly" in error
            assert await asyncio.wait_for(states.get(), _WAIT_S) == (False, error)
            refused = store.submit(_event(3))  # fails fast, nothing queued
            assert refused.done()
            assert isinstance(refused.exception(), StoreUnavailable)
            with pytest.raises(StoreUnavailable):
                await store.prune(seen_before=1.0)
            probes = store.probes
            await _until(lambda: store.probes >= probes + 2)
            assert _health(store) == (False, error)  # failed probes leave it unwritable

            store.call(lambda c: c.execute("PRAGMA query_only=OFF"))
            assert await asyncio.wait_for(states.get(), _WAIT_S) == (True, None)
            assert _health(store) == (True, None)
            await asyncio.wait_for(store.write(_event(4)), _WAIT_S)
            assert [r.id for r in store.load_pending()] == [3, 4, 9, 10]

    _run(scenario)


def test_full_disk_fails_the_batch_and_recovers_with_room() -> None:
    """SQLITE_FULL fails the batch with the disk's reason; with room again, writes succeed."""

    async def scenario() -> None:
        states: asyncio.Queue[tuple[bool, str | None]] = asyncio.Queue()
        async with Store(
            ":memory:",
            retry_s=0.01,
            on_state_change=lambda ok, why: states.put_nowait((ok, why)),
        ) as store:
            store.call(
                lambda c: c.execute(
                    f"PRAGMA max_page_count={c.execute('PRAGMA page_count').fetchone()[0]}"
                )
            )
            big = [OutboxAdd(1, 0, "t", 1, False, bytes(200_000), b"", 1.0)]
            with pytest.raises(StoreUnavailable, match="full"):
                await asyncio.wait_for(store.write(big), _WAIT_S)
            assert (await asyncio.wait_for(states.get(), _WAIT_S))[0] is False
            store.call(lambda c: c.execute("PRAGMA max_page_count=1000000"))
            # The probe is a tiny write: it may already have passed; either way it ends True.
            while not (await asyncio.wait_for(states.get(), _WAIT_S))[0] or not store.writable:
                pass
            await asyncio.wait_for(store.write(big), _WAIT_S)
            assert store.pending_count() == 1

    _run(scenario)


def test_a_close_while_unwritable_fails_what_is_left() -> None:
    """Closing during an outage ends the writer at once; no probe holds it up."""

    async def scenario() -> None:
        store = Store(":memory:", retry_s=3600)
        store.start()
        store.call(lambda c: c.execute("PRAGMA query_only=ON"))
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.write(_event(1)), _WAIT_S)
        await asyncio.wait_for(store.aclose(), _WAIT_S)
        assert not _store_threads()

    _run(scenario)


def test_an_unawaited_failure_is_not_reported_as_lost() -> None:
    """Fire-and-forget submissions that fail raise no "exception was never retrieved"."""
    reports: list[dict[str, Any]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reports.append(ctx))
        async with Store(":memory:", retry_s=3600) as store:
            store.call(lambda c: c.execute("PRAGMA query_only=ON"))
            store.submit([OutboxDelivered(1, 1.0)])  # fails in the writer
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(store.write([OutboxDelivered(2, 1.0)]), _WAIT_S)
            store.submit([OutboxDelivered(3, 1.0)])  # fails fast
            gc.collect()

    _run(scenario)
    gc.collect()
    assert reports == []


def test_a_writer_bug_fails_callers_instead_of_hanging_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unexpected exception in the writer fails the batch and every later submission."""

    def broken(conn: sqlite3.Connection, ops: object) -> None:
        raise RuntimeError("bug")

    async def scenario() -> None:
        states: asyncio.Queue[tuple[bool, str | None]] = asyncio.Queue()
        async with Store(
            ":memory:", on_state_change=lambda ok, why: states.put_nowait((ok, why))
        ) as s:
            monkeypatch.setattr(store_module, "_apply", broken)
            with pytest.raises(StoreUnavailable, match="bug"):
                await asyncio.wait_for(s.write(_event(1)), _WAIT_S)
            assert not _health(s)[0]
            with pytest.raises(StoreUnavailable, match="bug"):
                await s.write(_event(2))
            assert (await asyncio.wait_for(states.get(), _WAIT_S))[0] is False

    _run(scenario)
    assert not _store_threads()


# ----------------------------------------------------------------- lifecycle and misuse
def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database from a newer alarmgw is not opened (nor written)."""
    path = tmp_path / "gw.db"
    store = Store(path)
    store.call(
        lambda c: c.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION + 1,))
    )
    store.close()
    with pytest.raises(StoreSchemaError, match="newer"):
        Store(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (
            SCHEMA_VERSION + 1,
        )
    finally:
        conn.close()


_SCHEMA_1_SEEN = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE seen(
    key TEXT PRIMARY KEY, content TEXT, transport TEXT, ts REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX seen_ts ON seen(ts);
INSERT INTO meta(key, value) VALUES ('schema', 1);
INSERT INTO seen VALUES ('k1', 'c1', 'mqtt', 10.0), ('k2', NULL, 'serial', 20.0);
"""


def test_a_schema_1_store_is_upgraded_and_keeps_its_dedup_rows(tmp_path: Path) -> None:
    """Schema 1 kept `seen` keyed by text; opening it moves the rows to the append-only log."""
    path = tmp_path / "gw.db"
    conn = sqlite3.connect(path)
    conn.executescript(_SCHEMA_1_SEEN)
    conn.close()
    store = Store(path)
    try:
        assert store.load_seen(0.0) == [
            SeenRow("k1", "c1", "mqtt", 10.0),
            SeenRow("k2", None, "serial", 20.0),
        ]
        schema = store.call(
            lambda c: c.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        )
        assert schema == (SCHEMA_VERSION,)
        indexes = store.call(
            lambda c: c.execute("SELECT name FROM sqlite_master WHERE tbl_name='seen'").fetchall()
        )
        assert sorted(name for (name,) in indexes) == ["seen", "seen_ts"]
    finally:
        store.close()


# The outbox of schemas 1 and 2: delivery marked in a column, two partial indexes.
_OUTBOX_V2 = """
CREATE TABLE outbox(
    id INTEGER PRIMARY KEY, lane INTEGER NOT NULL, topic TEXT NOT NULL,
    qos INTEGER NOT NULL, retain INTEGER NOT NULL, data BLOB NOT NULL,
    meta BLOB NOT NULL, created REAL NOT NULL, delivered REAL
);
CREATE INDEX outbox_pending ON outbox(lane, id) WHERE delivered IS NULL;
CREATE INDEX outbox_delivered ON outbox(delivered) WHERE delivered IS NOT NULL;
"""
# The alarms of schemas 1 and 2: WITHOUT ROWID, keyed by the text id.
_ALARMS_V2 = """
CREATE TABLE alarms(
    alarm_id TEXT PRIMARY KEY, data BLOB NOT NULL, state TEXT NOT NULL,
    deadline REAL, updated REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX alarms_state ON alarms(state, updated);
"""
_SCHEMA_2 = f"""
CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE seen(key TEXT NOT NULL, content TEXT, transport TEXT, ts REAL NOT NULL);
CREATE INDEX seen_ts ON seen(ts);
{_OUTBOX_V2}
{_ALARMS_V2}
INSERT INTO meta(key, value) VALUES ('schema', 2);
"""


def _old_store(
    path: Path,
    script: str,
    outbox: dict[OutboxAdd, float | None],
    alarms: Sequence[AlarmRow] = (),
) -> None:
    """Write a schema 1 or 2 database: `script`, then outbox rows with their delivery times,
    then alarm rows."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(script)
        conn.executemany(
            "INSERT INTO outbox(id, lane, topic, qos, retain, data, meta, created, delivered)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*add, at) for add, at in outbox.items()],
        )
        conn.executemany(
            "INSERT INTO alarms(alarm_id, data, state, deadline, updated) VALUES (?, ?, ?, ?, ?)",
            [dataclasses.astuple(alarm) for alarm in alarms],
        )
        conn.commit()
    finally:
        conn.close()


def _marks(store: Store) -> dict[int, float]:
    rows = store.call(lambda c: c.execute("SELECT id, at FROM delivered").fetchall())
    return {int(i): float(at) for i, at in rows}


def _alarm_rows(store: Store) -> list[AlarmRow]:
    """Every row of `alarms` as stored, in rowid order (which follows age after an upgrade)."""
    rows = store.call(
        lambda c: c.execute(
            "SELECT alarm_id, data, state, deadline, updated FROM alarms ORDER BY rowid"
        ).fetchall()
    )
    return [AlarmRow(*row) for row in rows]


def _alarm_keys(conn: sqlite3.Connection) -> list[tuple[str, int, str]]:
    """The indexes of `alarms`: name, unique, origin ('c' created, 'u' UNIQUE, 'pk' key)."""
    rows = conn.execute("SELECT name, \"unique\", origin FROM pragma_index_list('alarms')")
    return sorted((str(n), int(u), str(o)) for n, u, o in rows)


_ALARM_KEYS_V3 = [("alarms_state", 0, "c"), ("sqlite_autoindex_alarms_1", 1, "u")]
"""Schema 3: a rowid table, a unique index on its id, and the state index."""


def _layout(store: Store) -> dict[str, list[str]]:
    """Each table's columns and indexes (SQLite's automatic ones left out)."""

    def read(c: sqlite3.Connection) -> dict[str, list[str]]:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            table: [str(r[1]) for r in c.execute("SELECT * FROM pragma_table_info(?)", (table,))]
            + [
                f"index {r[0]}"
                for r in c.execute(
                    "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name=?"
                    " AND sql IS NOT NULL",
                    (table,),
                )
            ]
            for table in tables
        }

    return store.call(read)


def test_the_schema_3_layout() -> None:
    """The outbox has no delivery column and no index; marks live in `delivered`."""
    store = Store(":memory:")
    try:
        layout = _layout(store)
    finally:
        store.close()
    assert layout["outbox"] == ["id", "lane", "topic", "qos", "retain", "data", "meta", "created"]
    assert layout["delivered"] == ["id", "at"]
    assert layout["alarms"] == [
        *("alarm_id", "data", "state", "deadline", "updated"),
        "index alarms_state",
    ]
    assert sorted(layout) == ["alarms", "delivered", "meta", "outbox", "seen"]


def test_alarms_are_a_rowid_table_with_a_unique_id() -> None:
    """`alarms` has rowids (new rows append at its tail) and a unique, non-null text id."""
    conn = sqlite3.connect(":memory:")
    try:
        store_module._setup(conn, "FULL", 0)
        assert _alarm_keys(conn) == _ALARM_KEYS_V3
        assert not store_module._alarms_keyed_by_id(conn)
        conn.execute("INSERT INTO alarms VALUES ('a', x'', 'raised', NULL, 1.0)")
        conn.execute("INSERT INTO alarms VALUES ('b', x'', 'raised', NULL, 1.0)")
        assert conn.execute("SELECT rowid, alarm_id FROM alarms").fetchall() == [(1, "a"), (2, "b")]
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            conn.execute("INSERT INTO alarms VALUES ('a', x'', 'raised', NULL, 2.0)")
        with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
            conn.execute("INSERT INTO alarms VALUES (NULL, x'', 'raised', NULL, 2.0)")
    finally:
        conn.close()


def _plan(store: Store, sql: str) -> str:
    """SQLite's query plan for `sql` (bound values written in), one line per step."""
    rows = store.call(lambda c: c.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall())
    return "\n".join(str(row[3]) for row in rows)


def test_alarm_reads_deletes_and_prunes_go_through_indexes() -> None:
    """Loading by state and pruning search `alarms_state` (pruning from the index alone),
    a delete finds its alarm by the unique id: no statement scans the table."""

    async def scenario() -> None:
        statements: list[str] = []
        async with Store(":memory:") as store:
            await store.write([AlarmPut(f"a{i}", b"", "raised", None, float(i)) for i in range(9)])
            store.call(lambda c: c.set_trace_callback(statements.append))
            store.load_alarms({"raised", "escalated"})
            await store.write([AlarmDelete("a1"), AlarmDelete("a2")])
            await store.prune(alarms_before=5.0, final_states=("cleared",))
            store.call(lambda c: c.set_trace_callback(None))
            load, delete, prune = (
                next(s for s in statements if s.startswith(prefix))
                for prefix in (
                    "SELECT alarm_id",
                    "DELETE FROM alarms WHERE alarm_id",
                    "DELETE FROM alarms WHERE rowid",
                )
            )
            assert "SEARCH alarms USING INDEX alarms_state (state=?)" in _plan(store, load)
            assert "USING INDEX sqlite_autoindex_alarms_1 (alarm_id=?)" in _plan(store, delete)
            assert "USING COVERING INDEX alarms_state (state=? AND updated<?)" in _plan(
                store, prune
            )
            for sql in (load, delete, prune):
                assert "SCAN" not in _plan(store, sql), sql

    _run(scenario)


@st.composite
def _old_outboxes(draw: st.DrawFn) -> dict[OutboxAdd, float | None]:
    """Outbox rows of an old store, sparse ids, each pending (None) or delivered at a time."""
    ids = draw(st.sets(st.integers(1, 10_000), max_size=40))
    return {
        _add(i, lane=draw(st.integers(0, 3)), created=float(i)): draw(
            st.none() | st.floats(0, 1e9, allow_nan=False)
        )
        for i in sorted(ids)
    }


@st.composite
def _old_alarms(draw: st.DrawFn) -> list[AlarmRow]:
    """Alarm rows of an old store: distinct text ids, records up to 600 bytes, times that
    tie, no deadline or any, in any order."""
    ids = draw(st.lists(st.text("ab/é0-", min_size=1, max_size=8), unique=True, max_size=30))
    times = st.floats(allow_nan=False) | st.sampled_from([0.0, 10.0])
    return [
        AlarmRow(
            alarm_id,
            draw(st.binary(max_size=600)),
            draw(st.sampled_from(["raised", "dispatched", "acknowledged", "cleared"])),
            draw(st.none() | times),
            draw(times),
        )
        for alarm_id in ids
    ]


def _by_age(alarms: Sequence[AlarmRow]) -> list[AlarmRow]:
    """Least recently updated first, as `load_alarms` reads them."""
    return sorted(alarms, key=lambda r: (r.updated, r.alarm_id))


@settings(max_examples=40)  # each example writes and upgrades a database file
@given(outbox=_old_outboxes(), alarms=_old_alarms())
def test_a_schema_2_store_is_upgraded_with_its_pending_and_delivered_rows(
    outbox: dict[OutboxAdd, float | None], alarms: list[AlarmRow]
) -> None:
    """Opening a schema 2 store moves every delivery time to `delivered`, keeps every row,
    pending ones in lane and id order, drops the old column and indexes, rebuilds `alarms`
    with rowids (oldest first) and every row exactly; a reopen is a no-op."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "gw.db"
        _old_store(path, _SCHEMA_2, outbox, alarms)
        conn = sqlite3.connect(path)
        conn.execute("INSERT INTO seen VALUES ('k1', 'c1', 'mqtt', 10.0)")
        conn.execute("INSERT INTO meta(key, value) VALUES ('outbox_max_id', 20000)")
        conn.commit()
        conn.close()
        pending = sorted(
            (_row(add) for add, at in outbox.items() if at is None), key=lambda r: (r.lane, r.id)
        )
        for _ in range(2):  # the second open finds schema 3 and changes nothing
            store = Store(path)
            try:
                assert store.load_pending() == pending
                assert store.pending_count() == len(pending)
                assert _marks(store) == {a.id: at for a, at in outbox.items() if at is not None}
                assert store.max_outbox_id() == 20000
                assert store.load_seen(0.0) == [SeenRow("k1", "c1", "mqtt", 10.0)]
                assert store.load_alarms() == _by_age(alarms)
                assert _alarm_rows(store) == _by_age(alarms)
                assert store.call(_alarm_keys) == _ALARM_KEYS_V3
                assert "delivered" not in _layout(store)["outbox"]
                assert not [c for c in _layout(store)["outbox"] if c.startswith("index")]
                schema = store.call(
                    lambda c: c.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                )
                assert schema == (SCHEMA_VERSION,) == (3,)
            finally:
                store.close()


def test_an_upgraded_store_marks_and_prunes(tmp_path: Path) -> None:
    """After the upgrade, new marks and pruning work on the carried-over rows, and a
    mark of an entry delivered before the upgrade keeps its old time."""
    path = tmp_path / "gw.db"
    alarms = [
        AlarmRow("old-clear", b"c", "cleared", None, 1.0),
        AlarmRow("raised", b"r", "raised", 9.0, 3.0),
        AlarmRow("gone", b"g", "raised", 9.0, 4.0),
    ]
    _old_store(path, _SCHEMA_2, {_add(1): 5.0, _add(2): None, _add(3): None, _add(4): 50.0}, alarms)

    async def scenario() -> None:
        async with Store(path) as store:
            await store.write([OutboxDelivered(1, 99.0), OutboxDelivered(2, 6.0), _add(5)])
            assert _marks(store) == {1: 5.0, 2: 6.0, 4: 50.0}
            assert (await store.prune(delivered_before=10.0)).outbox == 2
            assert [r.id for r in store.load_pending()] == [3, 5]
            assert _marks(store) == {4: 50.0}
            # A carried-over alarm is updated in place (no second row), deleted, pruned.
            await store.write(
                [
                    AlarmPut("raised", b"a", "acknowledged", None, 20.0),
                    AlarmDelete("gone"),
                    AlarmPut("new", b"n", "raised", 30.0, 21.0),
                ]
            )
            assert _alarm_rows(store) == [
                AlarmRow("old-clear", b"c", "cleared", None, 1.0),
                AlarmRow("raised", b"a", "acknowledged", None, 20.0),
                AlarmRow("new", b"n", "raised", 30.0, 21.0),
            ]
            pruned = await store.prune(alarms_before=25.0, final_states=("cleared", "acknowledged"))
            assert pruned.alarms == 2
            assert store.load_alarms() == [AlarmRow("new", b"n", "raised", 30.0, 21.0)]

    _run(scenario)


def test_a_schema_1_store_with_an_outbox_is_upgraded_to_3(tmp_path: Path) -> None:
    """Schema 1 (dedup rows keyed by text, delivery in an outbox column, alarms keyed by
    text) goes 1 -> 3 in one open: every row kept, each table in its schema 3 layout."""
    path = tmp_path / "gw.db"
    alarms = [
        AlarmRow("z-newer", b"\x00" * 500, "raised", 70.0, 10.0),
        AlarmRow("a-older", b"", "acknowledged", None, 5.0),
    ]
    _old_store(
        path,
        _SCHEMA_1_SEEN + _OUTBOX_V2 + _ALARMS_V2,
        {_add(1, lane=2): None, _add(2): 7.0},
        alarms,
    )
    store = Store(path)
    try:
        assert [r.key for r in store.load_seen(0.0)] == ["k1", "k2"]
        assert store.load_pending() == [_row(_add(1, lane=2))]
        assert _marks(store) == {2: 7.0}
        assert _layout(store)["outbox"][-1] == "created"
        assert _alarm_rows(store) == alarms[::-1]  # oldest first
        assert store.load_alarms({"raised"}) == alarms[:1]
        assert store.call(_alarm_keys) == _ALARM_KEYS_V3
    finally:
        store.close()


@pytest.mark.parametrize(
    ("step", "table"), [("_split_delivered", "outbox"), ("_rebuild_alarms", "alarms")]
)
def test_a_failed_upgrade_leaves_the_old_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, table: str
) -> None:
    """The upgrade is one transaction: if the outbox or the alarms rebuild fails (after the
    other one ran, or before), the schema 2 store is untouched."""
    path = tmp_path / "gw.db"
    alarm = AlarmRow("a1", b"\x01", "raised", 70.0, 10.0)
    _old_store(path, _SCHEMA_2, {_add(1): None, _add(2): 7.0}, [alarm])

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute(f"DROP TABLE {table}")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store_module, step, broken)
    with pytest.raises(sqlite3.OperationalError, match="I/O"):
        Store(path)
    monkeypatch.undo()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT id, delivered FROM outbox").fetchall() == [(1, None), (2, 7.0)]
        assert conn.execute("SELECT * FROM alarms").fetchall() == [dataclasses.astuple(alarm)]
        assert store_module._alarms_keyed_by_id(conn)
        assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (2,)
    finally:
        conn.close()
    store = Store(path)
    try:
        assert [r.id for r in store.load_pending()] == [1]
        assert _alarm_rows(store) == [alarm]
        assert store.call(_alarm_keys) == _ALARM_KEYS_V3
    finally:
        store.close()


def test_marks_are_idempotent_and_only_for_held_ids() -> None:
    """A repeated mark keeps the first time and adds no row; a mark for an id the outbox
    does not hold (never added, or pruned) adds nothing; a mark without a time fails
    its own submission only."""

    async def scenario() -> None:
        async with Store(":memory:") as store:
            await store.write([_add(1), _add(2), _add(3), OutboxDelivered(1, 5.0)])
            await store.write([OutboxDelivered(1, 9.0), OutboxDelivered(1, 8.0)])
            await store.write([OutboxDelivered(77, 9.0)])
            assert _marks(store) == {1: 5.0}
            assert (await store.prune(delivered_before=6.0)).outbox == 1
            await store.write([OutboxDelivered(1, 10.0)])  # a late repeat of a pruned entry
            assert _marks(store) == {}
            no_time: Any = None
            results = await asyncio.gather(
                store.submit([OutboxDelivered(2, no_time)]),
                store.submit([OutboxDelivered(3, 11.0)]),
                return_exceptions=True,
            )
            assert isinstance(results[0], sqlite3.IntegrityError)
            assert results[1] is None
            assert _marks(store) == {3: 11.0}
            assert [r.id for r in store.load_pending()] == [2]
            assert store.max_outbox_id() == 3

    _run(scenario)


@settings(max_examples=40)  # each example starts a store and its writer thread
@given(
    times=st.lists(st.none() | st.integers(0, 20), max_size=60),
    horizon=st.integers(0, 21),
    chunk=st.integers(1, 7),
)
def test_prune_takes_exactly_the_rows_delivered_before_the_horizon(
    times: list[int | None], horizon: int, chunk: int
) -> None:
    """Whatever order deliveries came in, chunked pruning removes exactly the rows (and
    their marks) delivered before the horizon; pending rows and later marks stay."""
    marked = {i: float(at) for i, at in enumerate(times, start=1) if at is not None}
    gone = {i for i, at in marked.items() if at < horizon}

    async def scenario() -> None:
        async with Store(":memory:") as store:
            ops: list[Op] = [_add(i) for i in range(1, len(times) + 1)]
            ops += [OutboxDelivered(i, at) for i, at in marked.items()]
            await store.write(ops)
            pruned = await store.prune(delivered_before=float(horizon), chunk=chunk)
            assert pruned == Pruned(outbox=len(gone))
            assert _marks(store) == {i: at for i, at in marked.items() if i not in gone}
            ids = store.call(lambda c: [r[0] for r in c.execute("SELECT id FROM outbox")])
            assert ids == [i for i in range(1, len(times) + 1) if i not in gone]
            assert store.max_outbox_id() == len(times)

    _run(scenario)


@given(
    outbox=st.sets(st.integers(1, 80), max_size=60),  # dense: runs, holes and lone ids
    marks=st.sets(st.integers(1, 80), max_size=60),
    lanes=st.integers(1, 4),
)
def test_pending_is_every_unmarked_outbox_row(
    outbox: set[int], marks: set[int], lanes: int
) -> None:
    """The gap query finds exactly the outbox rows with no mark, in lane and id order,
    whatever the holes in the ids, even with marks for ids the outbox does not hold."""
    store = Store(":memory:")
    try:

        def write(c: sqlite3.Connection) -> None:
            adds = [_add(i, lane=i % lanes) for i in sorted(outbox)]
            c.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?)", adds)
            c.executemany("INSERT INTO delivered VALUES (?, 1.0)", [(i,) for i in marks])

        store.call(write)
        expected = sorted(
            (_row(_add(i, lane=i % lanes)) for i in outbox - marks), key=lambda r: (r.lane, r.id)
        )
        assert store.load_pending() == expected
        assert store.pending_count() == len(expected)
    finally:
        store.close()


@pytest.mark.parametrize(
    "op",
    [
        SeenOp("k", None, "mqtt", 1.0),
        OutboxAdd(1, 2, "t", 1, True, b"d", b"m", 3.0),
        OutboxDelivered(1, 2.0),
        AlarmPut("a", b"d", "raised", None, 1.0),
        AlarmDelete("a"),
    ],
    ids=lambda op: type(op).__name__,
)
def test_ops_are_immutable_tuples_built_by_position_or_keyword(op: Op) -> None:
    """Each op is a named tuple: the same by position and by keyword, fields in order,
    and no field can be set."""
    kind = type(op)
    assert kind(*op) == kind(**op._asdict()) == op
    assert tuple(op._asdict().values()) == tuple(op)
    with pytest.raises(AttributeError):
        op.__setattr__(kind._fields[0], "changed")
    assert not hasattr(op, "__dict__")


def test_a_key_seen_twice_reads_back_once_as_last_written(tmp_path: Path) -> None:
    """The log holds both rows; start-up gets the last one written, as the upsert did."""

    async def scenario() -> None:
        async with Store(tmp_path / "gw.db") as store:
            await store.write([SeenOp("k", "first", "mqtt", 5.0)])
            await store.write([SeenOp("k", "second", "serial", 5.0)])
            assert store.load_seen(0.0) == [SeenRow("k", "second", "serial", 5.0)]
            pruned = await store.prune(seen_before=6.0)
            assert pruned.seen == 2
            assert store.load_seen(0.0) == []

    _run(scenario)


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    """A file that is not a database fails at open, with SQLite's reason."""
    path = tmp_path / "gw.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        Store(path)


def test_call_commits_or_rolls_back_what_it_left_open() -> None:
    """Store.call commits an open transaction, and rolls it back when fn raises."""
    store = Store(":memory:")
    try:

        def fail(c: sqlite3.Connection) -> None:
            c.execute("BEGIN")
            c.execute("INSERT INTO meta(key, value) VALUES ('x', 1)")
            raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            store.call(fail)

        def keep(c: sqlite3.Connection) -> None:
            c.execute("BEGIN")
            c.execute("INSERT INTO meta(key, value) VALUES ('y', 1)")

        store.call(keep)
        keys = store.call(lambda c: [r[0] for r in c.execute("SELECT key FROM meta")])
        assert "x" not in keys
        assert "y" in keys
    finally:
        store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.pending_count()


def test_misuse_is_an_error() -> None:
    """Bad settings, submitting before start or after close, and starting twice raise."""
    with pytest.raises(ValueError, match="synchronous"):
        Store(":memory:", synchronous="OFF")
    with pytest.raises(ValueError, match="positive"):
        Store(":memory:", commit_max_batch=0)
    with pytest.raises(ValueError, match="positive"):
        Store(":memory:", retry_s=0)

    async def scenario() -> None:
        store = Store(":memory:")
        with pytest.raises(RuntimeError, match="not started"):
            store.submit(_event(1))
        with pytest.raises(RuntimeError, match="not started"):
            await store.prune(seen_before=1.0)
        assert store.probes == 0
        store.start()
        with pytest.raises(RuntimeError, match="already"):
            store.start()
        await store.aclose()
        await store.aclose()
        # A handler racing the shutdown is refused like an outage: no acknowledgement.
        with pytest.raises(StoreUnavailable, match="closed"):
            await store.write(_event(1))
        with pytest.raises(StoreUnavailable, match="closed"):
            await store.prune(seen_before=1.0)
        assert not _store_threads()

    _run(scenario)


def test_a_store_never_started_closes_quietly() -> None:
    """Open for reads only, then aclose: no thread was ever started."""

    async def scenario() -> None:
        store = Store(":memory:")
        assert store.load_pending() == []
        assert store.max_outbox_id() == 0
        await store.aclose()

    _run(scenario)


# ----------------------------------------------------------------- property
@st.composite
def _histories(draw: st.DrawFn) -> list[list[Op]]:
    """Submissions of ops in a causal order: a delivered mark names an id added before."""
    submissions: list[list[Op]] = []
    next_id = 1
    added: list[int] = []
    for _ in range(draw(st.integers(1, 8))):
        ops: list[Op] = []
        for _ in range(draw(st.integers(1, 6))):
            kind = draw(st.sampled_from(["seen", "add", "delivered", "put", "delete"]))
            when = float(draw(st.integers(0, 1000)))
            if kind == "seen":
                content = draw(st.none() | st.sampled_from(["c1", "c2"]))
                key = draw(st.sampled_from(["k1", "k2", "k3"]))
                ops.append(SeenOp(key, content, draw(st.sampled_from(["mqtt", "serial"])), when))
            elif kind == "add":
                ops.append(_add(next_id, lane=draw(st.integers(0, 3)), created=when))
                added.append(next_id)
                next_id += 1
            elif kind == "delivered" and added:
                ops.append(OutboxDelivered(draw(st.sampled_from(added)), when))
            elif kind == "put":
                alarm = draw(st.sampled_from(["a1", "a2"]))
                state = draw(st.sampled_from(["raised", "acknowledged"]))
                deadline = draw(st.none() | st.just(when + 5))
                ops.append(AlarmPut(alarm, draw(st.binary(max_size=4)), state, deadline, when))
            elif kind == "delete":
                ops.append(AlarmDelete(draw(st.sampled_from(["a1", "a2"]))))
        submissions.append(ops)
    return submissions


def _model(submissions: list[list[Op]]) -> tuple[list[SeenRow], list[OutboxRow], list[AlarmRow]]:
    """What a store must hold after the submissions, applied one op at a time."""
    seen: dict[str, SeenRow] = {}
    outbox: dict[int, OutboxRow] = {}
    delivered: set[int] = set()
    alarms: dict[str, AlarmRow] = {}
    for ops in submissions:
        for op in ops:
            if isinstance(op, SeenOp):
                seen[op.key] = SeenRow(op.key, op.content, op.transport, op.ts)
            elif isinstance(op, OutboxAdd):
                outbox[op.id] = _row(op)
            elif isinstance(op, OutboxDelivered):
                delivered.add(op.id)
            elif isinstance(op, AlarmPut):
                alarms[op.alarm_id] = AlarmRow(
                    op.alarm_id, op.data, op.state, op.deadline, op.updated
                )
            else:
                alarms.pop(op.alarm_id, None)
    return (
        sorted(seen.values(), key=lambda r: (r.ts, r.key)),
        sorted((r for r in outbox.values() if r.id not in delivered), key=lambda r: (r.lane, r.id)),
        sorted(alarms.values(), key=lambda r: (r.updated, r.alarm_id)),
    )


@settings(max_examples=40)  # each example opens a database and a thread
@given(
    submissions=_histories(),
    max_batch=st.integers(1, 30),
    interval_ms=st.sampled_from([0.0, 3_600_000.0]),
)
def test_any_grouping_reads_back_as_one_op_at_a_time(
    submissions: list[list[Op]], max_batch: int, interval_ms: float
) -> None:
    """However submissions are grouped into commits, the reopened store equals the model."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "gw.db"

        async def scenario() -> None:
            store = Store(path, commit_interval_ms=interval_ms, commit_max_batch=max_batch)
            store.start()
            futures = [store.submit(ops) for ops in submissions]
            await store.aclose()  # flushes a batch still inside its interval
            assert all(f.done() and f.exception() is None for f in futures)

        _run(scenario)
        store = Store(path)
        try:
            got = (store.load_seen(float("-inf")), store.load_pending(), store.load_alarms())
        finally:
            store.close()
        assert got == _model(submissions)


def test_urgent_submissions_jump_the_queue(tmp_path: Path) -> None:
    """A life-safety submission commits ahead of a saturated queue of ordinary ones,
    whose groups are capped at commit_max_batch ops."""

    async def scenario() -> None:
        async with Store(tmp_path / "gw.db", commit_interval_ms=50, commit_max_batch=2) as store:
            order: list[str] = []
            futures = []
            for n in range(20):
                future = store.submit([SeenOp(f"k{n}", None, "mqtt", 1.0)])
                future.add_done_callback(functools.partial(_note, order, f"k{n}"))
                futures.append(future)
            urgent = store.submit([SeenOp("panic", None, "mqtt", 1.0)], urgent=True)
            urgent.add_done_callback(functools.partial(_note, order, "panic"))
            await asyncio.gather(*futures, urgent)
            assert order.index("panic") < 4  # not behind the 20 ordinary ones
            assert store.commits >= 10  # groups of at most 2 ops
            assert {row.key for row in store.load_seen(0.0)} == {f"k{n}" for n in range(20)} | {
                "panic"
            }

    asyncio.run(scenario())


def test_a_panic_storm_is_group_committed_one_gap_apart(tmp_path: Path) -> None:
    """Urgent submissions that arrive while a commit runs, or within the urgent gap
    after it began, share the next commit: a storm costs one commit a gap, not one
    a panic. Each still commits without waiting for the ordinary interval."""

    async def scenario() -> None:
        # An ordinary interval that never ends: only urgency makes these commit;
        # a long urgent gap, so that the whole storm is submitted within it.
        async with Store(
            tmp_path / "gw.db", commit_interval_ms=3_600_000, urgent_gap_ms=300
        ) as store:
            first = store.submit([SeenOp("p0", None, "mqtt", 1.0)], urgent=True)
            await asyncio.wait_for(first, 5.0)
            assert store.commits == 1
            storm = [
                store.submit([SeenOp(f"p{n}", None, "mqtt", 1.0)], urgent=True)
                for n in range(1, 51)
            ]
            await asyncio.wait_for(asyncio.gather(*storm), 5.0)
            # Submitted within one loop turn, within the gap after the first
            # commit began: all in one more commit.
            assert store.commits == 2
            assert len(store.load_seen(0.0)) == 51

    asyncio.run(scenario())


def test_ordinary_submissions_ride_along_with_an_urgent_commit(tmp_path: Path) -> None:
    """What is pending when a panic commits goes with it (one commit, not two),
    up to a quarter of commit_max_batch ops; the rest waits for its own group."""

    async def scenario() -> None:
        async with Store(
            tmp_path / "gw.db", commit_interval_ms=3_600_000, commit_max_batch=40
        ) as store:
            plain = [store.submit([SeenOp(f"k{n}", None, "mqtt", 1.0)]) for n in range(15)]
            urgent = store.submit([SeenOp("panic", None, "mqtt", 1.0)], urgent=True)
            await asyncio.wait_for(urgent, 5.0)
            assert store.commits == 1
            done = [f for f in plain if f.done()]
            assert len(done) == 10  # 40 // 4 ops rode along, oldest first
            assert done == plain[:10]
            rest = store.submit([SeenOp("panic2", None, "mqtt", 1.0)], urgent=True)
            await asyncio.wait_for(asyncio.gather(rest, *plain), 5.0)
            assert store.commits == 2

    asyncio.run(scenario())


def _note(order: list[str], name: str, _future: object) -> None:
    order.append(name)
