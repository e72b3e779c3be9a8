"""Mean and spread over seeds, as every table and figure reports them: the sample standard
deviation (n - 1 in the denominator), 0 for a single seed, NaN for none."""
from __future__ import annotations

import math
import statistics


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
