"""The runs ("arms") of a claim, built from its spec: `claim_arms` (every kind), `sampler_arm` (one
sampler's sweep over a run), `envelope_arms` (the reference once, the other methods per training
length) and `anchor_arm` (the base model's cells a claim's hypervolumes start from, anchors.py)."""

from __future__ import annotations

import copy
from pathlib import Path

from ..config import deep_merge, load_yaml
from ..errors import DcoError
from .spec import ANCHOR, REFERENCE_ARM, Arm, ClaimSpec, StudySpec


def overlay(value, study_file: Path, where: str) -> dict:
    """An arm's overlay: a mapping, or a YAML run config relative to the study file."""
    if value is None:
        return {}
    if isinstance(value, str):
        return load_yaml(study_file.parent / value)
    if not isinstance(value, dict):
        raise DcoError(f"{where}: expected a mapping of run-config keys or a YAML file path (got {value!r})")
    return value


def claim_arms(spec: StudySpec, study_file: Path, name: str, c: ClaimSpec) -> list[Arm]:
    """The runs of one claim."""
    base = deep_merge(spec.config, c.config)
    if c.subjects:
        base["subjects"] = list(c.subjects)
    if c.kind == "frontier" and c.samplers and c.recipes:
        # the other methods once per sampler; the reference once per recipe and sampler ("<recipe>@<sampler>")
        others = [m for m in c.methods if m != c.reference]
        arms = [sampler_arm(name, s, base, sweep, others) for s, sweep in c.samplers.items()] if others else []
        for r, value in c.recipes.items():
            cfg = deep_merge(base, overlay(value, study_file, f"claims.{name}.recipes.{r}"))
            for s, sweep in c.samplers.items():
                arm = sampler_arm(name, s, cfg, sweep, [c.reference])
                arms.append(Arm(name, f"{r}@{s}", arm.config, arm.methods))
        return arms
    if c.kind == "frontier" and c.samplers:
        return [sampler_arm(name, s, base, sweep, list(c.methods)) for s, sweep in c.samplers.items()]
    if c.kind == "frontier":
        return [Arm(name, "main", base, list(c.methods))]
    if c.kind == "merge":
        if c.styles:
            base["styles"] = list(c.styles)
        arms = [Arm(name, "main", base, list(c.methods), list(c.merges), merges_only=True)]
        for v, value in c.variants.items():
            cfg = deep_merge(base, overlay(value, study_file, f"claims.{name}.variants.{v}"))
            arms.append(Arm(name, v, cfg, list(c.methods), list(c.merges), merges_only=True))
        return arms
    if c.kind == "envelope":
        return envelope_arms(name, c, base, study_file)
    arms = [Arm(name, a, deep_merge(base, overlay(value, study_file, f"claims.{name}.arms.{a}")), list(c.methods))
            for a, value in c.arms.items()]
    if c.samplers:  # every arm under each sampler, on the arm's LoRAs: "<arm>@<sampler>"
        return [Arm(name, f"{a.name}@{s}", sampler_arm(name, s, a.config, sweep, a.methods).config, a.methods)
                for a in arms for s, sweep in c.samplers.items()]
    return arms


def envelope_arms(name: str, c: ClaimSpec, base: dict, study_file: Path) -> list[Arm]:
    """An envelope claim's runs: the reference once at the claim's config ("reference"), the other
    methods once per arm ("<arm>"), each under every sampler ("<arm>@<sampler>") where `samplers:` is set."""
    others = [m for m in c.methods if m != c.reference]
    runs = [(REFERENCE_ARM, base, [c.reference])]
    runs += [(a, deep_merge(base, overlay(v, study_file, f"claims.{name}.arms.{a}")), others)
             for a, v in c.arms.items()]
    if not c.samplers:
        return [Arm(name, a, cfg, methods) for a, cfg, methods in runs]
    return [Arm(name, f"{a}@{s}", sampler_arm(name, s, cfg, sweep, methods).config, methods)
            for a, cfg, methods in runs for s, sweep in c.samplers.items()]


def anchor_arm(c: ClaimSpec, arms: list[Arm]) -> Arm | None:
    """The base-model cells of a frontier, captions or arms claim (`anchor: base`): the first arm's
    recipe, one method (another than the reference where there is one, so that claims share the
    cells), its first training seed, sampled under consistency guidance at w_con 0. There the sampler
    is `eps_phi(0) + w_text (eps_phi(c_base) - eps_phi(0))`: the LoRA does not enter, so the images are
    the base model's on the claim's prompts and sampling seeds, whatever LoRA the cell names, and no
    LoRA is trained for them that the arm does not train anyway."""
    if c.kind not in ("frontier", "captions", "arms", "envelope") or c.anchor != "base" or not arms:
        return None
    first = next((a for a in arms if any(m != c.reference for m in a.methods)), arms[0])
    method = next((m for m in first.methods if m != c.reference), first.methods[0])
    cfg = copy.deepcopy(first.config)
    seeds = cfg.get("seeds")
    if isinstance(seeds, list) and seeds:
        cfg["seeds"] = seeds[:1]
    cfg.setdefault("sample", {})["guidance"] = "consistency"
    cfg.setdefault("methods", {}).setdefault(method, {})["sweep"] = {"sample.w_con": [0.0]}
    return Arm(first.claim, ANCHOR, cfg, [method])


def sampler_arm(claim: str, sampler: str, base: dict, sweep: dict, methods: list[str]) -> Arm:
    """The arm of one sampler: every method's sweep *replaced* by the sampler's (a merge would keep
    the method's own knob beside it and sweep their product) and `sample.guidance` set to it."""
    cfg = copy.deepcopy(base)
    cfg.setdefault("sample", {})["guidance"] = sampler
    for m in methods:
        entry = cfg.setdefault("methods", {}).setdefault(m, {})
        entry["sweep"] = copy.deepcopy(sweep)
    return Arm(claim, sampler, cfg, methods)
