"""Screening held-out subjects before any method runs on them: `dcobench micro screen-subjects`.

The verdicts issue asks for power counted in subjects, so the micro world gained eighteen subjects in
two batches (`world.SECOND_SUBJECTS`; twelve passed, `PASSED`). Each is validated as the first three were, by rules fixed in this
module before the screen was run; a subject enters a study only if it passes every one:

1. **VAE**: its reference images survive the VAE round trip, reconstruction MSE ≤ 0.005 in [-1, 1]
   units (the first three: 0.0008-0.0012);
2. **judgeable**: the oracle's region test can read its part at ≥ 6 of its 8 evaluation prompts'
   styles and sizes (a part inside the shape vanishes in outline style: the badge's does too);
3. **distinct**: no other subject's clean renders pass its test and its renders pass no other's
   (the test reads structure, not exact hues, so two subjects with one shape and one split would
   be one subject to it);
4. **oracle error rates**, on the sets of `judge_validity` (40 layouts per set): accepted ≥ 0.90 of
   its clean, VAE round-trip and degraded renders, ≤ 0.05 of each negative set (the base model's
   class prior, rendered class prior, speckled, textured, colour-swapped, other subjects);
5. **DINO**: AUC ≥ 0.90 of its degraded renders against both class-prior sets (micro-dino).

Nothing here looks at what a personalization method draws: that is for the study, after.
"""

from __future__ import annotations

import numpy as np

from . import judges, oracle, references
from .world import SECOND_SUBJECTS, SUBJECTS, render

# The screen's result (data/micro/SUBJECTS.md, subjects_screen.json; a test checks the two agree):
# the subjects a study may use. The other six stay in the world, documented as failed, and no run trains them.
PASSED = ("flag", "tile", "door", "sail", "gem", "spire", "card", "brick", "cone", "book", "wedge", "hill")
VAE_MAX = 0.005
JUDGEABLE_MIN = 6
TPR_MIN, FPR_MAX, AUC_MIN = 0.90, 0.05, 0.90


def vae_mse(vae, subject: str) -> float:
    clean = np.stack([render(s) for s in references.reference_scenes(subject)])
    back = judges.vae_round_trip(vae, clean)
    return float((((clean / 127.5 - 1) - (back / 127.5 - 1)) ** 2).mean())


def judgeable_prompts(subject: str) -> int:
    return sum(oracle.judgeable(subject, s.style, s.size) for s in references.eval_prompts(subject))


def confusions(subject: str) -> list[str]:
    """Other subjects whose clean renders pass this subject's test, or whose test passes its renders."""
    def passes(test: str, drawn: str) -> bool:
        scenes = references.reference_scenes(drawn, 6) + [s for s in references.eval_prompts(drawn)
                                                          if s.style == "plain"]
        return any(oracle.subject_match(render(s), test, s.style, s.size) for s in scenes)
    return sorted(o for o in SUBJECTS if o != subject and (passes(subject, o) or passes(o, subject)))


def screen(pipe, dino, clip, strengths, subjects=SECOND_SUBJECTS, n_layouts: int = 40, seed: int = 0,
           cfg_scale: float = 3.0, steps: int = 25) -> dict:
    """Every rule for every subject: {'subjects': {name: {...figures, 'checks': {rule: bool}, 'passed'}}}."""
    from .judge_validity import measure

    res = measure(pipe, dino, clip, strengths, n_layouts=n_layouts, seed=seed, cfg_scale=cfg_scale, steps=steps,
                  subjects=subjects)
    out = {}
    for i, name in enumerate(subjects):
        rates = res["oracle_per_subject"][name]
        auc = res["dino_auc_per_subject"][name]
        fig = {"vae_mse": vae_mse(pipe.vae, name), "judgeable": judgeable_prompts(name),
               "confusions": confusions(name), "oracle": rates, "dino_auc_vs_prior": auc,
               "design": {"shape": SUBJECTS[name].class_shape, "colors": list(SUBJECTS[name].colors),
                          "part": SUBJECTS[name].part, "identifier": SUBJECTS[name].identifier}}
        checks = {
            f"VAE MSE <= {VAE_MAX}": fig["vae_mse"] <= VAE_MAX,
            f"judgeable at >= {JUDGEABLE_MIN} of 8 prompts": fig["judgeable"] >= JUDGEABLE_MIN,
            "no confusion with another subject": not fig["confusions"],
            f"oracle TPR >= {TPR_MIN} on every positive set": all(rates[k] >= TPR_MIN for k in judges.POSITIVE_SETS),
            f"oracle FPR <= {FPR_MAX} on every negative set": all(rates[k] <= FPR_MAX for k in judges.NEGATIVE_SETS),
            f"DINO AUC >= {AUC_MIN} vs both class-prior sets": auc >= AUC_MIN,
        }
        out[name] = {**fig, "checks": checks, "passed": all(checks.values())}
    return {"subjects": out, "n_layouts": n_layouts, "seed": seed, "pooled": {k: v for k, v in res.items()
                                                                              if not k.startswith("_")}}


def markdown(result: dict, command: str = "") -> str:
    """The table of every screened subject; each records the command that screened it (`command`
    for those that do not)."""
    subs = result["subjects"]
    sets = list(judges.POSITIVE_SETS) + list(judges.NEGATIVE_SETS)
    lines = ["# Held-out subjects, screened before any method ran on them", "",
             "Written by `dcobench micro screen-subjects` (`dcobench/micro/subject_screen.py`, whose docstring fixes "
             "the rules). A subject enters a study only if it passes every rule.", "",
             "| subject | shape | body | part | part colour | identifier | VAE MSE | judgeable prompts | "
             "confused with | DINO AUC vs prior | passed |", "|---" * 11 + "|"]
    for name, r in subs.items():
        d = r["design"]
        lines.append(f"| {name} | {d['shape']} | {d['colors'][0]} | {d['part']} | {d['colors'][1]} | "
                     f"{d['identifier']} | {r['vae_mse']:.4f} | {r['judgeable']}/8 | "
                     f"{', '.join(r['confusions']) or '—'} | {r['dino_auc_vs_prior']:.2f} | "
                     f"{'yes' if r['passed'] else '**no**'} |")
    lines += ["", f"Oracle acceptance per set ({result['n_layouts']} layouts per subject and set; targets: ≥ "
              f"{TPR_MIN} on {', '.join(judges.POSITIVE_SETS)}; ≤ {FPR_MAX} on the others):", "",
              "| subject | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
    for name, r in subs.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['oracle'][k]:.2f}" for k in sets) + " |")
    failed = {n: [c for c, ok in r["checks"].items() if not ok] for n, r in subs.items() if not r["passed"]}
    lines += ["", f"Passed: {sum(r['passed'] for r in subs.values())} of {len(subs)}."]
    lines += [f"- {n} failed: {'; '.join(c)}" for n, c in failed.items()]
    commands = list(dict.fromkeys(r.get("command", command) for r in subs.values()))
    lines += [""] + [f"Measured by `{c}` on the CPU (1 thread): "
                     f"{', '.join(n for n, r in subs.items() if r.get('command', command) == c)}." for c in commands]
    lines.append("")
    return "\n".join(lines)
