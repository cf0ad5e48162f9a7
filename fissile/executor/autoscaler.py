"""How many instances a function should have, in the spirit of Knative's KPA.

The pool reports its *demand* (requests in flight plus requests waiting) every time it changes;
the autoscaler integrates it over time, so a burst between two ticks still counts for its
duration. At each tick (the executor's reaper, every 0.5 s) the integral since the previous tick
becomes one sample, and the decision looks at two windows of samples:

- the **stable** window (60 s, or the function's idle timeout when shorter): its average demand
  divided by the target in-flight per instance is the instance count to keep;
- the **panic** window (a tenth of the stable one): when its average asks for at least twice the
  ready instances, the autoscaler *panics* and, until a stable window passes without another
  such burst, never scales down.

Scaling *up* on a queued request does not wait for a tick: the pool starts instances for its
queue at once (milliseconds); the windows decide how many to keep afterwards. Scaling *down* is
gradual: at most half the instances per ``SCALE_DOWN_PERIOD``, and to zero (or ``min_scale``)
only once the function has been idle for its whole idle timeout.

Pure: time is passed in, so it is tested on a fake clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

STABLE_WINDOW = 60.0
PANIC_FRACTION = 0.1  # the panic window, as a fraction of the stable window (Knative's 10 %)
PANIC_THRESHOLD = 2.0  # panic when the panic window wants this many times the ready instances
MAX_SCALE_DOWN_RATE = 2.0  # at most halve the instances ...
SCALE_DOWN_PERIOD = 2.0  # ... per this many seconds
TARGET_UTILIZATION = 0.7  # of a concurrency above 1, like Knative: headroom for bursts


def target_for(concurrency: int) -> float:
    """The in-flight requests per instance the autoscaler aims at."""
    return 1.0 if concurrency <= 1 else max(1.0, concurrency * TARGET_UTILIZATION)


@dataclass(frozen=True)
class Decision:
    desired: int
    panic: bool
    stable_average: float
    panic_average: float
    reason: str


class Autoscaler:
    def __init__(
        self, now: float, target: float = 1.0, stable_window: float = STABLE_WINDOW
    ) -> None:
        self.target = target
        self.stable_window = stable_window
        self.demand = 0  # right now
        self.desired = 0
        self.panic_since: float | None = None
        self.last_active = now  # when demand was last above zero
        self._since = now  # start of the current level of demand
        self._tick_at = now  # start of the sample being integrated
        self._area = 0.0  # demand x seconds since _tick_at
        self._samples: deque[tuple[float, float, float]] = deque()  # (end, seconds, area)
        self._scaled_down_at = -math.inf

    @property
    def panic_window(self) -> float:
        return self.stable_window * PANIC_FRACTION

    def observe(self, now: float, demand: int) -> None:
        """Demand changed to ``demand`` at ``now``. On the hot path: keep it cheap."""
        if self.demand:
            self._area += self.demand * (now - self._since)
            self.last_active = now
        self._since = now
        self.demand = demand

    def decide(
        self, now: float, ready: int, min_scale: int, max_scale: int, idle_timeout: float
    ) -> Decision:
        """Close the current sample and decide the desired instance count."""
        self._close_sample(now)
        stable = self._average(now, self.stable_window)
        panic = self._average(now, self.panic_window)
        target = self.target
        stable_want = math.ceil(stable / target - 1e-9)
        panic_want = math.ceil(panic / target - 1e-9)

        if panic_want >= PANIC_THRESHOLD * max(ready, 1) and panic_want > ready:
            self.panic_since = now  # (re)armed: panic lasts a stable window past the last burst
        elif self.panic_since is not None and now - self.panic_since >= self.stable_window:
            self.panic_since = None

        if self.panic_since is not None:
            desired = max(panic_want, stable_want, self.desired)
            reason = "panic"
        elif stable_want == 0:
            idle = now - self.last_active if not self.demand else 0.0
            if idle >= idle_timeout:
                desired, reason = 0, f"idle {idle:.1f}s"
            else:
                # Keep one until the idle timeout: the next request should find it warm.
                desired, reason = self._limit_down(now, 1, ready), "idle"
        else:
            desired = self._limit_down(now, stable_want, ready)
            reason = "stable"
        desired = min(max(desired, min_scale), max_scale)
        if desired < self.desired:
            self._scaled_down_at = now
        self.desired = desired
        return Decision(desired, self.panic_since is not None, stable, panic, reason)

    def rest(self, now: float) -> None:
        """A tick with no demand and nothing running: skip the decision, but start the next
        sample now, so the first one after a quiet spell is not diluted by it."""
        self._tick_at = self._since = now
        self._area = 0.0
        self._samples.clear()

    def _limit_down(self, now: float, want: int, ready: int) -> int:
        """Scale down gradually: hold for SCALE_DOWN_PERIOD after a step, then halve at most."""
        current = max(ready, self.desired)
        if want >= current:
            return want
        if now - self._scaled_down_at < SCALE_DOWN_PERIOD:
            return current
        return max(want, math.ceil(current / MAX_SCALE_DOWN_RATE))

    def _close_sample(self, now: float) -> None:
        if self.demand:
            self._area += self.demand * (now - self._since)
            self.last_active = now
        self._since = now
        seconds = now - self._tick_at
        if seconds > 0:
            self._samples.append((now, seconds, self._area))
        self._tick_at = now
        self._area = 0.0
        horizon = now - self.stable_window
        # Keep the newest sample whatever its age, so a window shorter than a tick still sees it.
        while len(self._samples) > 1 and self._samples[0][0] <= horizon:
            self._samples.popleft()

    def _average(self, now: float, window: float) -> float:
        """Time-weighted average demand over the samples ending within ``window``."""
        seconds = area = 0.0
        for end, length, sample in reversed(self._samples):
            if seconds and end <= now - window:
                break
            seconds += length
            area += sample
        return area / seconds if seconds else float(self.demand)
