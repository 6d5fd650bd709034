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
import functools
import gc
import sqlite3
import tempfile
import threading
from collections.abc import Awaitable, Callable
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
        lambda c: c.execute("SELECT delivered FROM outbox WHERE id = ?", (outbox_id,)).fetchone()
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
        assert store.journal_mode == "wal"
    finally:
        store.close()


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


def _note(order: list[str], name: str, _future: object) -> None:
    order.append(name)
