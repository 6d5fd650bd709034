"""Alarms first: the order in which pending dispatches leave."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.lanes import PASS_LANE, Lanes


def test_life_safety_overtakes_a_burst_of_passes() -> None:
    """A panic queued after 1,000 passes leaves first."""
    lanes: Lanes[str] = Lanes()
    for n in range(1000):
        lanes.push(PASS_LANE, f"pass{n}")
    lanes.push(1, "panic")
    first = lanes.pop(0.0)
    assert first is not None
    assert first.item == "panic"


def test_oldest_first_within_a_lane() -> None:
    """Within one priority, arrival order is kept."""
    lanes: Lanes[str] = Lanes()
    for name in ("a", "b", "c"):
        lanes.push(2, name)
    assert [q.item for q in (lanes.pop(0), lanes.pop(0), lanes.pop(0)) if q] == ["a", "b", "c"]
    assert lanes.pop(0) is None
    assert len(lanes) == 0


@given(st.lists(st.integers(min_value=1, max_value=PASS_LANE), max_size=200))
def test_pop_order_is_by_lane_then_age(lanes_in: list[int]) -> None:
    """Whatever the arrival order, items leave sorted by (lane, arrival)."""
    lanes: Lanes[int] = Lanes()
    for n, lane in enumerate(lanes_in):
        lanes.push(lane, n)
    out = []
    while (queued := lanes.pop(0.0)) is not None:
        out.append((queued.lane, queued.item))
    assert out == sorted((lane, n) for n, lane in enumerate(lanes_in))


def test_full_pass_lane_drops_the_oldest_pass_and_counts_it() -> None:
    """The pass lane is bounded; alarms never are."""
    lanes: Lanes[str] = Lanes(max_passes=2)
    assert lanes.push(PASS_LANE, "p1") is None
    assert lanes.push(PASS_LANE, "p2") is None
    dropped = lanes.push(PASS_LANE, "p3")
    assert dropped is not None
    assert dropped.item == "p1"
    assert lanes.dropped == 1
    for n in range(10):
        assert lanes.push(1, f"a{n}") is None
    assert len(lanes) == 12


def test_deferred_item_waits_then_comes_back_ahead_of_newer_ones() -> None:
    """A failed dispatch retries at its time, before items queued after it."""
    lanes: Lanes[str] = Lanes()
    lanes.push(1, "old")
    queued = lanes.pop(0.0)
    assert queued is not None
    lanes.defer(queued, 5.0)
    lanes.push(1, "new")
    assert lanes.next_retry() == 5.0
    assert lanes.ready(1.0)
    newer = lanes.pop(1.0)
    assert newer is not None
    assert newer.item == "new"
    assert lanes.pop(1.0) is None
    assert not lanes.ready(4.9)
    assert lanes.ready(5.0)
    back = lanes.pop(5.0)
    assert back is not None
    assert back.item == "old"


def test_several_deferred_items_return_oldest_first() -> None:
    """Items released together keep their original order."""
    lanes: Lanes[str] = Lanes()
    for name in ("a", "b", "c"):
        lanes.push(2, name)
    popped = [lanes.pop(0.0) for _ in range(3)]
    for queued in reversed([q for q in popped if q is not None]):
        lanes.defer(queued, 1.0)
    assert [q.item for q in (lanes.pop(1.0), lanes.pop(1.0), lanes.pop(1.0)) if q] == [
        "a",
        "b",
        "c",
    ]


def test_a_deferred_item_does_not_block_its_lane() -> None:
    """One failing sink never stalls the others: later items in the lane go meanwhile."""
    lanes: Lanes[str] = Lanes()
    lanes.push(1, "to-failing-sink")
    lanes.push(1, "to-healthy-sink")
    failing = lanes.pop(0.0)
    assert failing is not None
    lanes.defer(failing, 60.0)
    healthy = lanes.pop(0.1)
    assert healthy is not None
    assert healthy.item == "to-healthy-sink"


def test_misuse_raises() -> None:
    """Unknown lanes and non-positive bounds are programming errors."""
    with pytest.raises(ValueError, match="lane"):
        Lanes[str]().push(9, "x")
    with pytest.raises(ValueError, match="max_passes"):
        Lanes[str](max_passes=0)


def test_pop_without_passes_leaves_the_pass_lane_alone() -> None:
    """`passes=False` serves every alarm lane and no pass, then nothing."""
    lanes: Lanes[str] = Lanes()
    lanes.push(PASS_LANE, "pass")
    lanes.push(4, "info")
    first = lanes.pop(0.0, passes=False)
    assert first is not None
    assert first.item == "info"
    assert lanes.pop(0.0, passes=False) is None
    last = lanes.pop(0.0)
    assert last is not None
    assert last.item == "pass"
