"""The plate generator: valid plates, realistic shares, confusable misreads (PROTOCOLS.md)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulators.plates import (
    CITY_LETTERS,
    CONFUSABLE,
    JIANGSU_CITY_LETTERS,
    PROVINCES,
    SERIAL_LETTERS,
    PlateGenerator,
    PlateRead,
    is_new_energy,
    misread,
)

DIGITS = set("0123456789")
SERIAL_CHARS = DIGITS | set(SERIAL_LETTERS)
SAMPLE = 20_000


def assert_valid(plate: str) -> None:
    """Shared check: the shape GA 36 gives an ordinary or a new-energy plate."""
    assert plate[0] in PROVINCES
    assert plate[1] in CITY_LETTERS
    if plate[0] == "苏":
        assert plate[1] in JIANGSU_CITY_LETTERS
    serial = plate[2:]
    assert "I" not in plate
    assert "O" not in plate
    assert set(serial) <= SERIAL_CHARS
    if len(plate) == 7:
        return
    assert len(plate) == 8
    small = serial[0] in "DF" and set(serial[2:]) <= DIGITS
    large = serial[-1] in "DF" and set(serial[:5]) <= DIGITS
    assert small or large, plate


@pytest.fixture(scope="module")
def plates() -> list[str]:
    """A large sample of plates from one seed."""
    generator = PlateGenerator(random.Random(20240601))
    return [generator.plate() for _ in range(SAMPLE)]


def test_constants_follow_the_standard() -> None:
    """31 provinces, 24 letters without I and O, Jiangsu's 13 cities."""
    assert len(PROVINCES) == 31 == len(set(PROVINCES))
    assert len(SERIAL_LETTERS) == 24
    assert "I" not in SERIAL_LETTERS
    assert "O" not in SERIAL_LETTERS
    assert JIANGSU_CITY_LETTERS == "ABCDEFGHJKLMN"


def test_every_plate_is_valid(plates: list[str]) -> None:
    """Every plate has a province, a city letter and a serial without I or O."""
    for plate in plates:
        assert_valid(plate)


@given(st.integers(min_value=0, max_value=2**64))
def test_any_seed_gives_valid_plates(seed: int) -> None:
    """Whatever the seed, plates and reads are well formed."""
    generator = PlateGenerator(random.Random(seed), unread_rate=0.2)
    for _ in range(20):
        read = generator.read()
        if read.unread:
            assert read == PlateRead("", 0.0)
        else:
            assert_valid(read.plate)
            assert 0.6 <= read.conf <= 0.99


def test_jiangsu_dominates_and_every_province_appears(plates: list[str]) -> None:
    """About 75 % 苏, the neighbours next, and all 31 provinces in a large sample."""
    provinces = Counter(plate[0] for plate in plates)
    assert 0.73 <= provinces["苏"] / SAMPLE <= 0.77
    assert set(provinces) == set(PROVINCES)
    for neighbour in "皖浙沪鲁":
        assert provinces[neighbour] > provinces["藏"]


def test_about_a_tenth_are_new_energy(plates: list[str]) -> None:
    """New-energy (8-character) plates make about 10 %."""
    share = sum(1 for plate in plates if is_new_energy(plate)) / SAMPLE
    assert 0.09 <= share <= 0.11


def test_ordinary_serials_carry_few_letters(plates: list[str]) -> None:
    """Most ordinary serials have at most two letters; three is rare, more never."""
    letters = Counter(
        sum(1 for char in plate[2:] if char.isalpha()) for plate in plates if len(plate) == 7
    )
    ordinary = sum(letters.values())
    assert max(letters) <= 3
    assert (letters[0] + letters[1] + letters[2]) / ordinary >= 0.96


def test_unread_rate_and_confidence_distribution() -> None:
    """The unread share is as configured; confidences sit in 0.6-0.99, mostly high."""
    generator = PlateGenerator(random.Random(5), unread_rate=0.05)
    reads = [generator.read() for _ in range(SAMPLE)]
    unread = [r for r in reads if r.unread]
    assert 0.04 <= len(unread) / SAMPLE <= 0.06
    assert all(r.conf == 0.0 and r.plate == "" for r in unread)
    confs = [r.conf for r in reads if not r.unread]
    assert min(confs) >= 0.6
    assert max(confs) <= 0.99
    assert sum(confs) / len(confs) > 0.85


def test_same_seed_same_plates() -> None:
    """Two generators with the same seed draw the same plates."""
    first = PlateGenerator(random.Random(9))
    second = PlateGenerator(random.Random(9))
    assert [first.read() for _ in range(200)] == [second.read() for _ in range(200)]


def test_other_home_province() -> None:
    """A district elsewhere sees its own province most."""
    generator = PlateGenerator(random.Random(1), home_province="浙", home_share=0.85)
    provinces = Counter(generator.plate()[0] for _ in range(2000))
    assert provinces.most_common(1)[0][0] == "浙"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"home_province": "X"},
        {"unread_rate": 1.5},
        {"new_energy_share": -0.1},
        {"home_share": 0.9, "neighbour_share": 0.2},
    ],
)
def test_bad_settings_raise(kwargs: dict[str, object]) -> None:
    """Settings outside their range are a ValueError (misuse of our own API)."""
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the setting
        PlateGenerator(random.Random(0), **kwargs)  # type: ignore[arg-type]


def test_misread_swaps_one_confusable_character() -> None:
    """A misread differs in exactly one position, by a confusable pair."""
    rng = random.Random(3)
    plate = "苏B8S5Z"
    for _ in range(50):
        variant = misread(plate, rng)
        diffs = [(a, b) for a, b in zip(plate, variant, strict=True) if a != b]
        assert len(diffs) == 1
        original, replaced = diffs[0]
        assert CONFUSABLE[original] == replaced


def test_misread_covers_every_pair() -> None:
    """Each confusable pair (B/8, S/5, Z/2, D/0, G/6) occurs, both ways."""
    for char, other in CONFUSABLE.items():
        assert CONFUSABLE[other] == char
        assert misread(f"苏A{char}1134", random.Random(0)) == f"苏A{other}1134"
    assert set(CONFUSABLE) == set("B8S5Z2D0G6")


def test_misread_without_confusables_changes_the_province() -> None:
    """With no confusable character, the province is misread instead."""
    variant = misread("苏A13479", random.Random(1))
    assert variant != "苏A13479"
    assert variant[1:] == "A13479"
    assert variant[0] in PROVINCES


def test_misread_keeps_unread_unread() -> None:
    """An unread plate stays unread."""
    assert misread("", random.Random(0)) == ""


@given(st.integers(min_value=0, max_value=2**32))
def test_misread_always_differs(seed: int) -> None:
    """A misread of a valid plate is never the plate itself and keeps its length."""
    rng = random.Random(seed)
    plate = PlateGenerator(rng).plate()
    variant = misread(plate, rng)
    assert variant != plate
    assert len(variant) == len(plate)
