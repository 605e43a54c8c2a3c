"""The judge-validity table of `dcobench micro validate`: every subject judge on every labelled set.

``measure`` builds the sets of ``judges.py`` for each held-out subject, scores them with the
oracle and with the DINO and CLIP-I metrics exactly as a run scores generated images (mean cosine
to the subject's references), and returns rates, AUCs, thresholds and a panel of what each judge
accepts and rejects.  ``table`` renders the markdown for ``data/micro/VALIDATION.md``.
"""

from __future__ import annotations

import numpy as np

from . import judges
from .validate import generate
from .world import HELDOUT_SUBJECTS, SUBJECTS

JUDGES = ("oracle_subject", "dino", "clip_i")


def _embed_score(backbone, images: np.ndarray, subject: str) -> np.ndarray:
    refs = backbone.embed_images(list(judges.reference_images(subject)))
    return (backbone.embed_images(list(images)) @ refs.T).mean(1).numpy()


def build_sets(pipe, subject: str, strengths, rng, n_layouts: int | None = None, cfg_scale: float = 3.0,
               steps: int = 25, seed: int = 0) -> dict[str, np.ndarray]:
    """Every positive and negative set of ``subject`` as uint8 image arrays."""
    from .world import Scene, render

    lays = judges.layouts(rng, n_layouts)
    s = SUBJECTS[subject]
    clean = np.stack([render(Scene(s.class_shape, None, *lay[:3], "plain", subject, lay[3], lay[4])) for lay in lays])
    vae = judges.vae_round_trip(pipe.vae, clean)
    # the strengths were measured against clean renders, so they already contain the VAE's own blur:
    # degrading the VAE's output instead would count that blur twice
    sets = {"clean": clean, "vae": vae, "degraded": judges.degrade(clean, strengths, rng)}
    if judges.heavy(strengths):
        sets[judges.STRESS_SET] = judges.degrade(clean, judges.heavy(strengths), rng)
    prompts, _ = judges.class_prompts(subject, lays)
    sets["class prior (base model)"] = generate(pipe, prompts, [seed * 7919 + i for i in range(len(prompts))],
                                                cfg_scale, steps)
    rendered = [judges.hard_negatives(subject, lay, rng) for lay in lays]
    for kind in rendered[0]:
        imgs = np.stack([r[kind] for r in rendered])
        sets[kind] = judges.degrade(imgs, strengths, rng)
    return sets


def measure(pipe, dino, clip, strengths, n_layouts: int | None = None, seed: int = 0, cfg_scale: float = 3.0,
            steps: int = 25, subjects=HELDOUT_SUBJECTS) -> dict:
    """Rates per judge x set (pooled over `subjects`), per-subject AUCs and rates, thresholds and a panel."""
    rng = np.random.default_rng(seed)
    kinds = judges.POSITIVE_SETS + (judges.STRESS_SET,) + judges.NEGATIVE_SETS
    scores = {j: {k: [] for k in kinds} for j in JUDGES}
    pool = {k: [] for k in kinds}
    per_subject = {}
    for subject in subjects:
        sets = build_sets(pipe, subject, strengths, rng, n_layouts, cfg_scale, steps, seed)
        for kind, imgs in sets.items():
            pool[kind].append(imgs)
            verdicts = judges.oracle_verdicts(imgs, subject)
            scores["oracle_subject"][kind].append(verdicts)
            per_subject.setdefault(subject, {})[kind] = float((np.asarray(verdicts) >= 0.5).mean())
            scores["dino"][kind].append(_embed_score(dino, imgs, subject))
            scores["clip_i"][kind].append(_embed_score(clip, imgs, subject))
    pool = {k: v for k, v in pool.items() if v}
    scores = {j: {k: v for k, v in d.items() if v} for j, d in scores.items()}
    out = {"n_per_set": {k: int(sum(len(a) for a in v)) for k, v in pool.items()}, "judges": {},
           "subjects": list(subjects), "oracle_per_subject": per_subject}
    prior_sets = ("class prior (base model)", "class prior")
    for j in JUDGES:
        flat = {k: np.concatenate(v) for k, v in scores[j].items()}
        res = {"rate": {k: float((v >= 0.5).mean()) for k, v in flat.items()} if j == "oracle_subject" else {}}
        if j != "oracle_subject":
            # per subject, then averaged: cosines to different references are not on one scale
            res["auc"] = {neg: float(np.mean([judges.auc(p, n) for p, n in zip(scores[j]["degraded"], scores[j][neg])]))
                          for neg in judges.NEGATIVE_SETS}
            res["auc_clean_vs_prior"] = float(np.mean([judges.auc(p, n) for p, n in
                                                       zip(scores[j]["clean"], scores[j]["class prior"])]))
            if judges.STRESS_SET in scores[j]:
                res["auc_heavy_vs_prior"] = float(np.mean([judges.auc(p, n) for p, n in zip(
                    scores[j][judges.STRESS_SET], scores[j]["class prior (base model)"])]))
            thr = [judges.best_threshold(p, n) for p, n in
                   zip(scores[j]["degraded"], scores[j]["class prior (base model)"])]
            res["threshold"] = [t[0] for t in thr]
            res["tpr_at_threshold"] = float(np.mean([t[1] for t in thr]))
            res["fpr_at_threshold"] = float(np.mean([t[2] for t in thr]))
            res["prior_auc_min"] = float(min(res["auc"][k] for k in prior_sets))
        out["judges"][j] = res
        out.setdefault("_scores", {})[j] = flat
    # per subject: DINO's degraded subject against the harder of the two class-prior sets
    out["dino_auc_per_subject"] = {
        subject: float(min(judges.auc(scores["dino"]["degraded"][i], scores["dino"][k][i]) for k in prior_sets))
        for i, subject in enumerate(subjects)}
    out["_pool"] = {k: np.concatenate(v) for k, v in pool.items()}
    out["checks"] = checks(out)
    return out


def checks(res: dict) -> dict[str, bool]:
    o = res["judges"]["oracle_subject"]["rate"]
    return {"oracle_subject FPR <= 0.05 on every negative set": all(o[k] <= 0.05 for k in judges.NEGATIVE_SETS),
            "oracle_subject TPR >= 0.90 on every positive set": all(o[k] >= 0.90 for k in judges.POSITIVE_SETS),
            "dino AUC >= 0.90, degraded subject vs class prior": res["judges"]["dino"]["prior_auc_min"] >= 0.90}


def panel(res: dict, per: int = 16, seed: int = 0) -> np.ndarray:
    """Rows of ``per`` images: for each judge, what it accepts, then what it rejects (all sets mixed)."""
    rng = np.random.default_rng(seed)
    kinds = [k for k in res["_pool"]]
    pool = np.concatenate([res["_pool"][k] for k in kinds])
    rows = []
    for j in JUDGES:
        flat = np.concatenate([res["_scores"][j][k] for k in kinds])
        thr = 0.5 if j == "oracle_subject" else None
        if thr is None:  # the per-subject thresholds, pooled: accept above their mean
            thr = float(np.mean(res["judges"][j]["threshold"]))
        for accept in (True, False):
            idx = np.nonzero((flat >= thr) == accept)[0]
            pick = rng.choice(idx, size=min(per, len(idx)), replace=False) if len(idx) else []
            row = np.full((32, per * 34, 3), 128, np.uint8)
            for c, i in enumerate(pick):
                row[:, c * 34:c * 34 + 32] = pool[i]
            rows.append(row)
    return np.concatenate([np.pad(r, ((1, 1), (0, 0), (0, 0)), constant_values=128) for r in rows])


def table(res: dict) -> str:
    sets = [k for k in judges.POSITIVE_SETS + (judges.STRESS_SET,) + judges.NEGATIVE_SETS if k in res["n_per_set"]]
    n = res["n_per_set"]
    lines = ["| judge | " + " | ".join(f"{k} (n={n[k]})" for k in sets) + " |", "|---" * (len(sets) + 1) + "|"]
    o = res["judges"]["oracle_subject"]["rate"]
    lines.append("| oracle_subject: accepted | " + " | ".join(f"{o[k]:.2f}" for k in sets) + " |")
    for j in ("dino", "clip_i"):
        r = res["judges"][j]
        pad = "— | " * (len(sets) - len(judges.NEGATIVE_SETS))
        lines.append(f"| {j}: AUC vs degraded subject | {pad}"
                     + " | ".join(f"{r['auc'][k]:.2f}" for k in judges.NEGATIVE_SETS) + " |")
    lines += ["", "| judge | threshold (per subject) | TPR on degraded | FPR on base-model class prior |",
              "|---|---|---|---|"]
    for j in ("dino", "clip_i"):
        r = res["judges"][j]
        lines.append(f"| {j} | {', '.join(f'{t:.3f}' for t in r['threshold'])} | {r['tpr_at_threshold']:.2f} "
                     f"| {r['fpr_at_threshold']:.2f} |")
    for j in ("dino", "clip_i"):
        if "auc_heavy_vs_prior" in res["judges"][j]:
            lines.append(f"\n{j}: AUC of the heavy-noise subject against the base model's class prior "
                         f"{res['judges'][j]['auc_heavy_vs_prior']:.2f} (stress test, no target).")
    lines += ["", "Targets: " + "; ".join(f"{k}: {v}" for k, v in judges.TARGETS.items()) + ".", ""]
    lines += [f"- {'met' if ok else 'NOT met'}: {name}" for name, ok in res["checks"].items()]
    return "\n".join(lines) + "\n"
