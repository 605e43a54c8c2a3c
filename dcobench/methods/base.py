"""The objective interface the trainer calls.

An objective is a small module: a docstring with its formula, a typed config, and capability
flags the trainer reads instead of checking method names (torchtune's `rlhf/loss/dpo.py` style).
`Objective` below documents each part; `docs/gen.py` renders those docstrings into the
"objective interface" section of `docs/plugins.md`, so edit them here.
"""

from __future__ import annotations

import torch

from ..config import MethodConfig


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """||pred - target||^2 averaged over every dimension but the batch, in fp32, times the
    per-sample loss weights (Min-SNR) when given."""
    mse = (pred.float() - target.float()).pow(2).mean(dim=tuple(range(1, pred.ndim)))
    return mse if weights is None else mse * weights.float()


class Objective:
    """The base class of every training objective (`dcobench run --methods NAME`).

    Subclass it, set the class attributes that differ from the defaults, implement `__call__`, and
    register the class with `METHODS.register("NAME", description="...")`. For each training,
    dcobench builds one instance, `cls(cfg)`, with `cfg` the method's `config_cls` filled from the
    `methods.NAME.*` options, kept as `self.cfg`. The trainer (`dcobench.trainer.train_lora`) then
    calls the instance once per micro-batch with the adapter's prediction and whatever the
    capability flags asked for, calls `backward()` on the loss it returns, and steps the optimizer
    (`train.optimizer`) on the adapter's parameters (and the identifier token's, with
    `train.train_token`).
    """

    name = ""
    """The method's registered name, as given to `METHODS.register`; the trainer's error messages
    name the objective by it."""

    config_cls = MethodConfig
    """The method's typed config: a dataclass subclassing `dcobench.config.MethodConfig`, one
    `option(default, help, check, choices)` field per knob. `dcobench run` fills it from
    `methods.NAME.*` in a YAML file or as `key=value` (an unknown key, or a value of the wrong type or
    out of range, fails before anything runs) and passes it to `__init__`. Every field but `sweep`
    (inherited: knob -> values, one cell per value) is part of the training's id, so changing it
    trains a new LoRA; each field can be swept (`methods.NAME.sweep`), and `dcobench ls methods` lists
    them."""

    needs_reference = False
    """True: each micro-batch, the trainer also runs the same denoiser with the adapter disabled,
    under `no_grad`, on the same noisy latents and timesteps, and passes that prediction as
    `ref_pred` (one more forward pass per micro-batch); its conditioning is set by
    `reference_uses_base_prompt`. False: `ref_pred` is None."""

    needs_prior = False
    """True: before training, the base model generates `cfg.num_class_images` class images from
    `cfg.class_prompt` (`{class_noun}` filled in), under CFG with the cell's sampling settings,
    cached on disk, so `config_cls` must have those two fields (as `dreambooth_pp`'s has); each
    micro-batch then adds `train.batch_size` noised class examples to the same denoiser call, and
    the trainer passes their `(pred, target, weights)` as `prior`. False: `prior` is None."""

    default_guidance = "cfg"
    """The sampler's guidance when `sample.guidance=auto` (the default): `"cfg"`, classifier-free
    guidance of the fine-tuned model, `eps_theta(0) + cfg_scale * (eps_theta(c) - eps_theta(0))`;
    or `"consistency"`, DCO's consistency guidance, `eps_phi(0) + w_text * (eps_phi(c_base) -
    eps_phi(0)) + w_con * (eps_theta(c) - eps_phi(c_base))`, with eps_phi the adapter disabled and
    c_base the base prompt."""

    reference_uses_base_prompt = True
    """Read only when `needs_reference`. True: the reference pass is conditioned on the base
    captions, the training captions with the class noun in place of the identifier (`a photo of
    sks dog` -> `a photo of dog`); False: on the training captions themselves. It may be a property
    that reads `self.cfg`. The trainer asks `reference_base`, which returns this unless overridden
    (DCO overrides it: `methods.dco.reference_prompt=auto` depends on whether a token trains)."""

    def reference_base(self, token_trains: bool) -> bool:
        """Read only when `needs_reference`: whether the reference pass of a training is conditioned
        on the base captions. `token_trains` says whether this training learns an identifier token
        (`train.train_token`). The default returns `reference_uses_base_prompt`; DCO's
        `reference_prompt=auto` returns `token_trains` (the authors' rule)."""
        return bool(self.reference_uses_base_prompt)

    def __init__(self, cfg: MethodConfig | None = None):
        self.cfg = cfg if cfg is not None else self.config_cls()

    def __call__(
        self,
        model_pred: torch.Tensor,
        target: torch.Tensor,
        ref_pred: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        prior: tuple | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return (scalar loss, floats to log) for one micro-batch.

        Args:
            model_pred: The denoiser's prediction with the adapter on, shaped like the latents,
                `(train.batch_size, C, H, W)`, in the denoiser's dtype (fp16 or bf16 under
                `train.mixed_precision`: compute the loss in fp32, as `per_sample_mse` does). The
                gradient flows through it to the adapter.
            target: What the denoiser is trained to predict on these noisy latents, same shape: the
                noise for epsilon-prediction models, `v` for v-prediction ones, the flow-matching
                velocity `noise - x0` for SD3.
            ref_pred: The adapter-off prediction on the same latents, timesteps and noise (no
                gradient) when `needs_reference`, else None.
            weights: Per-sample loss weights, shape `(train.batch_size,)`: Min-SNR weights when
                `train.snr_gamma > 0`, else None (uniform). Pass them to `per_sample_mse`.
            prior: When `needs_prior`, `(pred, target, weights)` of the micro-batch's class examples,
                the same kinds of tensors as `model_pred`, `target` and `weights` (`pred` comes from
                the same denoiser call as `model_pred`); else None.

        Returns:
            `(loss, logs)`. `loss`: a scalar tensor with a gradient; the trainer divides it by
            `train.grad_accum` and calls `backward()`; if it is not finite, the training stops and
            is recorded as failed (`failed.json` in its folder) while the run goes on. `logs`: name -> float; after each optimizer step the trainer records the
            last micro-batch's values in the LoRA's `train.json` (`curves`, one list per name, and
            `last`) and in the live logger (`train.log_to`); the report's training-curve figure
            plots `loss`, `implicit_acc` and `beta_gap` where a method logs them.
        """
        raise NotImplementedError
