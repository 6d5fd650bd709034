"""Test-wide settings: Hypothesis profiles, and the `mosquitto` and `free_port` fixtures.

`fast` (the default) keeps the edit-test loop short; `thorough` is what CI runs
(scripts/test selects it when CI=true). Choose with HYPOTHESIS_PROFILE.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.brokers import Mosquitto
from tests.brokers import free_port as _free_port

settings.register_profile("fast", max_examples=60, deadline=None)
settings.register_profile(
    "thorough",
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    return _free_port()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh mosquitto on a free loopback port, SIGKILLed by pid at teardown.

    Function-scoped: every test gets empty sessions and retained state; a start
    costs about 20 ms. Fails (never skips) when mosquitto is not installed.
    """
    directory = tmp_path / "mosquitto"
    directory.mkdir()
    broker = Mosquitto(directory)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()  # SIGKILL also ends a broker a test left paused (SIGSTOP)
