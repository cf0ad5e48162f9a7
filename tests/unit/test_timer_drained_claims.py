"""fissile/triggers/timer.py on a drained cluster node: it lets the serving nodes claim each
slot and claims one itself only after ``claim_delay``, so a slot they took is never fired here,
and one nobody took still fires (late) rather than being lost."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fissile.models import TimeTriggerSpec
from fissile.triggers import timer as timer_module
from fissile.triggers.timer import Timer, TimerState


class SharedSlots(TimerState):
    """Slots claimed by an insert that only one node wins, as ``SharedClaims`` does; another
    node's claims are ``taken_by_others``. ``drained`` delays this node's claims."""

    drained = True
    others_claim = True

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.claims: dict[datetime, str] = {}
        self.claimed_at: dict[datetime, float] = {}

    def claim_delay(self) -> float:
        return 0.3 if self.drained else 0.0

    def other_node_at(self, slot: datetime) -> None:
        if self.others_claim:
            self.claims.setdefault(slot, "other")

    def record(self, name: str, slot: datetime) -> bool:
        self.claimed_at[slot] = time.time()
        if slot in self.claims:
            return False
        self.claims[slot] = "here"
        return super().record(name, slot)


async def test_a_drained_node_fires_only_the_slots_no_serving_node_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fired: list[str] = []

    async def invoke(executor: Any, function: str, **kwargs: Any) -> Any:
        fired.append(kwargs["headers"]["x-fissile-timer-slot"])
        return type("Ok", (), {"status": 200})()

    monkeypatch.setattr(timer_module, "invoke", invoke)
    monkeypatch.setattr(timer_module, "InstanceResponse", object)
    state = SharedSlots(tmp_path / "timers.db")
    spec = TimeTriggerSpec(name="tick", function="f", cron="@every 1s")
    timer = Timer(spec, state, executor=None)  # type: ignore[arg-type]
    # The serving node claims every slot at once, before the drained one looks.
    sleep = asyncio.sleep

    async def waking(delay: float) -> None:
        await sleep(delay)
        if timer.next_fire is not None and timer.next_fire.timestamp() <= time.time():
            state.other_node_at(timer.next_fire)

    monkeypatch.setattr(timer_module.asyncio, "sleep", waking)
    timer.start()
    deadline = time.monotonic() + 30
    try:
        while len(state.claimed_at) < 2:
            assert time.monotonic() < deadline, "the drained node never tried a late claim"
            await sleep(0.05)
        assert fired == []  # every slot was the serving node's
        for slot, at in state.claimed_at.items():
            assert at >= slot.timestamp() + 0.3  # claimed only after the delay
        # No serving node claims any more (all drained, or dead): slots still fire, late.
        state.others_claim = False
        while not fired:
            assert time.monotonic() < deadline, "a slot nobody claimed was lost"
            await sleep(0.05)
        assert all(state.claims[datetime.fromisoformat(s)] == "here" for s in fired)
        # Resumed: claims at the slot again.
        state.drained = False
        count = len(fired)
        while len(fired) < count + 2:
            assert time.monotonic() < deadline, "the resumed node does not fire"
            await sleep(0.05)
        last = datetime.fromisoformat(fired[-1])
        assert state.claimed_at[last] < last.timestamp() + 0.3
        assert len(fired) == len(set(fired))
    finally:
        timer.stop()
        state.close()
