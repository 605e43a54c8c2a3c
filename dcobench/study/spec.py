"""A study file: named claims, each a set of runs ("arms") and the comparisons that decide it.

    data/studies/<name>.yaml          (`dcobench study <name>` or a path)

    name: micro-paper
    suite: micro
    config: {...}        # a run config (the keys of `dcobench run --config`): the recipe, in one place
    claims:
      subject:  {kind: frontier, methods: [dco, dreambooth, dreambooth_pp], judges: [oracle_subject, dino]}
      style:    {kind: frontier, methods: [dco, dreambooth], subjects: [striped], judges: [oracle_style]}
      merge:    {kind: merge, methods: [dco, dreambooth], merges: [direct, ziplora], styles: [striped]}
      captions: {kind: captions, methods: [dco, dreambooth], arms: {comprehensive: {}, template: {...}}}
      beta:     {kind: frontier, methods: [dco, dreambooth], samplers: {...},
                 recipes: {beta_5: {methods: {dco: {beta: 5}}}, beta_50: {methods: {dco: {beta: 50}}}}}

Every arm's run config is, bottom to top: the suite's defaults < the study's `config` < the claim's
`config` (and `subjects`, `styles`) < the arm's own overlay < `key=value` overrides of the command
line. An overlay is a mapping of run-config keys, or the path of a YAML run config (relative to the
study file, e.g. `../configs/ziplora_public.yaml`). Parsing is strict, as for run configs: an
unknown key or kind fails at once, naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import from_dict, load_yaml, option
from ..errors import DcoError

KINDS = ("frontier", "merge", "captions", "arms", "envelope")  # arms: captions' design for any two overlays
REFERENCE_ARM = "reference"  # an envelope claim's arm of the reference method (envelope.py)
ANCHOR = "anchor"  # the arm of a claim's base-model cells (`anchor: base`)
ANCHOR_CELLS = "anchor_cells"  # where study.json lists them, per claim
SAMPLERS = {"cfg": "sample.cfg_scale", "consistency": "sample.w_con"}  # sampler -> the knob its sweep usually varies


@dataclass
class ClaimSpec:
    kind: str = option("frontier", "frontier: the reference method's trade-off curve against each other method's; "
                       "merge: merge interference; captions: the same methods on two caption arms; arms: the same "
                       "on any two arms (e.g. a control: a method against a deliberately weakened copy of itself); "
                       "envelope: the reference against the upper envelope of the other methods' frontiers over "
                       "their arms (e.g. DreamBooth at several training lengths: is DCO more than an early stop?).",
                       choices=list(KINDS))
    title: str = option("", "The claim's section title in the report.")
    methods: list[str] = option([], "Methods this claim trains (dcobench run --methods).")
    reference: str = option("dco", "The method under test: verdicts say whether it is ahead of the others.")
    subjects: list[str] = option([], "Subjects (or styles, as personalization targets); empty: the suite's subjects.")
    judges: list[str] = option([], "Fidelity metrics, one verdict each (the y axes; merge: any fidelity kind).")
    headline: list[str] = option([], "Judges of the claim's one-line verdict; empty: the first judge.")
    prompt_metric: str = option("clip_t", "Prompt fidelity (the x axis of every frontier).")
    config: dict[str, Any] = option({}, "Run-config keys for this claim's runs, over the study's config.")
    merges: list[str] = option(["direct", "ziplora"], "merge: the merge methods.")
    reference_merge: str = option("direct", "merge: the reference method's merge that is compared.")
    styles: list[str] = option([], "merge: the styles paired with every subject; empty: the suite's merge styles.")
    variants: dict[str, Any] = option({}, "merge: extra runs of the same pairs, name -> overlay (e.g. ZipLoRA "
                                      "at its public settings); their merge rows are labelled '<merge> (<name>)'.")
    arms: dict[str, Any] = option({}, "captions: exactly two arms, name -> overlay; the first is tested against "
                                  "the second, per method. envelope: the other methods' training lengths (two or "
                                  "more), name -> overlay, e.g. {half: {train: {steps: 200}}}; the reference is "
                                  "compared with the upper envelope of their frontiers.")
    samplers: dict[str, dict[str, Any]] = option(
        {}, "frontier, captions, arms: sampler -> its sweep, e.g. {cfg: {sample.cfg_scale: [1.5, 3]}, consistency: "
        "{sample.w_con: [1, 2]}}. Every method is then swept under each sampler on the same LoRAs (sampling cells "
        "only). A frontier claim's verdicts separate the objective effect (the methods under one sampler), the "
        "sampler effect (one method's LoRAs under both) and the as-published comparison (each method on its own "
        "default sampler: confounded); a captions or arms claim compares its two arms under each sampler.")
    recipes: dict[str, Any] = option(
        {}, "frontier with samplers: the reference method's training recipes, name -> overlay (e.g. {beta_50: "
        "{methods: {dco: {beta: 50}}}}). The reference is trained under each, the other methods once at the claim's "
        "config; each recipe gets its own objective-effect rows under each sampler, and the report adds the "
        "reference's training curves per recipe (a beta sweep).")
    anchor: str = option(
        "base", "frontier, captions, arms: where the hypervolume's fidelity axis starts. base: at the base model's "
        "own fidelity per subject (the class prior: one anchor cell per subject, its LoRA switched off by consistency "
        "guidance at w_con 0, on the claim's prompts and seeds), so a point that draws no more of the subject than "
        "the base model earns no area; worst: at every point's worst value less 10% of the range (before 0.9).",
        choices=["base", "worst"])
    units: list[str] = option(["subject", "seed"], "captions / arms: the columns a pair of frontiers shares; "
                              "[subject] pairs arms run on different training seeds (a negative control).")
    expect: str = option("", "captions / arms, for a control: what its headline judges' intervals must say: ahead "
                         "(the first arm ahead: a positive control) or even (no difference: a negative control); the "
                         "report states at its top whether they did.", choices=["", "ahead", "even"])
    targets: dict[str, dict[str, float]] = option(
        {}, "Checks the report states as met or not: frontier: method -> {judge: minimum of its best point}; "
        "merge: merge -> {merger_cos_fall: minimum relative fall of mean |cos(m1, m2)|} (e.g. ziplora: 0.5).")


@dataclass
class StudySpec:
    name: str = option("", "The study's name (the report's title, the findings markers).")
    description: str = option("", "One paragraph: what the study asks.")
    suite: str = option("micro", "Suite of every run.")
    model: str = option("", "Base model replacing the suite's.")
    data: str = option("", "Dataset folder for suites that read one.")
    config: dict[str, Any] = option({}, "The run config of every arm (the recipe: steps, lr, rank, sweeps...).")
    labels: dict[str, str] = option({}, "Display names of methods, merges and arms in the report (dco: DCO).")
    claims: dict[str, ClaimSpec] = option({}, "Claim name -> its spec, in report order.")


@dataclass
class Arm:
    """One run of a claim: its run config (a mapping, without the command line's overrides)."""

    claim: str
    name: str
    config: dict
    methods: list[str]
    merge: list[str] | None = None
    merges_only: bool = False  # a merge claim needs only its merge cells


def study_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a shipped study (data/studies/<name>.yaml)."""
    from ..resources import data_dir

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise DcoError(f"{path}: study file not found; pass a YAML file or a name from data/studies/")
        return path
    shipped = data_dir() / "studies"
    candidate = shipped / f"{name_or_path}.yaml"
    if not candidate.is_file():
        names = sorted(p.stem for p in shipped.glob("*.yaml")) if shipped.is_dir() else []
        raise DcoError(f"study '{name_or_path}': no such file and no shipped study of that name; "
                       f"shipped: {', '.join(names) or 'none'}")
    return candidate


def load_study(name_or_path: str) -> tuple[StudySpec, Path]:
    path = study_path(name_or_path)
    spec = from_dict(StudySpec, load_yaml(path))
    spec.name = spec.name or path.stem
    if not spec.claims:
        raise DcoError(f"{path}: no claims; add `claims:` with at least one claim")
    for name, claim in spec.claims.items():
        _check_claim(path, name, claim)
    return spec, path


def _check_claim(path: Path, name: str, c: ClaimSpec) -> None:
    where = f"{path}: claims.{name}"
    if not c.methods:
        raise DcoError(f"{where}.methods: list the methods this claim trains")
    if not c.judges:
        raise DcoError(f"{where}.judges: list at least one fidelity metric (e.g. oracle_subject, clip_i)")
    for h in c.headline:
        if h not in c.judges:
            raise DcoError(f"{where}.headline: '{h}' is not one of its judges ({', '.join(c.judges)})")
    if c.kind in ("frontier", "merge", "envelope") and c.reference not in c.methods:
        raise DcoError(f"{where}.reference: '{c.reference}' is not one of its methods ({', '.join(c.methods)})")
    if c.kind == "frontier" and len(c.methods) < 2 and not c.targets:
        raise DcoError(f"{where}.methods: a frontier claim compares the reference with at least one other method "
                       "(one method alone needs `targets:`, e.g. a recipe search)")
    if c.kind == "merge" and c.reference_merge not in c.merges:
        raise DcoError(f"{where}.reference_merge: '{c.reference_merge}' is not one of its merges")
    if c.kind == "envelope" and (len(c.methods) < 2 or len(c.arms) < 2):
        raise DcoError(f"{where}: an envelope claim has the reference and another method, and two or more arms "
                       "(the other methods' training lengths, e.g. {half: {train: {steps: 200}}, full: {}})")
    if c.kind in ("captions", "arms") and len(c.arms) != 2:
        raise DcoError(f"{where}.arms: a {c.kind} claim has exactly two arms (tested, then baseline), "
                       f"got {len(c.arms)}")
    if c.kind not in ("captions", "arms", "envelope") and c.arms:
        raise DcoError(f"{where}.arms: only a captions, arms or envelope claim has arms; use variants for a merge "
                       "claim")
    if c.kind != "merge" and (c.variants or c.styles):
        raise DcoError(f"{where}: variants and styles belong to a merge claim")
    if c.units not in (["subject", "seed"], ["subject"]):
        raise DcoError(f"{where}.units: use [subject, seed] (the default) or [subject] (arms on different seeds)")
    if c.units != ["subject", "seed"] and c.kind not in ("captions", "arms"):
        raise DcoError(f"{where}.units: only a captions or arms claim pairs by subject alone")
    if c.expect and c.kind not in ("captions", "arms"):
        raise DcoError(f"{where}.expect: only a captions or arms claim is a control")
    if c.samplers and c.kind == "merge":
        raise DcoError(f"{where}.samplers: a merge claim does not sweep samplers; sample it at one guidance per "
                       "method in its config")
    for s, sweep in c.samplers.items():
        if s not in SAMPLERS:
            raise DcoError(f"{where}.samplers.{s}: unknown sampler; use {' or '.join(SAMPLERS)}")
        if not isinstance(sweep, dict) or not sweep:
            raise DcoError(f"{where}.samplers.{s}: give its sweep as a mapping, e.g. {{{SAMPLERS[s]}: [1, 2]}}")
        bad = [k for k in sweep if not str(k).startswith("sample.") or k == "sample.guidance"]
        if bad:
            raise DcoError(f"{where}.samplers.{s}: '{bad[0]}' cannot be swept here; a sampler's sweep varies "
                           f"sample.* knobs other than sample.guidance (e.g. {SAMPLERS[s]}), so that every sampler "
                           "reuses the same LoRAs and the arm's name is its guidance")
        scalar = [k for k, v in sweep.items() if not isinstance(v, list) or not v]
        if scalar:
            raise DcoError(f"{where}.samplers.{s}.{scalar[0]}: give a list of values, e.g. [1.5, 3.0]")
    _check_recipes(where, c)
    for kind, names in (("arms", c.arms), ("recipes", c.recipes)):
        for r in names:
            if str(r) in (ANCHOR, REFERENCE_ARM):
                raise DcoError(f"{where}.{kind}.{r}: '{r}' names a claim's own cells (its base-model anchor or an "
                               "envelope's reference); pick another name")
            if "@" in str(r):
                raise DcoError(f"{where}.{kind}.{r}: a name cannot contain '@' (it joins an arm and its sampler)")
    if len(c.samplers) == 1:
        raise DcoError(f"{where}.samplers: name both cfg and consistency (or leave it out and each method keeps "
                       "its own sweep)")


def _check_recipes(where: str, c: ClaimSpec) -> None:
    if not c.recipes:
        return
    if not (c.kind == "frontier" and c.samplers):
        raise DcoError(f"{where}.recipes: only a frontier claim with `samplers:` sweeps the reference's recipes "
                       "(each recipe is compared with the other methods under the same sampler)")
    if c.targets:
        raise DcoError(f"{where}.targets: a claim with recipes has no targets (a method's best point would pool "
                       "its recipes); put the targets in a claim of their own")
    for r, value in c.recipes.items():
        if not isinstance(value, dict):
            continue  # a YAML path: read when the arms are built
        others = [m for m in (value.get("methods") or {}) if m != c.reference]
        if others or "guidance" in (value.get("sample") or {}):
            what = f"methods.{others[0]}" if others else "sample.guidance"
            raise DcoError(f"{where}.recipes.{r}: '{what}' cannot be set in a recipe; a recipe trains the reference "
                           f"({c.reference}) only, and the samplers set the guidance")
