"""Synthetic studies with a known truth: does the label-corrected interval cover the true ΔHV?

`python -m dcobench.study.simulate [--studies 500] [--reps 500] [--seed 0]` prints the coverage
of the corrected 95% interval (`ppi.corrected_difference`) and of the judge-only one over
simulated studies; `tests/test_ppi.py` runs it and docs/studies.md gives its figures.

One simulated study, shaped like the power study (`data/studies/micro_power.yaml`):

- 15 subjects × 2 training seeds; methods A and B, 4 knob values each, 16 images per cell;
- each cell's true subject rate is sigmoid(method-knob level + the subject's own offset, N(0, 0.6));
  prompt fidelity falls as the knob rises (the frontier's trade-off), with a little noise per cell;
- every image truly shows the subject or not (a Bernoulli draw at its cell's rate);
- the judge reads a true subject as absent 3% of the time at the light knobs and, as measured on the
  micro world's outputs, 10% (A) or 15% (B) at the heavy ones: a bias that differs by method at the
  same knob; it reads an absent subject as present 2% of the time;
- each point (method × knob) has 1 to 13 labelled images (uniform), drawn at random from its images.

The truth is the ΔHV that a judge without error would read, in expectation over subjects and
images: the mean ΔHV over 6,000 simulated subject × seed units read by a perfect judge. Every
study's hypervolume uses the same fixed reference point and box, so the truth is one number.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from .ppi import LabelSet, corrected_difference, hv_batch

LEVELS = {"A": [-1.0, 0.0, 1.0, 2.0], "B": [-1.2, -0.1, 0.9, 2.1]}
PROMPT = [0.90, 0.80, 0.70, 0.60]  # prompt fidelity per knob: the frontier's trade-off
MISS = {"A": [0.03, 0.03, 0.10, 0.10], "B": [0.03, 0.03, 0.15, 0.15]}
FALSE_POSITIVE = 0.02
REF, BOX = (0.5, 0.0), (0.95, 1.0)
SUBJECTS, SEEDS, IMAGES = 15, 2, 16


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def truth(rng: np.random.Generator, units: int = 6000) -> float:
    """Mean ΔHV (A − B) a perfect judge reads, over `units` simulated subject × seed units."""
    offsets = rng.normal(0.0, 0.6, size=units)
    hv = {}
    for m in ("A", "B"):
        p = _sigmoid(np.asarray(LEVELS[m])[None, :] + offsets[:, None])
        rates = rng.binomial(IMAGES, p) / IMAGES
        xs = np.asarray(PROMPT) + rng.normal(0, 0.01, size=(units, 4))
        hv[m] = np.array([hv_batch(xs[u], rates[u][None, :], REF, BOX)[0] for u in range(units)])
    return float(np.mean(hv["A"] - hv["B"]))


def study(rng: np.random.Generator, labels_per_point: tuple[int, int] = (1, 13)) -> tuple[pd.DataFrame, LabelSet]:
    """One synthetic study: (cells, labels of their images)."""
    cells, images = [], []
    offsets = rng.normal(0.0, 0.6, size=SUBJECTS)
    for s in range(SUBJECTS):
        for seed in range(SEEDS):
            for m in ("A", "B"):
                for k in range(4):
                    cid = f"{m}{k}-s{s}-{seed}"
                    truth_ = rng.random(IMAGES) < _sigmoid(LEVELS[m][k] + offsets[s])
                    u = rng.random(IMAGES)
                    judge = np.where(truth_, u >= MISS[m][k], u < FALSE_POSITIVE).astype(float)
                    cells.append({"cell_id": cid, "method": m, "subject": f"s{s}", "seed": seed,
                                  "stratum": f"{m} k={k}", "clip_t": PROMPT[k] + rng.normal(0, 0.01),
                                  "oracle_subject": judge.mean()})
                    images += [{"cell_id": cid, "subject": f"s{s}", "stratum": f"{m} k={k}", "f": f, "y": float(t)}
                               for f, t in zip(judge, truth_)]
    imgs = pd.DataFrame(images)
    picked = []
    for _, g in imgs.groupby("stratum", sort=True):
        n = int(rng.integers(labels_per_point[0], labels_per_point[1] + 1))
        picked.append(g.iloc[np.sort(rng.choice(len(g), size=n, replace=False))])
    lab = pd.concat(picked).assign(w=1.0)[["cell_id", "subject", "f", "y", "w"]]
    return pd.DataFrame(cells), LabelSet(lab.reset_index(drop=True))


def coverage(studies: int = 500, reps: int = 500, seed: int = 0, labels: tuple[int, int] = (1, 13)) -> dict:
    """Coverage of the true ΔHV by the corrected and the judge-only 95% intervals, and their widths,
    with `labels` = (fewest, most) labelled images per point."""
    rng = np.random.default_rng(seed)
    true = truth(rng)
    hits = {"corrected": 0, "judge only": 0}
    widths = {"corrected": [], "judge only": []}
    estimates = {"corrected": [], "judge only": []}
    empty = LabelSet(pd.DataFrame(columns=["cell_id", "subject", "f", "y", "w"]))
    for i in range(studies):
        cells, drawn = study(rng, labels)
        for name, lab in (("corrected", drawn), ("judge only", empty)):
            r = corrected_difference(cells, "A", "B", "clip_t", "oracle_subject", lab, reps=reps, seed=i,
                                     ref=REF, box=BOX)
            hits[name] += r["ci_low"] <= true <= r["ci_high"]
            widths[name].append(r["half_width"])
            estimates[name].append(r["estimate"])
    return {"truth": true, "studies": studies, "reps": reps, "labels per point": f"{labels[0]}-{labels[1]}",
            **{f"{k} coverage": hits[k] / studies for k in hits},
            **{f"{k} mean half-width": float(np.mean(widths[k])) for k in widths},
            **{f"{k} mean estimate": float(np.mean(estimates[k])) for k in estimates}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=500)
    ap.add_argument("--reps", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--labels", type=int, nargs=2, default=(1, 13), metavar=("FEWEST", "MOST"),
                    help="labelled images per point (method x knob), drawn uniformly between the two")
    args = ap.parse_args(argv)
    for k, v in coverage(args.studies, args.reps, args.seed, tuple(args.labels)).items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
