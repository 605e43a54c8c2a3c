"""Scoring stored images: batched embeddings, cached references, one row per image.

The scorer loads its backbones once (failing fast, before any training, when weights are
missing), embeds each reference image once per process, and embeds a cell's generated images in
batches. A cell gets `scores-<protocol id>.csv` (one row per image: cell, prompt, scored prompt,
seed, image path, every metric) and, in result.json, `metrics` (per-metric mean, std, n over its
images), `protocol` and `scores`. Rescoring under another protocol writes a new scores file.

A metric is either a `Metric` (embeds with a backbone) or a `Judge` (reads the images itself,
may abstain with NaN); the protocol records each judge by its own `describe()`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import torch

from .config import ScoreConfig
from .errors import DcoError
from .metrics import Judge, get_backbone
from .metrics.backbones import preprocess_threads
from .models.pipeline import resolve_device
from .registry import METRICS
from .store import RunDir, atomic_write_bytes, atomic_write_json, read_json
from .suites.base import base_prompt


def scored_prompt(prompt: str, identifier: str, class_noun: str, mode: str) -> str:
    if mode == "class_noun":
        return base_prompt(prompt, identifier, class_noun)
    return " ".join(re.sub(rf"\b{re.escape(identifier)}\b", " ", prompt).split()) if identifier else prompt


def read_rgb(path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise DcoError(f"{path}: cannot read image ({type(e).__name__}); replace it or rerun the cell")


class Scorer:
    def __init__(self, cfg: ScoreConfig, device: str = "cpu"):
        self.cfg, self.device = cfg, str(device)
        self.metrics = [METRICS.get(m) for m in cfg.metrics]
        self._backbones = {}
        self._refs: dict[tuple, torch.Tensor] = {}
        for role in dict.fromkeys(m.role for m in self.metrics if not isinstance(m, Judge)):
            self.backbone(role)

    def backbone(self, role: str):
        if role not in self._backbones:
            self._backbones[role] = get_backbone(getattr(self.cfg, role), self.device, where=f"score.{role}")
        return self._backbones[role]

    def protocol(self) -> dict:
        backbones = {}
        for role, bb in sorted(self._backbones.items()):
            entry = dict(bb.protocol())
            weights = str(entry.get("weights", ""))
            if weights and Path(weights).is_file():
                # where the file sits differs between machines; its name and sha256 say what it is
                entry["weights"] = Path(weights).name
            backbones[role] = entry
        proto = {
            "metrics": [m.name for m in self.metrics],
            "judges": {m.name: m.describe() for m in self.metrics if isinstance(m, Judge)},
            "backbones": backbones,
            "clip_t_prompt": self.cfg.clip_t_prompt,
            "scale": "raw cosine similarity in [-1, 1]",
            "image_metric": "per image: mean cosine to every reference; per cell: mean over images",
        }
        proto["id"] = hashlib.sha1(json.dumps(proto, sort_keys=True).encode()).hexdigest()[:10]
        return proto

    def _reference_embeddings(self, role: str, paths: list[str]) -> torch.Tensor:
        bb, missing, keys = self.backbone(role), [], []
        for p in paths:
            st = Path(p).stat()
            key = (role, str(Path(p).resolve()), st.st_size, st.st_mtime_ns)
            keys.append(key)
            if key not in self._refs:
                missing.append((key, p))
        if missing:
            emb = bb.embed_images([read_rgb(p) for _, p in missing], self.cfg.batch_size)
            for (key, _), e in zip(missing, emb):
                self._refs[key] = e
        return torch.stack([self._refs[k] for k in keys])

    def score_images(self, images: list[np.ndarray], texts: list[str], references: dict[str, list[str]],
                     prompts: list[str] | None = None, groups: list | None = None):
        """Per-image values of every metric that has what it needs: {metric: (N,) tensor}.
        `texts` are what CLIP-T scores; `prompts` the prompts as sampled (for judge metrics); `groups`
        which images share a prompt (DIV; default the prompts)."""
        emb = {}
        out = {}
        for m in self.metrics:
            if isinstance(m, Judge):
                values = m.judge_images(images, prompts if prompts is not None else texts)
                if not torch.isnan(values).all():
                    out[m.name] = values
                continue
            if m.against not in ("prompt", "seeds") and not references.get(m.against):
                continue
            if m.role not in emb:
                emb[m.role] = self.backbone(m.role).embed_images(images, self.cfg.batch_size)
            if m.against == "seeds":  # DIV: grouped by the prompt as sampled (its seeds)
                key = groups if groups is not None else prompts if prompts is not None else texts
                out[m.name] = m.per_group(emb[m.role], list(key))
                continue
            if m.against == "prompt":
                # a grid repeats each prompt over seeds: embed each distinct text once
                unique = list(dict.fromkeys(texts))
                emb_t = self.backbone(m.role).embed_texts(unique)
                other = emb_t[[unique.index(t) for t in texts]]
            else:
                other = self._reference_embeddings(m.role, references[m.against])
            out[m.name] = m.per_image(emb[m.role], other)
        return out

    def score_cell(self, cell_dir: Path, result: dict, manifest: dict) -> dict:
        """Score a cell's images; write its scores file; return the result.json fields to set."""
        import pandas as pd

        records = manifest["images"]
        paths = [cell_dir / r["file"] for r in records]
        threads = preprocess_threads(self.device)
        if threads:  # on a GPU, PNG decoding was a quarter of the scoring time: decode in parallel
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads) as pool:
                images = list(pool.map(read_rgb, paths))
        else:
            images = [read_rgb(p) for p in paths]
        ident, noun = result.get("identifier", ""), result.get("class_noun", "")
        texts = [scored_prompt(r["prompt"], ident, noun, self.cfg.clip_t_prompt) for r in records]
        if result.get("style_identifier"):  # a merge cell's prompt names the style's identifier too
            texts = [scored_prompt(t, result["style_identifier"], result.get("style_class_noun", ""),
                                   self.cfg.clip_t_prompt) for t in texts]
        style_refs = result.get("style_references") or (result["references"] if result.get("kind") == "style" else [])
        refs = {"references": result.get("references") or [], "style_references": style_refs}
        values = self.score_images(images, texts, refs, [r["prompt"] for r in records],
                                   groups=[r["prompt_index"] for r in records])
        proto = self.protocol()
        rows = pd.DataFrame({
            "cell_id": result["cell_id"],
            "prompt": [r["prompt"] for r in records],
            "scored_prompt": texts,
            "prompt_index": [r["prompt_index"] for r in records],
            "seed": [r["seed"] for r in records],
            "index": [r["index"] for r in records],
            "image": [r["file"] for r in records],
            **{k: v.numpy().astype(np.float64) for k, v in values.items()},
        })
        name = f"scores-{proto['id']}.csv"
        buf = io.StringIO()
        rows.to_csv(buf, index=False, float_format="%.6f")
        atomic_write_bytes(cell_dir / name, buf.getvalue().encode())
        # a judge may abstain on some images (NaN): a cell's figure is over the images it judged
        finite = {k: v[torch.isfinite(v)] for k, v in values.items()}
        metrics = {k: {"mean": float(v.mean()), "std": float(v.std(unbiased=False)), "n": int(v.numel())}
                   for k, v in finite.items() if v.numel()}
        return {"scores": name, "metrics": metrics, "protocol": proto}


def rescore(run_dir: str | Path, cfg: ScoreConfig, force: bool = False) -> dict:
    """Score every finished cell of a run under `cfg`, without retraining."""
    store = RunDir(run_dir)
    results = store.results()
    if not results:
        raise DcoError(f"{store.root}: no finished cells (no cells/*/result.json); run `dcobench run --out {store.root}` first")
    run_cfg = read_json(store.root / "run.json") if (store.root / "run.json").is_file() else {}
    scorer = Scorer(cfg, resolve_device(run_cfg.get("config", {}).get("device", "auto")))
    proto_id = scorer.protocol()["id"]
    stats = {"cells": len(results), "scored": 0, "skipped": 0, "protocol": proto_id}
    for result in results:
        cell_dir = store.cell(result["cell_id"])
        if not force and result.get("protocol", {}).get("id") == proto_id and (cell_dir / result.get("scores", "")).is_file():
            stats["skipped"] += 1
            continue
        result.update(scorer.score_cell(cell_dir, result, read_json(cell_dir / result["manifest"])))
        atomic_write_json(store.result_path(result["cell_id"]), result)
        stats["scored"] += 1
    return stats
