"""`dcobench run` end to end on the tiny suite: outputs, resume, SIGKILL, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FAST = ["train.steps=4", "sample.steps=3", "sample.seeds=[0]"]


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def test_run_then_rerun_does_nothing(cli, tmp_path, tiny_suite):
    out = tmp_path / "run"
    r = cli("run", "--methods", "dco,dreambooth", "--suite", "tiny", "--out", out, "--quiet", *FAST)
    assert r.returncode == 0, r.stderr
    results = [json.loads(p.read_text()) for p in (out / "cells").glob("*/result.json")]
    n_subjects = len(tiny_suite.subjects)
    assert len(results) == 2 * 2 * n_subjects  # 2 methods x 2 swept knob values x subjects
    assert len(list((out / "loras").glob("*/pytorch_lora_weights.safetensors"))) == 2 * n_subjects
    for res in results:
        cell = out / "cells" / res["cell_id"]
        assert res["provenance"]["versions"]["torch"] and res["provenance"]["date"]
        assert (cell / res["lora"]).resolve().is_file()
        manifest = json.loads((cell / "manifest.json").read_text())
        assert [m["file"] for m in manifest["images"]] == res["images"]
        assert all((cell / f).is_file() for f in res["images"])
        assert res["guidance"]["mode"] == ("consistency" if res["method"] == "dco" else "cfg")
    before = snapshot(out)
    r = cli("run", "--methods", "dco,dreambooth", "--suite", "tiny", "--out", out, "--quiet", *FAST)
    assert r.returncode == 0 and "already done" in r.stderr
    assert snapshot(out) == before


@pytest.mark.slow
def test_sigkill_then_rerun_completes_the_rest(tmp_path, tiny_suite):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "dcobench", "run", "--methods", "dco,dreambooth", "--suite", "tiny",
            "--out", str(out), "--quiet", "train.steps=30", "sample.steps=3", "sample.seeds=[0]"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "cells").glob("*/result.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p: p.read_bytes() for p in (out / "cells").glob("*/result.json")}
    total = 2 * 2 * len(tiny_suite.subjects)
    assert 1 <= len(done) < total, "the run must be killed part-way for this test to mean anything"
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(list((out / "cells").glob("*/result.json"))) == total
    assert all(p.read_bytes() == data for p, data in done.items())  # finished cells untouched
    assert not list(out.rglob("*.tmp")) and not list((out / "loras").glob(".*"))


def _one_line_error(r):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_unknown_method(cli, tmp_path):
    line = _one_line_error(cli("run", "--methods", "dco,dreamboth", "--out", tmp_path))
    assert "unknown method 'dreamboth'" in line and "did you mean 'dreambooth'" in line


def test_invalid_config_value(cli, tmp_path):
    line = _one_line_error(cli("run", "--suite", "tiny", "--out", tmp_path, "train.rank=0"))
    assert "train.rank" in line and "must be > 0" in line
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("methods:\n  dco:\n    betta: 10\n")
    line = _one_line_error(cli("validate", cfg))
    assert "methods.dco.betta" in line and "did you mean 'beta'" in line


def _suite_file(tmp_path, tiny_sd_path, subject_dir):
    path = tmp_path / "suite.yaml"
    path.write_text(f"name: mine\nmodel: {tiny_sd_path}\nresolution: 32\n"
                    f"subjects:\n  - path: {subject_dir}\n    class_noun: toy\n    identifier: sks\n"
                    "prompts: ['a {identifier} {class_noun} on the beach']\n")
    return path


def test_missing_subject_folder(cli, tmp_path, tiny_sd_path):
    suite = _suite_file(tmp_path, tiny_sd_path, tmp_path / "nowhere")
    line = _one_line_error(cli("run", "--suite", suite, "--out", tmp_path / "o"))
    assert "nowhere" in line and "subject folder not found" in line


def test_unreadable_image(cli, tmp_path, tiny_sd_path, tiny_suite):
    subject = tmp_path / "subj"
    shutil.copytree(tiny_suite.subjects[0].root, subject)
    (subject / "03.png").write_bytes(b"not a png at all")
    suite = _suite_file(tmp_path, tiny_sd_path, subject)
    line = _one_line_error(cli("run", "--suite", suite, "--out", tmp_path / "o"))
    assert "03.png" in line and "cannot read image" in line


def test_custom_suite_runs_and_validate_counts_cells(cli, tmp_path, tiny_sd_path, tiny_suite):
    suite = _suite_file(tmp_path, tiny_sd_path, tiny_suite.subjects[0].root)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"suite: {suite}\nmethods:\n  dco:\n    sweep:\n      sample.w_con: [0.0, 2.0]\n"
                   "train:\n  steps: 3\nsample:\n  steps: 2\n  seeds: [0]\n")
    r = cli("validate", cfg)
    assert r.returncode == 0 and "2 cells" in r.stdout, r.stderr
    # the default scorer wants real CLIP weights, which this machine lacks: it fails before training
    line = _one_line_error(cli("run", "--config", cfg, "--out", tmp_path / "o", "--quiet"))
    assert "score.dino" in line and "weights" in line and "score.enabled=false" in line
    assert not (tmp_path / "o" / "loras").exists()
    r = cli("run", "--config", cfg, "--out", tmp_path / "o", "--quiet", "score.clip=tiny-clip", "score.dino=tiny-dino")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "o" / "cells").glob("*/result.json"))) == 2


def test_ls_lists_methods_and_suites(cli):
    r = cli("ls")
    assert r.returncode == 0
    assert "dco" in r.stdout and "dreambooth" in r.stdout and "tiny" in r.stdout and "needs_reference" in r.stdout
