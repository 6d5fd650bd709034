"""config.generate: DESIGN.md's district, deterministic, and loadable."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from config import CheckpointClass, Config, SinkRef, load_config
from config.generate import CHECKPOINT_PLAN, generate_district, main


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The seed-1 district, written by `main` and loaded once for this module."""
    out = tmp_path_factory.mktemp("district")
    assert main(["--out", str(out)]) == 0
    return load_config(out / "district.toml", environ={})


def test_counts_match_design(district: Config) -> None:
    """20 townships, 270 villages, 13,000 groups of ten, 130,000 households, 207 checkpoints."""
    assert len(district.townships) == 20
    assert len(district.villages) == 270
    assert len(district.groups) == 13_000
    assert len(district.households) == 130_000
    assert len(district.checkpoints) == 207
    per_group = Counter(h.group for h in district.households)
    assert set(per_group.values()) == {10}
    assert len({v.township for v in district.villages}) == 20


def test_checkpoint_rings_and_classes(district: Config) -> None:
    """Ring/class counts are DESIGN.md's: 4/12/12, 12/31/121, and 15 A-class bridges."""
    counts = Counter((c.ring, c.cls.value) for c in district.checkpoints)
    assert counts == {
        (1, "A"): 4,
        (1, "B"): 12,
        (1, "C"): 12,
        (2, "A"): 12,
        (2, "B"): 31,
        (2, "C"): 121,
        (3, "A"): 15,
    }
    assert sum(count for _, _, count in CHECKPOINT_PLAN) == 207


def test_units_are_bureau_or_the_township_station(district: Config) -> None:
    """A-class checkpoints belong to the bureau; B and C to their township's station."""
    townships = district.topology.townships
    for checkpoint in district.checkpoints:
        if checkpoint.cls is CheckpointClass.A:
            assert checkpoint.unit == SinkRef("bureau", district.bureau)
        else:
            station = townships[checkpoint.township].station
            assert station is not None
            assert checkpoint.unit == SinkRef("station", station)
    kinds = Counter(s.kind for s in district.sinks)
    assert kinds == {"station": 20, "bureau": 1, "township": 20, "village": 270, "group": 13_000}


def test_accounts_are_unique_contact_id_accounts(district: Config) -> None:
    """Each household has one unique 6-character account of 0-9 and B-F."""
    accounts = [a for h in district.households for a in h.accounts]
    assert len(accounts) == 130_000
    assert len(set(accounts)) == 130_000
    assert all(re.fullmatch(r"[0-9B-F]{6}", a) for a in accounts)
    assert len(district.topology.by_account) == 130_000


def test_same_seed_same_district() -> None:
    """The same seed gives the same bytes; another seed another district."""
    assert generate_district(7) == generate_district(7)
    assert generate_district(7)[1] != generate_district(8)[1]


def test_main_writes_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m config.generate --out DIR --seed N` writes district.toml and households.csv."""
    assert main(["--out", str(tmp_path / "new"), "--seed", "3"]) == 0
    toml_text, csv_text = generate_district(3)
    assert (tmp_path / "new" / "district.toml").read_text(encoding="utf-8") == toml_text
    assert (tmp_path / "new" / "households.csv").read_text(encoding="utf-8") == csv_text
    assert "seed 3" in capsys.readouterr().out
