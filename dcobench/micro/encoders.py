"""Micro scoring encoders: a CLIP-style image/text model and a DINO-style subject encoder.

Both are trained on rendered micro-world images in seconds to minutes and used exactly like the
real backbones (``dcobench.metrics.base.Backbone``): uint8 images and strings in, L2-normalised
embeddings out, with a ``protocol()`` naming the weights file and its hash.

MicroClip never sees a held-out subject: it trains on pretraining scenes plus the held-out
*styles* captioned with their plain style words ("in striped style"), so CLIP-T can check a
style and the identifiers (sks, kxv, ...) stay unknown tokens.  Its text tower is a small
transformer over the offline CLIP tokenizer's ids, remapped to the world's 33-id vocabulary
(a 49408-row table would be 99% dead weight); unknown ids share one UNK row.  Captions bind
colours to nouns by word order ("a red circle on a blue background"), so the text tower uses
positions and attention, not a bag of words.  The image tower flattens its 4x4 map so position
and size survive.

MicroDino learns object identity: positives are two renders of one identity (shape or held-out
subject silhouette, colours, style) with different position, size, background and pixel jitter;
the other identities in the batch are negatives.  Global pooling plus these positives make it
insensitive to where the object is and what it stands on.  By default it also sees the held-out
subjects' renders (images only, no text) so it can tell them from look-alike plain shapes.  Real
DINO never saw the benchmark's own subject, so this is a sharper judge than DINO;
``with_subjects=False`` trains without them.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import DcoError
from ..metrics.base import Backbone, file_sha256, normalise, state_sha256
from .models import TEXT_LEN, default_micro_dir, log_every, optimizer_step, resolve, tokenize, warmup_cosine
from .world import (BACKGROUNDS, COLORS, HELDOUT_STYLES, POSITIONS, SHAPES, SIZES, STYLES, SUBJECTS,
                    Scene, base_caption, render, sample_scenes)

CLIP_FILE, DINO_FILE = "micro-clip.safetensors", "micro-dino.safetensors"
PREPROCESS = {"size": 32, "resize": "bilinear if not 32x32", "scale": "x / 255",
              "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
_WORDS = (list(COLORS) + list(BACKGROUNDS) + list(SHAPES) + list(POSITIONS) + list(SIZES)
          + list(STYLES) + ["a", "an", "on", "background", "in", "style", ","])


def clip_caption(scene: Scene) -> str:
    """The base caption, keeping held-out styles by their plain word (``base_caption`` drops them)."""
    text = base_caption(scene)
    return text + f", in {scene.style} style" if scene.style in HELDOUT_STYLES else text


def world_vocab() -> list[int]:
    from .models import tokenizer

    return sorted({i for ids in tokenizer()(_WORDS).input_ids for i in ids})


def _preprocess(images, device) -> torch.Tensor:
    out = []
    for im in images:
        im = np.asarray(im, dtype=np.uint8)
        if im.shape[:2] != (32, 32):
            from PIL import Image

            im = np.asarray(Image.fromarray(im).convert("RGB").resize((32, 32), Image.BILINEAR))
        out.append(im[..., :3])
    x = torch.as_tensor(np.stack(out)).permute(0, 3, 1, 2).float().to(device) / 255.0
    return (x - 0.5) / 0.5


def _conv(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class _Encoder(nn.Module, Backbone):
    kind = ""

    def __init__(self, **config):
        super().__init__()
        self.config = config
        self.weights_path: Path | None = None
        self.stats: dict = {}

    @property
    def device(self):
        return next(self.parameters()).device

    @torch.no_grad()
    def embed_images(self, images, batch_size: int = 256) -> torch.Tensor:
        self.eval()
        out = [normalise(self.image_features(_preprocess(images[i:i + batch_size], self.device))).cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.config["dim"])

    def protocol(self) -> dict:
        path = self.weights_path
        return {"backbone": self.name, "arch": self.arch(),
                "weights": str(path) if path else "unsaved",
                "weights_sha256": file_sha256(path) if path else state_sha256(self),
                "preprocess": dict(PREPROCESS)}


class MicroClip(_Encoder):
    name, kind, has_text = "micro-clip", "micro-clip", True

    def __init__(self, vocab: list[int], dim: int = 64, width: int = 64):
        super().__init__(vocab=list(vocab), dim=dim, width=width)
        self.image = nn.Sequential(_conv(3, 32), _conv(32, 64, 2), _conv(64, 64), _conv(64, 128, 2),
                                   _conv(128, 128), _conv(128, 128, 2), nn.Flatten(),
                                   nn.Linear(128 * 16, 256), nn.SiLU(), nn.Linear(256, dim))
        lut = torch.zeros(49408, dtype=torch.long)  # CLIP id -> row; 0 is UNK
        lut[torch.tensor(vocab)] = torch.arange(1, len(vocab) + 1)
        self.register_buffer("lut", lut, persistent=False)
        self.tok = nn.Embedding(len(vocab) + 1, width)
        self.pos = nn.Parameter(torch.randn(TEXT_LEN, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.text = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.text_out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def arch(self) -> str:
        c = self.config
        return (f"CNN 32-64-128 (3 stride-2 stages, flattened 4x4) + 2-layer transformer width "
                f"{c['width']} over {len(c['vocab'])} CLIP-BPE ids; dim {c['dim']}; max length {TEXT_LEN}")

    def image_features(self, x):
        return self.image(x)

    def text_features(self, ids):
        ids = ids.to(self.device)
        # Pool at the first EOS (CLIP's choice): it has attended to the whole caption.
        eos = (ids == 49407).int().argmax(1)
        pad = torch.arange(ids.shape[1], device=ids.device)[None] > eos[:, None]
        h = self.text(self.tok(self.lut[ids]) + self.pos[: ids.shape[1]], src_key_padding_mask=pad)
        return self.text_out(h[torch.arange(len(ids)), eos])

    @torch.no_grad()
    def embed_texts(self, texts, batch_size: int = 256) -> torch.Tensor:
        self.eval()
        out = [normalise(self.text_features(tokenize(texts[i:i + batch_size]))).cpu()
               for i in range(0, len(texts), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.config["dim"])


class MicroDino(_Encoder):
    name, kind = "micro-dino", "micro-dino"

    def __init__(self, dim: int = 64, with_subjects: bool = True):
        super().__init__(dim=dim, with_subjects=with_subjects)
        self.backbone = nn.Sequential(_conv(3, 32), _conv(32, 64, 2), _conv(64, 64), _conv(64, 128, 2),
                                      _conv(128, 128))
        self.head = nn.Sequential(nn.Linear(256, 256), nn.SiLU(), nn.Linear(256, dim))

    def arch(self) -> str:
        return (f"CNN 32-64-128 (2 stride-2 stages), global avg+max pool, MLP head to {self.config['dim']}; "
                f"identity-contrastive, subjects {'in' if self.config['with_subjects'] else 'out'}")

    def image_features(self, x):
        h = self.backbone(x)
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))


def _noise(x, gen, max_sigma=0.15):
    """Per-image Gaussian noise up to ~20 RGB units: generated images are never clean renders."""
    sigma = torch.rand(len(x), 1, 1, 1, generator=gen) * max_sigma
    return x + sigma.to(x.device) * torch.randn(x.shape, generator=gen).to(x.device)


def train_micro_clip(steps: int, batch_size: int = 256, seed: int = 0, device=None, log=print,
                     lr: float = 2e-3) -> MicroClip:
    """InfoNCE with soft targets: duplicate captions in a batch (the world is finite) are
    positives of each other rather than false negatives."""
    device, t0 = resolve(device), time.time()
    scenes = list(dict.fromkeys(s for s in sample_scenes(20000, seed, pretraining=False) if s.subject is None))
    images = _preprocess([render(s) for s in scenes], "cpu").to(device)
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
    model.stats = {"steps": steps, "batch_size": batch_size, "final_loss": run, "seconds": round(time.time() - t0, 2)}
    return model.eval()


def identities(with_subjects: bool = True) -> list[tuple]:
    """(shape, colour, style, subject) of every object look in the world."""
    out = [(sh, c, st, None) for sh in SHAPES for c in COLORS for st in STYLES]
    if with_subjects:
        out += [(SUBJECTS[n].class_shape, None, st, n) for n in SUBJECTS for st in STYLES]
    return out


def _views(ident) -> list[np.ndarray]:
    """Renders of one identity on every layout and background it allows (colour != background)."""
    sh, c, st, sub = ident
    return [render(Scene(sh, c, bg, p, sz, st, sub)) for bg in BACKGROUNDS if bg != c
            for p in POSITIONS for sz in SIZES]


def _jitter(x, gen, pad=2):
    """Shift by up to ``pad`` px; the border ring is pure background, so replicate-padding is exact."""
    n = len(x)
    xp = F.pad(x, (pad,) * 4, mode="replicate")
    dx, dy = (torch.randint(0, 2 * pad + 1, (2, n), generator=gen)).tolist()
    return torch.stack([xp[i, :, b:b + 32, a:a + 32] for i, (a, b) in enumerate(zip(dx, dy))])


def train_micro_dino(steps: int, batch_size: int = 64, seed: int = 0, device=None, log=print,
                     lr: float = 2e-3, temperature: float = 0.2, with_subjects: bool = True) -> MicroDino:
    """NT-Xent over ``batch_size`` distinct identities x 2 views.  Measured (H100, 2000-3000
    steps): identity top-1 0.99-1.00, same-identity cosine ~1.0 and other identities ~0 (even a
    yellow triangle vs the yellow star), so scores act as a soft identity match, not a graded
    likeness; temperature 0.5 was no more graded and lost accuracy (0.90)."""
    device, t0 = resolve(device), time.time()
    ids = identities(with_subjects)
    views = [_preprocess(_views(i), "cpu") for i in ids]
    torch.manual_seed(seed)
    model = MicroDino(with_subjects=with_subjects).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    gen, run, every = torch.Generator().manual_seed(seed), None, log_every(steps)
    b = min(batch_size, len(ids))
    for step in range(1, steps + 1):
        warmup_cosine(opt, lr, step, steps, warmup=50)
        pick = torch.randperm(len(ids), generator=gen)[:b].tolist()
        pairs = [views[i][torch.randperm(len(views[i]), generator=gen)[:2]] for i in pick]
        x = torch.cat([torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])])
        z = F.normalize(model.image_features(_noise(_jitter(x, gen), gen).to(device)), dim=-1)
        sim = z @ z.T / temperature
        sim.fill_diagonal_(float("-inf"))
        target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(device)
        loss = F.cross_entropy(sim, target)
        optimizer_step(opt, loss, model.parameters())
        run = loss.item() if run is None else 0.95 * run + 0.05 * loss.item()
        if step % every == 0 or step == steps:
            log(f"micro-dino step {step}/{steps}  loss {run:.3f}  {time.time() - t0:.0f}s")
    model.stats = {"steps": steps, "batch_size": b, "final_loss": run, "seconds": round(time.time() - t0, 2)}
    return model.eval()


def save_encoder(model: _Encoder, path) -> Path:
    """``path`` (.safetensors) plus the same name with .json: kind, config and stats.  The JSON is
    written first and the weights renamed into place last, so a weights file always has its config."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    meta = {"kind": model.kind, "config": model.config, "stats": model.stats}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    tmp.replace(path)
    model.weights_path = path.resolve()
    return path


def _load(path, kind: str, cls, device="cpu"):
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / (CLIP_FILE if kind == "micro-clip" else DINO_FILE)
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise DcoError(f"{kind} weights not found at {path} (or its .json); run `dcobench micro build` to train them")
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta.get("kind") != kind:
        raise DcoError(f"{path} holds a {meta.get('kind')!r} encoder, not {kind}; check the weights path")
    model = cls(**meta["config"])
    model.load_state_dict(load_file(str(path)))
    model.weights_path, model.stats = path.resolve(), meta.get("stats", {})
    return model.to(device).eval()


def load_micro_clip(path, device="cpu") -> MicroClip:
    return _load(path, "micro-clip", MicroClip, device)


def load_micro_dino(path, device="cpu") -> MicroDino:
    return _load(path, "micro-dino", MicroDino, device)


def _default(name: str) -> Path:
    return default_micro_dir() / "encoders" / name


def micro_clip_backbone(arch: str = "", weights: str = "", device: str = "cpu", where: str = "score"):
    """Registry entry ("micro-clip[@PATH]"); without a path, the shipped data/micro weights."""
    return load_micro_clip(weights or _default(CLIP_FILE), device)


def micro_dino_backbone(arch: str = "", weights: str = "", device: str = "cpu", where: str = "score"):
    return load_micro_dino(weights or _default(DINO_FILE), device)


_ATTRS = {"shape": SHAPES, "color": tuple(COLORS), "background": tuple(BACKGROUNDS),
          "position": POSITIONS, "size": SIZES, "style": STYLES}


def _variants(scene: Scene, attr: str) -> list[Scene]:
    """``scene`` with ``attr`` changed to each other valid value (one-attribute-off negatives)."""
    out = []
    for v in _ATTRS[attr]:
        if v != getattr(scene, attr):
            try:
                out.append(Scene(**{**scene.__dict__, attr: v}))
            except ValueError:  # colour == background
                pass
    return out


@torch.no_grad()
def retrieval_accuracy(clip: MicroClip, n: int = 200, seed: int = 12345) -> dict:
    """Zero-shot top-1 retrieval on fresh renders (all styles, no subjects).  For each scene the
    candidates are its own caption/image and every one-attribute-off variant: image->text picks
    the caption, text->image the render.  ``by_attr`` restricts candidates to one attribute."""
    scenes = [s for s in sample_scenes(4 * n, seed, pretraining=False) if s.subject is None][:n]
    groups = [(s, {a: _variants(s, a) for a in _ATTRS}) for s in scenes]
    uniq = list(dict.fromkeys([s for s, _ in groups] + [v for _, g in groups for vs in g.values() for v in vs]))
    where = {s: i for i, s in enumerate(uniq)}
    img = clip.embed_images([render(s) for s in uniq])
    txt = clip.embed_texts([clip_caption(s) for s in uniq])
    hits = {k: {a: [] for a in ["all", *_ATTRS]} for k in ("i2t", "t2i")}
    for s, g in groups:
        for a in ["all", *_ATTRS]:
            cand = [where[s]] + [where[v] for b, vs in g.items() if a in ("all", b) for v in vs]
            if len(cand) < 2:
                continue
            hits["i2t"][a].append(int((txt[cand] @ img[where[s]]).argmax()) == 0)
            hits["t2i"][a].append(int((img[cand] @ txt[where[s]]).argmax()) == 0)
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {"n": len(scenes), "seed": seed,
            "i2t_top1": mean(hits["i2t"]["all"]), "t2i_top1": mean(hits["t2i"]["all"]),
            "i2t_by_attr": {a: mean(hits["i2t"][a]) for a in _ATTRS},
            "t2i_by_attr": {a: mean(hits["t2i"][a]) for a in _ATTRS},
            "chance_all": mean([1 / (1 + sum(len(v) for v in g.values())) for _, g in groups])}


@torch.no_grad()
def identity_accuracy(dino: MicroDino, n: int = 200, seed: int = 12345) -> dict:
    """Top-1 identity retrieval: each query render (random layout and background) is matched
    against one render of every identity at another random layout/background."""
    rng = np.random.default_rng(seed)
    ids = identities(True)

    def draw(k):
        sh, c, st, sub = ids[k]
        bg = rng.choice([b for b in BACKGROUNDS if b != c])
        return render(Scene(sh, c, str(bg), str(rng.choice(POSITIONS)), str(rng.choice(SIZES)), st, sub))

    gallery = dino.embed_images([draw(k) for k in range(len(ids))])
    q_ids = rng.integers(len(ids), size=n)
    queries = dino.embed_images([draw(int(k)) for k in q_ids])
    sim = queries @ gallery.T
    hit = (sim.argmax(1).numpy() == q_ids)
    is_sub = np.array([ids[int(k)][3] is not None for k in q_ids])
    same = sim[torch.arange(n), torch.as_tensor(q_ids)]
    return {"n": n, "seed": seed, "identity_top1": float(hit.mean()),
            "subject_top1": float(hit[is_sub].mean()) if is_sub.any() else float("nan"),
            "chance": 1 / len(ids), "same_identity_cos": float(same.mean()),
            "other_identity_cos": float((sim.sum(1) - same).mean() / (len(ids) - 1))}


def build_encoders(out_dir, clip_steps: int, dino_steps: int, seed: int = 0, device=None, log=print,
                   eval_n: int = 200) -> dict:
    """Train, save (``out_dir/encoders/``) and evaluate both encoders; returns their stats."""
    folder = Path(out_dir) / "encoders"
    clip = train_micro_clip(clip_steps, seed=seed, device=device, log=log)
    dino = train_micro_dino(dino_steps, seed=seed, device=device, log=log)
    # Evaluate first so the JSON beside each weights file carries its quality numbers too.
    clip.stats.update(params=sum(p.numel() for p in clip.parameters()), **retrieval_accuracy(clip, eval_n, seed + 12345))
    dino.stats.update(params=sum(p.numel() for p in dino.parameters()), **identity_accuracy(dino, eval_n, seed + 12345))
    clip_stats = {**clip.stats, "path": str(save_encoder(clip.cpu(), folder / CLIP_FILE))}
    dino_stats = {**dino.stats, "path": str(save_encoder(dino.cpu(), folder / DINO_FILE))}
    log(f"micro-clip i2t {clip_stats['i2t_top1']:.2f} t2i {clip_stats['t2i_top1']:.2f}; "
        f"micro-dino identity {dino_stats['identity_top1']:.2f}")
    return {"clip": clip_stats, "dino": dino_stats}
