"""Training the micro scoring encoders: micro-clip (contrastive image/text) and micro-dino (DINO).

micro-dino follows DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
Transformers"): a student and an EMA teacher see two augmented views of the same image; the
student is trained to match the teacher's centred, sharpened softmax over K prototypes.  There are
no labels, and the images are pretraining renders only: no held-out subject or style is ever drawn
(``sample_scenes(pretraining=True)``), so like real DINO it meets the benchmark's subjects for
the first time when it scores them.  The views' augmentations are computed from the image alone:
a shift, a random resized crop, the background (the pixels of the border's colour) repainted in
a random colour, brightness jitter, blur and noise.  Hue is left alone: in this world colour is
what an object is.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoders import MicroClip, MicroDino, preprocess, clip_caption, world_vocab
from .models import resolve, tokenize
from .training import log_every, optimizer_step, warmup_cosine
from .world import render, sample_scenes


def _noise(x, gen, max_sigma=0.15):
    """Per-image Gaussian noise up to ~20 RGB units: generated images are never clean renders."""
    sigma = torch.rand(len(x), 1, 1, 1, generator=gen) * max_sigma
    return x + sigma.to(x.device) * torch.randn(x.shape, generator=gen).to(x.device)


def train_micro_clip(steps: int, batch_size: int = 256, seed: int = 0, device=None, log=print,
                     lr: float = 2e-3) -> MicroClip:
    """InfoNCE with soft targets: duplicate captions in a batch (the world is finite) are
    positives of each other rather than false negatives.  Pretraining renders and held-out styles,
    never a held-out subject."""
    device, t0 = resolve(device), time.time()
    scenes = list(dict.fromkeys(s for s in sample_scenes(20000, seed, pretraining=False) if s.subject is None))
    images = preprocess([render(s) for s in scenes], "cpu").to(device)
    caps = [clip_caption(s) for s in scenes]
    first = {c: i for i, c in reversed(list(enumerate(caps)))}
    ids, cap_id = tokenize(caps).to(device), torch.tensor([first[c] for c in caps], device=device)
    torch.manual_seed(seed)
    model = MicroClip(world_vocab()).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    gen, run, every = torch.Generator().manual_seed(seed), None, log_every(steps)
    for step in range(1, steps + 1):
        warmup_cosine(opt, lr, step, steps, warmup=50)
        idx = torch.randint(len(scenes), (batch_size,), generator=gen).to(device)
        img = F.normalize(model.image_features(_noise(images[idx], gen)), dim=-1)
        txt = F.normalize(model.text_features(ids[idx]), dim=-1)
        logits = model.logit_scale.clamp(max=math.log(100)).exp() * img @ txt.T
        same = (cap_id[idx][:, None] == cap_id[idx][None]).float()
        target = same / same.sum(1, keepdim=True)
        loss = (torch.sum(-target * logits.log_softmax(1), 1).mean()
                + torch.sum(-target * logits.T.log_softmax(1), 1).mean()) / 2
        optimizer_step(opt, loss, model.parameters())
        run = loss.item() if run is None else 0.95 * run + 0.05 * loss.item()
        if step % every == 0 or step == steps:
            log(f"micro-clip step {step}/{steps}  loss {run:.3f}  {time.time() - t0:.0f}s")
    model.stats = {"steps": steps, "batch_size": batch_size, "final_loss": run, "seconds": round(time.time() - t0, 2),
                   "data": "pretraining renders + held-out styles (plain style words); no held-out subject"}
    return model.eval()


def compose(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """With probability ``p``, paste another image's object (its non-background pixels, shifted)
    over each image: scenes with two objects, built from pretraining renders only, so the encoder
    must describe everything in view rather than the one dominant colour (DINO's ImageNet images
    hold many things; a single-object world does not)."""
    n = len(x)
    donor = x[torch.randint(n, (n,), generator=gen)]
    border = torch.cat([donor[:, :, 0], donor[:, :, -1], donor[:, :, :, 0], donor[:, :, :, -1]], 2)
    ink = ((donor - border.median(2).values[:, :, None, None]).abs().amax(1, keepdim=True) > 0.05).float()
    shift = torch.randint(-8, 9, (2,), generator=gen).tolist()
    donor, ink = (torch.roll(t, shifts=shift, dims=(2, 3)) for t in (donor, ink))
    use = (torch.rand(n, 1, 1, 1, generator=gen) < p).float() * ink
    return x * (1 - use) + donor * use


def augment(x: torch.Tensor, gen: torch.Generator, area=(0.5, 1.0), size: int = 32) -> torch.Tensor:
    """One DINO view of each image in ``x`` ((N, 3, 32, 32) in [-1, 1]), from the pixels alone:
    a crop of ``area`` (a share of the image) resized to ``size``."""
    n = len(x)
    u = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], 2)
    bg = border.median(2).values[:, :, None, None]
    is_bg = ((x - bg).abs().amax(1, keepdim=True) < 0.05).float()
    x = x * (1 - is_bg) + is_bg * (u(n, 3, 1, 1) * 2 - 1)
    # random resized crop, applied as an affine grid so the batch stays one call
    scale = (area[0] + (area[1] - area[0]) * u(n)).sqrt()
    shift = (1 - scale)[:, None] * (u(n, 2) * 2 - 1) + (u(n, 2) * 2 - 1) * 0.15
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = x * (1 + 0.2 * (u(n, 1, 1, 1) - 0.5)) + 0.2 * (u(n, 1, 1, 1) - 0.5)
    blur = u(n) < 0.5
    if blur.any():
        k = torch.tensor([0.25, 0.5, 0.25])
        k2 = (k[:, None] * k[None]).expand(3, 1, 3, 3)
        x[blur] = F.conv2d(F.pad(x[blur], (1,) * 4, mode="replicate"), k2, groups=3)
    return _noise(x, gen, 0.2).clamp(-1.5, 1.5)


class _DinoHead(nn.Module):
    """DINO's projection head: MLP (``layers`` deep), L2-normalised bottleneck, weight-normalised
    prototypes."""

    def __init__(self, dim: int, prototypes: int = 512, hidden: int = 256, bottleneck: int = 64, layers: int = 3):
        super().__init__()
        mods, d = [], dim
        for _ in range(layers - 1):
            mods += [nn.Linear(d, hidden), nn.GELU()]
            d = hidden
        self.mlp = nn.Sequential(*mods, nn.Linear(d, bottleneck))
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, prototypes, bias=False))

    def forward(self, x):
        return self.last(F.normalize(self.mlp(x), dim=-1))


def train_micro_dino(steps: int, batch_size: int = 64, seed: int = 0, device=None, log=print, lr: float = 1e-3,
                     prototypes: int = 512, student_temp: float = 0.1, teacher_temp: float = 0.04,
                     center_momentum: float = 0.9, n_images: int = 20000, n_local: int = 0,
                     compose_p: float = 0.7, head_layers: int = 1, return_head: bool = False) -> MicroDino:
    """DINO self-distillation on ``n_images`` pretraining draws; returns the teacher's backbone
    (DINO evaluates the teacher).  Teacher momentum follows DINO's cosine schedule 0.996 -> 1."""
    device, t0 = resolve(device), time.time()
    scenes = sample_scenes(n_images, seed + 7, pretraining=True)
    assert all(s.subject is None for s in scenes)
    images = preprocess(np.stack([render(s) for s in scenes]), "cpu")
    torch.manual_seed(seed)
    student = MicroDino().to(device).train()
    head = _DinoHead(student.config["dim"], prototypes, layers=head_layers).to(device)
    teacher = MicroDino().to(device)
    t_head = _DinoHead(student.config["dim"], prototypes, layers=head_layers).to(device)
    teacher.load_state_dict(student.state_dict())
    t_head.load_state_dict(head.state_dict())
    for p in list(teacher.parameters()) + list(t_head.parameters()):
        p.requires_grad_(False)
    params = list(student.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.04)
    center = torch.zeros(1, prototypes, device=device)
    gen, run, every = torch.Generator().manual_seed(seed), None, log_every(steps)
    for step in range(1, steps + 1):
        warmup_cosine(opt, lr, step, steps, warmup=min(200, steps // 10 + 1))
        x = images[torch.randint(len(images), (batch_size,), generator=gen)]
        x = compose(x, gen, compose_p) if compose_p else x
        v1, v2 = augment(x, gen).to(device), augment(x, gen).to(device)
        with torch.no_grad():
            t_out = t_head(teacher.image_features(torch.cat([v1, v2])))
            t_prob = F.softmax((t_out - center) / teacher_temp, dim=-1).chunk(2)
        s_logp = F.log_softmax(head(student.image_features(torch.cat([v1, v2]))) / student_temp, dim=-1).chunk(2)
        if n_local:  # DINO's multi-crop: small local views must predict the teacher's global ones
            loc = torch.cat([augment(x, gen, (0.15, 0.45), 16) for _ in range(n_local)]).to(device)
            s_logp = s_logp + F.log_softmax(head(student.image_features(loc)) / student_temp, dim=-1).chunk(n_local)
        terms = [-(t * s).sum(-1).mean() for i, t in enumerate(t_prob) for j, s in enumerate(s_logp) if i != j]
        loss = sum(terms) / len(terms)
        optimizer_step(opt, loss, params)
        m = 1 - (1 - 0.996) * (math.cos(math.pi * step / steps) + 1) / 2
        with torch.no_grad():
            for ps, pt in zip(list(student.parameters()) + list(head.parameters()),
                              list(teacher.parameters()) + list(t_head.parameters())):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            center.mul_(center_momentum).add_(t_out.mean(0, keepdim=True), alpha=1 - center_momentum)
        run = loss.item() if run is None else 0.95 * run + 0.05 * loss.item()
        if step % every == 0 or step == steps:
            # teacher entropy near log(K) would mean collapse to uniform, near 0 collapse to one prototype
            ent = float(-(t_prob[0] * t_prob[0].clamp_min(1e-12).log()).sum(-1).mean())
            log(f"micro-dino step {step}/{steps}  loss {run:.3f}  teacher entropy {ent:.2f}  {time.time() - t0:.0f}s")
    teacher.stats = {"steps": steps, "batch_size": batch_size, "final_loss": run, "seconds": round(time.time() - t0, 2),
                     "objective": "DINO self-distillation (2 global views, EMA teacher, centring)",
                     "data": f"{n_images} pretraining draws (no held-out subject or style), no labels"}
    return (teacher.eval(), t_head.eval()) if return_head else teacher.eval()
