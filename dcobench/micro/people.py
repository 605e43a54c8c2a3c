"""The micro world's judges against people: the committed blind labels of the methods' own outputs.

`data/micro/labels/<set>/` holds a labelled sample exported by `dcobench label RUN --export`
(images, references, items.csv, labels-<labeller>.csv; README.md there says how each set was drawn
and labelled). `dcobench micro validate` re-judges those images with the judges and encoders that
ship now, so a reworked judge is measured on the same pixels people saw, and adds the agreement
table to VALIDATION.md. The sets:

    dev     624 images (training seeds 0, 1): the set the oracle was reworked on (v3)
    fresh   336 images from other training and sampling seeds (seed 2; sampling seeds 2, 3), drawn
            after the rework, labelled by a second labeller who never saw the judge

`--check` enforces the headline rule (`labels.agreement.RULE`) for `oracle_subject` on every set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..labels.agreement import QUESTION_OF_KIND, RULE, Cut, agreement_table, fit_cut, inter_rater, rule
from ..labels.collect import export_frame
from ..metrics.definitions import metric_meta
from .models import default_micro_dir

SETS = ("dev", "fresh")
HEADLINE = "oracle_subject"
JUDGES = ("oracle_subject", "oracle_subject_colour", "dino", "clip_i", "oracle_background", "oracle_layout",
          "oracle_style", "clip_t")


def set_dirs(root: Path | None = None) -> list[Path]:
    root = Path(root) if root is not None else default_micro_dir() / "labels"
    return [root / s for s in SETS if (root / s / "items.csv").is_file()]


def rejudge(folder: Path, device: str = "cpu") -> pd.DataFrame:
    """The shipped judges' per-image scores of an exported set: item + one column per judge."""
    from PIL import Image

    from ..config import ScoreConfig
    from ..scoring import Scorer, scored_prompt
    from .suite import DEFAULTS
    from .world import SUBJECTS

    cfg = ScoreConfig(**{**DEFAULTS["score"], "metrics": list(JUDGES)})
    scorer = Scorer(cfg, device)
    items = pd.read_csv(folder / "items.csv", dtype=str, keep_default_na=False)
    parts = []
    for subject, group in items.groupby("subject", sort=True):
        refs = sorted(str(p) for p in (folder / "references" / subject).iterdir())
        images = [np.asarray(Image.open(folder / "images" / f"{i}.png").convert("RGB")) for i in group["item"]]
        s = SUBJECTS[subject]
        texts = [scored_prompt(p, s.identifier, s.class_noun, cfg.clip_t_prompt) for p in group["prompt"]]
        values = scorer.score_images(images, texts, {"references": refs}, list(group["prompt"]))
        parts.append(pd.DataFrame({"item": list(group["item"]), **{k: v.numpy() for k, v in values.items()}}))
    return pd.concat(parts, ignore_index=True)


def measure(folder: Path, device: str = "cpu", fitted: dict | None = None) -> dict:
    """Agreement of every shipped judge with the people on one exported set. A continuous judge
    without a validated cut (CLIP-T) gets the cut `fitted` on an earlier set when given (so the
    fresh set is held out from it), else one fitted here (flagged as such); `fitted` is returned."""
    from .cuts import validated_cuts

    scores = rejudge(folder, device)
    frame = export_frame(folder, scores)
    judges = {j: metric_meta(j) for j in JUDGES if j in frame}
    cuts = {j: Cut(0.5, "binary judge") for j in judges if j.startswith("oracle")}
    for j in ("dino", "clip_i"):
        value, source = validated_cuts(j)
        if value:
            cuts[j] = Cut(value, source)
    fitted = dict(fitted or {})
    for j, meta in judges.items():
        if j not in cuts and j not in fitted:
            human = frame[f"human_{QUESTION_OF_KIND[meta['kind']]}"]
            fitted[j] = Cut(fit_cut(frame[j], human, meta["higher_is_better"]), f"fitted on the {folder.name} labels")
    cuts = {**fitted, **cuts}
    table = agreement_table(frame, judges, cuts)
    labels = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(folder.glob("labels-*.csv"))])
    return {"set": folder.name, "n": len(frame), "table": table, "verdicts": rule(table), "fitted": fitted,
            "raters": inter_rater(labels), "labellers": sorted(labels["labeller"].unique())}


def measure_all(dirs: list[Path], device: str = "cpu") -> list[dict]:
    """Every set, in order; cuts fitted on the first (dev) are applied unchanged to the others."""
    out, fitted = [], None
    for d in dirs:
        out.append(measure(d, device, fitted))
        fitted = fitted or out[-1]["fitted"]
    return out


def _f(x) -> str:
    return "–" if pd.isna(x) else f"{x:.2f}"


def markdown(results: list[dict]) -> str:
    """The VALIDATION.md section: per set, each judge's verdict and the headline judges per point."""
    lines = [f"The rule for a headline judge: {RULE}. Labels: data/micro/labels/ (README.md there says who labelled, "
             "how, and what unsure answers mean; they are left out of every figure).", ""]
    for res in results:
        lines += [f"### Set `{res['set']}`: {res['n']} images, labelled by {', '.join(res['labellers'])}", ""]
        lines += [f"- **{j}**: {'meets the rule' if ok else 'misses the rule'} ({why})"
                  for j, (ok, why) in res["verdicts"].items()]
        t = res["table"]
        lines += ["", "| judge | point | n | accuracy | kappa | human rate [95% CI] | judge rate [95% CI] | meets |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in t[t["judge"].isin([HEADLINE, "oracle_subject_colour", "dino", "clip_t"])].itertuples():
            meets = "–" if r.meets is None or pd.isna(r.meets) else ("yes" if r.meets else "**no**")
            lines.append(f"| {r.judge} | {r.stratum} | {r.n} | {_f(r.accuracy)} | {_f(r.kappa)} | "
                         f"{_f(r.human_rate)} [{_f(r.human_lo)}, {_f(r.human_hi)}] | "
                         f"{_f(r.judge_rate)} [{_f(r.judge_lo)}, {_f(r.judge_hi)}] | {meets} |")
        raters = res["raters"]
        if not raters.empty:
            lines += ["", "Agreement between labellers on the items both answered yes or no: "
                      + "; ".join(f"{r.question}: {r.a} vs {r.b}, n = {r.n}, agreement {_f(r.agreement)}, kappa "
                                  f"{_f(r.kappa)}" for r in raters.itertuples()) + "."]
        lines.append("")
    return "\n".join(lines)


def checks(results: list[dict]) -> dict[str, bool]:
    return {f"{HEADLINE} meets the headline rule on the blind labels ({r['set']})": r["verdicts"].get(HEADLINE, (False,))[0]
            for r in results}


def calibration() -> tuple[dict[str, tuple[bool, str]], str]:
    """The micro suite's judges against the headline rule, as `dcobench micro validate` last
    measured them on every committed set (validation.json): a judge carries study verdicts only if
    it meets the rule on all of them."""
    import json

    path = default_micro_dir() / "validation.json"
    sets = json.loads(path.read_text()).get("people", {}) if path.is_file() else {}
    out: dict[str, tuple[bool, str]] = {}
    for name, res in sets.items():
        for judge, (ok, why) in res["verdicts"].items():
            prev = out.get(judge, (True, ""))
            out[judge] = (prev[0] and ok, "; ".join(p for p in (prev[1], f"{name}: {why}") if p))
    return out, ("data/micro/labels/ (" + ", ".join(f"{k} {v['n']} images" for k, v in sets.items()) + ")"
                 if sets else "no labels measured (run `dcobench micro validate`)")
