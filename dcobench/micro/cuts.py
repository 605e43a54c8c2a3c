"""The micro encoders' validated cuts: where DINO's and CLIP-I's scores turn into "the subject".

`dcobench micro validate` chooses, per held-out subject, the threshold that best separates degraded
renders of the subject from the base model's class-prior samples (Youden's J, `judges.best_threshold`)
and records it in data/micro/validation.json. The judge-agreement table (`dcobench.labels`) thresholds
these continuous judges there, so their agreement with people is measured at a cut chosen without
the labels. Registered as the `cuts` provider of the micro-dino and micro-clip backbones.
"""

from __future__ import annotations

import json

from .models import default_micro_dir
from .world import HELDOUT_SUBJECTS

# the image metrics each backbone's validation rated (judge_validity: "dino" and "clip_i")
VALIDATED = ("dino", "clip_i")


def validated_cuts(metric: str) -> tuple[dict[str, float], str]:
    """({subject: cut}, where it comes from) for `metric`; ({}, "") when validation chose none."""
    path = default_micro_dir() / "validation.json"
    if metric not in VALIDATED or not path.is_file():
        return {}, ""
    judges = json.loads(path.read_text()).get("judges", {}).get("judges", {})
    cuts = judges.get(metric, {}).get("threshold")
    if not cuts:
        return {}, ""
    return dict(zip(HELDOUT_SUBJECTS, map(float, cuts))), "validation: data/micro/validation.json"
