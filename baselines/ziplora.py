"""ZipLoRA (Shah et al. 2023): learned per-column merger vectors for a subject and a style LoRA.

For each targeted layer, two vectors m1, m2 (one weight per input feature, initialised to 1) give

    dW = m1 ⊙ dW1 + m2 ⊙ dW2          (column-wise: dW[:, j] = m1[j] dW1[:, j] + m2[j] dW2[:, j])

(for a Conv2d LoRA, one weight per input channel: the same scaling of the `down` kernel's input
channels), trained to minimise

    mse(eps_merged(x_subj, c_subj), eps_lora1(x_subj, c_subj)) / n1
  + mse(eps_merged(x_style, c_style), eps_lora2(x_style, c_style)) / n2
  + lambda * sum_layers mean(|m1 ⊙ m2|)

with n1 = n2 = 1 (`normalize=false`, the paper's loss), or, with `normalize=true` (the default),
n_i = mse(eps_lora_i, eps_base) on the same batch (no gradient): each fidelity term is then the
merge's error relative to how much that LoRA changes the base model, so lambda means the same for
any model and LoRA strength. Only the merger vectors get gradients.

The public implementation's settings (lr 5e-5, 100 steps, `data/configs/ziplora_public.yaml`)
cannot move a merger weight more than ~0.005 from 1 in 100 Adam steps, so its merge equals the
direct one. The defaults here (lr 0.03, 100 steps, lambda 0.01, normalised) let the vectors
separate: the mean |cos(m1, m2)| over layers, 1 at the start, is recorded before and after in
merge.json (`merger_cos`); it fell by 84% on a tiny-suite pair and on micro DreamBooth and DCO
pairs (docs/methods.md, "ZipLoRA that optimizes"). Without the normalisation, lr 0.03 lets the penalty
win: both vectors collapse toward 0 (mean 0.05) and the merge loses both LoRAs.

The layers run in low-rank form, dW x = s up (down (m ⊙ x)), so nothing dense is ever built, and
the result exports exactly as a rank r1 + r2 LoRA (see `dcobench.merging.concat_lora`) that stock
diffusers loads. The public implementation writes dense weights that diffusers cannot load; this
one does not.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dcobench.config import non_negative, option, positive
from dcobench.errors import DcoError
from dcobench.merging import LoraWeights, MergeConfig, check_pair, concat_lora
from dcobench.models.pipeline import unet_forward
from dcobench.registry import MERGES


@dataclass
class ZipLoRAConfig(MergeConfig):
    lam: float = option(0.01, "lambda: weight of the merger vectors' overlap penalty mean(|m1 ⊙ m2|).", non_negative)
    steps: int = option(100, "Optimizer steps of the merger vectors.", positive)
    lr: float = option(3e-2, "Adam learning rate of the merger vectors (the public implementation's 5e-5 "
                             "leaves them at 1: data/configs/ziplora_public.yaml).", positive)
    batch_size: int = option(1, "Subject and style examples per step.", positive)
    normalize: bool = option(True, "Divide each fidelity term by that LoRA's own mse to the base model on the "
                                   "batch (scale-free; false: the paper's plain sum).")


def _base(layer):
    return getattr(layer, "base_layer", layer)


def merger_cos(m1: dict[str, torch.Tensor], m2: dict[str, torch.Tensor]) -> float:
    """Mean over layers of |cos(m1, m2)|: 1 for parallel merger vectors (the initial ones), 0 for
    vectors with disjoint columns (ZipLoRA's picture of a subject and a style that do not collide)."""
    cos = [F.cosine_similarity(m1[m].detach().float().flatten(), m2[m].detach().float().flatten(), dim=0).abs() for m in m1]
    return float(torch.stack(cos).mean()) if cos else float("nan")


class _Merger:
    """Forward hooks that add a LoRA's delta to the UNet's Linear and Conv2d layers: LoRA a, LoRA b,
    the merge, or nothing (the base model)."""

    def __init__(self, unet, a: LoraWeights, b: LoraWeights):
        layers = dict(unet.named_modules())
        self.a, self.b, self.mode = a, b, "merged"
        self.layers = {m: layers[m] for m in a.modules}
        dev = next(unet.parameters()).device
        self.m1 = {m: torch.ones(a.down[m].shape[1], device=dev, requires_grad=True) for m in a.modules}
        self.m2 = {m: torch.ones(a.down[m].shape[1], device=dev, requires_grad=True) for m in a.modules}
        self.dev = dev
        self._hooks = []

    def _lora(self, w: LoraWeights, m: str, x: torch.Tensor, scale_in=None) -> torch.Tensor:
        layer, x = _base(self.layers[m]), x.float()
        down, up = w.down[m].to(self.dev), w.scale * w.up[m].to(self.dev)
        if isinstance(layer, torch.nn.Conv2d):
            x = x if scale_in is None else x * scale_in.view(1, -1, 1, 1)
            h = F.conv2d(x, down, stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
            return F.conv2d(h, up)
        x = x if scale_in is None else x * scale_in
        return F.linear(F.linear(x, down), up.flatten(1))

    def _hook(self, name):
        def add(module, inputs, out):
            if self.mode == "base":
                return out
            x = inputs[0]
            if self.mode == "a":
                extra = self._lora(self.a, name, x)
            elif self.mode == "b":
                extra = self._lora(self.b, name, x)
            else:
                extra = self._lora(self.a, name, x, self.m1[name]) + self._lora(self.b, name, x, self.m2[name])
            return out + extra.to(out.dtype)
        return add

    def __enter__(self):
        self._hooks = [layer.register_forward_hook(self._hook(m)) for m, layer in self.layers.items()]
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()

    @contextlib.contextmanager
    def use(self, mode: str):
        old, self.mode = self.mode, mode
        try:
            yield
        finally:
            self.mode = old

    def params(self) -> list[torch.Tensor]:
        return list(self.m1.values()) + list(self.m2.values())

    def penalty(self) -> torch.Tensor:
        return sum((self.m1[m] * self.m2[m]).abs().mean() for m in self.m1)


def _check_layers(unet, a: LoraWeights) -> None:
    layers = dict(unet.named_modules())
    for m in a.modules:  # before check_pair: an unsupported layer would fail its shape check with a wrong reason
        layer = _base(layers[m]) if m in layers else None
        if layer is not None and not isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
            raise DcoError(f"ziplora: {m} is a {type(layer).__name__}; ZipLoRA merges LoRAs on Linear and Conv2d "
                           "layers only; use --method direct")
        if isinstance(layer, torch.nn.Conv2d) and layer.groups != 1:
            raise DcoError(f"ziplora: {m} is a grouped Conv2d (groups={layer.groups}); use --method direct")


@MERGES.register("ziplora", baseline=True,
                 description="learned per-column merger vectors (ZipLoRA), exported as a rank r1+r2 LoRA")
def ziplora(a: LoraWeights, b: LoraWeights, cfg: ZipLoRAConfig | None = None, pipe=None, cond=None,
            subject=None, subject_latents=None, style=None, style_latents=None, seed: int = 0, **_):
    """Train the merger vectors on the subject's and the style's references; returns the exported
    rank r1 + r2 LoRA state, its rank, and a summary (losses, penalty, merger cosines, time)."""
    from diffusers import DDPMScheduler

    cfg = cfg or ZipLoRAConfig()
    if pipe is None or subject is None or style is None:
        raise DcoError("ziplora: needs the base model and the subject's and style's reference folders "
                       "(dcobench merge --method ziplora --model M --subject DIR --style DIR)")
    unet = pipe.unet
    _check_layers(unet, a)
    check_pair(a, b, unet)
    unet.requires_grad_(False)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    gen = torch.Generator().manual_seed(seed)
    data = [(subject, subject_latents, cond(subject.captions), "a"), (style, style_latents, cond(style.captions), "b")]
    losses, fidelity, start = [], [], time.perf_counter()
    with _Merger(unet, a, b) as merger:
        cos_before = merger_cos(merger.m1, merger.m2)
        opt = torch.optim.Adam(merger.params(), lr=cfg.lr)
        for _step in range(cfg.steps):
            loss, terms = cfg.lam * merger.penalty(), []
            for refs, latents, caps, mode in data:
                idx = torch.randint(0, len(refs.images), (cfg.batch_size,), generator=gen)
                x0 = latents.sample(idx, gen)
                noise = torch.randn(x0.shape, generator=gen).to(x0.device, x0.dtype)
                t = torch.randint(0, sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen).to(x0.device)
                x_t = sched.add_noise(x0, noise, t)
                c = {k: v[idx.to(v.device)] for k, v in caps.items()}
                with torch.no_grad(), merger.use(mode):
                    target = unet_forward(unet, x_t, t, c).float()
                norm = 1.0
                if cfg.normalize:
                    with torch.no_grad(), merger.use("base"):
                        norm = F.mse_loss(unet_forward(unet, x_t, t, c).float(), target).clamp_min(1e-12)
                term = F.mse_loss(unet_forward(unet, x_t, t, c).float(), target) / norm
                terms.append(term.item())
                loss = loss + term
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(round(loss.item(), 6))
            fidelity.append([round(v, 6) for v in terms])
        m1 = {m: v.detach().cpu() for m, v in merger.m1.items()}
        m2 = {m: v.detach().cpu() for m, v in merger.m2.items()}
        penalty = merger.penalty().item()
    state, rank = concat_lora(a, b, m1, m2)
    cos_after = merger_cos(m1, m2)
    return state, rank, {"method": "ziplora", "config": dict(vars(cfg)), "losses": losses,
                         "fidelity_terms": fidelity, "penalty": penalty,
                         "merger_cos": {"before": round(cos_before, 6), "after": round(cos_after, 6),
                                        "fall": round(1 - cos_after / cos_before, 6)},
                         "merger_mean": {"m1": round(float(torch.cat(list(m1.values())).mean()), 6),
                                         "m2": round(float(torch.cat(list(m2.values())).mean()), 6)},
                         "seconds": round(time.perf_counter() - start, 2), "_merger": (m1, m2)}


ziplora.config_cls = ZipLoRAConfig
