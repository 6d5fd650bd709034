"""What a restart reads back (gateway/adapters/journal.py, `Journal.recover`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.adapters.journal import Journal
from gateway.adapters.outbox import MemoryOutbox
from gateway.adapters.store import Store
from gateway.core.alarms import AlarmState
from gateway.core.pipeline import Core
from tests.factories import T0, make_config, phone_event

CONFIG = make_config()


def test_a_restart_reads_back_open_alarms_and_recent_ones_not_the_history(
    tmp_path: Path,
) -> None:
    """The store keeps a year of alarms for the monthly report; a restart takes back
    the open ones and those changed within the dedup window only."""
    path = tmp_path / "store.sqlite"

    async def record() -> None:
        core = Core(CONFIG)
        async with Store(path) as store:
            journal = Journal(store, MemoryOutbox())
            for seq in (1, 2):
                event = phone_event(CONFIG, seq=seq)
                outcome = core.accept(event, T0)
                await journal.record([], seen=[event], alarms=outcome.alarms, now=T0)
            core.acknowledge("ph/h-0001/1", "li", T0 + 5)
            acked = core.find_alarm("ph/h-0001/1")
            assert acked is not None
            await journal.record([], alarms=[acked], now=T0 + 5)

    asyncio.run(record())

    def restart(now: float) -> Core:
        core = Core(CONFIG)
        store = Store(path)
        try:
            Journal(store, MemoryOutbox()).recover(core, now)
        finally:
            store.close()
        return core

    soon = restart(T0 + 60)
    assert soon.alarms.get("ph/h-0001/1").state is AlarmState.ACKNOWLEDGED  # type: ignore[union-attr]
    assert soon.alarms.get("ph/h-0001/2").state is AlarmState.RAISED  # type: ignore[union-attr]
    later = restart(T0 + CONFIG.dedup.window_s + 60)
    assert later.alarms.get("ph/h-0001/1") is None  # history: in the store, not in memory
    assert later.alarms.get("ph/h-0001/2") is not None  # still open: it may yet escalate
