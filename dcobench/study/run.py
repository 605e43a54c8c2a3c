"""Planning and running a study: every arm of every claim into one run folder, cells reused.

Each arm is planned exactly as `dcobench run` plans a run (`plan.make_plan`), so an arm's cells
have the ids a plain run of the same config would have. The arms' cells are pooled, one copy per
id, into one plan that `runner.run_plan` executes: a cell that two claims share (claim 1's DCO
cells are claim 4's comprehensive-caption cells; a merge pair's subject LoRA is claim 1's LoRA)
is trained and sampled once, and a rerun resumes. `study.json`, written before anything runs,
records which cells belong to which claim and arm (and, under `anchor`, a claim's base-model cells,
which are no arm's points): the report is a fold over it and the cells.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .. import failures
from ..errors import DcoError
from ..metrics import metric_meta
from ..plan import Plan, make_plan
from ..store import atomic_write_json, read_json
from .arms import anchor_arm, claim_arms
from .spec import ANCHOR_CELLS, StudySpec

MANIFEST = "study.json"


@dataclasses.dataclass
class StudyPlan:
    spec: StudySpec
    plan: Plan  # every cell of every arm, one copy per id
    manifest: dict


def _shared(plans: list[tuple], what: str, get) -> None:
    first = get(plans[0][1])
    for arm, plan in plans[1:]:
        if get(plan) != first:
            raise DcoError(f"claims.{arm.claim} ({arm.name}): its {what} differs from claims.{plans[0][0].claim}'s; "
                           f"every run of a study shares one {what} (set it in the study's config, not a claim's)")


def _no_overlap(planned: list[tuple]) -> None:
    """Two arms of one claim with the same cells would leave one of them empty in the report (a
    cell belongs to the first arm that names it): refuse them (e.g. two identical recipes)."""
    seen: dict[tuple[str, str], str] = {}
    for arm, plan in planned:
        for c in plan.cells:
            other = seen.setdefault((arm.claim, c.cell_id), arm.name)
            if other != arm.name:
                raise DcoError(f"claims.{arm.claim}: arms '{other}' and '{arm.name}' plan the same cells (e.g. "
                               f"{c.cell_id}); make their overlays differ")


def _check_metrics(arm, claim, cfg) -> None:
    for m in [*claim.judges, claim.prompt_metric]:
        if metric_meta(m)["kind"] == "diversity":  # unknown: metric_meta fails naming it
            raise DcoError(f"claims.{arm.claim}: '{m}' is a diversity (DIV), not a fidelity; it is shown in every "
                           "points table when score.metrics has it, and carries no verdict")
        if m not in cfg.score.metrics:
            raise DcoError(f"claims.{arm.claim}.judges: '{m}' is not scored by its runs (score.metrics: "
                           f"{', '.join(cfg.score.metrics)}); add it to score.metrics in the study's config")


def plan_study(spec: StudySpec, study_file: Path, overrides=()) -> StudyPlan:
    """Plan every arm; refuse arms that would not be comparable (another model or scoring protocol)."""
    planned, anchors = [], {}
    for name, claim in spec.claims.items():
        arms = claim_arms(spec, study_file, name, claim)
        anchor = anchor_arm(claim, arms)
        if anchor is not None:  # the base model's cells: where the claim's hypervolumes start (arms.anchor_arm)
            anchors[name] = make_plan(anchor.config, list(overrides), anchor.methods, spec.suite, spec.data or None,
                                      spec.model or None)
        for arm in arms:
            plan = make_plan(arm.config, list(overrides), arm.methods, spec.suite, spec.data or None,
                             spec.model or None, arm.merge)
            if arm.merges_only:
                plan = dataclasses.replace(plan, cells=[])
            if not plan.cells and not plan.merge_cells:
                raise DcoError(f"claims.{name} ({arm.name}): plans no cells; check its methods and subjects")
            _check_metrics(arm, claim, plan.config)
            if claim.samplers and any(c.sample.guidance != arm.name.split("@")[-1] for c in plan.cells):
                raise DcoError(f"claims.{name} ({arm.name}): a sample.guidance override samples this arm under "
                               "another guidance than its name; leave sample.guidance out of the command line "
                               "for a study with samplers:")
            planned.append((arm, plan))
    _no_overlap(planned)
    _shared(planned, "base model", lambda p: (p.suite.model, (p.cells or p.merge_cells)[0].model_id))
    _shared(planned, "scoring config", lambda p: dataclasses.asdict(p.config.score))
    _shared(planned, "device and precision", lambda p: (p.config.device, p.config.train.mixed_precision))
    cells, merges = {}, {}
    claims: dict[str, dict] = {}
    for arm, plan in planned:
        for c in plan.cells:
            cells.setdefault(c.cell_id, c)
        for c in plan.merge_cells:
            merges.setdefault(c.cell_id, c)
        claim = spec.claims[arm.claim]
        entry = claims.setdefault(arm.claim, {**dataclasses.asdict(claim), "arms": {}, "arm_order": []})
        entry["arm_order"].append(arm.name)
        entry["arms"][arm.name] = {
            "methods": arm.methods,
            "cells": sorted(c.cell_id for c in plan.cells),
            "merge_cells": sorted(c.cell_id for c in plan.merge_cells),
            "config": dataclasses.asdict(plan.config),
        }
    for name, plan in anchors.items():
        for c in plan.cells:
            cells.setdefault(c.cell_id, c)
        claims[name][ANCHOR_CELLS] = {"methods": plan.methods, "cells": sorted(c.cell_id for c in plan.cells),
                                "config": dataclasses.asdict(plan.config)}
    first = planned[0][1]
    methods = list(dict.fromkeys(m for _, p in planned for m in p.methods))
    plan = Plan(first.config, first.suite, methods, list(cells.values()), list(merges.values()))
    manifest = {"study": spec.name, "description": spec.description, "labels": spec.labels, "suite": first.suite.name,
                "model_id": (first.cells or first.merge_cells)[0].model_id, "overrides": list(overrides),
                "claims": claims, "claim_order": list(spec.claims), "cells": len(cells), "merge_cells": len(merges)}
    return StudyPlan(spec, plan, manifest)


def ordered_claims(manifest: dict) -> list[tuple[str, dict]]:
    """(name, entry) of every claim of a manifest, in the study file's order (JSON keys are sorted)."""
    return [(n, manifest["claims"][n]) for n in manifest["claim_order"]]


def claim_ids(manifest: dict, name: str) -> set[str]:
    """Every cell a claim names: its arms' cells and merge cells, and its anchor cells."""
    claim = manifest["claims"][name]
    return {i for a in claim["arms"].values() for i in a["cells"] + a["merge_cells"]} | \
        set(claim.get(ANCHOR_CELLS, {}).get("cells", []))


def describe(sp: StudyPlan) -> list[str]:
    """What `dcobench study --plan` prints: cells and trained LoRAs per claim and in all."""
    by_id = {c.cell_id: c for c in sp.plan.cells + sp.plan.merge_cells}
    lines = []
    for name, claim in ordered_claims(sp.manifest):
        ids = claim_ids(sp.manifest, name)
        loras = {t for i in ids for t in _train_ids(by_id[i])}
        lines.append(f"{name} ({claim['kind']}): {len(ids)} cells, {len(loras)} LoRAs, arms "
                     f"{', '.join(claim['arms'])}")
    loras = {t for c in by_id.values() for t in _train_ids(c)}
    lines.append(f"in all: {len(by_id)} distinct cells, {len(loras)} distinct LoRAs")
    return lines


def _train_ids(cell) -> list[str]:
    if hasattr(cell, "train_cell"):
        return [cell.train_cell(w).train_id for w in ("subject", "style")]
    return [cell.train_id]


def run_study(sp: StudyPlan, out: str | Path, show_progress: bool = True, shard: tuple[int, int] | None = None) -> dict:
    """Write study.json, then run every unfinished cell (`runner.run_plan`), or only shard i of n
    of the units (`--shard i/n`: processes on one folder split the study, each LoRA trained once);
    `left` counts the cells of the whole study still unfinished afterwards and not failed (a failed
    cell waits for a rerun, not for another shard: the report lists it)."""
    from ..runner import run_plan
    from ..store import check_writable

    out = Path(out)
    check_writable(out)
    existing = out / MANIFEST
    if existing.is_file() and read_json(existing).get("study") not in (None, sp.spec.name):
        raise DcoError(f"--out {out}: holds another study ({read_json(existing)['study']}); pick a new folder")
    atomic_write_json(existing, sp.manifest)
    start = time.perf_counter()
    stats = run_plan(sp.plan, out, show_progress, shard=shard)
    from ..store import RunDir

    store = RunDir(out)
    left = sum(not store.is_done(c.cell_id) and failures.read(store.cell(c.cell_id)) is None
               for c in sp.plan.cells + sp.plan.merge_cells)
    return {**stats, "seconds": round(time.perf_counter() - start, 1), "left": left}
