"""The pieces of the verdict rule that every statistic shares: the hypervolume, the interval over
subjects and the three verdicts (the rule itself is described in `stats.py`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..metrics import metric_meta
from ..report.tables import mean_ci

NO_DIFFERENCE = "no difference at this n"
MARGIN = 0.1  # the reference point lies this share of each axis's range below its worst value


def hypervolume(points, ref, box=(1.0, 1.0)) -> float:
    """Area dominated by `points` (x, y; larger is better on both) above `ref`, divided by the area
    of the box from `ref` to `box` (the best x and y). Points not above `ref` add nothing."""
    rx, ry = ref
    width, height = box[0] - rx, box[1] - ry
    if not (width > 0 and height > 0):
        return 0.0
    pts = sorted(((float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)), reverse=True)
    area, best_y = 0.0, ry
    for x, y in pts:  # by x, largest first: each point adds its strip above the best y so far
        if x > rx and y > best_y:
            area += (x - rx) * (y - best_y)
            best_y = y
    return area / (width * height)


def verdict(lo: float, hi: float, a: str) -> str:
    if math.isfinite(lo) and lo > 0:
        return f"{a} ahead"
    if math.isfinite(hi) and hi < 0:
        return f"{a} behind"
    return NO_DIFFERENCE


def summarize(diffs: dict, a: str) -> dict:
    """Mean, 95% t-interval over subjects, n (subjects), units, seeds, half_width, bound (what a
    no-difference interval rules out) and verdict of per-unit differences {unit: value}; a unit is a tuple whose first element is its
    subject (a bare key is its own subject)."""
    clusters: dict = {}
    for unit, value in diffs.items():
        clusters.setdefault(unit[0] if isinstance(unit, tuple) else unit, []).append(value)
    mean, half, n = mean_ci([float(np.mean(v)) for v in clusters.values()])
    lo, hi = (mean - half, mean + half) if math.isfinite(half) else (math.nan, math.nan)
    seeds = {u[-1] for u in diffs if isinstance(u, tuple) and len(u) > 1}
    bound = max(abs(lo), abs(hi)) if math.isfinite(half) else math.nan
    return {"estimate": mean, "ci_low": lo, "ci_high": hi, "n": n, "units": len(diffs), "seeds": len(seeds) or 1,
            "half_width": half, "bound": bound, "verdict": verdict(lo, hi, a)}


def oriented(df: pd.DataFrame, metric: str) -> pd.Series:
    """A metric's column, negated when lower is better: larger is always better."""
    return df[metric] * (1.0 if metric_meta(metric)["higher_is_better"] else -1.0)
