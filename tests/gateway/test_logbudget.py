"""The log budget: a burst of lines of each kind, then `rate` a second, the rest counted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.logbudget import LogBudget


def test_a_burst_is_written_then_lines_are_held_and_counted() -> None:
    budget = LogBudget(rate=10.0, burst=5.0)
    allowed = [budget.allow("alarm dispatched", 100.0) for _ in range(8)]
    assert allowed == [True] * 5 + [False] * 3
    assert budget.held() == {"alarm dispatched": 3}
    assert budget.held() == {}  # handed over once


def test_the_budget_refills_at_its_rate_and_never_beyond_the_burst() -> None:
    budget = LogBudget(rate=10.0, burst=5.0)
    for _ in range(5):
        assert budget.allow("k", 0.0)
    assert not budget.allow("k", 0.0)
    assert budget.allow("k", 0.1)  # 0.1 s at 10 a second: one more line
    assert not budget.allow("k", 0.1)
    # An hour of quiet refills to the burst, not to 36,000 lines.
    assert sum(budget.allow("k", 3600.0) for _ in range(100)) == 5


def test_kinds_have_budgets_of_their_own() -> None:
    budget = LogBudget(rate=1.0, burst=1.0)
    assert budget.allow("alarm accepted", 5.0)
    assert not budget.allow("alarm accepted", 5.0)
    assert budget.allow("alarm dispatched", 5.0)
    assert budget.held() == {"alarm accepted": 1}


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 10.0), (-1.0, 10.0), (5.0, 0.5)])
def test_a_budget_that_could_never_write_is_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="log budget"):
        LogBudget(rate=rate, burst=burst)


@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=300),
    rate=st.floats(min_value=0.5, max_value=100.0),
    burst=st.integers(min_value=1, max_value=50),
)
def test_lines_written_never_exceed_burst_plus_rate_times_elapsed(
    gaps: list[float], rate: float, burst: int
) -> None:
    """Whatever the arrivals: written + held = offered, written <= burst + rate * elapsed."""
    budget = LogBudget(rate=rate, burst=float(burst))
    now = 0.0
    written = 0
    for gap in gaps:
        now += gap
        written += budget.allow("k", now)
    held = budget.held().get("k", 0)
    assert written + held == len(gaps)
    assert written <= burst + rate * now + 1e-6
