"""DESIGN.md's layout, enforced: who may import whom, and what stays pure."""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocols", "config", "devices", "gateway", "simulators")

# Which project packages each package may import (DESIGN.md, "Layout").
ALLOWED: dict[str, set[str]] = {
    "protocols": set(),
    "config": set(),
    "devices": {"protocols", "config"},
    "gateway": {"devices", "protocols", "config"},
    "simulators": {"protocols", "config"},
}

# Pure rooms: no I/O, no clock, no event loop, no logging (DESIGN.md principle 5).
PURE_ROOMS = ("protocols", "devices", "gateway/core")
IMPURE_MODULES = {
    "asyncio", "anyio", "trio", "serial", "gmqtt", "amqtt", "socket", "selectors",
    "select", "time", "logging", "structlog", "sqlite3", "threading", "subprocess",
    "os", "io", "pathlib", "shutil", "tempfile", "prometheus_client", "random",
    "signal", "multiprocessing", "concurrent", "http", "urllib", "datetime",
}  # fmt: skip


def _python_files(folder: Path) -> Iterator[Path]:
    yield from sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            if node.module:
                yield node.module, node.lineno


def _violations() -> list[str]:
    found: list[str] = []
    for package in PACKAGES:
        for path in _python_files(ROOT / package):
            rel = path.relative_to(ROOT).as_posix()
            for module, line in _imports(path):
                top = module.split(".")[0]
                if top in PACKAGES and top != package and top not in ALLOWED[package]:
                    # The one front door: the CLI may start simulators (`alarmgw sim`).
                    cli_exception = rel.startswith("gateway/cli") and top == "simulators"
                    if not cli_exception:
                        found.append(f"{rel}:{line}: {package} may not import {module}")
                if any(rel.startswith(room + "/") for room in PURE_ROOMS) and (
                    top in IMPURE_MODULES
                ):
                    found.append(f"{rel}:{line}: pure room imports {module}")
    return found


def test_dependency_rule_holds() -> None:
    """No package imports a project package DESIGN.md does not allow, and pure rooms stay pure."""
    assert _violations() == []


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    """The import walk sees both plain and from-imports (the rule check can fail)."""
    sample = tmp_path / "m.py"
    sample.write_text("import asyncio\nfrom gateway.core import x\n", encoding="utf-8")
    assert [m for m, _ in _imports(sample)] == ["asyncio", "gateway.core"]


@pytest.mark.parametrize("package", PACKAGES)
def test_top_level_package_resolves_inside_the_repository(package: str) -> None:
    """`config`, `devices`... are common words: each must be this repository's folder."""
    module = importlib.import_module(package)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().parent == ROOT / package
    assert package in sys.modules
