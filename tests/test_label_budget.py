"""`dcobench label RUN --budget N`: pass 1 spread evenly, pass 2 where the judge and the labels
disagree, every item's inclusion probability, and the command's lines and refusals."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dcobench.cli import main
from dcobench.labels import budget as bud
from dcobench.labels import sample as smp
from dcobench.labels import store

SUBJECTS, IMAGES = ("cat", "dog", "tent"), 24
BAD = ("dreambooth", 1)  # the point where the judge reads every image wrongly
BUDGET = 96  # 4 points x 72 images: pass 1 takes 48, 12 a point, 4 a subject


def fake_run(root: Path) -> Path:
    """2 methods x 2 knob values x 3 subjects, one seed, 24 real 4-px images a cell, each image's truth
    alternating and the oracle judge equal to it, except at BAD where it reads the opposite."""
    for subject in SUBJECTS:
        for method in ("dco", "dreambooth"):
            for k in (1, 2):
                cid = f"{method}-{subject}-{k}"
                folder = root / "cells" / cid
                (folder / "images").mkdir(parents=True)
                files = [f"images/{i:02d}.png" for i in range(IMAGES)]
                for f in files:
                    Image.new("RGB", (4, 4), (40 * k, 0, 0)).save(folder / f)
                truth = np.arange(IMAGES) % 2 == 0
                judge = (~truth if (method, k) == BAD else truth).astype(float)
                pd.DataFrame({"image": files, "oracle_subject": judge}).to_csv(folder / "scores.csv", index=False)
                (folder / "manifest.json").write_text(json.dumps(
                    {"images": [{"file": f, "prompt": "a photo", "seed": i} for i, f in enumerate(files)]}))
                (folder / "result.json").write_text(json.dumps({
                    "cell_id": cid, "method": method, "subject": subject, "seed": 0, "kind": "subject",
                    "knobs": {"sample.k": k}, "protocol": {"id": "p1"}, "scores": "scores.csv", "references": [],
                    "metrics": {"oracle_subject": {"mean": judge.mean()}}}))
    return root


@pytest.fixture
def run(tmp_path):
    return fake_run(tmp_path / "run")


def label_all(run: Path, items: list[dict], labeller: str = "ann") -> None:
    """The truth as the labeller's subject answer: image index even = yes."""
    entries = [(it, "subject", "yes" if int(Path(it["image"]).stem) % 2 == 0 else "no") for it in items]
    store.record_many(run, labeller, entries)


def per(items, key) -> Counter:
    return Counter(key(it) for it in items)


def test_pass_one_is_half_the_budget_spread_evenly_with_its_probabilities(run, tmp_path):
    first, where, lines = bud.load_or_draw_budget(run, BUDGET, seed=3)
    assert where == run / "labels" / "sample-s3-b96-p1.json" and json.loads(where.read_text()) == first
    items = first["items"]
    assert len(items) == BUDGET // 2 and len({it["item"] for it in items}) == len(items)
    assert set(per(items, bud.point_key).values()) == {12}  # 4 points, evenly
    assert set(per(items, lambda it: it["stratum"]).values()) == {4}  # and within a point over its subjects
    assert all(it["pi"] == 4 / IMAGES and it["pass"] == 1 for it in items)
    assert lines[0].startswith("budget: pass 1 drew 48 of the 96 images, evenly over 4 points")
    assert "  dreambooth k=1: 12 of 72" in lines
    # reproducible from the seed (a copy of the run draws the same), and another seed draws others
    again = bud.pass_one(fake_run(tmp_path / "copy"), BUDGET, 3)["items"]
    assert [it["item"] for it in again] == [it["item"] for it in items]
    assert {it["item"] for it in bud.pass_one(run, BUDGET, 4)["items"]} != {it["item"] for it in items}
    # the sample is found with the others: what an import may name, where the estimator reads pi
    assert set(smp.stored_items(run)) == {it["item"] for it in items}


def test_pass_two_waits_for_pass_one_labels_then_goes_where_the_judge_errs(run):
    first, _, _ = bud.load_or_draw_budget(run, BUDGET, seed=0)
    p2 = run / "labels" / "sample-s0-b96-p2.json"
    again, where, lines = bud.load_or_draw_budget(run, BUDGET, seed=0)
    assert again == first and where.name == "sample-s0-b96-p1.json" and not p2.exists()
    assert lines == [f"budget: pass 2 not drawn yet: 48 of 48 pass-1 images have no subject answer; label them, "
                     f"then run `dcobench label {run} --budget 96 --seed 0` again"]
    label_all(run, first["items"][:-1])  # one short: still waits
    assert "1 of 48" in bud.load_or_draw_budget(run, BUDGET, seed=0)[2][0] and not p2.exists()
    label_all(run, first["items"][-1:])

    second, where, lines = bud.load_or_draw_budget(run, BUDGET, seed=0)
    assert where == p2 and json.loads(p2.read_text()) == second and second["judge"] == "oracle_subject"
    items = second["items"]
    assert len(items) == BUDGET and len({it["item"] for it in items}) == BUDGET
    assert [it["item"] for it in items[:48]] == [it["item"] for it in first["items"]]  # pass 1 first, as labelled
    new = per([it for it in items if it["pass"] == 2], bud.point_key)
    bad = "dreambooth|sample.k=1"
    assert new[bad] > 24 and all(new[bad] > 3 * n for p, n in new.items() if p != bad), new
    assert second["points"][bad]["sd"] > 0.9 and second["points"]["dco|sample.k=1"]["sd"] < 0.3
    assert lines[0].startswith("budget: pass 2 drew 48 more images where oracle_subject and the labels disagree")
    assert f"  dreambooth k=1: 12 + {new[bad]} = {12 + new[bad]} of 72 (SD of label - judge " \
        f"{second['points'][bad]['sd']:.2f} on 12 labels)" in lines
    # within a point the subjects stay even, and every item's pi is drawn / available of its stratum
    drawn = per(items, lambda it: it["stratum"])
    for p in new:
        assert max(drawn[k] for k in drawn if k.startswith(p + "|")) - min(
            drawn[k] for k in drawn if k.startswith(p + "|")) <= 1
    assert all(it["pi"] == drawn[it["stratum"]] / IMAGES for it in items)
    assert all(second["strata"][k]["pass1"] + second["strata"][k]["pass2"] == n for k, n in drawn.items())
    # the final pi is what the store returns and what the estimator weighs by
    from dcobench.report.judges import labelled
    from dcobench.study.corrections import weights

    stored = smp.stored_items(run)
    assert all(stored[it["item"]]["pi"] == it["pi"] for it in items)
    frame, _, _ = labelled([run])
    assert np.allclose(weights(frame), [IMAGES / drawn[s] for s in frame["stratum"]])
    # a later visit serves pass 2 as stored, and the draw depends on the seed and labels only
    assert bud.load_or_draw_budget(run, BUDGET, seed=0)[:2] == (second, p2)
    p2.unlink()
    assert [it["item"] for it in bud.load_or_draw_budget(run, BUDGET, seed=0)[0]["items"]] == \
        [it["item"] for it in items]


def test_neyman_is_proportional_and_capped():
    assert bud.neyman(10, {"a": 3.0, "b": 1.0}, {"a": 100, "b": 100}) in ({"a": 8, "b": 2}, {"a": 7, "b": 3})
    assert bud.neyman(10, {"a": 3.0, "b": 1.0}, {"a": 4, "b": 100}) == {"a": 4, "b": 6}
    assert bud.neyman(10, {"a": 1.0, "b": 1.0}, {"a": 2, "b": 3}) == {"a": 2, "b": 3}
    got = bud.spread(7, {"x": 2, "y": 10, "z": 10}, np.random.default_rng(0), base={"y": 3})
    assert got["x"] == 2 and got["x"] + got["y"] + got["z"] == 7 and abs((got["y"] + 3) - got["z"]) <= 1


def test_the_command_draws_prints_and_serves_the_newest_pass(run, capsys):
    sheets = run.parent / "sheets"
    assert main(["label", str(run), "--budget", "96", "--sheets", str(sheets)]) == 0
    out = capsys.readouterr().out
    assert "budget: pass 1 drew 48" in out and "  dco k=2: 12 of 72" in out
    rows = list(csv.DictReader((sheets / "labels.csv").open()))
    first = json.loads((run / "labels" / "sample-s0-b96-p1.json").read_text())
    assert {r["item"] for r in rows} == {it["item"] for it in first["items"]}
    # labelled through the sheet's import, the next command draws pass 2 and its sheets hold only the new images
    assert main(["label", str(run), "--budget", "96", "--export", str(run.parent / "x")]) == 0
    assert "pass 2 not drawn yet" in capsys.readouterr().out
    label_all(run, first["items"])
    shutil.rmtree(sheets)
    assert main(["label", str(run), "--budget", "96", "--judge", "oracle_subject", "--sheets", str(sheets)]) == 0
    assert "budget: pass 2 drew 48 more images" in capsys.readouterr().out
    rows = list(csv.DictReader((sheets / "labels.csv").open()))
    second = json.loads((run / "labels" / "sample-s0-b96-p2.json").read_text())
    assert {r["item"] for r in rows} == {it["item"] for it in second["items"] if it["pass"] == 2}


@pytest.mark.parametrize("args, says", [
    (["--budget", "3"], "--budget 3: the run has 4 points (method x knobs) and each needs a label; give --budget 4"),
    (["--budget", "1000"], "--budget 1000: the run's finished cells hold only 288 images; give --budget 288 or less"),
    (["--budget", "0"], "--budget 0: must be at least 1"),
    (["--budget", "8", "--per-stratum", "2"], "--budget: it and --per-stratum choose the sample in two different"),
    (["--judge", "oracle_subject"], "--judge oracle_subject: it only guides a --budget draw; add --budget N"),
])
def test_bad_budget_input_is_one_line_and_exit_2(run, capsys, args, says):
    assert main(["label", str(run), *args, "--export", str(run.parent / "x")]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err
    assert not list((run / "labels").glob("sample-*")) if (run / "labels").exists() else True


def test_a_judge_that_is_not_a_binary_subject_judge_is_refused(run, capsys):
    first, _, _ = bud.load_or_draw_budget(run, 8, seed=0)
    label_all(run, first["items"])
    assert main(["label", str(run), "--budget", "8", "--judge", "dino", "--export", str(run.parent / "x")]) == 2
    err = capsys.readouterr().err
    assert "--judge dino: not scored on the labelled images; give one of: oracle_subject" in err, err
    assert not (run / "labels" / "sample-s0-b8-p2.json").exists()


def test_import_and_export_read_the_sample_the_sheets_showed(run, capsys):
    """`--per-stratum 2 --sheets`, then `--export` without `--per-stratum`: the same sample, not a new
    default draw of 8 (which once exported images nobody labelled)."""
    assert main(["label", str(run), "--per-stratum", "2", "--sheets", str(run.parent / "sheets")]) == 0
    shown = {r["item"] for r in csv.DictReader((run.parent / "sheets" / "labels.csv").open())}
    assert main(["label", str(run), "--export", str(run.parent / "out")]) == 0
    assert sorted((run / "labels").glob("sample-*.json")) == [run / "labels" / "sample-s0-n2.json"]
    exported = json.loads((run.parent / "out" / "sample.json").read_text())
    assert {it["item"] for it in exported["items"]} == shown and exported["per_stratum"] == 2
