"""Live training logs (`train.log_to`): TensorBoard or Weights & Biases, through their own writers.

What is logged, per optimizer step and per training: every value the objective logs (the `curves`
of train.json: `loss`, and for DCO `mse`, `ref_mse`, `implicit_acc`, `beta_gap`), the learning rate
of each parameter group (`lr`, `lr/token` with a trained token) and the step's wall time in
seconds (`step_time`). The diffusers training scripts users know (`--report_to`) log the same way,
so a run can be watched while it trains instead of read from `curves.png` afterwards.

Where: `RUN/logs/<train_id>/`, one folder per training (so `tensorboard --logdir RUN/logs` shows
every LoRA of a run side by side). A killed training that resumes from step k writes its events
again from k: the TensorBoard writer is opened with `purge_step=k`, which drops the dead run's
events past k, so the curves do not double back. wandb runs offline unless `WANDB_MODE` says
otherwise (nothing here reaches a server by default); `wandb sync RUN/logs/<train_id>/wandb/...`
uploads a run later.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

from .errors import DcoError

KINDS = ("none", "tensorboard", "wandb")
EXTRAS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


def check_available(kind: str) -> None:
    """Fail at plan time, before any training, when the logger's library is missing."""
    if kind in EXTRAS:
        module, extra = EXTRAS[kind]
        if importlib.util.find_spec(module) is None:
            raise DcoError(f"train.log_to={kind}: the {module} package is not installed; "
                           f"`pip install 'dcobench[{extra}]'` or set train.log_to=none")


class Tracker:
    """A no-op logger (`train.log_to=none`); the others override `write` and `close`."""

    def __init__(self, optimizer_groups=None):
        self._groups = optimizer_groups or []
        self._last = None

    def log(self, step: int, values: dict) -> None:
        """Log one optimizer step's values, plus the learning rates and the time since the last step."""
        now = time.perf_counter()
        out = {k: float(v) for k, v in values.items()}
        for i, group in enumerate(self._groups):
            out["lr" if i == 0 else f"lr/group{i}"] = float(group["lr"])
        if self._last is not None:
            out["step_time"] = now - self._last
        self._last = now
        self.write(step, out)

    def write(self, step: int, values: dict) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoard(Tracker):
    def __init__(self, folder: Path, first_step: int, config: dict, groups):
        from torch.utils.tensorboard import SummaryWriter

        super().__init__(groups)
        # purge_step drops events a killed run wrote past the step it resumes from
        self.writer = SummaryWriter(str(folder), purge_step=first_step or None)
        if not first_step:
            self.writer.add_text("config", f"```\n{config}\n```", 0)

    def write(self, step: int, values: dict) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.close()


class Wandb(Tracker):
    def __init__(self, folder: Path, name: str, config: dict, groups):
        import wandb

        super().__init__(groups)
        os.environ.setdefault("WANDB_MODE", "offline")  # no server unless the user asks for one
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "dcobench"), name=name, id=name,
                              dir=str(folder), config=config, resume="allow", reinit="create_new")

    def write(self, step: int, values: dict) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def open_tracker(kind: str, run_root: Path, train_id: str, config: dict, first_step: int = 0,
                 optimizer=None) -> Tracker:
    """The logger of one training: `RUN/logs/<train_id>/` for TensorBoard and wandb."""
    groups = optimizer.param_groups if optimizer is not None else None
    if kind == "none":
        return Tracker(groups)
    check_available(kind)
    folder = Path(run_root) / "logs" / train_id
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "tensorboard":
        return TensorBoard(folder, first_step, config, groups)
    return Wandb(folder, train_id, config, groups)
