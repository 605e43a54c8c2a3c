"""`dcobench study`: the study file, the verdict rule, the per-claim report and the README block."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dcobench.registry import SUITES
from dcobench.errors import DcoError
from dcobench.study import stats
from dcobench.study.readme import current_block, findings, headline_findings, markers, update_readme
from dcobench.study.report import write_study_report

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# the verdict rule


def test_hypervolume_is_the_dominated_area():
    # one point: its rectangle; a dominated point adds nothing; a second frontier point adds its strip
    assert stats.hypervolume([(1.0, 1.0)], (0.0, 0.0)) == pytest.approx(1.0)
    assert stats.hypervolume([(0.5, 0.5), (0.4, 0.4)], (0.0, 0.0)) == pytest.approx(0.25)
    assert stats.hypervolume([(1.0, 0.5), (0.5, 1.0)], (0.0, 0.0)) == pytest.approx(0.75)
    assert stats.hypervolume([(2.0, 1.0)], (0.0, 0.0), box=(2.0, 2.0)) == pytest.approx(0.5)  # normalised
    assert stats.hypervolume([(float("nan"), 1.0)], (0.0, 0.0)) == 0.0
    assert stats.hypervolume([(1.0, 1.0)], (0.0, 0.0), box=(0.0, 1.0)) == 0.0  # a degenerate box


def test_verdict_comes_from_the_interval_only():
    assert stats.verdict(0.01, 0.2, "DCO") == "DCO ahead"
    assert stats.verdict(-0.2, -0.01, "DCO") == "DCO behind"
    assert stats.verdict(-0.1, 0.1, "DCO") == stats.NO_DIFFERENCE
    assert stats.verdict(0.0, 0.0, "DCO") == stats.NO_DIFFERENCE
    assert stats.verdict(math.nan, math.nan, "DCO") == stats.NO_DIFFERENCE  # n < 2: no interval
    one = stats.summarize({("a", 0): 0.5}, "DCO")
    assert one["n"] == 1 and one["verdict"] == stats.NO_DIFFERENCE


def _frontier_frame(shift_b: float, noise: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """6 units; A's two points (x, y) = (0.8 - 0.2k, 0.4 + 0.2k), B's the same shifted down by `shift_b`."""
    rng = np.random.default_rng(seed)
    rows = []
    for subject in ("a", "b", "c"):
        for seed_ in (0, 1):
            for method, shift in (("A", 0.0), ("B", shift_b)):
                for k in (0, 1):
                    rows.append({"method": method, "subject": subject, "seed": seed_, "knob_label": f"k={k}",
                                 "clip_t": 0.8 - 0.2 * k - shift + rng.normal(0, noise),
                                 "dino": 0.4 + 0.2 * k - shift + rng.normal(0, noise)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("shift, expected", [(0.15, "A ahead"), (-0.15, "A behind"), (0.0, stats.NO_DIFFERENCE)])
def test_frontier_difference_is_paired_over_units(shift, expected):
    res = stats.frontier_difference(_frontier_frame(shift, noise=0.0 if shift == 0 else 0.01), "A", "B", "clip_t",
                                    "dino")
    assert res["n"] == 3 and res["units"] == 6 and res["seeds"] == 2 and res["verdict"] == expected
    assert (res["estimate"] > 0) == (shift > 0) or shift == 0


def test_the_interval_is_over_subjects_not_over_seeds():
    """Seeds of one subject are not independent: 3 subjects x 12 seeds whose differences agree
    within each subject but not across subjects must not look like 36 independent units."""
    diffs = {(s, seed): base + 1e-4 * seed for s, base in (("a", 0.3), ("b", -0.1), ("c", 0.05)) for seed in range(12)}
    res = stats.summarize(diffs, "A")
    assert res["n"] == 3 and res["units"] == 36 and res["seeds"] == 12
    assert res["verdict"] == stats.NO_DIFFERENCE  # 36 "independent" units would have called it ahead
    naive = stats.summarize({str(k): v for k, v in diffs.items()}, "A")  # every unit its own cluster
    assert naive["n"] == 36 and naive["verdict"] == "A ahead"
    assert res["half_width"] == pytest.approx(res["ci_high"] - res["estimate"])
    assert res["bound"] == pytest.approx(max(-res["ci_low"], res["ci_high"])) and res["bound"] > 0.2


def test_merge_difference_is_baseline_drop_minus_reference_drop():
    rows = [{"method": m, "merge": "direct", "subject": s, "style": "st", "seed": 0, "drop_dino": d + 0.01 * i}
            for i, s in enumerate("abcd") for m, d in (("dco", 0.0), ("dreambooth", 0.3))]
    res = stats.paired_difference(pd.DataFrame(rows), {"method": "dco", "merge": "direct"},
                                  {"method": "dreambooth", "merge": "direct"}, "drop_dino", "DCO")
    assert res["estimate"] == pytest.approx(0.3) and res["n"] == 4 and res["verdict"] == "DCO ahead"


# --------------------------------------------------------------------------------------------
# the study file


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("body, message", [
    ("claims: {a: {kind: frontier, methods: [dco, dreambooth], judges: [dino], colour: red}}", "claims.a.colour: unknown key"),
    ("claims: {a: {kind: pareto, methods: [dco], judges: [dino]}}", "must be one of frontier, merge, captions"),
    ("claims: {a: {kind: frontier, methods: [dco], judges: [dino]}}", "at least one other method"),
    ("claims: {a: {kind: frontier, methods: [dco], reference: dreambooth, judges: [dino], targets: {dco: {dino: 1}}}}",
     "reference: 'dreambooth' is not one of its methods"),
    ("claims: {a: {kind: frontier, methods: [dco, dreambooth], judges: []}}", "judges: list at least one"),
    ("claims: {a: {kind: captions, methods: [dco], judges: [dino], arms: {x: {}}}}", "exactly two arms"),
    ("claims: {a: {kind: merge, methods: [dreambooth], judges: [dino]}}", "reference: 'dco' is not one of its methods"),
    ("claims: {}", "no claims"),
])
def test_study_file_is_strict(tmp_path, body, message):
    from dcobench.study.spec import load_study

    with pytest.raises(DcoError, match=message):
        load_study(str(_write(tmp_path, "name: x\nsuite: tiny\n" + body)))


def test_unknown_study_name_lists_the_shipped_ones():
    from dcobench.study.spec import load_study

    with pytest.raises(DcoError, match="shipped: .*micro_paper.*tiny_paper"):
        load_study("micro_papr")


def test_shipped_studies_parse_and_name_known_metrics():
    from dcobench.metrics import metric_meta
    from dcobench.study.spec import load_study

    for name in ("micro_paper", "tiny_paper"):
        spec, _ = load_study(name)
        kinds = [c.kind for c in spec.claims.values()]
        assert kinds[:4] == ["frontier", "frontier", "merge", "captions"]  # the paper's four claims
        # then the beta sweep (and, in the micro study, the two controls and dotted, which failed the style screen)
        assert kinds[4:] == (["frontier", "arms", "arms", "frontier"] if name == "micro_paper" else ["frontier"])
        if name == "micro_paper":
            assert set(spec.claims["beta"].recipes) == {"beta_5", "beta_50", "beta_500"}
        for claim in spec.claims.values():
            for m in claim.judges + [claim.prompt_metric]:
                metric_meta(m)


def test_micro_paper_study_plans(dcobench_cache):
    """The shipped micro study plans on the shipped micro suite: every claim has cells, the caption
    arms differ only in training, and the public ZipLoRA variant adds only ZipLoRA rows."""
    from dcobench.study.run import plan_study
    from dcobench.study.spec import load_study

    sp = plan_study(*load_study("micro_paper"))
    claims = sp.manifest["claims"]
    assert all(a["cells"] or a["merge_cells"] for c in claims.values() for a in c["arms"].values())
    merge = claims["merge"]["arms"]
    extra = set(merge["public"]["merge_cells"]) - set(merge["main"]["merge_cells"])
    assert extra and all("-ziplora-" in i for i in extra)
    tpl = claims["captions"]["arms"]["template@cfg"]["config"]["train"]
    assert (tpl["captions"], tpl["caption_template"]) == ("template", "a {identifier} {class_noun}")
    by_id = {c.cell_id: c for c in sp.plan.cells}

    def loras(claim, arm):
        return {by_id[i].train_id for i in claims[claim]["arms"][arm]["cells"]}

    # the captions claim: each arm's LoRAs under both samplers; the comprehensive arm is claim 1's DCO/DreamBooth
    assert loras("captions", "template@cfg") == loras("captions", "template@consistency")
    assert set(claims["captions"]["arms"]["comprehensive@cfg"]["cells"]) <= set(claims["subject"]["arms"]["cfg"]["cells"])
    # the beta sweep: beta 5 is claim 1's DCO, cell for cell; beta 50 and 500 train new LoRAs; DreamBooth is claim 1's
    beta = claims["beta"]["arms"]
    subject_dco = {i for a in ("cfg", "consistency") for i in claims["subject"]["arms"][a]["cells"] if i.startswith("dco-")}
    assert set(beta["beta_5@cfg"]["cells"]) | set(beta["beta_5@consistency"]["cells"]) == subject_dco
    assert not loras("beta", "beta_50@cfg") & loras("beta", "beta_5@cfg")
    assert loras("beta", "beta_50@cfg") == loras("beta", "beta_50@consistency")
    assert {by_id[i].method for i in beta["cfg"]["cells"]} == {"dreambooth"}
    assert set(beta["cfg"]["cells"]) <= set(claims["subject"]["arms"]["cfg"]["cells"])
    assert beta["beta_500@cfg"]["config"]["methods"]["dco"]["beta"] == 500.0
    assert "div_dino" in sp.plan.config.score.metrics


def test_tiny_study_plans_shared_cells_once(dcobench_cache):
    """Claim 4's comprehensive arm is claim 1's cells, the merge pairs use claim 1's LoRAs, and each
    arm's cells have exactly the ids a plain `dcobench run` of its config has."""
    from dcobench.plan import make_plan
    from dcobench.study.run import describe, plan_study
    from dcobench.study.spec import load_study

    spec, path = load_study("tiny_paper")
    sp = plan_study(spec, path)
    claims = sp.manifest["claims"]
    assert sp.manifest["claim_order"] == ["subject", "style", "merge", "captions", "beta"]
    by_sampler = {a: set(claims["subject"]["arms"][a]["cells"]) for a in ("cfg", "consistency")}
    assert not by_sampler["cfg"] & by_sampler["consistency"]
    subject = by_sampler["cfg"] | by_sampler["consistency"]
    comprehensive = set(claims["captions"]["arms"]["comprehensive"]["cells"])
    template = set(claims["captions"]["arms"]["template"]["cells"])
    assert comprehensive <= subject and not template & subject
    ids = [c.cell_id for c in sp.plan.cells + sp.plan.merge_cells]
    assert len(ids) == len(set(ids)) == sp.manifest["cells"] + sp.manifest["merge_cells"]
    lora_of_pairs = {c.train_id for c in sp.plan.merge_cells}
    assert lora_of_pairs <= {c.train_id for c in sp.plan.cells if c.method in ("dco", "dreambooth")}
    plain = make_plan(dict(spec.config), methods=["dco", "dreambooth", "dreambooth_pp"], suite="tiny")
    # each method on its own sampler is a plain run's cells; the other sampler adds sampling cells only
    assert {c.cell_id for c in plain.cells} < subject
    assert {c.train_id for c in sp.plan.cells if c.cell_id in subject} == {c.train_id for c in plain.cells}
    assert describe(sp)[-1].startswith(f"in all: {len(ids)} distinct cells")
    public = claims["merge"]["arms"]["public"]["merge_cells"]
    assert set(public) - set(claims["merge"]["arms"]["main"]["merge_cells"])  # its ZipLoRA rows differ


def test_study_refuses_claims_that_would_not_compare(tmp_path, dcobench_cache):
    from dcobench.study.run import plan_study
    from dcobench.study.spec import load_study

    path = _write(tmp_path, "name: x\nsuite: tiny\nclaims:\n  a: {kind: frontier, methods: [dco, dreambooth], "
                            "judges: [dino]}\n  b: {kind: frontier, methods: [dco, dreambooth], judges: [dino], "
                            "config: {score: {clip_t_prompt: remove}}}\n")
    with pytest.raises(DcoError, match="scoring config differs"):
        plan_study(*load_study(str(path)))
    path = _write(tmp_path, "name: x\nsuite: tiny\nclaims:\n  a: {kind: frontier, methods: [dco, dreambooth], "
                            "judges: [oracle_subject]}\n")
    with pytest.raises(DcoError, match="'oracle_subject' is not scored by its runs"):
        plan_study(*load_study(str(path)))


# --------------------------------------------------------------------------------------------
# the report: a fold over study.json and result.json files (synthetic cells: no model runs)


def _cell(root: Path, cid: str, method: str, subject: str, seed: int, metrics: dict, knob=None, **extra) -> str:
    folder = root / "cells" / cid
    folder.mkdir(parents=True)
    result = {"cell_id": cid, "method": method, "subject": subject, "seed": seed, "kind": "subject",
              "knobs": {"sample.k": knob} if knob is not None else {}, "protocol": {"id": "p1"},
              "metrics": {m: {"mean": v} for m, v in metrics.items()}, **extra}
    (folder / "result.json").write_text(json.dumps(result))
    return cid


# A suite whose labels (made up here) let DINO carry verdicts and no other judge.
CALIBRATED_SUITE = "synthetic-calibrated"
if CALIBRATED_SUITE not in SUITES:
    SUITES.register(CALIBRATED_SUITE, lambda model="": None,
                    calibration=lambda: ({"dino": (True, "meets it"), "clip_i": (False, "misses it")}, "test labels"))


def synthetic_study(root: Path, dco_margin: float = 0.2) -> Path:
    """A finished study folder: DCO's frontier dominates DreamBooth's by `dco_margin`, DreamBooth-PP
    equals DCO; the template arm is worse than the comprehensive one; DreamBooth's merges interfere."""
    rng = np.random.default_rng(0)
    ids = {k: [] for k in ("subject", "template", "merge")}
    for subject in ("a", "b", "c"):
        for seed in (0, 1):
            for method, shift in (("dco", 0.0), ("dreambooth", dco_margin), ("dreambooth_pp", 0.0)):
                for k in (1, 2):
                    m = {"clip_t": 0.8 - 0.2 * k - shift + rng.normal(0, 0.01),
                         "dino": 0.3 + 0.2 * k - shift + rng.normal(0, 0.01)}
                    if method == "dreambooth_pp":
                        m = json.loads((root / "cells" / f"dco-{subject}{seed}{k}" / "result.json").read_text())
                        m = {n: v["mean"] for n, v in m["metrics"].items()}
                    ids["subject"].append(_cell(root, f"{method}-{subject}{seed}{k}", method, subject, seed, m, k))
                    if method == "dco":
                        worse = {n: v - 0.1 for n, v in m.items()}
                        ids["template"].append(_cell(root, f"tpl-{subject}{seed}{k}", method, subject, seed, worse, k))
            for method, drop in (("dco", 0.0), ("dreambooth", 0.25)):
                for row, d in (("subject", 0.0), ("style", 0.0), ("direct", drop), ("ziplora", drop / 2)):
                    mid = f"{method}-{subject}{seed}-{row}"
                    info = root / "merges" / mid
                    info.mkdir(parents=True)
                    cos = {"merger_cos": {"before": 1.0, "after": 0.2}} if row == "ziplora" else {}
                    (info / "merge.json").write_text(json.dumps(cos))
                    m = {"dino": 0.7 - d + rng.normal(0, 0.01), "style_clip_i": 0.6 - d / 2, "clip_t": 0.5}
                    ids["merge"].append(_cell(root, f"merge-{mid}", method, subject, seed, m, kind="merge", merge=row,
                                              style="st", lora=f"../../merges/{mid}/pytorch_lora_weights.safetensors"))
    base = {"reference": "dco", "prompt_metric": "clip_t", "headline": [], "targets": {},
            "reference_merge": "direct", "title": ""}
    claims = {
        "subject": {**base, "kind": "frontier", "methods": ["dco", "dreambooth", "dreambooth_pp"], "judges": ["dino"],
                    "targets": {"dreambooth": {"dino": 0.9}}, "title": "Subject customization",
                    "arm_order": ["main"], "arms": {"main": {"cells": ids["subject"], "merge_cells": []}}},
        "merge": {**base, "kind": "merge", "methods": ["dco", "dreambooth"], "judges": ["dino", "style_clip_i"],
                  "targets": {"ziplora": {"merger_cos_fall": 0.5}},
                  "arm_order": ["main"], "arms": {"main": {"cells": [], "merge_cells": ids["merge"]}}},
        "captions": {**base, "kind": "captions", "methods": ["dco"], "judges": ["dino"],
                     "arm_order": ["comprehensive", "template"],
                     "arms": {"comprehensive": {"cells": [i for i in ids["subject"] if i.startswith("dco-")],
                                                "merge_cells": []},
                              "template": {"cells": ids["template"], "merge_cells": []}}},
    }
    manifest = {"study": "synthetic", "suite": CALIBRATED_SUITE,
                "description": "made-up cells", "labels": {"dco": "DCO", "ziplora": "ZipLoRA"},
                "claims": claims, "claim_order": ["subject", "merge", "captions"]}
    (root / "study.json").write_text(json.dumps(manifest))
    return root


def test_report_decides_each_claim_from_its_cells(tmp_path):
    run = synthetic_study(tmp_path / "run")
    paths = write_study_report(run, tmp_path / "report")
    v = pd.read_csv(paths["verdicts_csv"])
    got = {(r.claim, r.comparison, r.judge): r.verdict for r in v.itertuples()}
    assert got[("subject", "DCO vs dreambooth", "dino")] == "DCO ahead"
    assert got[("subject", "DCO vs dreambooth_pp", "dino")] == stats.NO_DIFFERENCE  # identical points
    assert got[("merge", "DCO direct vs dreambooth direct", "dino")] == "DCO ahead"
    assert got[("captions", "DCO: comprehensive vs template", "dino")] == "comprehensive ahead"
    assert set(v["n"]) == {3} and set(v["seeds"]) == {2}  # 3 subjects x 2 seeds, the interval over subjects
    md = paths["study_md"].read_text()
    for i, title in enumerate(("Subject customization", "merge", "captions"), 1):
        assert f"## Claim {i}: {title}" in md
    assert "**DCO ahead**" in md and "NOT met" in md and "| ZipLoRA: merger_cos_fall ≥ 0.5 | 0.800 | — | yes |" in md
    # the headline rule is a diagnostic, not a gate: every row keeps its interval's verdict and names
    # its basis (no labels of these outputs in the folder: judge only)
    assert "The headline rule (test labels) is a diagnostic, not a gate: judges that meet it: dino." in md
    other = v[v["judge"] != "dino"]
    assert len(other) and "not calibrated on outputs" not in set(v["verdict"])
    assert list(v["verdict"]) == list(v["interval_verdict"])
    assert set(v["basis"]) == {"judge only: not checked on these outputs"}
    assert set(v[v["judge"] == "dino"]["calibrated"]) == {True} and not other["calibrated"].any()
    # the findings open the report: one sentence per claim, then the table of headline comparisons
    assert md.index("## Findings") < md.index("## Claim 1")
    assert "- **Claim 1: Subject customization.** DCO vs dreambooth: DCO ahead" in md
    assert "| 1 | DCO vs dreambooth | DINO (subject) | ΔHV +" in md
    for name in ("subject", "merge", "captions"):
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 1000
    mergers = pd.read_csv(tmp_path / "report" / "merge-mergers.csv")
    assert list(mergers["fall"]) == pytest.approx([0.8, 0.8])
    html = paths["index_html"].read_text()
    assert html.count("<img") == 3 and "<b>DCO ahead</b>" in html
    before = paths["verdicts_csv"].read_bytes()
    write_study_report(run, tmp_path / "report")  # a pure fold: the same tables again
    assert paths["verdicts_csv"].read_bytes() == before


def test_a_one_method_claim_reports_its_targets_per_subject(tmp_path):
    """A recipe search: one method, no comparison; its line is the target at the method's best knob,
    with the figure of each subject at that knob."""
    run = synthetic_study(tmp_path / "run")
    manifest = json.loads((run / "study.json").read_text())
    sub = manifest["claims"]["subject"]
    sub["arms"]["main"]["cells"] = [c for c in sub["arms"]["main"]["cells"] if c.startswith("dreambooth-")]
    sub.update(methods=["dreambooth"], reference="dreambooth", targets={"dreambooth": {"dino": 0.45}})
    manifest["claims"] = {"subject": sub}
    manifest["claim_order"] = ["subject"]
    (run / "study.json").write_text(json.dumps(manifest))
    paths = write_study_report(run, tmp_path / "r")
    assert pd.read_csv(paths["verdicts_csv"]).empty
    targets = pd.read_csv(tmp_path / "r" / "subject-targets.csv").iloc[0]
    # DreamBooth's best knob is k=2: dino 0.3 + 0.4 - 0.2 = 0.5 per subject, noise aside
    assert targets["value"] == pytest.approx(0.5, abs=0.02) and bool(targets["met"])
    assert re.fullmatch(r"k=2: a 0\.\d{3}, b 0\.\d{3}, c 0\.\d{3}", targets["by_subject"])
    md = paths["study_md"].read_text()
    assert "dreambooth dino at its best point 0.5" in md and "**met** (≥ 0.45)" in md
    assert "Targets: dreambooth dino ≥ 0.45: 0.5" in findings(tmp_path / "r")


def test_a_method_against_itself_is_no_difference_and_says_what_it_rules_out(tmp_path):
    """The negative control: DreamBooth's cells equal DCO's up to noise (margin 0)."""
    run = synthetic_study(tmp_path / "run", dco_margin=0.0)
    v = pd.read_csv(write_study_report(run, tmp_path / "r")["verdicts_csv"])
    row = v[v["comparison"] == "DCO vs dreambooth"].iloc[0]
    assert row["verdict"] == stats.NO_DIFFERENCE and 0 < row["half_width"] <= row["bound"] < 0.2
    assert (row["n"], row["units"], row["seeds"]) == (3, 6, 2)


def test_unfinished_cells_are_counted_not_guessed(tmp_path):
    run = synthetic_study(tmp_path / "run")
    manifest = json.loads((run / "study.json").read_text())
    manifest["claims"]["subject"]["arms"]["main"]["cells"].append("dco-never-finished")
    (run / "study.json").write_text(json.dumps(manifest))
    md = write_study_report(run, tmp_path / "r")["study_md"].read_text()
    assert "1 of this claim's cells are not finished" in md


def test_readme_block_is_the_template_filled_from_the_report(tmp_path):
    run = synthetic_study(tmp_path / "run")
    report = write_study_report(run, tmp_path / "report")["study_md"].parent
    block = findings(report)
    assert "**Claim 1: Subject customization.** DINO (subject): DCO vs dreambooth: **DCO ahead**" in block
    assert "ZipLoRA's merger vectors" in block and "Targets: dreambooth dino ≥ 0.9" in block
    begin, end = markers("synthetic")
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{begin}\nstale text\n{end}\n\nafter\n")
    assert update_readme(readme, report) is True
    text = readme.read_text()
    assert current_block(text, "synthetic") == block and text.endswith(f"{end}\n\nafter\n") and "stale" not in text
    assert update_readme(readme, report) is False
    # the block follows the CSVs: change a number there and the text changes
    v = pd.read_csv(report / "verdicts.csv")
    v.loc[0, "estimate"] = 0.987654
    v.to_csv(report / "verdicts.csv", index=False)
    assert "+0.988" in findings(report)
    readme.write_text("no markers here\n")
    with pytest.raises(DcoError, match="add the two marker lines"):
        update_readme(readme, report)


def test_committed_readme_findings_match_the_committed_study():
    """The findings block of docs/studies.md is exactly the template filled from reports/micro-study/, and
    the README's headline block each claim's one-line verdict from it."""
    report = ROOT / "reports" / "micro-study"
    if not (report / "verdicts.csv").is_file():
        pytest.skip("reports/micro-study/ is not committed yet (make study writes it)")
    name = json.loads((report / "study.json").read_text())["study"]
    block = current_block((ROOT / "docs" / "studies.md").read_text(), name)
    assert block is not None, f"docs/studies.md has no {markers(name)[0]} block"
    assert block == findings(report), "docs/studies.md findings drifted from reports/micro-study: run `make study`"
    headline = current_block((ROOT / "README.md").read_text(), f"{name}:headline")
    assert headline == headline_findings(report), "README headline findings drifted: run `make study`"
    claims = [line for line in headline.splitlines() if line.startswith("- **Claim ")]
    n_claims = len(json.loads((report / "study.json").read_text())["claim_order"])
    assert len(claims) == n_claims, "the headline has one sentence per claim"
    table = [line for line in headline.splitlines() if line.startswith("|")]
    assert table[0] == "| claim | comparison | judge | estimate | 95% CI | subjects × seeds | basis | verdict |"
    assert len(table) > 2
    assert all(row.split(" | ")[1] in block for row in table[2:]), "each headline row is a comparison of the findings"


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path, cli):
    """`dcobench study tiny_paper`: every claim runs, the report and the README block are written, and a
    rerun trains and samples nothing."""
    begin, end = markers("tiny-paper")
    readme = tmp_path / "README.md"
    readme.write_text(f"{begin}\n{end}\n")
    out, report = tmp_path / "run", tmp_path / "report"
    r = cli("study", "tiny_paper", "--out", out, "--report", report, "--readme", readme, "--quiet", timeout=900)
    assert r.returncode == 0, r.stderr
    v = pd.read_csv(report / "verdicts.csv")
    assert list(dict.fromkeys(v["claim"])) == ["subject", "style", "merge", "captions", "beta"]
    # the beta sweep: objective rows per recipe and sampler, the reference's curves one line per recipe
    beta = v[(v["claim"] == "beta") & (v["effect"] == "objective")]
    assert sorted(zip(beta["recipe"], beta["sampler"])) == sorted((r, s) for r in ("beta_5", "beta_500")
                                                                  for s in ("cfg", "consistency"))
    assert (report / "beta-curves.png").stat().st_size > 1000
    recipes = pd.read_csv(report / "beta-recipes.csv")
    assert list(recipes["recipe"]) == ["beta_5", "beta_500"] and recipes["rule_pick"].sum() == 1
    # the tiny suite has no labels of its outputs: every row is judge only, and says so
    assert set(v["basis"]) == {"judge only: not checked on these outputs"}
    assert list(v["verdict"]) == list(v["interval_verdict"])
    assert set(v["interval_verdict"]) <= {"DCO ahead", "DCO behind", "comprehensive ahead", "comprehensive behind",
                                          "consistency guidance ahead", "consistency guidance behind",
                                          "DCO (beta_5) ahead", "DCO (beta_5) behind", "DCO (beta_500) ahead",
                                          "DCO (beta_500) behind", stats.NO_DIFFERENCE,
                                          "the objective effect is larger under consistency guidance",
                                          "the objective effect is larger under CFG"}
    # the subject claim sweeps both samplers: objective rows per sampler, their interaction, sampler rows per
    # method, as published
    subject = v[v["claim"] == "subject"]
    assert subject.groupby("effect").size().to_dict() == {"objective": 2 * 2 * 2, "interaction": 2 * 2,
                                                          "sampler": 3 * 2, "as published (confounded)": 2 * 2}
    assert set(v["anchor"].dropna()) == {"base model"}  # every frontier starts at the base model's fidelity
    assert current_block(readme.read_text(), "tiny-paper") == findings(report)
    merges = [json.loads(p.read_text()) for p in (out / "merges").glob("*ziplora*/merge.json")]
    assert merges and all(m["merger_cos"]["before"] == pytest.approx(1.0) for m in merges)
    before = (report / "verdicts.csv").read_bytes()
    r = cli("study", "tiny_paper", "--out", out, "--report", report, "--quiet")
    assert r.returncode == 0 and "0 run" in r.stderr and (report / "verdicts.csv").read_bytes() == before


@pytest.mark.slow
def test_a_study_split_in_shards_runs_every_cell_once_and_the_last_shard_reports(tmp_path, cli):
    out = tmp_path / "run"
    first = cli("study", "tiny_paper", "--out", out, "--shard", "1/2", "--quiet", timeout=900)
    assert first.returncode == 0, first.stderr
    assert "not finished yet" in first.stderr and not (out / "report").exists()
    second = cli("study", "tiny_paper", "--out", out, "--shard", "2/2", "--quiet", timeout=900)
    assert second.returncode == 0, second.stderr
    assert (out / "report" / "verdicts.csv").is_file()
    planned = cli("study", "tiny_paper", "--plan")
    manifest = json.loads((out / "study.json").read_text())
    ids = {i for c in manifest["claims"].values() for a in c["arms"].values() for i in a["cells"] + a["merge_cells"]}
    ids |= {i for c in manifest["claims"].values() for i in c.get("anchor_cells", {}).get("cells", [])}
    assert {p.name for p in (out / "cells").iterdir() if (p / "result.json").is_file()} == ids
    assert planned.returncode == 0


def _sampler_frame(objective: float, sampler: float) -> pd.DataFrame:
    """DCO and DreamBooth under both samplers, 3 subjects x 2 seeds: consistency guidance moves every
    point by `sampler`, DCO's objective by `objective`."""
    rng = np.random.default_rng(1)
    rows = []
    for subject in "abc":
        for seed in (0, 1):
            for method, obj in (("dco", objective), ("dreambooth", 0.0)):
                for arm, samp in (("cfg", 0.0), ("consistency", sampler)):
                    for k in (0, 1):
                        shift = obj + samp
                        rows.append({"method": method, "arm": arm, "subject": subject, "seed": seed,
                                     "knob_label": f"k={k}", "clip_t": 0.8 - 0.2 * k + shift + rng.normal(0, 0.005),
                                     "dino": 0.4 + 0.2 * k + shift + rng.normal(0, 0.005)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("objective, sampler, want", [
    (0.0, 0.15, {"objective": "no difference", "sampler": "consistency guidance ahead", "published": "DCO ahead"}),
    (0.15, 0.0, {"objective": "DCO ahead", "sampler": "no difference", "published": "DCO ahead"}),
])
def test_samplers_separate_the_objective_from_the_sampler(objective, sampler, want):
    """A sampler that helps every method must not read as DCO's objective: only the as-published
    row (each method on its own sampler) mixes the two, and it says so."""
    import baselines  # noqa: F401 - registers DreamBooth
    from dcobench.study.claims import headline, labeller, sampler_verdicts

    claim = {"kind": "frontier", "title": "", "methods": ["dco", "dreambooth"], "reference": "dco",
             "judges": ["dino"], "headline": [], "prompt_metric": "clip_t", "targets": {},
             "samplers": {"cfg": {"sample.cfg_scale": [1, 2]}, "consistency": {"sample.w_con": [1, 2]}},
             "arm_order": ["cfg", "consistency"]}
    verdicts = sampler_verdicts("subject", claim, _sampler_frame(objective, sampler), labeller({"dco": "DCO"}),
                                ["dino"], None)
    by = {}
    for r in verdicts:
        by.setdefault(r["effect"], []).append(r["interval_verdict"] if "interval_verdict" in r else r["verdict"])
    assert len(by["objective"]) == 2 and len(by["sampler"]) == 2 and len(by["as published (confounded)"]) == 1
    assert all(v.startswith(want["objective"]) for v in by["objective"])
    assert all(v.startswith(want["sampler"]) for v in by["sampler"])
    assert by["as published (confounded)"][0] == want["published"]
    line = headline(verdicts, ["dino"])
    assert "both under CFG" in line and "as published" not in line  # the one line is the objective effect
    assert any(r["comparison"].endswith("CONFOUNDED with the sampler") for r in verdicts)


def test_a_sampler_arm_replaces_each_methods_sweep(tmp_path):
    from dcobench.study.arms import claim_arms
    from dcobench.study.spec import ClaimSpec, StudySpec

    spec = StudySpec(name="s", config={"methods": {"dco": {"beta": 5.0, "sweep": {"sample.w_con": [1, 2]}},
                                                   "dreambooth": {"sweep": {"sample.cfg_scale": [1.5, 3]}}}})
    claim = ClaimSpec(methods=["dco", "dreambooth"], judges=["dino"],
                      samplers={"cfg": {"sample.cfg_scale": [1.5, 3]}, "consistency": {"sample.w_con": [1, 2]}})
    arms = {a.name: a for a in claim_arms(spec, tmp_path / "s.yaml", "subject", claim)}
    assert set(arms) == {"cfg", "consistency"}
    assert arms["cfg"].config["sample"]["guidance"] == "cfg"
    assert arms["cfg"].config["methods"]["dco"] == {"beta": 5.0, "sweep": {"sample.cfg_scale": [1.5, 3]}}
    assert arms["consistency"].config["methods"]["dreambooth"]["sweep"] == {"sample.w_con": [1, 2]}
    assert spec.config["methods"]["dco"]["sweep"] == {"sample.w_con": [1, 2]}  # the study's config is untouched


@pytest.mark.parametrize("samplers, kind, match", [
    ({"cfg": {"sample.cfg_scale": [1]}, "euler": {"sample.w_con": [1]}}, "frontier", r"samplers\.euler: unknown sampler"),
    ({"cfg": {"train.steps": [1]}, "consistency": {"sample.w_con": [1]}}, "frontier", "cannot be swept here"),
    ({"cfg": {"sample.guidance": ["cfg"]}, "consistency": {"sample.w_con": [1]}}, "frontier", "sample.guidance"),
    ({"cfg": {"sample.cfg_scale": [1]}}, "frontier", "name both cfg and consistency"),
    ({"cfg": {"sample.cfg_scale": [1]}, "consistency": {"sample.w_con": [1]}}, "merge", "a merge claim does not"),
    ({"cfg": {"sample.cfg_scale": 3}, "consistency": {"sample.w_con": [1]}}, "frontier",
     r"samplers\.cfg\.sample\.cfg_scale: give a list of values"),
])
def test_bad_samplers_fail_naming_the_field(tmp_path, samplers, kind, match):
    import yaml

    from dcobench.study.spec import load_study

    claim = {"kind": kind, "methods": ["dco", "dreambooth"], "judges": ["dino"], "samplers": samplers}
    if kind == "captions":
        claim["arms"] = {"a": {}, "b": {}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "claims": {"subject": claim}}))
    with pytest.raises(DcoError, match=match):
        load_study(str(path))


def test_an_arms_claim_on_disjoint_seeds_pairs_by_subject():
    """The negative control's design: two arms of one method on different training seeds share no
    (subject, seed) unit, so they are paired by subject (`units: [subject]`)."""
    frame = _frontier_frame(0.0, noise=0.01)
    frame["arm"] = np.where(frame["method"] == "A", "first", "second")
    frame.loc[frame["arm"] == "second", "seed"] += 2  # disjoint seeds
    frame["method"] = "dreambooth"
    by_unit = stats.frontier_difference(frame, "first", "second", "clip_t", "dino", group="arm")
    assert by_unit["n"] == 0  # nothing to pair on (subject, seed)
    by_subject = stats.frontier_difference(frame, "first", "second", "clip_t", "dino", group="arm",
                                           units=("subject",))
    assert by_subject["n"] == 3 and by_subject["verdict"] == stats.NO_DIFFERENCE


@pytest.mark.parametrize("claim, match", [
    ({"kind": "arms", "arms": {"a": {}}}, "exactly two arms"),
    ({"kind": "arms", "arms": {"a": {}, "b": {}}, "units": ["seed"]}, r"units: use \[subject, seed\]"),
    ({"kind": "frontier", "units": ["subject"]}, "only a captions or arms claim"),
    ({"kind": "arms", "arms": {"full@x": {}, "weak": {}}}, r"arms\.full@x: a name cannot contain '@'"),
    ({"kind": "frontier", "samplers": {"cfg": {"sample.cfg_scale": [1]}, "consistency": {"sample.w_con": [1]}},
      "recipes": {"b": {"methods": {"dreambooth": {"sweep": {}}}}}}, r"recipes\.b: 'methods\.dreambooth' cannot"),
    ({"kind": "frontier", "samplers": {"cfg": {"sample.cfg_scale": [1]}, "consistency": {"sample.w_con": [1]}},
      "recipes": {"b": {"sample": {"guidance": "cfg"}}}}, r"recipes\.b: 'sample\.guidance' cannot"),
    ({"kind": "frontier", "samplers": {"cfg": {"sample.cfg_scale": [1]}, "consistency": {"sample.w_con": [1]}},
      "recipes": {"b": {}}, "targets": {"dco": {"dino": 0.5}}}, "a claim with recipes has no targets"),
])
def test_bad_arms_claims_fail_naming_the_field(tmp_path, claim, match):
    import yaml

    from dcobench.study.spec import load_study

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "claims": {"c": {"methods": ["dco", "dreambooth"],
                                                                  "judges": ["dino"], **claim}}}))
    with pytest.raises(DcoError, match=match):
        load_study(str(path))


def test_identical_recipes_and_diversity_judges_are_refused_when_planned(tmp_path, dcobench_cache):
    """Two recipes with the same cells would leave the second empty (n = 0, "no difference"); DIV
    is not a fidelity and cannot carry a verdict."""
    import yaml

    from dcobench.study.run import plan_study
    from dcobench.study.spec import load_study

    sweep = {"cfg": {"sample.cfg_scale": [3.0]}, "consistency": {"sample.w_con": [1.0]}}
    base = {"name": "s", "suite": "tiny", "config": {"train": {"steps": 1}}}
    claim = {"kind": "frontier", "methods": ["dco", "dreambooth"], "judges": ["dino"], "samplers": sweep,
             "recipes": {"a": {}, "b": {}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**base, "claims": {"beta": claim}}))
    with pytest.raises(DcoError, match=r"claims\.beta: arms 'a@cfg' and 'b@cfg' plan the same cells"):
        plan_study(*load_study(str(path)))
    plain = {"kind": "frontier", "methods": ["dco", "dreambooth"], "judges": ["div_dino"]}
    path.write_text(yaml.safe_dump({**base, "config": {"score": {"metrics": ["dino", "clip_t", "div_dino"]}},
                                    "claims": {"c": plain}}))
    with pytest.raises(DcoError, match="'div_dino' is a diversity"):
        plan_study(*load_study(str(path)))


def test_a_control_that_paired_nothing_fails():
    from dcobench.study.claims import labeller
    from dcobench.study.controls import control_checks

    claim = {"kind": "arms", "title": "neg", "headline": [], "judges": ["dino"], "expect": "even", "arm_order": ["a", "b"]}
    row = {"claim": "neg", "judge": "dino", "judge_label": "DINO", "statistic": "ΔHV", "estimate": float("nan"),
           "ci_low": float("nan"), "ci_high": float("nan"), "n": 0, "verdict": stats.NO_DIFFERENCE}
    [(ok, text)] = control_checks({"claim_order": ["neg"], "claims": {"neg": claim}}, [row], labeller({}))
    assert not ok and "no interval" in text


def test_a_guidance_override_cannot_undo_the_sampler_arms(dcobench_cache):
    from dcobench.study.run import plan_study
    from dcobench.study.spec import load_study

    spec, path = load_study("tiny_paper")
    with pytest.raises(DcoError, match=r"claims\.subject \(consistency\): a sample\.guidance override"):
        plan_study(spec, path, ["sample.guidance=cfg"])


def test_controls_are_checked_against_what_the_study_file_expects():
    from dcobench.study.claims import labeller
    from dcobench.study.controls import check_lines, control_checks

    claim = {"kind": "arms", "title": "", "headline": [], "judges": ["dino"]}
    manifest = {"claim_order": ["pos", "neg"], "claims": {
        "pos": {**claim, "expect": "ahead", "arm_order": ["full", "quarter"], "title": "positive"},
        "neg": {**claim, "expect": "even", "arm_order": ["a", "b"], "title": "negative"}}}
    row = {"judge": "dino", "judge_label": "DINO", "statistic": "ΔHV", "estimate": 0.1, "ci_low": -0.1,
           "ci_high": 0.3, "n": 3, "verdict": "not calibrated on outputs"}
    rows = [{**row, "claim": "pos", "interval_verdict": stats.NO_DIFFERENCE},
            {**row, "claim": "neg", "interval_verdict": stats.NO_DIFFERENCE}]
    checks = control_checks(manifest, rows, labeller({}))
    assert [ok for ok, _ in checks] == [False, True]  # the weakened copy was not told apart: the instrument failed
    assert any("A check failed" in line for line in check_lines(checks))
    rows[0]["interval_verdict"] = "full ahead"
    assert [ok for ok, _ in control_checks(manifest, rows, labeller({}))] == [True, True]
    assert not any("A check failed" in line for line in check_lines(control_checks(manifest, rows, labeller({}))))


def _recipe_frame(gain_50: float) -> pd.DataFrame:
    """DCO at two recipes and DreamBooth, under both samplers: DCO at beta 5 is DreamBooth's frontier,
    DCO at beta 50 is moved by `gain_50` under every sampler."""
    frame = _sampler_frame(0.0, 0.0)
    dco = frame[frame["method"] == "dco"]
    five = dco.assign(arm="beta_5@" + dco["arm"])
    fifty = dco.assign(arm="beta_50@" + dco["arm"], clip_t=dco["clip_t"] + gain_50, dino=dco["dino"] + gain_50)
    return pd.concat([frame[frame["method"] != "dco"], five, fifty], ignore_index=True)


@pytest.mark.parametrize("gain, want_50", [(0.15, "DCO (β 50) ahead"), (-0.15, "DCO (β 50) behind")])
def test_a_recipe_sweep_gives_each_recipe_its_own_objective_rows(gain, want_50):
    """One recipe that moves the frontier must not leak into another recipe's rows, and each row
    names its recipe; the baselines' sampler rows appear once."""
    import baselines  # noqa: F401 - registers DreamBooth
    from dcobench.study.claims import labeller
    from dcobench.study.recipes import recipe_verdicts

    claim = {"kind": "frontier", "methods": ["dco", "dreambooth"], "reference": "dco", "judges": ["dino"],
             "prompt_metric": "clip_t", "arm_order": ["cfg", "consistency", "beta_5@cfg", "beta_5@consistency",
                                                      "beta_50@cfg", "beta_50@consistency"]}
    rows = recipe_verdicts("beta", claim, _recipe_frame(gain), labeller({"dco": "DCO", "beta_50": "β 50",
                                                                         "beta_5": "β 5"}), ["dino"], None)
    objective = {(r["recipe"], r["sampler"]): r.get("interval_verdict") or r["verdict"] for r in rows
                 if r["effect"] == "objective"}
    assert set(objective) == {(r, s) for r in ("beta_5", "beta_50") for s in ("cfg", "consistency")}
    assert objective[("beta_5", "cfg")] == objective[("beta_5", "consistency")] == stats.NO_DIFFERENCE
    assert objective[("beta_50", "cfg")] == objective[("beta_50", "consistency")] == want_50
    sampler_rows = [r for r in rows if r["effect"] == "sampler"]
    assert len(sampler_rows) == 3  # DCO at each recipe, DreamBooth once
    assert all("β 50" in r["comparison"] for r in rows if r.get("recipe") == "beta_50" and r["tested"] == "dco")


def test_recipes_need_samplers_and_name_their_arms(tmp_path):
    import yaml

    from dcobench.study.arms import claim_arms
    from dcobench.study.spec import load_study

    sweep = {"cfg": {"sample.cfg_scale": [1]}, "consistency": {"sample.w_con": [1]}}
    recipes = {"b5": {"methods": {"dco": {"beta": 5.0}}}, "b50": {"methods": {"dco": {"beta": 50.0}}}}
    path = tmp_path / "s.yaml"
    claim = {"kind": "frontier", "methods": ["dco", "dreambooth"], "judges": ["dino"], "recipes": recipes}
    path.write_text(yaml.safe_dump({"name": "s", "claims": {"beta": claim}}))
    with pytest.raises(DcoError, match=r"claims\.beta\.recipes: only a frontier claim with `samplers:`"):
        load_study(str(path))
    path.write_text(yaml.safe_dump({"name": "s", "claims": {"beta": {**claim, "samplers": sweep}}}))
    spec, _ = load_study(str(path))
    arms = {a.name: a for a in claim_arms(spec, path, "beta", spec.claims["beta"])}
    assert set(arms) == {"cfg", "consistency", "b5@cfg", "b5@consistency", "b50@cfg", "b50@consistency"}
    assert arms["cfg"].methods == ["dreambooth"] and arms["b50@consistency"].methods == ["dco"]
    assert arms["b50@consistency"].config["methods"]["dco"] == {"beta": 50.0, "sweep": {"sample.w_con": [1]}}
    assert arms["b50@consistency"].config["sample"]["guidance"] == "consistency"


def test_a_captions_claim_with_samplers_compares_its_arms_under_each(tmp_path):
    """Template captions that lose under one sampler only: each sampler's rows say so separately."""
    from dcobench.study.claims import captions_section

    frame = _sampler_frame(0.0, 0.0)
    frame = frame[frame["method"] == "dco"]
    worse = frame.assign(clip_t=frame["clip_t"] - np.where(frame["arm"] == "cfg", 0.15, 0.0),
                         dino=frame["dino"] - np.where(frame["arm"] == "cfg", 0.15, 0.0))
    df = pd.concat([frame.assign(arm="full@" + frame["arm"]), worse.assign(arm="tpl@" + worse["arm"])],
                   ignore_index=True)
    df = df.assign(kind="subject", cell_id=[f"c{i}" for i in range(len(df))], protocol_id="p1", knob="k",
                   knob_value=df["knob_label"].str[-1].astype(float))
    df.attrs["metrics"] = ["clip_t", "dino"]
    claim = {"kind": "captions", "title": "", "methods": ["dco"], "judges": ["dino"], "headline": [],
             "prompt_metric": "clip_t", "samplers": {"cfg": {}, "consistency": {}},
             "arm_order": ["full@cfg", "full@consistency", "tpl@cfg", "tpl@consistency"]}
    sec = captions_section("captions", claim, df, {"dco": "DCO"})
    got = {r["sampler"]: r.get("interval_verdict") or r["verdict"] for r in sec.verdicts}
    assert got == {"cfg": "full ahead", "consistency": stats.NO_DIFFERENCE}
    assert [r["comparison"] for r in sec.verdicts] == ["DCO: full vs tpl, under CFG",
                                                       "DCO: full vs tpl, under consistency guidance"]


def test_the_power_study_runs_exactly_the_subjects_that_passed_their_screen():
    """micro_power.yaml's subjects are the first three and every subject data/micro/SUBJECTS.md
    passed, in the world's order: a failed subject cannot slip in, a passed one cannot be left out."""
    from dcobench.micro.models import default_micro_dir
    from dcobench.study.spec import load_study

    spec, _ = load_study("micro_power")
    screened = json.loads((default_micro_dir() / "subjects_screen.json").read_text())
    from dcobench.micro.world import SECOND_SUBJECTS

    passed = [n for n in SECOND_SUBJECTS if n in screened["subjects"] and screened["subjects"][n]["passed"]]
    assert set(screened["subjects"]) == set(SECOND_SUBJECTS)  # every designed subject was screened
    assert screened["passed"] == passed and len(passed) >= 12
    assert spec.config["subjects"] == ["tent", "quilt", "badge", *passed]
    assert all(all(r["checks"].values()) == r["passed"] for r in screened["subjects"].values())


def test_the_style_claim_runs_exactly_the_styles_that_passed_the_style_screen():
    """micro_style_screen.yaml screens every held-out style on a training seed the paper study does not
    use, under the paper study's recipe; the paper study's style claim names exactly the styles whose
    committed screen met the target (reports/micro-style-screen/), and dotted keeps its own claim."""
    from dcobench.micro.world import TARGET_STYLES
    from dcobench.study.spec import load_study

    screen, _ = load_study("micro_style_screen")
    paper, _ = load_study("micro_paper")
    assert sorted(c.subjects[0] for c in screen.claims.values()) == sorted(TARGET_STYLES)
    assert all(len(c.subjects) == 1 and c.targets == {"dreambooth": {"oracle_style": 0.7}}
               for c in screen.claims.values())
    assert not set(screen.config["seeds"]) & set(paper.config["seeds"])
    for key in ("train", "sample"):
        assert screen.config[key] == paper.config[key]
    assert screen.config["methods"]["dreambooth"] == paper.config["methods"]["dreambooth"]
    passed = []
    for name, claim in screen.claims.items():
        row = pd.read_csv(ROOT / "reports" / "micro-style-screen" / f"{name}-targets.csv").iloc[0]
        assert bool(row["met"]) == (row["value"] >= 0.7)
        passed += [claim.subjects[0]] if row["met"] else []
    assert paper.claims["style"].subjects == [s for s in TARGET_STYLES if s in passed]
    assert paper.claims["merge"].styles and set(paper.claims["merge"].styles) <= set(passed)
    assert paper.claims["style_dotted"].subjects == ["dotted"]


def test_the_full_paper_study_is_make_studys_claims_on_every_screened_subject():
    """micro_paper_full.yaml (`make study-full`) is micro_paper.yaml with every subject claim, the merge
    claim included, on micro_power.yaml's 15 screened subjects, and nothing else changed: the same
    recipe, the same claims, the style claims on the same styles."""
    import dataclasses

    from dcobench.micro.world import TARGET_STYLES
    from dcobench.study.spec import load_study

    full, _ = load_study("micro_paper_full")
    paper, _ = load_study("micro_paper")
    power, _ = load_study("micro_power")
    subjects = power.config["subjects"]
    # and one claim of its own, stated before any run of it: DCO against DreamBooth's best training length
    envelope = full.claims["steps_envelope"]
    assert envelope.kind == "envelope" and envelope.subjects == subjects and len(envelope.arms) == 4
    assert envelope.samplers == paper.claims["subject"].samplers
    assert len(subjects) >= 12 and full.config == paper.config
    assert [c for c in full.claims if c != "steps_envelope"] == list(paper.claims)
    for name, claim in full.claims.items():
        if name == "steps_envelope":
            continue
        if set(paper.claims[name].subjects) <= set(TARGET_STYLES) and paper.claims[name].subjects:
            assert claim == paper.claims[name]  # a style claim: its units are styles
            continue
        assert claim.subjects == subjects, name
        assert dataclasses.replace(claim, subjects=paper.claims[name].subjects) == paper.claims[name]
    from dcobench.study.run import plan_study

    plans = [plan_study(spec, path, []).plan for spec, path in (load_study("micro_paper"), load_study("micro_paper_full"))]
    cells = [{c.cell_id for c in p.cells + p.merge_cells} for p in plans]
    assert cells[0] < cells[1]  # make study's cells are the full study's: a folder of one resumes into the other


def test_the_style_screens_blind_labels_give_the_figures_their_readme_states():
    """data/micro/labels/style-screen/: the oracle's best-CFG rate per style recomputed from the stored
    images equals the committed screen report's, and every reader's figure in the folder's README table
    is what dcobench.micro.style_labels computes (a changed oracle or label file shows here)."""
    import re

    from dcobench.micro import style_labels

    folder = style_labels.HERE
    table, _ = style_labels.readers()
    readers = [c for c in table.columns if c not in ("style", "cfg")]
    best = table.astype(dict.fromkeys(readers, float)).groupby(["style", "cfg"]).mean().groupby("style").max()
    for style in best.index:
        row = pd.read_csv(ROOT / "reports" / "micro-style-screen" / f"{style}-targets.csv").iloc[0]
        assert round(best.loc[style, "oracle"], 3) == round(row["value"], 3)
    stated = re.findall(r"^\| (\w+) \| ([\d.]+) \w+ \| ([\d.]+) \w+ \| ([\d.]+) \w+ \|$",
                        (folder / "README.md").read_text(), re.M)
    assert len(stated) == 4
    for style, *figures in stated:
        assert [f"{best.loc[style, c]:.2f}" for c in ("oracle", "agent-e", "agent-f")] == figures
