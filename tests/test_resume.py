"""Resuming a training inside its steps: the state saved every `train.resume_every` steps gives,
after a kill, the same final LoRA bit for bit (on the CPU) as a training never interrupted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from dcobench.config import TrainConfig
from dcobench.errors import DcoError
from dcobench.methods.dco import DCO, DCOConfig
from dcobench.models.pipeline import Conditioner, load_pipeline
from dcobench.plan import make_plan
from dcobench.resume import STATE, Resume, resume_interval
from dcobench.trainer import encode_images, train_lora


class Killed(Exception):
    """Stands in for SIGKILL inside one process: training stops between two steps."""


def _train(model_path, subject, folder, kill_at=None, every=4):
    """A fresh pipeline trains DCO with a new token for 12 steps, saving its state every `every`
    steps; returns the LoRA and token rows it ends with, its losses and curves."""
    pipe = load_pipeline(model_path)
    cond = Conditioner(pipe, 32)
    latents = encode_images(pipe.vae, subject.images, 32)
    cfg = TrainConfig(steps=12, lr=1e-2, rank=4, alpha=4.0, resolution=32, train_token=True, token_lr=1e-2,
                      batch_size=2, resume_every=every)
    curves: dict = {}
    resume = Resume(folder, every, extra={"curves": curves})

    def on_step(step, logs):
        curves.setdefault("loss", []).append(logs["loss"])
        if step == kill_at:
            raise Killed

    report = train_lora(pipe, cond, latents, subject, DCO(DCOConfig(beta=50.0)), cfg, seed=3, on_step=on_step,
                        resume=resume)
    lora = {n: p.detach().clone() for n, p in pipe.unet.named_parameters() if "lora_" in n}
    return lora, report.tokens.embeddings(), report.losses, curves


def test_a_killed_training_resumes_to_the_same_lora(tiny_sd_path, tiny_suite, tmp_path):
    subject = tiny_suite.subjects[0]
    lora, rows, losses, curves = _train(tiny_sd_path, subject, tmp_path / "never-killed", every=0)
    folder = tmp_path / "resume"
    with pytest.raises(Killed):
        _train(tiny_sd_path, subject, folder, kill_at=9)  # saved at steps 4 and 8, killed in step 10
    assert torch.load(folder / STATE, weights_only=True)["step"] == 8
    again, again_rows, again_losses, again_curves = _train(tiny_sd_path, subject, folder)
    assert again.keys() == lora.keys() and all(torch.equal(again[k], lora[k]) for k in lora)
    assert all(torch.equal(again_rows[k], rows[k]) for k in rows)  # the trained token row too
    assert again_losses == losses and again_curves == curves


def test_resume_interval_and_a_foreign_state(tmp_path):
    assert resume_interval(TrainConfig(steps=2000)) == 200  # 10% of the steps
    assert resume_interval(TrainConfig(steps=200)) == 50  # but at least 50
    assert resume_interval(TrainConfig(steps=200, resume_every=0)) == 0
    assert not Resume(tmp_path, 5).due(10, 10) and Resume(tmp_path, 5).due(5, 10) and not Resume(tmp_path, 0).due(5, 10)
    (tmp_path / STATE).write_bytes(b"not a state")
    with pytest.raises(DcoError, match="delete the resume folder"):
        Resume(tmp_path, 5).load(torch.nn.Linear(1, 1), None, torch.Generator(), None)


def test_resume_every_is_not_part_of_the_ids():
    """Existing run folders keep their cells: the field changes no train or cell id."""
    a = make_plan(suite="tiny")
    b = make_plan(suite="tiny", overrides=["train.resume_every=7"])
    assert [c.cell_id for c in a.cells] == [c.cell_id for c in b.cells]
    assert [c.train_id for c in a.cells] == [c.train_id for c in b.cells]
    with pytest.raises(DcoError, match="train.resume_every cannot be swept"):
        make_plan(suite="tiny", overrides=["methods.dco.sweep={train.resume_every: [5, 10]}"])


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_rerun_gives_the_same_lora(tmp_path, tiny_suite):
    """`dcobench run` killed with SIGKILL at a random step after a save: the rerun resumes there (no
    train.json yet, the saved state is read), writes a LoRA and checkpoints bit-identical to an
    uninterrupted run's, and removes the saved state."""
    args = ["run", "--methods", "dco", "--suite", "tiny", "subjects=[robot]", "train.steps=40",
            "train.train_token=true", "train.checkpoint_every=15", "sample.steps=2", "sample.seeds=[0]",
            "methods.dco.sweep={sample.w_con: [1.0]}", "--quiet"]
    ref = tmp_path / "reference"
    r = subprocess.run([sys.executable, "-m", "dcobench", *args, "--out", str(ref), "train.resume_every=0"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (lora_ref,) = (ref / "loras").iterdir()

    out = tmp_path / "killed"
    kill_after = random.Random().randrange(1, 9) * 4  # the kill comes right after this save
    proc = subprocess.Popen([sys.executable, "-m", "dcobench", *args, "--out", str(out), "train.resume_every=4"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = out / "loras" / lora_ref.name / "resume" / STATE
    deadline, seen = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        stamp = state.stat().st_mtime_ns if state.is_file() else None
        if stamp != seen:  # a new save: read its step
            seen = stamp
            if torch.load(state, weights_only=True)["step"] >= kill_after:
                break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(state, weights_only=True)["step"]
    assert 4 <= killed_at < 40 and not (state.parents[1] / "train.json").exists(), killed_at
    r = subprocess.run([sys.executable, "-m", "dcobench", *args, "--out", str(out), "train.resume_every=4"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lora = out / "loras" / lora_ref.name
    for name in ("pytorch_lora_weights.safetensors", "learned_embeds.safetensors",
                 "checkpoint-15/pytorch_lora_weights.safetensors", "checkpoint-30/learned_embeds.safetensors"):
        assert (lora / name).read_bytes() == (lora_ref / name).read_bytes(), (name, killed_at)
    info, info_ref = (json.loads((d / "train.json").read_text()) for d in (lora, lora_ref))
    assert info["losses"] == info_ref["losses"] and info["curves"] == info_ref["curves"]
    assert not (lora / "resume").exists() and not [p for p in lora.rglob(".*")]
