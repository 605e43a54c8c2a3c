"""Label-corrected verdicts (the verdicts issue): the prediction-powered estimator, its coverage by
simulation, and a study report whose judge's bias differs by method, corrected by its own labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dcobench.study import stats
from dcobench.study.ppi import LabelSet, corrected_difference, corrected_mean, hv_batch


def test_hv_batch_is_the_hypervolume():
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 6))
        x = np.round(rng.random(k), 1)  # ties on x included
        ys = np.round(rng.random((3, k)), 1)
        ref, box = (0.2, 0.1), (1.0, 1.0)
        got = hv_batch(x, ys, ref, box)
        want = [stats.hypervolume(zip(x, y), ref, box) for y in ys]
        assert got == pytest.approx(want, abs=1e-12)


def test_the_point_estimate_is_ppis():
    """One stratum: the judge's mean over every image plus the labels' mean residual, as ppi_py's
    classic PPI (λ = 1) point estimate; with inclusion weights, the Hájek-weighted residual."""
    ppi_py = pytest.importorskip("ppi_py")
    rng = np.random.default_rng(1)
    truth = rng.random(400) < 0.6
    judge = np.where(truth, rng.random(400) > 0.2, rng.random(400) < 0.05).astype(float)
    lab = rng.choice(400, size=40, replace=False)
    ours = corrected_mean(judge, judge[lab], truth[lab].astype(float), np.ones(40))
    theirs = ppi_py.ppi_mean_pointestimate(truth[lab].astype(float), judge[lab], judge, lam=1)
    assert ours == pytest.approx(float(np.ravel(theirs)[0]), abs=1e-12)
    lo, hi = ppi_py.ppi_mean_ci(truth[lab].astype(float), judge[lab], judge, alpha=0.05, lam=1)
    assert float(np.ravel(lo)[0]) <= ours <= float(np.ravel(hi)[0])
    # weights: labels drawn twice as often where the judge reads 1 count half as much
    w = np.where(judge[lab] == 1, 0.5, 1.0)
    r = truth[lab] - judge[lab]
    assert corrected_mean(judge, judge[lab], truth[lab].astype(float), w) == pytest.approx(
        judge.mean() + (w * r).sum() / w.sum())


@pytest.mark.slow
def test_the_corrected_interval_covers_the_truth_in_simulated_studies(capsys):
    """500 synthetic studies (15 subjects, a judge that under-reads at heavy guidance by 0.10-0.15,
    more for one method, 1-13 labels per point): the corrected 95% interval covers the true ΔHV in
    at least 93% of them; the judge-only one far less often."""
    from dcobench.study.simulate import coverage

    got = coverage(studies=500, reps=300, seed=0)
    with capsys.disabled():
        print("\n" + ", ".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in got.items()))
    assert got["corrected coverage"] >= 0.93
    assert got["judge only coverage"] <= got["corrected coverage"] - 0.10


def test_no_labels_gives_the_judge_only_interval():
    """Without labels the bootstrap over subjects reproduces the t-interval of `stats.summarize`."""
    from dcobench.study.simulate import study

    cells, labels = study(np.random.default_rng(3))
    empty = LabelSet(labels.frame.iloc[:0])
    r = corrected_difference(cells, "A", "B", "clip_t", "oracle_subject", empty, reps=4000)
    j = stats.frontier_difference(cells, "A", "B", "clip_t", "oracle_subject")
    assert r["estimate"] == pytest.approx(j["estimate"], abs=1e-12)
    assert r["half_width"] == pytest.approx(j["half_width"], rel=0.08)
    assert r["basis"] == "judge only: not checked on these outputs" and r["labels"] == 0
    c = corrected_difference(cells, "A", "B", "clip_t", "oracle_subject", labels, reps=500)
    assert c["basis"].startswith(f"label-corrected ({len(labels)} labels") and c["half_width"] > r["half_width"]


# A study whose judge under-reads DreamBooth at its light knob: judge only, DCO looks ahead; the
# labels (every fourth image) show the two draw the subject equally, and the report says so.

SUBJECTS, IMAGES = ("a", "b", "c", "d", "e", "f"), 16


def labelled_study(root: Path) -> Path:
    rng = np.random.default_rng(7)
    cells, items, rows = [], [], []
    for subject in SUBJECTS:
        for seed in (0, 1):
            for method in ("dco", "dreambooth"):
                for k in (1, 2):
                    cid = f"{method}-{subject}{seed}{k}"
                    folder = root / "cells" / cid
                    (folder / "images").mkdir(parents=True)
                    truth = rng.random(IMAGES) < 0.3 + 0.3 * k
                    miss = 0.5 if (method, k) == ("dreambooth", 1) else 0.0
                    judge = (truth & (rng.random(IMAGES) >= miss)).astype(float)
                    files = [f"images/{i}.png" for i in range(IMAGES)]
                    for i, f in enumerate(files):
                        (folder / f).write_bytes(bytes([i, k, seed]))
                    pd.DataFrame({"image": files, "oracle_subject": judge}).to_csv(folder / "scores.csv", index=False)
                    clip_t = 0.8 - 0.2 * k + rng.normal(0, 0.005)
                    (folder / "result.json").write_text(json.dumps({
                        "cell_id": cid, "method": method, "subject": subject, "seed": seed, "kind": "subject",
                        "knobs": {"sample.k": k}, "protocol": {"id": "p1"}, "scores": "scores.csv",
                        "metrics": {"oracle_subject": {"mean": judge.mean()}, "clip_t": {"mean": clip_t}}}))
                    cells.append(cid)
                    for i in range(0, IMAGES, 4):
                        item = f"{cid}-{i}"
                        items.append({"item": item, "cell": cid, "image": f"cells/{cid}/{files[i]}", "prompt": "p",
                                      "base_prompt": "p", "subject": subject, "references": [], "method": method,
                                      "knobs": {"sample.k": k}, "stratum": f"{method}|sample.k={k}|{subject}",
                                      "training_seed": seed, "sampling_seed": 0})
                        rows.append({"item": item, "cell": cid, "image": f"cells/{cid}/{files[i]}",
                                     "question": "subject", "answer": "yes" if truth[i] else "no",
                                     "time": "2026-12-01T00:00:00", "labeller": "agent"})
    (root / "labels").mkdir()
    (root / "labels" / "sample-s0-n2.json").write_text(json.dumps({"seed": 0, "per_stratum": 2, "items": items}))
    pd.DataFrame(rows).to_csv(root / "labels" / "agent.csv", index=False)
    base = {"reference": "dco", "prompt_metric": "clip_t", "headline": ["oracle_subject"], "targets": {},
            "reference_merge": "direct", "title": "Subject", "judges": ["oracle_subject"]}
    claims = {"subject": {**base, "kind": "frontier", "methods": ["dco", "dreambooth"], "arm_order": ["main"],
                          "arms": {"main": {"cells": cells, "merge_cells": []}}}}
    (root / "study.json").write_text(json.dumps({"study": "labelled", "suite": "micro", "description": "",
                                                 "labels": {"dco": "DCO"}, "claims": claims,
                                                 "claim_order": ["subject"]}))
    return root


def test_a_study_with_its_own_labels_gets_label_corrected_verdicts(tmp_path):
    from dcobench.study.report import write_study_report

    run = labelled_study(tmp_path / "run")
    paths = write_study_report(run, tmp_path / "report")
    v = pd.read_csv(paths["verdicts_csv"]).iloc[0]
    assert v["judge_only_verdict"] == "DCO ahead"  # the judge's bias against DreamBooth's heavy knob
    assert v["basis"].startswith("label-corrected (192 labels") and v["labels"] == 192
    assert v["verdict"] == stats.NO_DIFFERENCE and bool(v["labels_changed"])
    assert v["ci_low"] < 0 < v["ci_high"] and v["judge_only_ci_low"] > 0
    md = paths["study_md"].read_text()
    assert "the labels changed the verdict of DCO vs dreambooth" in md
    assert "label-corrected (192 labels; ⚑ judge only read DCO ahead)" in md
    assert "not calibrated" not in md
    # without its labels the same study is judge only, and says so on every row
    for f in (run / "labels").iterdir():
        f.unlink()
    paths = write_study_report(run, tmp_path / "report2")
    v = pd.read_csv(paths["verdicts_csv"]).iloc[0]
    assert v["verdict"] == "DCO ahead" and v["basis"] == "judge only: not checked on these outputs"
    assert "judge only" in paths["study_md"].read_text()


def test_an_exported_label_set_attaches_to_a_rerun_of_the_same_study(tmp_path, cli):
    """`dcobench label RUN --attach DIR` puts a committed label set back into a run folder with the
    same cells (how `make study-power` labels its rerun); attaching twice adds nothing; a run
    without those cells is refused in one line."""
    import shutil

    from dcobench.labels.export import export_sample
    from dcobench.study.report import write_study_report

    run = labelled_study(tmp_path / "run")
    sample = json.loads((run / "labels" / "sample-s0-n2.json").read_text())
    export_sample(run, sample, tmp_path / "set")
    shutil.rmtree(run / "labels")
    r = cli("label", run, "--attach", tmp_path / "set")
    assert r.returncode == 0, r.stderr
    assert "attach: 192 labelled images" in r.stdout and "192 label rows added" in r.stdout
    assert "differ" not in r.stdout
    v = pd.read_csv(write_study_report(run, tmp_path / "report")["verdicts_csv"]).iloc[0]
    assert v["basis"].startswith("label-corrected (192 labels")
    r = cli("label", run, "--attach", tmp_path / "set")
    assert r.returncode == 0 and "0 label rows added" in r.stdout
    shutil.rmtree(run / "cells" / "dco-a01")
    r = cli("label", run, "--attach", tmp_path / "set")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "are not in" in r.stderr and "attach them to a run of the same study" in r.stderr
