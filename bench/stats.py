"""Small statistics helpers (nearest-rank percentiles: no interpolation between two observed timings)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(ours: float, baseline: float) -> float:
    return ours / baseline if baseline > 0 else math.inf
