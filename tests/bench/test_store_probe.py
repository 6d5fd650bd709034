"""The store probe runs end to end and prints one figure per case (sizes kept tiny)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.store_probe import main


def test_the_probe_prints_every_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Four convoy lines (two intervals x two statement shapes) and two layout lines."""
    assert main(["--quick", "--dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    convoy = [line for line in lines if line.startswith("convoy:")]
    layout = [line for line in lines if line.startswith("layout:")]
    assert len(convoy) == 4
    assert all(re.search(r"p50 \d+\.\d ms, p99 \d+\.\d ms$", line) for line in convoy)
    assert len(layout) == 2
    assert all(re.search(r": \d+\.\d µs CPU per row$", line) for line in layout)
    assert list(tmp_path.iterdir()) == []  # the scratch databases are gone
