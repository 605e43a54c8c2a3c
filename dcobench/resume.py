"""Resuming a training where a killed process left it.

Every `train.resume_every` optimizer steps (default: every 10% of the steps, at least 50) the
trainer saves, in one file written atomically, everything the next step reads:

    loras/<train_id>/resume/state.pt
        step            optimizer steps done
        lora            the LoRA parameters (fp32)
        optimizer       AdamW's state (moments and step counts; the learning rate is constant, so
                        there is no LR scheduler state to keep)
        generator       the training generator, which draws every image index, latent sample, noise
                        and timestep; and the global torch (and CUDA) RNG states
        tokens          the trained identifier row of each text encoder (`train.train_token`)
        losses, last, extra, seconds
                        what train.json reports: the loss per step, the last logs, the caller's
                        curves, the training time so far

A new process trains the same LoRA from that step; on the CPU the final file is bit-identical to
an uninterrupted training (`tests/test_resume.py` kills one with SIGKILL at a random step). The
folder is removed once the final LoRA and train.json are written. `resume_every` is not part of the
train id: it cannot change the result.
"""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path
from typing import Callable

import torch

from .adapters import PREFIX
from .config import TrainConfig
from .errors import DcoError
from .store import atomic_write_bytes

STATE = "state.pt"


def resume_interval(cfg: TrainConfig) -> int:
    """Steps between saves: `resume_every`, or 10% of the steps but at least 50 when it is -1."""
    return max(50, math.ceil(cfg.steps / 10)) if cfg.resume_every == -1 else cfg.resume_every


def lora_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The adapter's parameters by name, whatever its kind (peft's tuner prefixes)."""
    return {n: p for n, p in model.named_parameters() if any(pre in n for pre in set(PREFIX.values()))}


class Resume:
    """Where one training saves and finds its resumable state.

    `extra` is a dict the caller keeps filling during training (execute.py's per-step curves); it is
    saved with the state and refilled in place on load. `on_load(step)` is told where training
    resumes."""

    def __init__(self, folder: str | Path, every: int, extra: dict | None = None,
                 on_load: Callable[[int], None] | None = None):
        self.folder, self.every = Path(folder), every
        self.extra = extra if extra is not None else {}
        self.on_load = on_load

    @property
    def path(self) -> Path:
        return self.folder / STATE

    def due(self, done: int, total: int) -> bool:
        return self.every > 0 and done % self.every == 0 and done < total

    def save(self, done: int, model, optimizer, generator: torch.Generator, tokens, losses: list, last: dict,
             seconds: float) -> None:
        state = {
            "step": done,
            "lora": {n: p.detach().cpu().clone() for n, p in lora_parameters(model).items()},
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "tokens": tokens.embeddings() if tokens is not None else {},
            "losses": list(losses),
            "last": dict(last),
            "extra": self.extra,
            "seconds": float(seconds),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.path, buf.getvalue())

    def load(self, model, optimizer, generator: torch.Generator, tokens) -> dict | None:
        """Restore the saved state into a freshly set-up training; None when there is none.
        Returns {step, losses, last, seconds}."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            params = lora_parameters(model)
            if set(state["lora"]) != set(params):
                raise KeyError("the LoRA layers differ")
        except Exception as e:  # any unreadable or foreign file: the user decides to drop it
            why = " ".join(str(e).split()).split(". ")[0][:120]
            raise DcoError(f"{self.path}: cannot resume from this state ({type(e).__name__}: {why}); delete the "
                           "resume folder to train this LoRA from step 0")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state["lora"][name])
            if tokens is not None:
                for enc in tokens.encoders:
                    enc.weight[enc.token_ids] = state["tokens"][enc.name].to(enc.weight.device, enc.weight.dtype)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        for key, value in state["extra"].items():
            if isinstance(self.extra.get(key), dict):
                self.extra[key].clear()
                self.extra[key].update(value)
            else:
                self.extra[key] = value
        if self.on_load:
            self.on_load(state["step"])
        return {k: state[k] for k in ("step", "losses", "last", "seconds")}

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
