"""Shared Hypothesis strategies (STYLE.md 13): one module, so every test draws the same shapes.

Only functions live here; each returns a strategy. Add yours below, never edit others'.
"""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from protocols.contact_id import ContactId, Qualifier


def contact_id_accounts(min_size: int = 4, max_size: int = 4) -> st.SearchStrategy[str]:
    """Canonical Contact ID accounts: digits 0-9 and B-F, never A (PROTOCOLS.md)."""
    return st.text(alphabet="0123456789BCDEF", min_size=min_size, max_size=max_size)


def qualifiers() -> st.SearchStrategy[Qualifier]:
    """Any Contact ID qualifier: new, restore, previous."""
    return st.sampled_from(Qualifier)


def contact_ids() -> st.SearchStrategy[ContactId]:
    """Valid Contact ID messages, as values."""
    return st.builds(
        ContactId,
        account=contact_id_accounts(),
        message_type=st.sampled_from([18, 98]),
        qualifier=qualifiers(),
        code=st.integers(100, 999),
        group=st.integers(0, 99),
        zone=st.integers(0, 999),
    )


def chunkings(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """`data` split at any points into non-empty chunks (b"" would mean end of stream)."""
    if len(data) < 2:
        return st.just([data] if data else [])
    cuts = st.sets(st.integers(1, len(data) - 1), max_size=min(len(data) - 1, 40))

    def split(points: set[int]) -> list[bytes]:
        bounds = [0, *sorted(points), len(data)]
        return [data[a:b] for a, b in itertools.pairwise(bounds)]

    return cuts.map(split)
