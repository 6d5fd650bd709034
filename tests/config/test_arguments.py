"""Command-line values are refused with a clear reason before anything starts."""

from __future__ import annotations

import argparse

import pytest

from config import arguments


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (arguments.number, "-1.5", -1.5),
        (arguments.positive, "0.25", 0.25),
        (arguments.non_negative, "0", 0.0),
        (arguments.fraction, "1", 1.0),
        (arguments.count, "3", 3),
        (arguments.port, "0", 0),
        (arguments.port, "65535", 65535),
    ],
)
def test_good_values_parse(parse: object, text: str, value: float) -> None:
    """Each type accepts what it promises."""
    assert callable(parse)
    assert parse(text) == value


@pytest.mark.parametrize(
    ("parse", "text", "reason"),
    [
        (arguments.number, "x", "is not a number"),
        (arguments.number, "nan", "not a finite number"),
        (arguments.positive, "0", "greater than 0"),
        (arguments.non_negative, "-0.1", "must not be negative"),
        (arguments.fraction, "1.5", "fraction from 0 to 1"),
        (arguments.count, "0", "at least 1"),
        (arguments.count, "1.5", "whole number"),
        (arguments.port, "65536", "0-65535"),
        (arguments.port, "http", "not a port number"),
    ],
)
def test_bad_values_say_why(parse: object, text: str, reason: str) -> None:
    """Each refusal names the value and the reason."""
    assert callable(parse)
    with pytest.raises(argparse.ArgumentTypeError, match=reason):
        parse(text)
