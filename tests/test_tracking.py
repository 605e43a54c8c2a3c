"""`train.log_to`: live training logs through the libraries' own writers, read back with their readers."""

from __future__ import annotations

import importlib.util

import pytest

from dcobench.cli import main
from dcobench.errors import DcoError
from dcobench.plan import make_plan

FAST = ["--suite", "tiny", "subjects=[robot]", "train.steps=4", "sample.steps=2", "sample.seeds=[0]",
        "score.enabled=false", "--quiet"]


def scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_event_files_hold_every_curve_lr_and_step_time(tiny_suite, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--methods", "dco", *FAST, "train.log_to=tensorboard", "train.lr=3e-4", "--out", str(out)]) == 0
    (train_dir,) = (out / "loras").iterdir()
    logs = out / "logs" / train_dir.name
    assert list(logs.glob("events.out.tfevents.*")), "no TensorBoard event file"
    got = scalars(logs)
    import json

    curves = json.loads((train_dir / "train.json").read_text())["curves"]
    assert set(curves) == {"loss", "mse", "ref_mse", "implicit_acc", "beta_gap"}
    for name, values in curves.items():  # the same values as train.json, step by step
        assert [s for s, _ in got[name]] == list(range(4))
        assert [v for _, v in got[name]] == pytest.approx(values, abs=1e-5)
    assert [v for _, v in got["lr"]] == pytest.approx([3e-4] * 4)
    assert [s for s, _ in got["step_time"]] == [1, 2, 3] and all(v > 0 for _, v in got["step_time"])


def test_log_to_is_not_part_of_ids_and_a_missing_library_fails_before_training(tiny_suite):
    ids = lambda extra: [c.cell_id for c in make_plan(overrides=extra, methods=["dco"], suite="tiny").cells]  # noqa: E731
    assert ids(["train.log_to=tensorboard"]) == ids([])
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(DcoError, match=r"train.log_to=wandb: the wandb package is not installed; "
                                           r"`pip install 'dcobench\[wandb\]'`"):
            make_plan(overrides=["train.log_to=wandb"], methods=["dco"], suite="tiny")
    with pytest.raises(DcoError, match="train.log_to: must be one of none, tensorboard, wandb"):
        make_plan(overrides=["train.log_to=mlflow"], methods=["dco"], suite="tiny")
