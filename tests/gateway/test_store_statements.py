"""The store's multi-row statements: ladder-sized chunks, and batches of any size read back.

gateway/adapters/store.py, "Few statements per commit": rows go in multi-row
statements whose sizes come from a fixed ladder (256, 128, ..., 1), at most 999
bound values each (SQLite's limit before 3.32); an idempotent write (dedup
rows, delivered marks, alarm upserts and deletes) pads its tail into one
statement with copies of its last row, an outbox insert cannot and is cut
greedily. These tests pin the chunking as a property, prove that a multi-row
upsert leaves the last put of an alarm, then write batches of 0 to about 1500
mixed ops through a real Store (with SQLite's variable limit lowered to 999, so
an oversized statement would fail) and read back exactly what a
one-op-at-a-time model holds.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters import store as store_module
from gateway.adapters.store import (
    AlarmDelete,
    AlarmPut,
    AlarmRow,
    Op,
    OutboxAdd,
    OutboxDelivered,
    OutboxRow,
    SeenOp,
    SeenRow,
    Store,
)

_WAIT_S = 10.0  # an upper bound for a commit to land; never a timing assertion
_LADDER = (256, 128, 64, 32, 16, 8, 4, 2, 1)
_MAX_VALUES = 999
_NEVER = 3_600_000.0  # a commit interval that never ends: only a full batch commits


def _top(width: int) -> int:
    """The largest ladder size whose statement binds at most 999 values."""
    return max(n for n in _LADDER if n * width <= _MAX_VALUES)


def _chunks(rows: list[int], width: int, *, pad: bool) -> list[list[int]]:
    return [list(chunk) for chunk in store_module._chunks(rows, width, pad=pad)]


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await scenario()

    asyncio.run(main())


def _limit_variables(store: Store) -> None:
    """SQLite 3.32+ allows 32766 bound values; hold this connection to the old 999."""
    store.call(lambda c: c.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, _MAX_VALUES))


def _add(i: int) -> OutboxAdd:
    return OutboxAdd(i, i % 4, f"t/{i}", 1, i % 3 == 0, b"d%d" % i, b"m%d" % (i % 5), float(i))


def _row(add: OutboxAdd) -> OutboxRow:
    return OutboxRow(
        add.id, add.lane, add.topic, add.qos, add.retain, add.data, add.meta, add.created
    )


def _delivered(store: Store) -> dict[int, float]:
    """Every mark the `delivered` table holds (schema 3), by outbox id."""
    rows = store.call(lambda c: c.execute("SELECT id, at FROM delivered").fetchall())
    return {int(i): float(at) for i, at in rows}


# ----------------------------------------------------------------- chunking
@given(
    count=st.integers(0, 1200),
    width=st.sampled_from([1, 4, 8]) | st.integers(1, _MAX_VALUES),
    pad=st.booleans(),
)
def test_chunks_cover_the_rows_in_ladder_sizes(count: int, width: int, pad: bool) -> None:
    """Chunks are ladder sizes of <= 999 values that give back the rows in order; with
    padding only the tail repeats its last row, and there are few statements."""
    rows = list(range(count))
    chunks = _chunks(rows, width, pad=pad)
    assert all(len(chunk) in _LADDER for chunk in chunks), [len(c) for c in chunks]
    assert all(len(chunk) * width <= _MAX_VALUES for chunk in chunks)
    flat = [row for chunk in chunks for row in chunk]
    top = _top(width)
    if not pad:
        assert flat == rows
        # Greedy on a ladder of powers of two: full statements, then one per set bit.
        assert len(chunks) == count // top + (count % top).bit_count()
        if count < 256 and width <= 8:  # the store's widths: 1 (marks), 4 (seen), 8 (outbox)
            assert len(chunks) <= 9
        return
    extra = len(flat) - count
    assert flat == rows + rows[-1:] * extra
    assert dict.fromkeys(flat) == dict.fromkeys(rows)  # the distinct content, in order
    if chunks:
        assert 0 <= extra < len(chunks[-1])  # the tail holds at least one real row
    # Full statements, then one padded tail.
    assert len(chunks) == count // top + (1 if count % top else 0)


@pytest.mark.parametrize(("width", "top"), [(1, 256), (4, 128), (8, 64), (999, 1)])
def test_the_largest_statement_per_width(width: int, top: int) -> None:
    """A dedup row binds 4 values, an outbox row 8: 128 and 64 rows a statement, not 256."""
    rows = list(range(1000))
    assert {len(c) for c in _chunks(rows, width, pad=False)} >= {top}
    assert max(len(c) for c in _chunks(rows, width, pad=True)) == top


def test_padding_fills_the_tail_to_the_next_ladder_size() -> None:
    """Three rows go as one statement of four, the last row twice; exact sizes are not padded."""
    assert _chunks([1, 2, 3], 4, pad=True) == [[1, 2, 3, 3]]
    assert _chunks([1, 2, 3], 4, pad=False) == [[1, 2], [3]]
    assert _chunks(list(range(64)), 8, pad=True) == [list(range(64))]
    assert _chunks([], 1, pad=True) == []


@pytest.mark.parametrize("n", _LADDER)
def test_a_delivered_mark_statement_appends_id_and_time_pairs(n: int) -> None:
    """Two '?' per mark (at most 512 values); a repeated id changes nothing, and only
    ids the outbox holds are marked."""
    head, row, width, tail = store_module._SQL_DELIVERED_ROWS
    sql = store_module._rows_sql(head, row, n, tail)
    assert width == 2
    assert sql.count("?") == 2 * n <= _MAX_VALUES
    assert sql.startswith("INSERT INTO delivered")
    assert "ON CONFLICT(id) DO NOTHING" in sql
    assert "FROM outbox WHERE outbox.id" in sql


# ----------------------------------------------------------------- alarm upserts
def _alarm_table() -> sqlite3.Connection:
    """A connection with the store's schema, its variable limit held to 999."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    store_module._setup(conn, "FULL", 0)
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, _MAX_VALUES)
    return conn


def _alarms(conn: sqlite3.Connection) -> dict[str, AlarmRow]:
    rows = conn.execute("SELECT alarm_id, data, state, deadline, updated FROM alarms")
    return {row[0]: AlarmRow(*row) for row in rows}


@given(
    puts=st.lists(
        st.builds(
            AlarmPut,
            st.sampled_from(["a", "b", "c"]) | st.text(max_size=3),
            st.binary(max_size=8),
            st.sampled_from(["raised", "cleared"]),
            st.none() | st.floats(allow_nan=False),
            st.floats(allow_nan=False),
        ),
        min_size=1,
        max_size=300,
    )
)
def test_a_multi_row_upsert_leaves_the_last_put_of_each_alarm(puts: list[AlarmPut]) -> None:
    """SQLite applies the rows of one INSERT ... ON CONFLICT DO UPDATE in order: a later row
    of an alarm updates over an earlier one, in the same statement or the next one, and the
    padded tail changes nothing. Up to 128 puts are one statement."""
    conn = _alarm_table()
    statements: list[str] = []
    try:
        conn.set_trace_callback(statements.append)
        store_module._write_rows(conn, store_module._SQL_ALARM_PUT_ROWS, puts, pad=True)
        conn.set_trace_callback(None)
        expected = {put.alarm_id: AlarmRow(*put) for put in puts}
        assert _alarms(conn) == expected
        assert len(statements) == len(_chunks(list(range(len(puts))), 5, pad=True))
        if len(puts) <= _top(5) == 128:
            assert len(statements) == 1
    finally:
        conn.close()


def test_an_alarm_put_first_and_last_in_one_statement_ends_as_the_last() -> None:
    """The first and the last row of one statement name the same alarm, with others between
    and a repeat in the padded tail: one row is left, as the last put wrote it."""
    conn = _alarm_table()
    try:
        puts = [
            AlarmPut("a", b"1", "raised", 5.0, 1.0),
            AlarmPut("b", b"1", "raised", None, 1.0),
            AlarmPut("a", b"2", "dispatched", 6.0, 2.0),
            AlarmPut("c", b"1", "raised", None, 1.0),
            AlarmPut("a", b"3", "acknowledged", None, 3.0),
        ]
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        store_module._write_rows(conn, store_module._SQL_ALARM_PUT_ROWS, puts, pad=True)
        conn.set_trace_callback(None)
        assert len(statements) == 1
        assert statements[0].count("('a',") == 6  # 5 rows padded to 8 with the last one
        assert _alarms(conn)["a"] == AlarmRow("a", b"3", "acknowledged", None, 3.0)
        assert conn.execute("SELECT count(*) FROM alarms").fetchone() == (3,)
    finally:
        conn.close()


def test_alarm_runs_take_few_statements_in_submission_order() -> None:
    """300 puts, 50 deletes and 300 puts again commit as 3 + 1 + 3 statements, in that
    order, and leave what one op at a time leaves."""

    async def scenario() -> None:
        statements: list[str] = []
        # Each put run names some alarms twice, with different records.
        ops: list[Op] = [
            AlarmPut(f"a{i % 200}", b"%d" % i, "raised", None, 1.0) for i in range(300)
        ]
        ops += [AlarmDelete(f"a{i}") for i in range(50)]
        ops += [AlarmPut(f"a{150 + i % 250}", b"%d" % i, "raised", None, 2.0) for i in range(300)]
        store = Store(":memory:", commit_interval_ms=_NEVER, commit_max_batch=len(ops))
        _limit_variables(store)
        async with store:
            store.call(lambda c: c.set_trace_callback(statements.append))
            await asyncio.wait_for(store.write(ops), _WAIT_S)
            store.call(lambda c: c.set_trace_callback(None))
            model = _Model()
            model.apply(ops)
            assert store.load_alarms() == sorted(
                model.alarms.values(), key=lambda r: (r.updated, r.alarm_id)
            )
            assert len(model.alarms) == 350  # a0..a49 deleted, a50..a399 left
            assert model.alarms["a60"].data == b"260"  # the later of two puts
            assert model.alarms["a160"].data == b"260"

        kinds = [s.split(" WHERE")[0][:18] for s in statements if "alarms" in s]
        # 300 = 2 x 128 + 44 (padded to 64); 50 deletes padded to 64, one statement.
        assert (
            kinds
            == ["INSERT INTO alarms"] * 3 + ["DELETE FROM alarms"] + ["INSERT INTO alarms"] * 3
        )

    _run(scenario)


# ----------------------------------------------------------------- through a store
@dataclass
class _Model:
    """What the store must hold, applied one op at a time in submission order."""

    seen: dict[str, SeenRow] = field(default_factory=dict)
    outbox: dict[int, OutboxRow] = field(default_factory=dict)
    delivered: dict[int, float] = field(default_factory=dict)
    alarms: dict[str, AlarmRow] = field(default_factory=dict)

    def apply(self, ops: list[Op]) -> None:
        for op in ops:
            if isinstance(op, SeenOp):
                self.seen[op.key] = SeenRow(op.key, op.content, op.transport, op.ts)
            elif isinstance(op, OutboxAdd):
                self.outbox[op.id] = _row(op)
            elif isinstance(op, OutboxDelivered):
                if op.id in self.outbox:
                    self.delivered.setdefault(op.id, op.at)  # the first confirmation wins
            elif isinstance(op, AlarmPut):
                self.alarms[op.alarm_id] = AlarmRow(
                    op.alarm_id, op.data, op.state, op.deadline, op.updated
                )
            else:
                self.alarms.pop(op.alarm_id, None)

    def pending(self) -> list[OutboxRow]:
        rows = (r for i, r in self.outbox.items() if i not in self.delivered)
        return sorted(rows, key=lambda r: (r.lane, r.id))


@st.composite
def _batch(draw: st.DrawFn) -> tuple[list[list[Op]], list[Op]]:
    """0 to about 1500 ops in a few submissions, then a second batch of repeated marks.

    Marks follow their adds and their times never go back (as the gateway's
    clock stamps them); they share one `at` or spread over a few. Alarm puts
    and deletes come in runs (of up to 300 ops: past the 128 rows of one
    upsert), over a few alarms, so one statement holds several puts of an alarm.
    """
    adds = [_add(i) for i in range(1, draw(st.integers(0, 300)) + 1)]
    keys = draw(st.integers(1, 300))
    seen: list[Op] = [
        SeenOp(f"k{i % keys}", None if i % 7 == 0 else f"c{i}", "mqtt", float(i % 11))
        for i in range(draw(st.integers(0, 250)))
    ]
    alarms = draw(st.integers(1, 13))
    runs: list[list[Op]] = []
    for r in range(draw(st.integers(0, 4))):
        size = draw(st.sampled_from([1, 2, 3, 127, 128, 129, 300]))
        if draw(st.booleans()):
            runs.append([AlarmDelete(f"a{(r + i) % alarms}") for i in range(size)])
        else:
            runs.append(
                [
                    AlarmPut(f"a{i % alarms}", b"%d/%d" % (r, i), "raised", float(i), float(r))
                    for i in range(size)
                ]
            )
    ops: list[Op] = [*adds, *seen]
    rng = draw(st.randoms(use_true_random=False))
    rng.shuffle(ops)
    for run in runs:  # each at a random place, perhaps inside an earlier one
        at = rng.randint(0, len(ops))
        ops[at:at] = run
    every = draw(st.integers(1, 4))
    times = draw(st.integers(1, 3))
    marked = [add.id for add in adds[::every]]
    marks: list[Op] = [
        OutboxDelivered(i, 1000.0 + (k * times) // max(1, len(marked)))
        for k, i in enumerate(marked)
    ]
    ops += marks
    # A mark repeated in the same batch, later: it must not move the first one.
    ops += [OutboxDelivered(i, 2000.0) for i in marked[: draw(st.integers(0, len(marked)))]]
    cuts = sorted(draw(st.lists(st.integers(0, len(ops)), max_size=4)))
    submissions = [ops[a:b] for a, b in zip([0, *cuts], [*cuts, len(ops)], strict=True)]
    again: list[Op] = [OutboxDelivered(i, 3000.0) for i in marked]
    again += [OutboxDelivered(10_000 + i, 3000.0) for i in range(draw(st.integers(0, 3)))]
    return [s for s in submissions if s], again


@settings(max_examples=40)  # each example opens a store and its writer thread
@given(batch=_batch())
def test_a_batch_of_any_size_reads_back_exactly(batch: tuple[list[list[Op]], list[Op]]) -> None:
    """One commit of 0 to about 1500 mixed ops leaves exactly the model's rows; a later repeated
    mark moves no `delivered` time, and a mark for an unknown id adds no row."""
    submissions, again = batch
    total = sum(len(ops) for ops in submissions)
    model = _Model()
    for ops in submissions:
        model.apply(ops)

    async def scenario() -> None:
        store = Store(":memory:", commit_interval_ms=_NEVER, commit_max_batch=max(1, total))
        _limit_variables(store)
        async with store:
            futures = [store.submit(ops) for ops in submissions]
            await asyncio.wait_for(asyncio.gather(*futures), _WAIT_S)
            assert store.commits == (1 if total else 0)
            assert store.ops_committed == total
            store_delivered = _delivered(store)
            assert store_delivered == model.delivered
            if again:
                await asyncio.wait_for(store.submit(again, urgent=True), _WAIT_S)
            assert store.writable
            assert _delivered(store) == store_delivered
            assert store.load_pending() == model.pending()
            assert store.pending_count() == len(model.pending())
            assert store.load_seen(float("-inf")) == sorted(
                model.seen.values(), key=lambda r: (r.ts, r.key)
            )
            assert store.load_alarms() == sorted(
                model.alarms.values(), key=lambda r: (r.updated, r.alarm_id)
            )

    _run(scenario)


def test_a_big_batch_takes_few_statements() -> None:
    """700 dedup rows, 700 outbox rows and 700 marks commit in 6 + 14 + 3 statements
    (marks are appends to `delivered`: no UPDATE is left)."""

    async def scenario() -> None:
        statements: list[str] = []
        store = Store(":memory:", commit_interval_ms=_NEVER, commit_max_batch=2100)
        _limit_variables(store)
        async with store:
            store.call(lambda c: c.set_trace_callback(statements.append))
            ops: list[Op] = [SeenOp(f"k{i}", None, "serial", 1.0) for i in range(700)]
            ops += [_add(i) for i in range(1, 701)]
            ops += [OutboxDelivered(i, 5.0) for i in range(1, 701)]
            await asyncio.wait_for(store.write(ops), _WAIT_S)
            store.call(lambda c: c.set_trace_callback(None))
            assert store.commits == 1
            assert store.pending_count() == 0
            assert len(store.load_seen(0.0)) == 700

        def count(prefix: str) -> int:
            return sum(s.startswith(prefix) for s in statements)

        # 700 = 5 x 128 + 60 (one padded tail); 700 = 10 x 64 + 60 = 32 + 16 + 8 + 4;
        # 700 = 2 x 256 + 188 (one padded tail).
        assert count("INSERT INTO seen") == 6
        assert count("INSERT INTO outbox") == 14
        assert count("INSERT INTO delivered") == 3
        assert not any(s.startswith("UPDATE") for s in statements)

    _run(scenario)


def test_a_duplicate_outbox_id_fails_only_its_own_submission() -> None:
    """In one batch of several hundred rows, the submission that adds an id twice fails
    whole (its dedup rows and alarms too); the others commit, marks included."""

    async def scenario() -> None:
        first = [_add(i) for i in range(1, 301)]
        good: list[Op] = [*first, *(SeenOp(f"g{i}", None, "mqtt", 1.0) for i in range(200))]
        bad: list[Op] = [_add(i) for i in range(301, 601)]
        bad += [
            _add(450),
            SeenOp("bad", None, "mqtt", 1.0),
            AlarmPut("bad", b"", "raised", None, 1.0),
        ]
        later: list[Op] = [OutboxDelivered(i, 7.0) for i in range(1, 301, 2)]
        later += [_add(i) for i in range(601, 701)]
        total = len(good) + len(bad) + len(later)
        store = Store(":memory:", commit_interval_ms=_NEVER, commit_max_batch=total)
        _limit_variables(store)
        async with store:
            results = await asyncio.wait_for(
                asyncio.gather(
                    store.submit(good),
                    store.submit(bad),
                    store.submit(later),
                    return_exceptions=True,
                ),
                _WAIT_S,
            )
            assert results[0] is None
            assert isinstance(results[1], sqlite3.IntegrityError)
            assert results[2] is None
            assert store.writable
            assert store.commits == 1
            assert store.ops_committed == len(good) + len(later)
            pending = {row.id for row in store.load_pending()}
            assert pending == set(range(2, 301, 2)) | set(range(601, 701))
            assert _delivered(store) == dict.fromkeys(range(1, 301, 2), 7.0)
            assert {row.key for row in store.load_seen(0.0)} == {f"g{i}" for i in range(200)}
            assert store.load_alarms() == []

    _run(scenario)


def test_marks_at_different_times_in_one_batch_keep_their_own_times() -> None:
    """Marks stamped at different times in one commit each land with their own time."""

    async def scenario() -> None:
        async with Store(":memory:", commit_interval_ms=_NEVER, commit_max_batch=9) as store:
            _limit_variables(store)
            adds: list[Op] = [_add(i) for i in range(1, 7)]
            marks: list[Op] = [OutboxDelivered(i, 10.0 + (i - 1) // 2) for i in range(1, 4)]
            await asyncio.wait_for(store.write(adds + marks), _WAIT_S)
            assert _delivered(store) == {1: 10.0, 2: 10.0, 3: 11.0}
            assert [row.id for row in store.load_pending()] == [4, 5, 6]

    _run(scenario)


def test_random_batch_sizes_across_the_ladder_edges() -> None:
    """Sizes at and around each ladder step (and past 999 values) all read back whole."""
    rng = random.Random(5)
    sizes = sorted({n + d for n in (1, 2, 64, 128, 256, 512) for d in (-1, 0, 1)} | {0, 700})

    async def scenario() -> None:
        next_id = 1
        expected: list[int] = []
        async with Store(":memory:", commit_interval_ms=0) as store:
            _limit_variables(store)
            for size in sizes:
                ids = list(range(next_id, next_id + size))
                next_id += size
                ops: list[Op] = [_add(i) for i in ids]
                ops += [SeenOp(f"s{i}", None, "mqtt", 1.0) for i in ids]
                marked = sorted(rng.sample(ids, size // 2))
                ops += [OutboxDelivered(i, 9.0) for i in marked]
                await asyncio.wait_for(store.write(ops), _WAIT_S)
                expected += sorted(set(ids) - set(marked))
            assert sorted(r.id for r in store.load_pending()) == expected
            assert len(store.load_seen(0.0)) == next_id - 1
            assert store.writable

    _run(scenario)
