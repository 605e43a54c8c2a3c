"""Label-corrected frontier comparisons: prediction-powered points, and intervals that carry label noise.

A judge reads every image; blind labels read a few. Where a study holds labels of its own outputs,
the judge's error is *measured* in each stratum h (a point of a frontier: arm × method × knobs,
pooled over subjects and seeds), and each cell's judge rate is corrected by it (prediction-powered
inference, Angelopoulos et al., Science 2023, the classic form with λ = 1):

    y_c = f̄_c + Δ_h(c),    Δ_h = Σ_{i labelled in h} w_i (y_i − f_i) / Σ w_i

f̄_c is the judge's mean over all the cell's images, y_i and f_i a labelled image's label and judge
reading, w_i = 1 / π_i its inverse inclusion probability (1 for a draw of equal probability within
the stratum, as `dcobench label --per-stratum` makes; `--budget` records π), so an unequal draw stays
unbiased (the Hájek form). A stratum without labels keeps its judge rate and the row says so.

ΔHV is then computed exactly as `stats.frontier_difference` does, on the corrected points. Its
interval comes from a two-level bootstrap: subjects are resampled with replacement (subject
variance), and within each drawn subject its labelled images in each stratum (label noise), so Δ_h
is recomputed in every replicate from the labels that replicate drew. The reference point and box of
the hypervolume are those of the corrected point estimates, fixed across replicates. The interval is
estimate ± t(0.975, n−1) × the replicates' standard deviation × √(n / (n−1)): without labels this
is the t-interval over subjects that `stats.summarize` gives, and it widens by what the labels
cannot pin down. `tests/test_ppi.py` checks the coverage by simulation (docs/studies.md).

Only a judge whose cell value is the rate that labels answer (a binary subject judge: the
micro world's `oracle_subject`, the share of images that show the subject) can be corrected this
way; a similarity (DINO, CLIP-I) is not a rate of the labelled question, so its rows stay "judge only".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from ..report.tables import t_critical
from .anchors import frame_of, scaled
from .intervals import oriented, summarize, verdict

B = 2000  # bootstrap replicates: the Monte-Carlo error of the interval's ends is ~1% of its width


@dataclass(eq=False)  # compared by identity: pandas compares frames' attrs when it concatenates them
class LabelSet:
    """The labelled images of one judge in one claim: `frame` has columns cell_id, subject, f (the
    judge's reading, 0 or 1), y (the consensus label, 0 or 1) and w (1 / inclusion probability)."""

    frame: pd.DataFrame

    def __len__(self) -> int:
        return len(self.frame)


def basis(n_labels: int, strata: int, covered: int) -> str:
    if n_labels == 0:
        return "judge only: not checked on these outputs"
    partly = "" if covered == strata else f"; {strata - covered} of {strata} points have no labels and stay judge only"
    return f"label-corrected ({n_labels} labels{partly})"


def corrected_mean(f_all, f_lab, y_lab, w) -> float:
    """The label-corrected rate of one stratum: the judge's mean over all its images plus the
    weighted mean residual of its labelled ones (classic PPI, λ = 1; `tests/test_ppi.py` checks it
    against the PPI authors' `ppi_py.ppi_mean_pointestimate`)."""
    w = np.asarray(w, float)
    return float(np.mean(f_all) + (w * (np.asarray(y_lab, float) - np.asarray(f_lab, float))).sum() / w.sum())


def hv_batch(x: np.ndarray, y: np.ndarray, ref: tuple, box: tuple) -> np.ndarray:
    """`stats.hypervolume` of the points (x[k], y[r, k]) for each replicate r at once: (R, k) -> (R,)."""
    rx, ry = ref
    width, height = box[0] - rx, box[1] - ry
    if not (width > 0 and height > 0) or y.shape[1] == 0:
        return np.zeros(y.shape[0])
    order = np.argsort(-x, kind="stable")  # largest x first: each point adds its strip above the best y so far
    xs, ys = x[order], y[:, order]
    above = (xs > rx).astype(float)
    prev = np.maximum.accumulate(np.concatenate([np.full((y.shape[0], 1), ry), ys], axis=1), axis=1)[:, :-1]
    return (np.clip(ys - prev, 0.0, None) * ((xs - rx) * above)[None, :]).sum(axis=1) / (width * height)


def _rectifiers(lab: pd.DataFrame, strata: list, subjects: list, rng, reps: int):
    """(Δ_h point estimates (H,), replicate Δ_h (R, H) for given subject counts, labels per stratum)."""
    H, S = len(strata), len(subjects)
    h_of = {h: i for i, h in enumerate(strata)}
    s_of = {s: i for i, s in enumerate(subjects)}
    point = np.zeros(H)
    n_h = np.zeros(H, dtype=int)
    # per (subject, stratum): resampled sums of w·r and of w, shape (R, S, H)
    wr = np.zeros((reps, S, H))
    ww = np.zeros((reps, S, H))
    for (subject, h), g in lab.groupby(["subject", "stratum"], sort=True):
        if h not in h_of or subject not in s_of:
            continue
        r, w = (g["y"] - g["f"]).to_numpy(float), g["w"].to_numpy(float)
        idx = rng.integers(0, len(g), size=(reps, len(g)))
        wr[:, s_of[subject], h_of[h]] = (w[idx] * r[idx]).sum(axis=1)
        ww[:, s_of[subject], h_of[h]] = w[idx].sum(axis=1)
    for h, g in lab.groupby("stratum", sort=True):
        if h in h_of:
            w = g["w"].to_numpy(float)
            point[h_of[h]] = float((w * (g["y"] - g["f"]).to_numpy(float)).sum() / w.sum())
            n_h[h_of[h]] = len(g)
    return point, n_h, wr, ww


def corrected_difference(df: pd.DataFrame, a: str, b: str, x: str, y: str, labels: LabelSet, group: str = "method",
                         units=("subject", "seed"), label: str = "", reps: int = B, seed: int = 0,
                         ref: tuple | None = None, box: tuple | None = None, anchors: dict | None = None) -> dict:
    """`stats.frontier_difference` on label-corrected points of judge `y` (module docstring).

    `df`: cells with cell_id, `group`, the `units` columns, `stratum` (the point a cell belongs to)
    and the x and y metrics. `ref`/`box` fix the hypervolume's frame (default: from the corrected
    points, as `stats.frontier_difference` does); `anchors` ({subject: oriented base-model fidelity},
    `anchors.py`) puts each unit's fidelity reference at its subject's anchor instead. Returns the summarize keys plus `diffs`, `basis`,
    `labels` (labels used), `ref` and `box`, and with an interval the bootstrap's `replicates` (the
    subject-level estimate per replicate) over `subjects`: their subject draws depend only on `seed`
    and the number of subjects, so two comparisons on the same subjects pair replicate by replicate."""
    label = label or a
    part = df[df[group].isin([a, b])].assign(_x=lambda d: oriented(d, x), _f=lambda d: oriented(d, y))
    part = part[np.isfinite(part["_x"]) & np.isfinite(part["_f"])].reset_index(drop=True)
    strata = sorted(part["stratum"].unique())
    lab = labels.frame.merge(part[["cell_id", "stratum"]], on="cell_id", how="inner")
    for col in ("f", "y", "w"):
        lab[col] = pd.to_numeric(lab[col], errors="coerce").astype(float)
    lab = lab[np.isfinite(lab["f"]) & np.isfinite(lab["y"]) & (lab["w"] > 0)]  # abstained or unsure: left out
    subjects = sorted(part[units[0]].unique())
    n = len(subjects)
    # two streams: the subjects' draws depend only on (seed, n), so two comparisons on the same subjects
    # share them replicate by replicate (an interaction is the difference of two such comparisons)
    rng, draw = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 0])
    delta, n_h, wr, ww = _rectifiers(lab, strata, subjects, rng, reps)
    h_idx = part["stratum"].map({h: i for i, h in enumerate(strata)}).to_numpy()
    y0 = part["_f"].to_numpy(float) + delta[h_idx]  # oriented: a binary judge is higher-is-better
    if ref is None or box is None:
        rx, box, floor, refs = frame_of(part["_x"], y0, anchors, subjects)
    else:
        rx, floor, refs = ref[0], ref[1], {s: ref[1] for s in subjects}

    counts = np.stack([np.bincount(draw.integers(0, n, size=n), minlength=n) for _ in range(reps)]) if n else \
        np.zeros((reps, 0), dtype=int)
    num = np.einsum("rs,rsh->rh", counts, wr)
    den = np.einsum("rs,rsh->rh", counts, ww)
    rep_delta = np.where(den > 0, num / np.where(den > 0, den, 1.0), delta[None, :])  # no labels drawn: keep Δ_h
    y_rep = part["_f"].to_numpy(float)[None, :] + rep_delta[:, h_idx]  # (R, cells)

    s_of = {s: i for i, s in enumerate(subjects)}
    per_subject_units: dict[int, list[np.ndarray]] = {}
    diffs = {}
    for unit, rows in part.groupby(list(units), sort=True):
        subject = unit[0] if isinstance(unit, tuple) else unit
        if subject not in refs:  # anchored, and its subject's base-model cells are not finished
            continue
        ref_u = (rx, refs[subject])
        hv0, hvr = {}, {}
        for g, r in rows.groupby(group):
            idx = r.index.to_numpy()
            xs = r["_x"].to_numpy(float)
            hv0[g] = float(scaled(hv_batch(xs, y0[None, idx], ref_u, box)[0], ref_u[1], box[1], floor))
            hvr[g] = scaled(hv_batch(xs, y_rep[:, idx], ref_u, box), ref_u[1], box[1], floor)
        if a in hv0 and b in hv0:
            key = unit if isinstance(unit, tuple) else (unit,)
            diffs[key] = hv0[a] - hv0[b]
            per_subject_units.setdefault(s_of[key[0]], []).append(hvr[a] - hvr[b])
    res = summarize(diffs, label)
    if n >= 2 and per_subject_units:
        d = np.zeros((reps, n))
        have = np.zeros(n, dtype=bool)
        for s, reps_list in per_subject_units.items():
            d[:, s] = np.mean(reps_list, axis=0)
            have[s] = True
        c = counts[:, have]
        est = (c * d[:, have]).sum(axis=1) / np.maximum(c.sum(axis=1), 1)
        m = int(have.sum())
        half = float(t_critical(m - 1) * est.std(ddof=1) * math.sqrt(m / (m - 1))) if m >= 2 else math.nan
        lo, hi = res["estimate"] - half, res["estimate"] + half
        res.update(ci_low=lo, ci_high=hi, half_width=half, bound=max(abs(lo), abs(hi)), verdict=verdict(lo, hi, label),
                   replicates=est, subjects=subjects)
    used = int(n_h.sum())
    return {**res, "diffs": diffs, "labels": used, "basis": basis(used, len(strata), int((n_h > 0).sum())),
            "ref": (rx, floor), "box": box}
