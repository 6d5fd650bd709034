"""The in-memory outbox: waiting publishers, retries, and the cap on passes in flight."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.outbox import MemoryOutbox, Outgoing
from gateway.core.lanes import PASS_LANE


def _item(name: str) -> Outgoing:
    return Outgoing(name, 1, payload=name.encode())


def test_no_more_passes_in_flight_than_allowed_but_alarms_still_go() -> None:
    """At the cap a pass waits, a panic queued after it does not; a confirmed
    pass lets the next one go."""
    outbox = MemoryOutbox(max_passes_in_flight=2, clock=lambda: 0.0)
    for n in range(4):
        outbox.put(PASS_LANE, _item(f"pass{n}"))
    first, second = outbox.get_nowait(), outbox.get_nowait()
    assert first is not None
    assert second is not None
    assert outbox.get_nowait() is None
    outbox.put(1, _item("panic"))
    panic = outbox.get_nowait()
    assert panic is not None
    assert panic.item.topic == "panic"
    assert outbox.passes_in_flight == 2
    assert outbox.in_flight == 3
    outbox.done(first)
    third = outbox.get_nowait()
    assert third is not None
    assert third.item.topic == "pass2"
    outbox.done(panic)
    assert outbox.in_flight == 2  # second and third
    assert outbox.pending == 3  # and pass3 queued


def test_a_failed_pass_frees_its_slot_and_comes_back_first() -> None:
    """`defer` counts the pass out of flight; once due it leaves before newer passes."""
    now = [0.0]
    outbox = MemoryOutbox(max_passes_in_flight=1, clock=lambda: now[0])
    outbox.put(PASS_LANE, _item("old"))
    outbox.put(PASS_LANE, _item("new"))
    old = outbox.get_nowait()
    assert old is not None
    assert outbox.get_nowait() is None
    outbox.defer(old, 1.0)
    assert outbox.passes_in_flight == 0
    now[0] = 2.0
    again = outbox.get_nowait()
    assert again is not None
    assert again.item.topic == "old"
    assert again.item.attempts == 1


def test_a_waiting_publisher_wakes_when_a_pass_is_confirmed() -> None:
    """Only passes queued, the cap reached: `get` waits, and a confirmation (not a
    new pass) wakes it."""

    async def scenario() -> None:
        outbox = MemoryOutbox(max_passes_in_flight=1, clock=lambda: 0.0)
        outbox.put(PASS_LANE, _item("a"))
        outbox.put(PASS_LANE, _item("b"))
        first = await outbox.get()
        waiting = asyncio.create_task(outbox.get())
        await asyncio.sleep(0)
        outbox.put(PASS_LANE, _item("c"))  # a pass while at the cap wakes nobody
        await asyncio.sleep(0)
        assert not waiting.done()
        outbox.done(first)
        second = await asyncio.wait_for(waiting, 1.0)
        assert second.item.topic == "b"

    asyncio.run(scenario())


def test_cap_must_be_positive() -> None:
    """A cap of 0 would never send a pass: refused."""
    with pytest.raises(ValueError, match="positive"):
        MemoryOutbox(max_passes_in_flight=0)


@given(st.lists(st.tuples(st.sampled_from(["put_pass", "put_alarm", "get", "done"])), max_size=80))
def test_passes_in_flight_never_exceed_the_cap(steps: list[tuple[str]]) -> None:
    """Any interleaving of puts, gets and confirmations keeps the counts true."""
    outbox = MemoryOutbox(max_passes_in_flight=3, clock=lambda: 0.0)
    out = []
    for (step,) in steps:
        if step == "put_pass":
            outbox.put(PASS_LANE, _item("p"))
        elif step == "put_alarm":
            outbox.put(1, _item("a"))
        elif step == "get":
            queued = outbox.get_nowait()
            if queued is not None:
                out.append(queued)
        elif out:
            outbox.done(out.pop(0))
        assert outbox.passes_in_flight <= 3
        assert outbox.passes_in_flight == sum(q.lane == PASS_LANE for q in out)
        assert outbox.in_flight == len(out)


def test_the_plate_reader_waits_for_room_in_the_pass_lane() -> None:
    """`wait_pass_room` returns at once with room, else once sending has taken
    the lane down to the mark; alarms queued do not count."""

    async def scenario() -> None:
        outbox = MemoryOutbox(clock=lambda: 0.0)
        outbox.put(1, _item("panic"))
        for n in range(3):
            outbox.put(PASS_LANE, _item(f"pass{n}"))
        await asyncio.wait_for(outbox.wait_pass_room(3), 1.0)
        waiting = asyncio.create_task(outbox.wait_pass_room(1))
        await asyncio.sleep(0)
        assert outbox.get_nowait() is not None  # the panic: the lane is unchanged
        await asyncio.sleep(0)
        assert not waiting.done()
        assert outbox.get_nowait() is not None  # pass0: two left
        await asyncio.sleep(0)
        assert not waiting.done()
        assert outbox.get_nowait() is not None  # pass1: one left
        await asyncio.wait_for(waiting, 1.0)

    asyncio.run(scenario())
