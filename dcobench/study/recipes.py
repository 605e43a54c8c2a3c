"""A recipe sweep of the reference method (`recipes:` on a frontier claim with `samplers:`), e.g. DCO's β.

The reference is trained once per recipe; the other methods once. Each recipe gets the sampler
claim's rows (`samplers.sampler_verdicts`): its objective effect against every other method under
each sampler, its own sampler effect, and the as-published comparison. So the report shows, per
recipe, whether the reference departs from the baselines, with no recipe picked by its verdict.

The reference's training curves are drawn per recipe (`report.curves`: loss, implicit accuracy and
β·gap for DCO), and a table reads β·gap off them: DCO's gradient is DreamBooth's reweighted by
β·σ(β·gap) per sample (`methods/dco.py`), so a recipe whose β·gap stays near 0 is DreamBooth
under Adam, and one whose β·gap runs far below 0 has saturated its sigmoid (the weight of a sample
the LoRA already fits vanishes). The default-β rule reads that table (`DEFAULT_RULE`), not a verdict.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..report.curves import curves_figure, load_curves, window_for
from .samplers import SAMPLER_LABEL, sampler_verdicts

# Fixed in the verdicts issue before any β was run; the report applies it to the measured curves.
DEFAULT_RULE = ("the default β is the swept value whose mean |β·gap| over training (mean over the reference's "
                "LoRAs, every optimizer step) lies closest to 1 on a log scale: the sigmoid's responsive range, "
                "where per-sample weights σ(β·gap) differ (not ≈ 0.5 for every sample, as at small β, which is "
                "DreamBooth under Adam) and do not vanish (as at large β, a saturated sigmoid)")


def split_arm(arm: str) -> tuple[str, str]:
    """"beta_50@cfg" -> ("beta_50", "cfg"); a baseline's arm "cfg" -> ("", "cfg")."""
    recipe, _, sampler = arm.rpartition("@")
    return recipe, sampler


def arm_names(claim: dict) -> list[str]:
    """A captions or arms claim's two arms, in order, without their samplers ("comprehensive@cfg")."""
    return list(dict.fromkeys(split_arm(a)[0] or a for a in claim["arm_order"]))


def recipe_order(claim: dict) -> list[str]:
    return list(dict.fromkeys(split_arm(a)[0] for a in claim["arm_order"] if "@" in a))


def sampler_order(claim: dict) -> list[str]:
    return list(dict.fromkeys(split_arm(a)[1] for a in claim["arm_order"]))


def shown_methods(df: pd.DataFrame, lab) -> list[str]:
    """The points' labels: "DCO (β 50, CFG)" for the reference, "DreamBooth (CFG)" for the others."""
    out = []
    for m, arm in zip(df["method"], df["arm"]):
        recipe, sampler = split_arm(arm)
        out.append(f"{lab(m)} ({lab(recipe) + ', ' if recipe else ''}{SAMPLER_LABEL[sampler]})")
    return out


def recipe_verdicts(name: str, claim: dict, df: pd.DataFrame, lab, heads: list[str], calibrated) -> list[dict]:
    """Per recipe: the sampler claim's rows on the reference's cells of that recipe and every other
    method's cells (the other methods' sampler rows once, with the first recipe)."""
    ref, rows = claim["reference"], []
    parts = pd.DataFrame([split_arm(a) for a in df["arm"]], columns=["recipe", "sampler"], index=df.index)
    for i, r in enumerate(recipe_order(claim)):
        keep = (df["method"] != ref) | (parts["recipe"] == r)
        sub = df[keep].assign(arm=parts.loc[keep, "sampler"])
        sub.attrs = df.attrs
        rows += sampler_verdicts(name, claim, sub, lab, heads, calibrated, samplers=sampler_order(claim),
                                 recipe=r, baseline_sampler_rows=i == 0)
    return rows


def _beta_gap_table(curves: dict, names: dict | None = None) -> pd.DataFrame:
    """One row per recipe (`names`: display label -> recipe name, as in verdicts.csv)."""
    names = names or {}
    rows = []
    for label, values in curves.items():
        gaps = values.get("beta_gap") or []
        accs = values.get("implicit_acc") or []
        if not gaps:
            continue
        # nan-means: a step whose loss was not finite must not hide the recipe from the rule
        per_lora = [float(np.nanmean(np.abs(g))) for g in gaps]
        last = [float(np.nanmean(g[-max(1, len(g) // 4):])) for g in gaps]
        acc_last = [float(np.nanmean(a[-max(1, len(a) // 4):])) for a in accs]
        rows.append({"recipe": names.get(label, label), "label": label, "loras": len(gaps),
                     "mean_abs_beta_gap": float(np.mean(per_lora)), "beta_gap_last_quarter": float(np.mean(last)),
                     "implicit_acc_last_quarter": float(np.mean(acc_last)) if acc_last else math.nan})
    table = pd.DataFrame(rows, columns=["recipe", "label", "loras", "mean_abs_beta_gap", "beta_gap_last_quarter",
                                        "implicit_acc_last_quarter"])
    dist = [abs(math.log(v)) if v > 0 else math.inf for v in table["mean_abs_beta_gap"]]
    return table.assign(rule_pick=[d == min(dist) and math.isfinite(d) for d in dist])


def recipe_curves(claim: dict, df: pd.DataFrame, lab):
    """(figure or None, β·gap table, caption rows) of the reference's LoRAs, one line per recipe."""
    ref = df[df["method"] == claim["reference"]]
    shown = ref.assign(method=[lab(split_arm(a)[0]) for a in ref["arm"]])
    curves, _ = load_curves(shown)
    if not curves:
        return None, _beta_gap_table({}), []
    order = {lab(r): i for i, r in enumerate(recipe_order(claim))}
    curves = dict(sorted(curves.items(), key=lambda kv: order.get(kv[0], len(order))))
    table = _beta_gap_table(curves, {lab(r): r for r in recipe_order(claim)})
    body = [[r.label, str(r.loras), f"{r.mean_abs_beta_gap:.3g}", f"{r.beta_gap_last_quarter:+.3g}",
             "–" if not math.isfinite(r.implicit_acc_last_quarter) else f"{r.implicit_acc_last_quarter:.2f}",
             "yes" if r.rule_pick else ""] for r in table.itertuples()]
    return curves_figure(curves, window_for(curves)), table, body
