"""`dcobench report` on fake run folders: numbers, frontiers, protocols, grids, the page in a browser.

Nothing is trained or scored: `make_run` writes result.json, scores.csv and small random PNGs the
way `dcobench run` plus scoring would, with metric values made up per cell and remembered, so
every number in the summary can be checked against a direct computation.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dcobench.errors import DcoError
from dcobench.report import (dominated_table, load_cells, pareto_frontier, protocol_warnings, summarise,
                             write_report)
from dcobench.metrics import metric_meta
from dcobench.report.grids import GAP, LABEL_W, TILE, cell_grid
from dcobench.report.tables import t_critical

METHODS = {"dco": ("sample.w_con", [0.5, 1.0, 2.0]), "dreambooth": ("sample.cfg_scale", [3.0, 5.0, 7.5])}
SUBJECTS = ("dog", "cat")
TRAIN_SEEDS = (0, 1)
PROMPTS = ("a photo of sks {c} on the beach", "a sks {c} wearing a tiny red hat in the snow at night")
SAMPLE_SEEDS, PER_PROMPT, N_REFS = (0, 1), 2, 3
METRICS = ("dino", "clip_i", "clip_t")


def _png(path: Path, rng, size=32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _protocol(pid: str) -> dict:
    return {"id": pid, "dino": {"backbone": "dino_vits16", "weights_sha256": "ab" * 8},
            "clip_t": {"prompt": "scored_prompt"}, "scale": "raw" if pid == "p0" else "x100"}


def _train_log(run: Path, train_id: str, method: str, rng) -> str:
    """loras/<train_id>/train.json with per-step curves (DCO's three values, DreamBooth's loss)."""
    path = run / "loras" / train_id / "train.json"
    if not path.is_file():
        steps = np.arange(1, 41)
        curves = {"loss": (np.exp(-steps / 10) + rng.normal(0, 0.05, 40)).round(6).tolist()}
        if method == "dco":
            curves["implicit_acc"] = rng.integers(0, 2, 40).astype(float).tolist()
            curves["beta_gap"] = (-steps / 4 + rng.normal(0, 1, 40)).round(6).tolist()
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"train_id": train_id, "losses": curves["loss"], "curves": curves}))
    return f"../../loras/{train_id}/train.json"


def make_run(root: Path, protocol_of=lambda method, subject: "p0", seed: int = 0, metrics=METRICS) -> list[dict]:
    """A scored run folder under `root`; returns one {method, knob, subject, seed, metrics} per cell."""
    rng = np.random.default_rng(seed)
    refs = {}
    for s in SUBJECTS:
        refs[s] = [root / "subjects" / s / f"{i:02d}.png" for i in range(N_REFS)]
        for p in refs[s]:
            _png(p, rng)
    (root / "run").mkdir(parents=True, exist_ok=True)
    (root / "run" / "run.json").write_text("{}")
    truth = []
    for m_i, (method, (knob, values)) in enumerate(METHODS.items()):
        for k, value in enumerate(values):
            for s in SUBJECTS:
                for seed_ in TRAIN_SEEDS:
                    cell_id = f"{method}-{s}-{seed_}-{k}"
                    cell = root / "run" / "cells" / cell_id
                    means = {"dino": 0.55 + 0.05 * m_i + 0.05 * k + rng.normal(0, 0.02),
                             "clip_i": 0.70 + 0.03 * k + rng.normal(0, 0.02),
                             "clip_t": 0.32 - 0.02 * k - 0.01 * m_i + rng.normal(0, 0.01)}
                    means.update({m: rng.uniform(0.1, 0.9) for m in metrics if m not in means})
                    rows, images = [], []
                    for p_i, prompt in enumerate(PROMPTS):
                        for ss in SAMPLE_SEEDS:
                            for i in range(PER_PROMPT):
                                rel = f"images/p{p_i:02d}_s{ss}_i{i}.png"
                                _png(cell / rel, rng)
                                images.append(rel)
                                rows.append({"cell_id": cell_id, "prompt": prompt.format(c=s),
                                             "scored_prompt": prompt.format(c=s).replace("sks ", ""),
                                             "prompt_index": p_i, "seed": ss, "index": i, "image": rel})
                    scores = pd.DataFrame(rows)
                    n = len(scores)
                    offsets = np.linspace(-0.01, 0.01, n)  # zero-mean, so image means equal cell means
                    for name in metrics:
                        scores[name] = means[name] + offsets
                    scores.to_csv(cell / "scores.csv", index=False)
                    result = {
                        "cell_id": cell_id, "train_id": f"t-{method}-{s}-{seed_}", "method": method,
                        "subject": s, "class_noun": s, "identifier": "sks", "seed": seed_,
                        "knobs": {knob: value}, "guidance": {"mode": "cfg"}, "suite": "fake",
                        "images": images, "references": [str(p) for p in refs[s]],
                        "provenance": {"git": "abc123", "date": "2025-01-01T00:00:00+00:00"},
                        "scores": "scores.csv", "protocol": _protocol(protocol_of(method, s)),
                        "metrics": {name: {"mean": means[name], "std": 0.006, "n": n} for name in metrics},
                        "train_log": _train_log(root / "run", f"t-{method}-{s}-{seed_}", method, rng),
                    }
                    (cell / "result.json").write_text(json.dumps(result))
                    truth.append({"method": method, "knob_value": value, "subject": s, "seed": seed_,
                                  **{m: means[m] for m in metrics}})
    return truth


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    truth = make_run(root)
    paths = write_report(root / "run")
    return root / "run", truth, paths


def test_summary_matches_direct_computation(run):
    run_dir, truth, _ = run
    summary = summarise(load_cells(run_dir))
    assert len(summary) == 6 and set(summary["n"]) == {len(SUBJECTS) * len(TRAIN_SEEDS)}
    truth = pd.DataFrame(truth)
    for _, row in summary.iterrows():
        cells = truth[(truth["method"] == row["method"]) & (truth["knob_value"] == row["knob_value"])]
        for name in METRICS:
            v = cells[name].to_numpy()
            assert row[f"{name}_mean"] == pytest.approx(v.mean(), abs=1e-12)
            # n = 4 cells -> 3 degrees of freedom -> t = 3.182
            assert row[f"{name}_ci"] == pytest.approx(3.182 * v.std(ddof=1) / math.sqrt(4), abs=1e-12)
    assert list(summary[summary["method"] == "dco"]["knob_label"]) == ["w_con=0.5", "w_con=1.0", "w_con=2.0"]
    assert (t_critical(1), t_critical(30), t_critical(31)) == (12.706, 2.042, 1.96)


def test_summary_files(run):
    run_dir, _, paths = run
    md = paths["summary_md"].read_text()
    assert "| dco | w_con=0.5 | 4 |" in md and " ± " in md and "Protocol `p0`" in md
    assert "dino.weights_sha256" in md and "protocols differ" not in md
    csv = pd.read_csv(paths["summary_csv"])
    assert {"protocol_id", "method", "knob_label", "n", "dino_mean", "dino_ci", "clip_t_mean"} <= set(csv)


def test_pareto_frontier_hand_made():
    pts = [(1, 5), (2, 4), (3, 3), (2, 2), (3, 3), (0, 5), (4, 1), (4, 0.5)]
    assert pareto_frontier(pts) == [0, 1, 2, 4, 6]  # duplicates (3,3) both kept; ties on one axis dominated
    assert pareto_frontier(pts, maximize=(True, False)) == [7]
    assert pareto_frontier(pts, maximize=(False, True)) == [5]
    assert pareto_frontier([(1, float("nan")), (0, 0)]) == [1]
    assert pareto_frontier([]) == [] and pareto_frontier([(2, 2)]) == [0]
    assert pareto_frontier([(1, 1), (1, 1)]) == [0, 1]


def _summary(points: dict[tuple[str, str], tuple[float, float, float]]) -> pd.DataFrame:
    rows = [{"protocol_id": "p0", "method": m, "knob": "k", "knob_label": lab, "knob_value": i, "n": 4,
             **{f"{name}_{s}": (v if s == "mean" else 0.01 if s == "ci" else 4)
                for name, v in zip(("dino", "clip_i", "clip_t"), vals) for s in ("mean", "ci", "n")}}
            for i, ((m, lab), vals) in enumerate(points.items())]
    df = pd.DataFrame(rows)
    df.attrs = {"metrics": ["dino", "clip_i", "clip_t"], "protocols": {"p0": {"id": "p0"}}}
    return df


def test_dominance_one_method_dominates():
    table = dominated_table(_summary({
        ("a", "k=1"): (0.70, 0.80, 0.30), ("a", "k=2"): (0.75, 0.82, 0.28),
        ("b", "k=1"): (0.65, 0.78, 0.29), ("b", "k=2"): (0.70, 0.80, 0.27),  # b@2 is tied with a@1 on two
    }))
    assert table.attrs["criteria"] == ["clip_t", "dino", "clip_i"]
    dom = dict(zip(table["method"] + " " + table["knob_label"], table["dominated_by"]))
    assert dom["a k=1"] == "" and dom["a k=2"] == ""
    assert dom["b k=1"] == "a k=1" and dom["b k=2"] == "a k=1; a k=2"
    assert list(table["dominated"]) == [False, False, True, True]
    # Crossing curves: nobody is dominated; same-method points never count.
    table = dominated_table(_summary({("a", "k=1"): (0.7, 0.8, 0.2), ("a", "k=2"): (0.8, 0.9, 0.3),
                                      ("b", "k=1"): (0.6, 0.7, 0.4)}))
    assert not table["dominated"].any()


def test_dominance_per_judge_pair():
    """Each plot's pair (CLIP-T, one judge) gets its own verdict: b is beaten on (CLIP-T, CLIP-I)
    though DINO keeps it off the joint list."""
    table = dominated_table(_summary({("a", "k=1"): (0.5, 0.80, 0.30), ("b", "k=1"): (0.9, 0.70, 0.20)}))
    assert table.attrs["pairs"] == ["dino", "clip_i"]
    by = {m: r for m, r in zip(table["method"], table.to_dict("records"))}
    assert by["b"]["dominated_by"] == "" and by["b"]["dominated_by_clip_i"] == "a k=1"
    assert by["b"]["dominated_by_dino"] == "" and by["a"]["dominated_by_dino"] == ""


def test_dominance_on_the_runs_chosen_subject_metric():
    """report.pareto_metrics picks the subject axes: here CLIP-I alone, so DINO no longer protects b."""
    points = {("a", "k=1"): (0.5, 0.80, 0.30), ("b", "k=1"): (0.9, 0.70, 0.20)}
    assert not dominated_table(_summary(points))["dominated"].any()
    summary = _summary(points)
    summary.attrs["pareto_metrics"] = ["clip_i"]
    table = dominated_table(summary)
    assert table.attrs["criteria"] == ["clip_t", "clip_i"]
    assert list(table["dominated_by"]) == ["", "a k=1"]


def test_pareto_metrics_pick_the_plotted_axes_and_unknown_ones_are_refused(tmp_path):
    make_run(tmp_path)
    write_report(tmp_path / "run", tmp_path / "out", pareto_metrics=["clip_i"])
    dominance = pd.read_csv(tmp_path / "out" / "dominance.csv")
    assert "clip_i" in dominance and "dino" not in dominance
    with pytest.raises(DcoError, match="--pareto: 'clip_j' is not a score of this run"):
        write_report(tmp_path / "run", tmp_path / "out", pareto_metrics=["clip_j"])


def test_mismatched_protocols_are_split_and_flagged(tmp_path):
    make_run(tmp_path, protocol_of=lambda method, subject: "p1" if subject == "cat" else "p0")
    df = load_cells(tmp_path / "run")
    warnings = protocol_warnings(df)
    assert len(warnings) == 1 and warnings[0].startswith("protocols differ: p0 (12 cells), p1 (12 cells)")
    assert "scale" in warnings[0]
    paths = write_report(tmp_path / "run", tmp_path / "out")
    summary = pd.read_csv(paths["summary_csv"])
    assert len(summary) == 12 and set(summary["n"]) == {2}
    assert summary.groupby(["method", "knob_label"])["protocol_id"].nunique().eq(2).all()
    md = paths["summary_md"].read_text()
    assert "protocols differ: p0" in md and "Protocol `p0`" in md and "Protocol `p1`" in md
    page = paths["index_html"].read_text()
    assert "protocols differ: p0" in page
    dom = pd.read_csv(paths["dominance_csv"])
    assert set(dom["protocol_id"]) == {"p0", "p1"}


def test_unscored_cells_are_left_out_and_reported(tmp_path):
    make_run(tmp_path)
    path = next((tmp_path / "run" / "cells").glob("*/result.json"))
    result = json.loads(path.read_text())
    del result["protocol"]
    path.write_text(json.dumps(result))
    df = load_cells(tmp_path / "run")
    assert df["protocol_id"].isna().sum() == 1
    assert any("not scored" in w for w in protocol_warnings(df))
    assert summarise(df)["n"].sum() == 23


def test_unscored_run_still_reports(tmp_path):
    """Right after `dcobench run`, before scoring: grids (from file names) and a page, no numbers."""
    make_run(tmp_path)
    for path in (tmp_path / "run" / "cells").glob("*/result.json"):
        result = json.loads(path.read_text())
        for key in ("protocol", "metrics", "scores"):
            del result[key]
        if result["cell_id"].endswith("-0-0"):
            result["references"][0] += ".gone"  # a moved reference becomes a "missing" tile
        path.write_text(json.dumps(result))
    paths = write_report(tmp_path / "run")
    assert "24 of 24 cells are not scored" in paths["summary_md"].read_text()
    page = paths["index_html"].read_text()
    assert len(re.findall(r"<img\b", page)) == 26 and "No scored cells" in page  # Pareto, curves, 24 grids
    grid = Image.open(paths["grid:dco-cat-0-0"])
    assert grid.size == (LABEL_W + 4 * (TILE + GAP) + GAP, GAP + 3 * (TILE + GAP))


def test_a_malformed_manifest_is_an_error_not_a_guess(tmp_path):
    make_run(tmp_path)
    cell = next((tmp_path / "run" / "cells").glob("*/result.json")).parent
    result = json.loads((cell / "result.json").read_text())
    (cell / "scores.csv").unlink()
    (cell / "manifest.json").write_text(json.dumps({"images": [{"file": "images/p00_s0_i0.png"}]}))  # no prompt
    with pytest.raises(DcoError, match=r"manifest.json: malformed manifest \(KeyError"):
        cell_grid(tmp_path / "run", result, tmp_path / "out")


def test_grid_pixel_size_and_content(run, tmp_path):
    run_dir, _, _ = run
    result = json.loads(next((run_dir / "cells").glob("*/result.json")).read_text())
    img = cell_grid(run_dir, result, tmp_path)
    n_cols = max(N_REFS, len(SAMPLE_SEEDS) * PER_PROMPT)
    n_rows = 1 + len(PROMPTS)
    assert img.size == (LABEL_W + n_cols * (TILE + GAP) + GAP, GAP + n_rows * (TILE + GAP))
    assert Image.open(tmp_path / "grids" / f"{result['cell_id']}.png").size == img.size
    # 32 px -> 96 px tiles with NEAREST: tile pixel (x, y) is source pixel (x // 3, y // 3).
    ref = np.asarray(Image.open(result["references"][0]).convert("RGB"))
    sample = np.asarray(Image.open(run_dir / "cells" / result["cell_id"] / "images" / "p01_s1_i1.png"))
    grid = np.asarray(img)
    for src, row, col in ((ref, 0, 0), (sample, 2, 3)):
        x0, y0 = LABEL_W + GAP + col * (TILE + GAP), GAP + row * (TILE + GAP)
        assert (grid[y0 + 40, x0 + 70] == src[40 // 3, 70 // 3]).all()


def test_report_twice_is_identical(run, tmp_path):
    run_dir, _, paths = run
    again = write_report(run_dir, tmp_path / "again")
    for key in ("summary_csv", "summary_md", "dominance_csv", "pareto_svg"):
        assert again[key].read_bytes() == paths[key].read_bytes(), key


def test_page_is_self_contained(run):
    run_dir, _, paths = run
    page = paths["index_html"].read_text()
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(srcs) == 2 + 24 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(https?:)?//', page) and "data-images-loaded" in page
    assert "Dominance" in page and "Pareto plot" in page and "w_con=2.0" in page
    assert paths["pareto_png"].stat().st_size > 10_000 and paths["pareto_svg"].read_text().startswith("<?xml")


def test_training_curves_are_the_mean_over_loras(run):
    from dcobench.report.curves import curve_band, load_curves, smooth

    run_dir, _, paths = run
    curves, missing = load_curves(load_cells(run_dir))
    assert not missing and set(curves) == {"dco", "dreambooth"}
    assert set(curves["dco"]) == {"loss", "implicit_acc", "beta_gap"} and set(curves["dreambooth"]) == {"loss"}
    assert len(curves["dco"]["loss"]) == len(SUBJECTS) * len(TRAIN_SEEDS)  # one per LoRA, not per cell
    values = np.random.default_rng(1).normal(size=30)
    assert np.allclose(smooth(values, 4), [values[max(0, i - 3): i + 1].mean() for i in range(30)])
    logs = [json.loads(p.read_text())["curves"]["beta_gap"] for p in sorted((run_dir / "loras").glob("t-dco-*/train.json"))]
    band = curve_band([np.asarray(v) for v in logs], 1)
    direct = np.asarray(logs)
    assert np.allclose(band["mean"], direct.mean(0)) and set(band["n"]) == {4}
    assert np.allclose(band["ci"], 3.182 * direct.std(0, ddof=1) / 2)
    ragged = curve_band([np.ones(3), np.arange(5.0)], 1)  # LoRAs trained for different numbers of steps
    assert list(ragged["n"]) == [2, 2, 2, 1, 1] and ragged["mean"].iloc[4] == 4.0
    assert paths["curves_png"].stat().st_size > 10_000 and "Training curves" in paths["index_html"].read_text()


def test_missing_run_dir_raises(tmp_path):
    with pytest.raises(DcoError, match=r"no such run folder.*dcobench run"):
        load_cells(tmp_path / "nope")
    (tmp_path / "empty" / "cells").mkdir(parents=True)
    with pytest.raises(DcoError, match=r"empty: no finished cells"):
        write_report(tmp_path / "empty")


def test_metric_meta_comes_from_the_registry_or_fails(tmp_path):
    assert metric_meta("clip_t")["kind"] == "prompt" and metric_meta("dino")["kind"] == "subject"
    assert metric_meta("oracle_bg_leak")["higher_is_better"] is False  # a plugin's judge, lower is better
    with pytest.raises(DcoError, match="metric 'some_new_metric': scored in this run but not registered"):
        metric_meta("some_new_metric")
    make_run(tmp_path)  # a run scored with a metric this installation does not know is refused, not guessed
    path = next((tmp_path / "run" / "cells").glob("*/result.json"))
    result = json.loads(path.read_text())
    result["metrics"]["some_new_metric"] = {"mean": 0.5, "std": 0.0, "n": 1}
    path.write_text(json.dumps(result))
    with pytest.raises(DcoError, match="some_new_metric.*install the plugin"):
        write_report(tmp_path / "run", tmp_path / "out")


def _chromium() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_page_renders_in_headless_chromium(run, tmp_path):
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: .ci/run must install it (apt-get install -y chromium)")
        pytest.skip("chromium not installed")
    _, _, paths = run
    n_img = len(re.findall(r"<img\b", paths["index_html"].read_text()))
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    url = paths["index_html"].resolve().as_uri()
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert f'data-images-loaded="{n_img}/{n_img}"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    subprocess.run(base + [f"--screenshot={shot}", "--window-size=1200,2000", url],
                   capture_output=True, text=True, timeout=90)
    assert shot.is_file() and shot.stat().st_size > 20_000
    with Image.open(shot) as im:
        assert im.size == (1200, 2000)
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100
    if os.environ.get("DCOBENCH_KEEP_SHOT"):
        shutil.copy(shot, os.environ["DCOBENCH_KEEP_SHOT"])


WIDE = ("dino", "clip_i", "dinov2", "clip_t", "style_dino", "style_clip_i", "oracle_background", "oracle_subject",
        "oracle_layout", "oracle_style", "oracle_bg_leak")


def test_page_fits_a_1400px_window(tmp_path):
    """Eleven metrics with long labels (the micro world scores that many) used to make a 3800-px page;
    the tables now show their key columns and collapse the rest, so the page fits the window."""
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: .ci/run must install it (apt-get install -y chromium)")
        pytest.skip("chromium not installed")
    make_run(tmp_path, metrics=WIDE)
    (tmp_path / "run" / "run.json").write_text(json.dumps({"config": {"report": {"pareto_metrics": ["oracle_subject"]}}}))
    page = write_report(tmp_path / "run")["index_html"]
    text = page.read_text()
    assert "<details><summary>Full table: all 11 metrics</summary>" in text
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                          "--window-size=1400,1000", "--dump-dom", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=90)
    width = re.search(r'data-page-width="(\d+)"', dom.stdout)
    assert width, dom.stderr[-2000:]
    assert int(width.group(1)) <= 1400


def test_people_panel_with_labelled_rates_of_0_and_1(tmp_path):
    """Two labellers' imported answers with some points all yes and others all no: a Wilson end at a
    rate of 1.0 came out 0.9999999999999999 (n = 4, 10, 14, ...), and the people panel's error bar
    below zero made matplotlib refuse the figure."""
    import csv

    from dcobench.labels.sample import load_or_draw
    from dcobench.labels.sheets import import_sheet
    from dcobench.labels.store import read_labels

    make_run(tmp_path)
    run_dir = tmp_path / "run"
    items = load_or_draw(run_dir, per_stratum=100, seed=0)["items"]
    by_point: dict[str, list[dict]] = {}
    for it in sorted(items, key=lambda it: it["item"]):
        by_point.setdefault(f"{it['method']} {json.dumps(it['knobs'], sort_keys=True)}", []).append(it)
    points = sorted(by_point)
    # (how many labelled, subject answer, prompt answer) per point: rates 1 and 0, at n where
    # rounding bites (4, 10), and one mixed point
    plan = {points[0]: (4, "yes", "no"), points[1]: (10, "no", "yes"), points[2]: (6, "yes", None)}
    rows = []
    for point, (n, subject, prompt) in plan.items():
        for k, it in enumerate(by_point[point][:n]):
            rows.append({"item": it["item"], "subject_answer": subject,
                         "prompt_answer": prompt or ("yes" if k % 2 else "no")})
    sheet = tmp_path / "filled.csv"
    with sheet.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["item", "subject_answer", "prompt_answer"])
        w.writeheader()
        w.writerows(rows)
    for who in ("ann", "bob"):  # both agree, so the consensus keeps every rate
        assert import_sheet(run_dir, sheet, who) == (2 * len(rows), 0)
    assert len(read_labels(run_dir)) == 2 * 2 * len(rows)
    paths = write_report(run_dir, tmp_path / "out")  # raised "'yerr' must not contain negative values"
    people = pd.read_csv(paths["people_csv"]).set_index("n")
    assert sorted(people.index) == [4, 6, 10]
    assert (people.loc[4, "subject_rate"], people.loc[4, "prompt_rate"]) == (1.0, 0.0)
    assert (people.loc[10, "subject_rate"], people.loc[10, "prompt_rate"]) == (0.0, 1.0)
    for q in ("subject", "prompt"):
        assert (people[f"{q}_lo"] <= people[f"{q}_rate"]).all() and (people[f"{q}_rate"] <= people[f"{q}_hi"]).all()
    assert paths["pareto_png"].is_file()


def test_a_wilson_interval_holds_its_estimate():
    from dcobench.labels.agreement import wilson

    for n in range(1, 200):
        for k in (0, n // 2, n):
            lo, hi = wilson(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)
