"""How far each judge agrees with people, on the methods' own images: a pure fold of labels and scores.

A judge is known only on what it judges. Its error rates on renders (data/micro/VALIDATION.md) say
nothing of what guidance does to a method's samples, so every judge is also measured against
human answers on the images the methods drew, per stratum (method x knob), where its error can
bend a frontier.

Inputs are one row per labelled image (`frame`): the people's answers to "is this the subject?"
(`human_subject`) and "does it follow the prompt?" (`human_prompt`), each 1 (yes), 0 (no) or NaN
(unsure, or not asked), the image's stratum, its subject, and the judges' per-image scores. A
subject judge (`kind` subject or style) is compared with the subject answer, a prompt judge with
the prompt answer. A binary judge (the micro oracle: 1, 0, or NaN where it abstains) is taken as
it is; a continuous one (DINO, CLIP-I, CLIP-T) is thresholded at a cut: the one its validation
chose (`Cut.source` names it), else the one that best separates this set's yes from no answers
(Youden's J), which is flagged as fitted on these labels: optimistic, so such a judge's figures
are an upper bound.

Per judge and stratum: n (images with a yes/no answer that the judge did not abstain on), the
judge's abstentions, accuracy, Cohen's kappa, the human rate and the judge's rate, each with a
95% Wilson interval. `RULE`: a judge may carry a claim only if, in every stratum with at least
`MIN_N` labelled images, accuracy >= 0.90 and |judge rate - human rate| <= 0.10; `rule` says which
judges pass, and why the others do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

MIN_N, MIN_ACCURACY, MAX_RATE_GAP = 16, 0.90, 0.10
RULE = (f"accuracy >= {MIN_ACCURACY:.2f} and |judge rate - human rate| <= {MAX_RATE_GAP:.2f} in every stratum "
        f"(method x knob) with at least {MIN_N} labelled images")
ANSWERS = {"yes": 1.0, "y": 1.0, "no": 0.0, "n": 0.0, "unsure": math.nan, "u": math.nan}
QUESTION_OF_KIND = {"subject": "subject", "style": "subject", "prompt": "prompt"}


@dataclass(frozen=True)
class Cut:
    """Where a continuous judge's score turns into "yes": value >= cut (higher is better) or < cut."""

    value: float | dict  # one cut, or one per subject
    source: str  # "binary judge", "validation: <what chose it>", or FITTED

    def at(self, subject: str) -> float:
        return float(self.value.get(subject, math.nan)) if isinstance(self.value, dict) else float(self.value)

    def text(self) -> str:
        if isinstance(self.value, dict):
            return ", ".join(f"{k} {v:.3f}" for k, v in sorted(self.value.items()))
        return f"{self.value:.3f}" if self.source != BINARY else "0.5"


FITTED = "fitted on these labels (Youden's J; optimistic)"
BINARY = "binary judge"


def consensus(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per (item, question): the latest answer of each labeller, then the majority of their
    yes/no answers (a tie, or only unsure answers, is unsure: NaN). Columns: item, cell, image,
    question, human, labellers, unsure."""
    if labels.empty:
        return pd.DataFrame(columns=["item", "cell", "image", "question", "human", "labellers", "unsure"])
    latest = labels.sort_values("time").groupby(["labeller", "item", "question"], as_index=False).last()
    latest["value"] = latest["answer"].map(ANSWERS)
    rows = []
    for (item, question), g in latest.groupby(["item", "question"], sort=True):
        v = g["value"].dropna()
        yes, no = int((v == 1).sum()), int((v == 0).sum())
        rows.append({"item": item, "cell": g["cell"].iloc[0], "image": g["image"].iloc[0], "question": question,
                     "human": 1.0 if yes > no else 0.0 if no > yes else math.nan,
                     "labellers": len(g), "unsure": int(g["value"].isna().sum())})
    return pd.DataFrame(rows)


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two binary raters; NaN when chance agreement is 1 (both constant and equal)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not len(a):
        return math.nan
    po = float((a == b).mean())
    pa, pb = a.mean(), b.mean()
    pe = float(pa * pb + (1 - pa) * (1 - pb))
    return math.nan if pe >= 1 else (po - pe) / (1 - pe)


def wilson(k: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n (sound at 0 and 1, unlike the normal one)."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at p = 0 or 1 an end equals p only up to rounding (k = n = 4 gives 0.9999999999999999): an
    # interval must hold its own estimate, or error bars drawn from it come out negative
    return min(max(0.0, centre - half), p), max(min(1.0, centre + half), p)


def fit_cut(values: np.ndarray, human: np.ndarray, higher_is_better: bool = True) -> float:
    """The cut that maximises TPR - FPR of `value >= cut` (or `< cut`) against the yes answers."""
    values, human = np.asarray(values, float), np.asarray(human, float)
    ok = np.isfinite(values) & np.isfinite(human)
    values, human = values[ok], human[ok]
    if not len(values) or human.min() == human.max():
        return math.nan
    best, cut = -2.0, math.nan
    for t in np.unique(values):
        said = values >= t if higher_is_better else values < t
        j = said[human == 1].mean() - said[human == 0].mean()
        if j > best:
            best, cut = j, float(t)
    return cut


def verdicts(values: pd.Series, subjects: pd.Series, cut: Cut, higher_is_better: bool) -> np.ndarray:
    """The judge's yes (1) / no (0) / abstain (NaN) per image."""
    v = values.to_numpy(float)
    cuts = np.array([cut.at(s) for s in subjects], float)
    said = np.where(v >= cuts, 1.0, 0.0) if higher_is_better else np.where(v < cuts, 1.0, 0.0)
    return np.where(np.isfinite(v) & np.isfinite(cuts), said, np.nan)


def judge_rows(frame: pd.DataFrame, judge: str, kind: str, higher_is_better: bool, cut: Cut,
               strata: str = "point") -> list[dict]:
    """The agreement rows of one judge: one per stratum and one over every image ("all")."""
    question = QUESTION_OF_KIND[kind]
    human = frame[f"human_{question}"].to_numpy(float)
    said = verdicts(frame[judge], frame["subject"], cut, higher_is_better)
    rows = []
    for name, idx in [*frame.groupby(strata, sort=True).indices.items(), ("all", np.arange(len(frame)))]:
        h, j = human[idx], said[idx]
        answered = np.isfinite(h)
        both = answered & np.isfinite(j)
        n, k_h, k_j = int(both.sum()), float(h[both].sum()), float(j[both].sum())
        acc = float((h[both] == j[both]).mean()) if n else math.nan
        row = {"judge": judge, "question": question, "stratum": name, "n": n,
               "abstained": int((answered & ~np.isfinite(j)).sum()), "accuracy": acc,
               "kappa": kappa(h[both], j[both]), "human_rate": k_h / n if n else math.nan,
               "judge_rate": k_j / n if n else math.nan, "cut": cut.text(), "cut_source": cut.source}
        row["human_lo"], row["human_hi"] = wilson(k_h, n)
        row["judge_lo"], row["judge_hi"] = wilson(k_j, n)
        row["meets"] = (None if n < MIN_N or name == "all" else
                        bool(acc >= MIN_ACCURACY and abs(row["judge_rate"] - row["human_rate"]) <= MAX_RATE_GAP))
        rows.append(row)
    return rows


def agreement_table(frame: pd.DataFrame, judges: dict[str, dict], cuts: dict[str, Cut]) -> pd.DataFrame:
    """Every judge against the people: `judges` maps a score column to its metric metadata
    (`kind`, `higher_is_better`); `cuts` gives each continuous judge's cut (missing: fitted here)."""
    rows = []
    for judge, meta in judges.items():
        kind = meta.get("kind")
        if kind not in QUESTION_OF_KIND or judge not in frame or frame[judge].isna().all():
            continue
        cut = cuts.get(judge)
        if cut is None:
            question = QUESTION_OF_KIND[kind]
            cut = Cut(fit_cut(frame[judge], frame[f"human_{question}"], meta.get("higher_is_better", True)), FITTED)
        rows += judge_rows(frame, judge, kind, meta.get("higher_is_better", True), cut)
    return pd.DataFrame(rows)


def rule(table: pd.DataFrame) -> dict[str, tuple[bool, str]]:
    """judge -> (meets the headline rule, why): every stratum with >= MIN_N images must meet it, and
    at least one stratum must have that many."""
    out = {}
    for judge, g in table[table["stratum"] != "all"].groupby("judge", sort=False):
        big = g[g["n"] >= MIN_N]
        if big.empty:
            out[judge] = (False, f"no stratum has {MIN_N} labelled images")
            continue
        bad = big[~big["meets"].astype(bool)]
        if bad.empty:
            out[judge] = (True, f"meets the rule in all {len(big)} strata with >= {MIN_N} images")
        else:
            worst = bad.sort_values("accuracy").iloc[0]
            out[judge] = (False, f"misses it in {len(bad)} of {len(big)} strata (worst: {worst['stratum']}, accuracy "
                                 f"{worst['accuracy']:.2f}, judge rate {worst['judge_rate']:.2f} vs human "
                                 f"{worst['human_rate']:.2f})")
    return out


def inter_rater(labels: pd.DataFrame) -> pd.DataFrame:
    """Agreement between labellers on the items both answered yes or no: per question and pair."""
    if labels.empty:
        return pd.DataFrame(columns=["question", "a", "b", "n", "agreement", "kappa"])
    latest = labels.sort_values("time").groupby(["labeller", "item", "question"], as_index=False).last()
    latest["value"] = latest["answer"].map(ANSWERS)
    wide = latest.pivot_table(index=["item", "question"], columns="labeller", values="value", aggfunc="last")
    rows, names = [], sorted(wide.columns)
    for q, part in wide.groupby(level="question"):
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                both = part[[a, b]].dropna()
                rows.append({"question": q, "a": a, "b": b, "n": len(both),
                             "agreement": float((both[a] == both[b]).mean()) if len(both) else math.nan,
                             "kappa": kappa(both[a].to_numpy(), both[b].to_numpy())})
    return pd.DataFrame(rows)
