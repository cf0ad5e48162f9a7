"""fissile/triggers/timer.py on a full disk: a slot that cannot be recorded is skipped (timers
are at most once), and the timer goes on firing once it can record again."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fissile.models import TimeTriggerSpec
from fissile.store import StorageFull
from fissile.triggers import timer as timer_module
from fissile.triggers.timer import Timer, TimerState


class FillingState(TimerState):
    """Records fail with StorageFull while ``full`` is set, as on a full disk."""

    full = True
    refused = 0

    def record(self, name: str, slot: datetime) -> bool:
        if self.full:
            self.refused += 1
            raise StorageFull(self.data_dir)
        return super().record(name, slot)


async def test_slots_are_skipped_while_full_and_fire_again_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fired: list[dict[str, str]] = []

    async def invoke(executor: Any, function: str, **kwargs: Any) -> Any:
        fired.append(kwargs["headers"])
        return type("Ok", (), {"status": 200})()

    monkeypatch.setattr(timer_module, "invoke", invoke)
    monkeypatch.setattr(timer_module, "InstanceResponse", object)
    state = FillingState(tmp_path / "timers.db")
    spec = TimeTriggerSpec(name="tick", function="f", cron="@every 1s")
    timer = Timer(spec, state, executor=None)  # type: ignore[arg-type]
    timer.start()
    try:
        deadline = time.monotonic() + 30
        while state.refused < 2:
            assert time.monotonic() < deadline, "the timer stopped at a slot it could not record"
            await asyncio.sleep(0.05)
        assert fired == []  # an unrecorded slot never runs
        state.full = False
        while not fired:
            assert time.monotonic() < deadline, "the timer did not fire once it could record"
            await asyncio.sleep(0.05)
        assert state.last_fired("tick") is not None
    finally:
        timer.stop()
        state.close()
