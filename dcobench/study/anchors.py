"""The base-model anchor: where a frontier's hypervolume starts on the fidelity axis.

With the reference point at every point's worst value less 10% of the range, a point that shows no
subject at all still earns area whenever its prompt fidelity is high. Consistency guidance at
`w_con` 1 is such a point on the micro world: the LoRA barely acts, the images are the class prior
(oracle 0.06, DINO 0.776 for both methods) at CLIP-T 0.82, and that point alone made most of the
"+0.10 for the sampler" and all of a DCO variant's lead on DINO. So any setting that switches the
LoRA off was rewarded, and a method whose LoRA switches off more easily looked better.

Anchored, the fidelity axis of each subject's frontiers starts at the base model's own fidelity on
that subject (`arms.anchor_arm`: the claim's prompts and sampling seeds, sampled with the LoRA out of
the sampler). A point with no more subject or style fidelity than the base model adds nothing. The
prompt-fidelity axis keeps its stated floor: the worst value of the compared points less 10% of
their range. Every unit's area is divided by one box for the whole comparison, from (that floor,
the lowest anchor of its subjects) to (the best prompt fidelity, the best fidelity), so units stay
in one unit of area and a subject with a high base fidelity simply has less to win.

On a binary judge with labels of the anchor cells the anchor is label-corrected as every point is
(`ppi.py`); it is held fixed across the bootstrap's replicates (its own label noise is not carried).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .intervals import MARGIN, oriented
from .spec import ANCHOR_CELLS
from .verdicts import fmt


def anchor_values(cells: pd.DataFrame, claim: dict, judges: list[str], corrections: dict | None = None) -> dict | None:
    """{judge: {subject: the base model's mean fidelity, oriented (larger is better)}} of a claim
    whose manifest entry names anchor cells (`claim["anchor_cells"]`); None for a claim without them (the
    worst-value anchor). A judge with labels of those cells (`corrections[judge]`, a `ppi.LabelSet`)
    gets their weighted mean residual added, as a stratum of its own."""
    entry = claim.get(ANCHOR_CELLS)
    if not entry:
        return None
    part = cells[cells["cell_id"].isin(set(entry["cells"]))]
    out: dict[str, dict] = {}
    for y in judges:
        if y not in part:
            out[y] = {}
            continue
        values = part.assign(_y=oriented(part, y))
        values = values[np.isfinite(values["_y"])]
        delta = _residual((corrections or {}).get(y), set(values["cell_id"]))
        out[y] = {s: float(g["_y"].mean()) + delta for s, g in values.groupby("subject", sort=True)}
    return out


def _residual(labels, ids: set) -> float:
    if labels is None or not len(labels):
        return 0.0
    lab = labels.frame[labels.frame["cell_id"].isin(ids)]
    f, y, w = (pd.to_numeric(lab[c], errors="coerce").to_numpy(float) for c in ("f", "y", "w"))
    ok = np.isfinite(f) & np.isfinite(y) & (w > 0)
    return float((w[ok] * (y[ok] - f[ok])).sum() / w[ok].sum()) if ok.any() else 0.0


def scaled(hv: np.ndarray | float, ry: float, box_y: float, floor: float):
    """A hypervolume normalised by its own box (from the unit's anchor `ry`) re-expressed in the
    comparison's box (from the lowest anchor `floor`): area / (width × (box_y − floor))."""
    if not box_y > ry:
        return hv * 0.0
    return hv * (box_y - ry) / (box_y - floor)


def frame_of(xs, ys, anchors: dict | None, subjects) -> tuple[float, tuple, float, dict]:
    """(rx, box, floor, {subject: ry}): the comparison's reference point and box (module docstring;
    `anchors.py` for the base-model anchor). Without anchors every subject's ry is the worst value
    less the margin; with them a subject without an anchor cell is left out (no key)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    rx = float(xs.min() - MARGIN * (xs.max() - xs.min()))
    box = (float(xs.max()), float(ys.max()))
    if anchors is None:
        ry = float(ys.min() - MARGIN * (ys.max() - ys.min()))
        return rx, box, ry, {s: ry for s in subjects}
    refs = {s: float(anchors[s]) for s in subjects if s in anchors and math.isfinite(anchors[s])}
    return rx, box, (min(refs.values()) if refs else math.nan), refs


ANCHOR_NOTE = ("Every ΔHV above starts the fidelity axis at the base model's own fidelity on each subject. Before, "
               "it started 10% of the range below the worst point, so a point that showed no subject at all earned "
               "area for its prompt fidelity (docs/studies.md, 'Where a frontier starts'). The same comparisons "
               "both ways:")


def anchor_table(sections) -> tuple[list[str], list[list[str]]] | None:
    """Each anchored ΔHV row of the report's sections (`claims.Section`) beside the same comparison with
    the worst-value reference."""
    rows = [(sec, r) for sec in sections for r in sec.verdicts if "unanchored_estimate" in r]
    if not rows:
        return None
    header = ["claim", "comparison", "judge", "anchored at the base model", "verdict",
              "at the worst value (before)", "verdict before"]
    body = [[sec.name, r["comparison"], r["judge_label"], f"{fmt(r['estimate'], True)} [{fmt(r['ci_low'], True)}, "
             f"{fmt(r['ci_high'], True)}]", r["verdict"], f"{fmt(r['unanchored_estimate'], True)} "
             f"[{fmt(r['unanchored_ci_low'], True)}, {fmt(r['unanchored_ci_high'], True)}]", r["unanchored_verdict"]]
            for sec, r in rows]
    return header, body
