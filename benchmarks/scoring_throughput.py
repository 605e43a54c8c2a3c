"""Scoring throughput: dcobench's batched scorer against a naive per-image loop, side by side.

The naive loop is what a first script does: for every generated image, embed it alone and
re-embed every reference image, for each backbone. The scorer embeds generated images in batches
and each reference once. Both use real-size architectures (open_clip ViT-B-32 and timm
ViT-S/16 DINO at 224 px) with random weights, which cost the same as pretrained ones.

Times are this process's CPU time (`common.py`: other processes' load does not count); torch runs
on `--threads` threads (1 by default).

    .venv/bin/python benchmarks/scoring_throughput.py [--images 32] [--refs 4] [--seeds 4] [--threads 1] [--no-record]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import command, load_avg, machine, now, record, set_threads, today

from dcobench.config import ScoreConfig
from dcobench.scoring import Scorer


def naive(scorer: Scorer, images, texts, refs):
    out = {m.name: [] for m in scorer.metrics}
    for img, text in zip(images, texts):
        for m in scorer.metrics:
            bb = scorer.backbone(m.role)
            e = bb.embed_images([img], 1)
            if m.against == "prompt":
                out[m.name].append(float((e * bb.embed_texts([text])).sum()))
            else:
                r = torch.cat([bb.embed_images([x], 1) for x in refs])
                out[m.name].append(float((e @ r.T).mean()))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--refs", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=4, help="images per prompt in the grid")
    ap.add_argument("--size", type=int, default=64, help="generated image size in pixels (resized to 224)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    load0 = load_avg()
    set_threads(args.threads)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.images)]
    refs = [rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.refs)]
    # a prompt grid: every prompt is sampled with several seeds
    texts = [f"a photo of a dog in scene {i // args.seeds}" for i in range(args.images)]
    cfg = ScoreConfig(metrics=["dino", "clip_i", "clip_t"], clip="openclip:ViT-B-32@random",
                      dino="timm:vit_small_patch16_224.dino@random")
    scorer = Scorer(cfg)
    # warm up both paths once (allocator, thread pools) so neither pays first-call costs
    naive(scorer, images[:1], texts[:1], refs[:1])

    import tempfile
    from pathlib import Path

    from PIL import Image

    tmp = Path(tempfile.mkdtemp())
    ref_paths = []
    for i, r in enumerate(refs):
        ref_paths.append(str(tmp / f"r{i}.png"))
        Image.fromarray(r).save(ref_paths[-1])

    t0 = now()
    slow = naive(scorer, images, texts, refs)
    t_naive = now() - t0
    t0 = now()
    fast = scorer.score_images(images, texts, {"references": ref_paths})
    t_fast = now() - t0
    for k in slow:
        assert np.allclose(slow[k], fast[k].numpy(), atol=1e-4), k  # same numbers, only faster
    n = args.images
    print(f"images={n} refs={args.refs} backbones=ViT-B-32 + ViT-S/16 (224 px, random weights), "
          f"threads={torch.get_num_threads()}")
    print("times are this process's CPU seconds (benchmarks/common.py)")
    print(f"naive loop : {t_naive:7.2f} s  {n / t_naive:6.2f} images/s")
    print(f"scorer     : {t_fast:7.2f} s  {n / t_fast:6.2f} images/s")
    speedup = t_naive / t_fast
    print(f"speed-up   : {speedup:.1f}x (goal >= 3x: {'met' if speedup >= 3 else 'MISSED'})")
    if not args.no_record:
        record("Scoring throughput (issue: scoring and reports)", "", [], [[
            today(), f"{machine(torch.get_num_threads())}, load average {load0} -> {load_avg()}, `{command()}`",
            f"{t_naive:.2f} CPU s ({n / t_naive:.2f} images/s)", f"{t_fast:.2f} CPU s ({n / t_fast:.2f} images/s)",
            f"**{speedup:.1f}x** (target >= 3x: {'met' if speedup >= 3 else 'MISSED'})"]])


if __name__ == "__main__":
    main()
