"""The verdict rule: paired differences over replication units, a 95% t-interval, three outcomes.

**Unit.** A unit is what a method is replicated over: one subject (or style) and one training
seed for a frontier; one subject, style and training seed for a merge pair. Every method (or arm)
compared is run on the same units, so the comparison is paired.

**Frontier statistic (claims 1, 2 and 4).** Within a unit, a method's points are its cells, one
per knob value (DCO's w_con, DreamBooth's CFG scale), each at (prompt fidelity x, subject or
style fidelity y). Its score is the *hypervolume* of those points: the area of the union of the
rectangles [r_x, x_i] x [r_y, y_i], i.e. the area of the (x, y) plane its Pareto frontier dominates
above a reference point r. Both axes are in each metric's better direction. r_x is the worst prompt
fidelity over every cell of the two compared methods (all units) less 10% of its range (so that a
point at the worst prompt fidelity but the best subject fidelity still counts). r_y is the unit's
subject's *anchor*: the base model's own fidelity on it (`anchors.py`; a claim without anchor cells
takes the worst fidelity less 10% of its range, as before), so a point with no more of the subject
than the base model earns nothing. The area is divided by one box per comparison, from (r_x, the
lowest anchor) to the best values, so it is at most 1: 1 would be one point at the best x and the
best y at once. A method that is better at every matched prompt fidelity has the larger area;
one that only trades one axis for the other gains on one side and loses on the other. The
statistic is the per-unit difference ΔHV = HV(A) - HV(B).

**Merge statistic (claim 3).** Per pair, a merge's drop on a metric is the unmerged LoRA's score
minus the merge's (`report.merges.pair_drops`; positive = interference). The statistic is the
per-pair difference of drops, baseline merge minus reference merge, so positive means the
reference (DCO's direct merge) interferes less. ZipLoRA against the direct merge is the per-pair
score difference, ZipLoRA minus direct, in the metric's better direction.

**Clusters.** Units are nested in subjects: the training seeds of one subject give nearly the same
LoRA, so treating subject x seed units as independent would be pseudo-replication. The per-unit
differences are first averaged within each subject (the first element of a unit: the subject, or
the style of a style claim), and the interval is over the n subjects. Each row also carries the
number of units and seeds, the interval's half-width (its precision) and `bound` = max(|low|,
|high|): an interval that contains 0 rules out every effect larger than that, so such a row reads
"no difference larger than ±bound with n subjects". (A true effect as large as the half-width
would be detected only about half the time: the half-width is not a power statement.)

**Interval and verdict.** The per-subject differences give a mean and a 95% Student-t interval
over the n subjects. If the interval lies above 0 the
verdict is "<A> ahead", below 0 "<A> behind", and if it contains 0, or n < 2 gives no interval,
"no difference at this n". Nothing else enters: the verdict is computed, never written by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .intervals import MARGIN, NO_DIFFERENCE, hypervolume, oriented, summarize, verdict  # noqa: F401 (re-exported)
from .anchors import frame_of, scaled
from .ppi import corrected_difference
from ..report.tables import t_critical

JUDGE_ONLY = "judge only: not checked on these outputs"


def frontier_difference(df: pd.DataFrame, a: str, b: str, x: str, y: str, group: str = "method",
                        units=("subject", "seed"), label: str = "") -> dict:
    """ΔHV = HV(A) - HV(B) per unit, for the rows of `df` whose `group` is `a` or `b`, with the
    shared reference point and box of the module docstring; summarised with the verdict, which
    names A as `label` (default `a`). Where `df.attrs["anchors"]` holds the base model's fidelity per
    subject for judge `y` (`anchors.anchor_values`), each unit's reference point on the fidelity axis
    is its subject's anchor, and the worst-value result is kept under `unanchored`. Where
    `df.attrs["corrections"]` holds blind labels of these outputs for judge `y` (`ppi.LabelSet`), the
    points are label-corrected first and the interval carries the labels' noise
    (`ppi.corrected_difference`); the judge-only result is kept under `judge_only`. Every result
    names its `basis` and its `anchor`."""
    table = (df.attrs or {}).get("anchors")
    anchors = None if table is None else table.get(y, {})  # a claim with anchor cells but none finished: no units
    res = _difference(df, a, b, x, y, group, units, label or a, anchors)
    if anchors is not None:
        old = _difference(df, a, b, x, y, group, units, label or a, None)
        res["unanchored"] = {k: old[k] for k in ("estimate", "ci_low", "ci_high", "verdict")}
    return res


def _difference(df, a, b, x, y, group, units, label, anchors) -> dict:
    judge_only = _judge_difference(df, a, b, x, y, group, units, label, anchors)
    labels = (df.attrs.get("corrections") or {}).get(y)
    anchor = "base model" if anchors is not None else "worst value"
    if labels is None or not len(labels):
        why = (df.attrs.get("basis_notes") or {}).get(y, JUDGE_ONLY)
        return {**judge_only, "basis": why, "labels": 0, "anchor": anchor}
    arm = df["arm"].astype(str) if "arm" in df else ""
    strata = df.assign(stratum=arm + "|" + df["method"].astype(str) + "|" + df["knob_label"].astype(str))
    res = corrected_difference(strata, a, b, x, y, labels, group, units, label, anchors=anchors)
    return {**res, "judge_only": judge_only, "anchor": anchor}


def _judge_difference(df: pd.DataFrame, a: str, b: str, x: str, y: str, group: str, units, label: str,
                      anchors: dict | None = None) -> dict:
    part = df[df[group].isin([a, b])].assign(_x=lambda d: oriented(d, x), _y=lambda d: oriented(d, y))
    part = part[np.isfinite(part["_x"]) & np.isfinite(part["_y"])]
    if part.empty:
        return {**summarize({}, label), "diffs": {}}
    rx, box, floor, refs = frame_of(part["_x"], part["_y"], anchors, part[units[0]].unique())
    diffs = {}
    for unit, rows in part.groupby(list(units), sort=True):
        subject = unit[0] if isinstance(unit, tuple) else unit
        if subject not in refs:
            continue
        ref = (rx, refs[subject])
        hv = {g: scaled(hypervolume(zip(r["_x"], r["_y"]), ref, box), ref[1], box[1], floor)
              for g, r in rows.groupby(group)}
        if a in hv and b in hv:
            diffs[unit] = hv[a] - hv[b]
    return {**summarize(diffs, label), "diffs": diffs}


def interaction(first: dict, second: dict, label: str) -> dict:
    """The difference of two frontier comparisons of the same two sides on the same units, e.g. the
    objective effect under consistency guidance less the one under CFG: the objective × sampler
    interaction, one per-unit statistic (ΔHV_1 − ΔHV_2), summarised over subjects like any other.
    Label-corrected comparisons (`ppi.corrected_difference`) on the same subjects share their
    bootstrap's subject draws, and the labels of their points are disjoint, so the interval is the
    t-interval of the replicates' differences; its basis is the two rows'."""
    diffs = {u: first["diffs"][u] - second["diffs"][u] for u in first.get("diffs", {}) if u in second.get("diffs", {})}
    res = {**summarize(diffs, label), "diffs": diffs}
    r1, r2 = first.get("replicates"), second.get("replicates")
    if r1 is not None and r2 is not None and list(first["subjects"]) == list(second["subjects"]) and res["n"] >= 2:
        m = res["n"]
        half = float(t_critical(m - 1) * np.std(r1 - r2, ddof=1) * math.sqrt(m / (m - 1)))
        lo, hi = res["estimate"] - half, res["estimate"] + half
        res.update(ci_low=lo, ci_high=hi, half_width=half, bound=max(abs(lo), abs(hi)), verdict=verdict(lo, hi, label))
    bases = sorted({first.get("basis") or JUDGE_ONLY, second.get("basis") or JUDGE_ONLY})
    res["basis"] = " / ".join(bases)
    res["labels"] = int(first.get("labels", 0)) + int(second.get("labels", 0))
    res["anchor"] = first.get("anchor", "worst value")
    if "judge_only" in first and "judge_only" in second:
        res["judge_only"] = interaction(first["judge_only"], second["judge_only"], label)
    return res


def paired_difference(df: pd.DataFrame, a: dict, b: dict, column: str, label: str,
                      units=("subject", "style", "seed"), sign: float = 1.0) -> dict:
    """sign * (value of B - value of A) per unit, where `a` and `b` select rows by column values
    (e.g. {"method": "dco", "merge": "direct"}); summarised with the verdict for `label`."""
    def values(sel: dict) -> dict:
        rows = df
        for k, v in sel.items():
            rows = rows[rows[k] == v]
        return {u: float(r[column].mean()) for u, r in rows.groupby(list(units), sort=True)}

    va, vb = values(a), values(b)
    diffs = {u: sign * (vb[u] - va[u]) for u in va if u in vb and math.isfinite(va[u]) and math.isfinite(vb[u])}
    return {**summarize(diffs, label), "diffs": diffs}
