"""Realistic Chinese licence plates, as a checkpoint camera would read them.

Theory of operation (PROTOCOLS.md, "Checkpoint (卡口) records"; GA 36-2018, the
motor-vehicle plate standard):

* An ordinary plate is 7 characters: the province's abbreviation (one of 31),
  the issuing city's letter, and a 5-character serial. City letters and serials
  never use I or O, which would be confused with 1 and 0; most serials are all
  digits or carry one or two letters, three is rare.
* A new-energy plate (green) is 8 characters: a 6-character serial. Small cars
  put D (pure electric) or F (other new energy) first, then a letter or a digit,
  then 4 digits (`苏AD12345`, `苏AF2K345`); large vehicles put 5 digits first and
  D or F last (`苏A12345D`).
* A district in Jiangsu sees mostly 苏 plates, some from the neighbouring
  provinces, and a few from anywhere. Jiangsu's cities are 苏A (南京) to 苏N (宿迁).
* A camera does not always read a plate: an unread pass carries plate `""` and
  confidence 0 (CONTRACT.md, checkpoint `plate`). Read confidences sit between 0.6
  and 0.99, most of them high.
* Misreads follow the confusable pairs B/8, S/5, Z/2, D/0, G/6, and the province
  character is often misread; `misread` produces such variants so that the
  gateway's plate matching can be tested against them.

Everything takes a seeded `random.Random` (STYLE.md habit 5): the same seed
gives the same plates.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = [
    "CITY_LETTERS",
    "CONFUSABLE",
    "JIANGSU_CITY_LETTERS",
    "PROVINCES",
    "SERIAL_LETTERS",
    "PlateGenerator",
    "PlateRead",
    "is_new_energy",
    "misread",
]

PROVINCES: Final = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
"""The 31 province-level abbreviations of mainland China's plates."""

SERIAL_LETTERS: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ"
"""Letters a city code or serial may use: A-Z without I and O (GA 36)."""

CITY_LETTERS: Final = SERIAL_LETTERS
"""City letters in general: the same 24 letters."""

JIANGSU_CITY_LETTERS: Final = "ABCDEFGHJKLMN"
"""Jiangsu's 13 cities, 苏A 南京 ... 苏N 宿迁."""

_DIGITS: Final = "0123456789"
_NEIGHBOURS: Final = "皖浙沪鲁"  # provinces bordering Jiangsu, the usual visitors
_ENERGY: Final = "DF"  # D pure electric, F other new energy

CONFUSABLE: Final[Mapping[str, str]] = MappingProxyType(
    {
        "B": "8",
        "8": "B",
        "S": "5",
        "5": "S",
        "Z": "2",
        "2": "Z",
        "D": "0",
        "0": "D",
        "G": "6",
        "6": "G",
    }
)
"""Character pairs a plate reader commonly confuses (PROTOCOLS.md), both ways."""

# How many letters an ordinary 5-character serial carries, and how often.
_LETTER_COUNTS: Final = (0, 1, 2, 3)
_LETTER_WEIGHTS: Final = (50, 32, 16, 2)


@dataclass(frozen=True, slots=True)
class PlateRead:
    """What the camera reports for one pass: `plate` is `""` and `conf` 0 when unread."""

    plate: str
    conf: float

    @property
    def unread(self) -> bool:
        """True when the camera could not read the plate."""
        return not self.plate


def is_new_energy(plate: str) -> bool:
    """True for an 8-character (green, new-energy) plate."""
    return len(plate) == 8


class PlateGenerator:
    """Draws plates and plate reads for a district; every draw comes from `rng`.

    `home_province` takes `home_share` of the plates, the provinces around
    Jiangsu `neighbour_share`, and every other province shares the rest.
    """

    __slots__ = (
        "_cum_weights",
        "_home",
        "_new_energy_share",
        "_provinces",
        "_rng",
        "_unread_rate",
    )

    def __init__(
        self,
        rng: random.Random,
        *,
        home_province: str = "苏",
        home_share: float = 0.75,
        neighbour_share: float = 0.12,
        new_energy_share: float = 0.10,
        unread_rate: float = 0.03,
    ) -> None:
        if home_province not in PROVINCES:
            raise ValueError(f"unknown province {home_province!r}")
        for name, value in (
            ("home_share", home_share),
            ("neighbour_share", neighbour_share),
            ("new_energy_share", new_energy_share),
            ("unread_rate", unread_rate),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0-1, got {value!r}")
        if home_share + neighbour_share > 1.0:
            raise ValueError("home_share + neighbour_share must not exceed 1")
        self._rng = rng
        self._home = home_province
        self._new_energy_share = new_energy_share
        self._unread_rate = unread_rate
        neighbours = [p for p in _NEIGHBOURS if p != home_province]
        others = [p for p in PROVINCES if p != home_province and p not in neighbours]
        rest = 1.0 - home_share - neighbour_share
        weights = [home_share]
        weights += [neighbour_share / len(neighbours)] * len(neighbours)
        weights += [rest / len(others)] * len(others)
        self._provinces = (home_province, *neighbours, *others)
        total = 0.0
        cumulative: list[float] = []
        for weight in weights:
            total += weight
            cumulative.append(total)
        self._cum_weights = tuple(cumulative)

    def plate(self) -> str:
        """One valid plate: ordinary (7 characters) or new-energy (8)."""
        rng = self._rng
        province = rng.choices(self._provinces, cum_weights=self._cum_weights)[0]
        city = rng.choice(JIANGSU_CITY_LETTERS if province == "苏" else CITY_LETTERS)
        if rng.random() < self._new_energy_share:
            return province + city + self._new_energy_serial()
        return province + city + self._ordinary_serial()

    def read(self) -> PlateRead:
        """One pass as the camera reports it: a plate with its confidence, or unread."""
        rng = self._rng
        if rng.random() < self._unread_rate:
            return PlateRead("", 0.0)
        plate = self.plate()
        # Most reads are confident: 0.99 minus a right-skewed drop of at most 0.39.
        conf = round(0.99 - 0.39 * rng.betavariate(1.2, 5.0), 2)
        return PlateRead(plate, conf)

    def _ordinary_serial(self) -> str:
        rng = self._rng
        letters = rng.choices(_LETTER_COUNTS, weights=_LETTER_WEIGHTS)[0]
        chars = [rng.choice(_DIGITS) for _ in range(5)]
        for position in rng.sample(range(5), letters):
            chars[position] = rng.choice(SERIAL_LETTERS)
        return "".join(chars)

    def _new_energy_serial(self) -> str:
        rng = self._rng
        energy = rng.choice(_ENERGY)
        if rng.random() < 0.85:  # small car: D/F, letter or digit, 4 digits
            second = rng.choice(SERIAL_LETTERS + _DIGITS)
            return energy + second + "".join(rng.choice(_DIGITS) for _ in range(4))
        return "".join(rng.choice(_DIGITS) for _ in range(5)) + energy  # large vehicle


def misread(plate: str, rng: random.Random) -> str:
    """A plausible misreading of `plate`: one confusable character of the code or serial
    swapped (B/8, S/5, Z/2, D/0, G/6), or, when there is none, the province character.

    An unread plate (`""`) stays unread. The result always differs from `plate` otherwise.
    """
    if not plate:
        return plate
    positions = [i for i in range(1, len(plate)) if plate[i] in CONFUSABLE]
    if positions:
        i = rng.choice(positions)
        return plate[:i] + CONFUSABLE[plate[i]] + plate[i + 1 :]
    province = rng.choice([p for p in PROVINCES if p != plate[0]])
    return province + plate[1:]
