"""Weighted routes: one request's function, drawn from a route's ``function_weights``.

Only a route with two or more functions of positive weight gets a ``Split``; any other route
names its one function at table build time, so a route without weights (or a canary at 0 or
100 %) costs the hot path nothing.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Mapping
from itertools import accumulate


class Split:
    """Functions and their weights, drawn in proportion to the weights."""

    __slots__ = ("_bounds", "_total", "functions", "weights")

    def __init__(self, weights: Mapping[str, int]) -> None:
        chosen = [(name, weight) for name, weight in weights.items() if weight > 0]
        if len(chosen) < 2:
            raise ValueError("a split needs two or more functions of positive weight")
        self.functions = tuple(name for name, _ in chosen)
        self.weights = tuple(weight for _, weight in chosen)
        # Cumulative upper bounds: a draw in [0, total) falls in one function's span.
        self._bounds = list(accumulate(self.weights))
        self._total = self._bounds[-1]

    def pick(self, draw: float | None = None) -> str:
        """A function, each with the probability of its share; ``draw`` in [0, 1) for tests."""
        point = (random.random() if draw is None else draw) * self._total
        return self.functions[bisect_right(self._bounds, point)]

    def __repr__(self) -> str:
        pairs = ", ".join(f"{n}={w}" for n, w in zip(self.functions, self.weights, strict=True))
        return f"Split({pairs})"


def targets(function: str, weights: Mapping[str, int]) -> tuple[str, Split | None]:
    """A route's function (its only one, or the heaviest of a split) and its split, if any."""
    positive = {name: weight for name, weight in weights.items() if weight > 0}
    if len(positive) < 2:
        return (next(iter(positive), function), None)
    heaviest = max(positive, key=lambda name: positive[name])
    return heaviest, Split(positive)
