"""Appending entries to a packed map gives what packing the bigger map gives."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.payloads import encode, packed_float, packed_str, with_packed_entries

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)


@given(
    st.dictionaries(st.text(max_size=8).filter(lambda k: k != "dispatch_ts"), _values, max_size=40),
    st.floats(allow_nan=False),
)
def test_appending_a_float_equals_packing_the_bigger_map(
    body: dict[str, object], ts: float
) -> None:
    """Any map, any float: the edit decodes to the map with the key added."""
    edited = with_packed_entries(encode(body), packed_str("dispatch_ts") + packed_float(ts))
    assert msgpack.unpackb(edited, raw=False) == {**body, "dispatch_ts": ts}
    assert edited == encode({**body, "dispatch_ts": ts})


@pytest.mark.parametrize("size", [0, 14, 15, 16, 65_534, 65_535, 65_536])
def test_header_sizes_at_every_boundary(size: int) -> None:
    """fixmap → map 16 → map 32: the header grows exactly where packing would."""
    body = {f"k{i}": i for i in range(size)}
    edited = with_packed_entries(encode(body), packed_str("x") + packed_float(1.5))
    assert edited == encode({**body, "x": 1.5})


def test_several_entries_at_once() -> None:
    """`count` entries appended together."""
    entries = packed_str("a") + packed_float(-0.0) + packed_str("b") + packed_float(math.inf)
    edited = with_packed_entries(encode({"z": 1}), entries, count=2)
    assert msgpack.unpackb(edited, raw=False) == {"z": 1, "a": -0.0, "b": math.inf}


def test_not_a_map_is_refused() -> None:
    """Our own misuse (a packed list, say) raises instead of writing garbage."""
    with pytest.raises(ValueError, match="not a packed map"):
        with_packed_entries(encode_list(), packed_str("a") + packed_float(1.0))


def encode_list() -> bytes:
    packed: bytes = msgpack.packb([1, 2, 3])
    return packed
