"""A district-scale deployment, modelled on DESIGN.md's district, for the demo and the benchmark.

DESIGN.md's table, reproduced: 20 townships, each with a monitoring centre and a
police station; 270 villages spread over them; 130,000 households with an alarm
phone, ten to a joint-defence group (13,000 groups), each phone with one unique
6-character Contact ID account (PROTOCOLS.md: 0-9 and B-F, never A); and 207
checkpoints: ring 1 around the main town A/B/C = 4/12/12, ring 2 on the district
borders A/B/C = 12/31/121, ring 3 = 15 emergency checkpoints on main bridges
(A-class). A-class checkpoints are run by the county bureau, B and C by the
township's police station. The main town is the first township (城关镇); ring 1
stands around it, ring 2 on the other townships' borders, ring 3 anywhere.

`generate_district(seed)` returns the TOML text and the households CSV text; the
same seed gives the same bytes (one `random.Random(seed)` drives every choice).
`python -m config.generate --out DIR [--seed N]` writes `district.toml` and
`households.csv` into DIR.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
from collections.abc import Sequence
from typing import Final

__all__ = ["CHECKPOINT_PLAN", "generate_district", "main"]

TOWNSHIPS: Final = 20
VILLAGES: Final = 270
GROUPS: Final = 13_000
HOUSEHOLDS_PER_GROUP: Final = 10
BUREAU: Final = "county"

# (ring, class, count), DESIGN.md's table; ring 3 is all A-class.
CHECKPOINT_PLAN: Final[tuple[tuple[int, str, int], ...]] = (
    (1, "A", 4),
    (1, "B", 12),
    (1, "C", 12),
    (2, "A", 12),
    (2, "B", 31),
    (2, "C", 121),
    (3, "A", 15),
)

# Contact ID account characters (PROTOCOLS.md): `A` never occurs.
_ACCOUNT_ALPHABET: Final = "0123456789BCDEF"
_ACCOUNT_LENGTH: Final = 6
_NAME_PARTS: Final = "东西南北新大小青石白黄红金马龙凤桥河山湖林丰安平泉竹松柳桃李杨张王田水云"
_WATCHLIST: Final = ("苏A12345", "苏B8888C", "皖K6D2Q9")


def _q(text: str) -> str:
    # A JSON string (escapes \" \\ and controls as \uXXXX) is a TOML basic string.
    return json.dumps(text, ensure_ascii=False)


def _names(rng: random.Random, count: int, suffixes: Sequence[str], taken: set[str]) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choices(_NAME_PARTS, k=2)) + rng.choice(suffixes)
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def _spread(rng: random.Random, total: int, buckets: int) -> list[int]:
    """`total` split over `buckets` as evenly as possible; which ones get one more is random."""
    base, extra = divmod(total, buckets)
    lucky = set(rng.sample(range(buckets), extra))
    return [base + (index in lucky) for index in range(buckets)]


def _account(number: int) -> str:
    chars: list[str] = []
    for _ in range(_ACCOUNT_LENGTH):
        number, digit = divmod(number, len(_ACCOUNT_ALPHABET))
        chars.append(_ACCOUNT_ALPHABET[digit])
    return "".join(reversed(chars))


def generate_district(seed: int = 1) -> tuple[str, str]:
    """(district.toml text, households.csv text) of DESIGN.md's district, deterministic per seed."""
    rng = random.Random(seed)
    taken: set[str] = set()
    township_names = ["城关镇", *_names(rng, TOWNSHIPS - 1, ("镇", "乡"), taken)]
    townships = [f"t{n:02d}" for n in range(1, TOWNSHIPS + 1)]
    stations = [f"s{n:02d}" for n in range(1, TOWNSHIPS + 1)]

    village_names = _names(rng, VILLAGES, ("村", "村", "村", "社区"), taken)
    village_township: list[str] = []
    for township, count in zip(townships, _spread(rng, VILLAGES, TOWNSHIPS), strict=True):
        village_township.extend([township] * count)
    villages = [f"v{n:03d}" for n in range(1, VILLAGES + 1)]

    group_village: list[str] = []
    for village, count in zip(villages, _spread(rng, GROUPS, VILLAGES), strict=True):
        group_village.extend([village] * count)
    groups = [f"g{n:05d}" for n in range(1, GROUPS + 1)]

    out: list[str] = [
        f"# A district modelled on DESIGN.md (seed {seed}), written by config.generate.",
        "# Households are in households.csv (id,group,accounts).",
        "",
        f"watchlist = [{', '.join(_q(plate) for plate in _WATCHLIST)}]",
        'households_file = "households.csv"',
        "",
        "[district]",
        'id = "d1"',
        'name = "示范区"',
        f"bureau = {_q(BUREAU)}",
        "",
        "[mqtt]",
        'broker = "mqtt://127.0.0.1:1883"',
        'base_topic = "alarmgw"',
        'client_id = "alarmgw-d1"',
        "",
        "[http]",
        'listen = "127.0.0.1:9108"',
        "",
        "[store]",
        'path = "var/alarmgw.sqlite"',
        "",
        "[escalation]",
        'chain = ["village", "township", "bureau"]',
        "",
        "[escalation.deadline_s]",
        "life_safety = 60",
        "property = 300",
        "trouble = 0",
        "info = 0",
        "",
        "[[sinks]]",
        'kind = "bureau"',
        f"id = {_q(BUREAU)}",
        'name = "县公安局"',
    ]
    for station, township_name in zip(stations, township_names, strict=True):
        out += ["", "[[sinks]]", 'kind = "station"', f"id = {_q(station)}"]
        out.append(f"name = {_q(township_name.removesuffix('镇').removesuffix('乡') + '派出所')}")
    for township, name, station in zip(townships, township_names, stations, strict=True):
        out += ["", "[[townships]]", f"id = {_q(township)}", f"name = {_q(name)}"]
        out.append(f"station = {_q(station)}")
    for village, name, township in zip(villages, village_names, village_township, strict=True):
        out += ["", "[[villages]]", f"id = {_q(village)}", f"name = {_q(name)}"]
        out.append(f"township = {_q(township)}")
    for group, village in zip(groups, group_village, strict=True):
        out += ["", "[[groups]]", f"id = {_q(group)}", f"village = {_q(village)}"]

    station_of = dict(zip(townships, stations, strict=True))
    name_of = dict(zip(townships, township_names, strict=True))
    for ring, cls, count in CHECKPOINT_PLAN:
        for number in range(1, count + 1):
            # Ring 1 surrounds the main town; ring 2 is the other townships' borders.
            if ring == 1:
                township = townships[0]
            elif ring == 2:
                township = rng.choice(townships[1:])
            else:
                township = rng.choice(townships)
            unit = f"bureau/{BUREAU}" if cls == "A" else f"station/{station_of[township]}"
            what = "大桥应急卡口" if ring == 3 else f"{ring}环{cls}类卡口"
            out += [
                "",
                "[[checkpoints]]",
                f"id = {_q(f'r{ring}{cls.lower()}{number:03d}')}",
                f"name = {_q(f'{name_of[township]}{what}{number}号')}",
                f"class = {_q(cls)}",
                f"ring = {ring}",
                f"township = {_q(township)}",
                f"unit = {_q(unit)}",
            ]
    toml_text = "\n".join(out) + "\n"

    households = GROUPS * HOUSEHOLDS_PER_GROUP
    accounts = rng.sample(range(len(_ACCOUNT_ALPHABET) ** _ACCOUNT_LENGTH), households)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("id", "group", "accounts"))
    for index, account in enumerate(accounts):
        group = groups[index // HOUSEHOLDS_PER_GROUP]
        writer.writerow((f"h{index + 1:06d}", group, _account(account)))
    return toml_text, buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m config.generate --out DIR [--seed N]`: write district.toml and households.csv."""
    parser = argparse.ArgumentParser(
        prog="python -m config.generate",
        description="Write a district-scale deployment modelled on DESIGN.md's district.",
    )
    parser.add_argument(
        "--out", required=True, help="folder to write district.toml and households.csv"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = parser.parse_args(argv)
    toml_text, csv_text = generate_district(args.seed)
    os.makedirs(args.out, exist_ok=True)
    toml_path = os.path.join(args.out, "district.toml")
    csv_path = os.path.join(args.out, "households.csv")
    with open(toml_path, "w", encoding="utf-8") as handle:
        handle.write(toml_text)
    with open(csv_path, "w", encoding="utf-8", newline="") as handle:
        handle.write(csv_text)
    print(f"wrote {toml_path} and {csv_path} (seed {args.seed})")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through main()
    raise SystemExit(main())
