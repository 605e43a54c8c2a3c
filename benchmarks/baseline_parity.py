"""Baseline parity (issue 21): dcobench's DreamBooth LoRA against diffusers' reference trainer,
`examples/dreambooth/train_dreambooth_lora.py` (vendored in `third_party/`, see its header), trained
with the same settings on the micro world and sampled and scored the same way.

A benchmark that favours its own method through a weak baseline is worthless, so dcobench's
DreamBooth must be as strong as the script users would run instead. Per subject and training seed
(a unit):

1. **dcobench.** `dcobench run --methods dreambooth` with attention-only LoRA targets, one template
   caption "a {identifier} {class_noun}" for every reference, rank 8, alpha 8, lr 1e-3, 400 steps,
   batch 4, resolution 32, that seed, swept over CFG 1.5 / 2 / 3 / 5 (the micro suite's sweep), into
   `OUT/dcobench/` (an ordinary run folder).
2. **The script.** The vendored script in a subprocess on the subject's 4 reference images with the
   same settings (`script_command`: every flag that has a counterpart in dcobench's trainer is set to
   dcobench's value). Its output folder, untouched, becomes `OUT/script/loras/<train_id>/`: the train
   id of the same unit in dcobench's plan, so `dcobench.runner.run_plan` on the same plan finds the
   LoRA "already trained" and only samples and scores it. Besides the script's own files
   (`pytorch_lora_weights.safetensors`, its tensorboard `logs/`) the folder gets `script.log` and
   `train.json`, whose presence marks a LoRA final in dcobench's store: it records the command,
   the wall time and the script's per-step losses (read back from its tensorboard log), and says
   where the LoRA came from (`"trainer": "diffusers train_dreambooth_lora.py"`).
3. **Sampling and scoring.** Both folders go through the same `run_plan` of the same plan: the same
   prompts, sampling seeds, CFG values, sampler, scorer and protocol; the LoRA file is loaded with
   `load_lora_weights` as in every dcobench cell. (The script saves no alpha; the loader then takes
   alpha = rank, which is the script's own convention `lora_alpha=args.rank`, so scale 1 as
   dcobench's alpha 8 / rank 8.)
4. **Statistics** (`dcobench.study.stats`). Per judge (oracle_subject, dino, clip_i, clip_t) and CFG
   point: each side's mean over the units, and the paired difference script - dcobench per unit,
   averaged within subject, with a 95% t-interval over the subjects (`paired_difference`); the same
   over every CFG point (each unit's mean over its four cells); and the frontier difference ΔHV
   (script - dcobench, `frontier_difference`) of oracle_subject, dino and clip_i against clip_t.
   An interval that contains 0 reads "no difference at this n" and states the largest effect it
   leaves open (`bound`).

Both sides are resumable: a finished dcobench cell, a placed script LoRA and a scored script cell are
skipped on a rerun. The results are written atomically to OUT/parity.json and OUT/parity.md, with
side-by-side image sheets OUT/sheets/<subject>-s<seed>-cfg<scale>.png (top row dcobench, bottom row
the script; same prompts and sampling seeds).

    OMP_NUM_THREADS=1 python benchmarks/baseline_parity.py [--out runs/baseline-parity] [--subjects tent,quilt,badge]
        [--seeds 0,1] [--steps 400] [--threads 1]

CPU results are bit-identical only at a fixed thread count: `--threads` (default 1) sets torch's
threads here and OMP_NUM_THREADS for the script's process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPT = HERE / "third_party" / "train_dreambooth_lora.py"
SCRIPT_SOURCE = ("https://github.com/huggingface/diffusers/blob/v0.40.0/examples/dreambooth/train_dreambooth_lora.py "
                 "(tag v0.40.0, commit d035dcd7cc7c88e0a154609b62887d50bba9fdc2)")
JUDGES = ["oracle_subject", "dino", "clip_i", "clip_t"]
FRONTIER_Y = ["oracle_subject", "dino", "clip_i"]
X = "clip_t"
TEMPLATE = "a {identifier} {class_noun}"
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
IMPLS = ("dcobench", "script")
for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(key, "1")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "baseline-parity")
    p.add_argument("--subjects", default="tent,quilt,badge")
    p.add_argument("--seeds", default="0,1", help="training seeds")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--rank", type=int, default=8, help="the script ties alpha to rank (lora_alpha=args.rank)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--cfg", default="1.5,2.0,3.0,5.0", help="CFG scales swept at sampling")
    p.add_argument("--sample-steps", type=int, default=0, help="0: the suite's (20)")
    p.add_argument("--sample-seeds", default="", help="empty: the suite's (0,1)")
    p.add_argument("--max-prompts", type=int, default=0, help="0: every evaluation prompt (8)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def overrides(args, subject: str, seed: int) -> list[str]:
    """The dcobench run of one unit: DreamBooth with the settings the script is given."""
    out = [f"subjects=[{subject}]", f"seeds=[{seed}]", f"train.target_modules=[{','.join(TARGETS)}]",
           "train.captions=template", f"train.caption_template={TEMPLATE}", f"train.rank={args.rank}",
           f"train.alpha={float(args.rank)}", f"train.lr={args.lr}", f"train.steps={args.steps}",
           f"train.batch_size={args.batch_size}", "train.max_grad_norm=1.0", "train.weight_decay=0.01",
           "train.offset_noise=0.0", "train.snr_gamma=0.0", "train.mixed_precision=no", "train.optimizer=adamw",
           f"methods.dreambooth.sweep={{sample.cfg_scale: [{', '.join(str(float(c)) for c in args.cfg.split(','))}]}}"]
    if args.sample_steps:
        out.append(f"sample.steps={args.sample_steps}")
    if args.sample_seeds:
        out.append(f"sample.seeds=[{args.sample_seeds}]")
    if args.max_prompts:
        out.append(f"sample.max_prompts={args.max_prompts}")
    return out


def unit_plan(args, subject: str, seed: int):
    from dcobench.plan import make_plan

    plan = make_plan(None, overrides(args, subject, seed), ["dreambooth"], "micro")
    (unit,) = plan.units()
    (train_id,) = unit.train_ids
    return plan, unit.cells[0], train_id


def script_command(cell, images_dir: Path, out_dir: Path, log_dir: str = "logs") -> list[str]:
    """The script's command line for one unit; every flag with a dcobench counterpart takes its value."""
    t = cell.train
    if t.alpha != t.rank:
        raise SystemExit(f"train.alpha={t.alpha} != train.rank={t.rank}: the script ties alpha to rank")
    captions = set(cell.training_subject().captions)
    if len(captions) != 1:
        raise SystemExit(f"the script trains on one instance prompt; the cell has {len(captions)} captions")
    return [sys.executable, str(SCRIPT.relative_to(ROOT)),
            "--pretrained_model_name_or_path", str(cell.suite.model),
            "--instance_data_dir", str(images_dir), "--instance_prompt", captions.pop(),
            "--output_dir", str(out_dir), "--logging_dir", log_dir, "--report_to", "tensorboard",
            "--resolution", str(t.resolution), "--center_crop", "--image_interpolation_mode", "bicubic",
            "--train_batch_size", str(t.batch_size), "--gradient_accumulation_steps", str(t.grad_accum),
            "--max_train_steps", str(t.steps), "--checkpointing_steps", str(t.steps + 1),
            "--learning_rate", str(t.lr), "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
            "--adam_beta1", "0.9", "--adam_beta2", "0.999", "--adam_weight_decay", str(t.weight_decay),
            "--adam_epsilon", "1e-08", "--max_grad_norm", str(t.max_grad_norm),
            "--rank", str(t.rank), "--lora_dropout", "0.0", "--mixed_precision", t.mixed_precision,
            "--seed", str(cell.seed), "--dataloader_num_workers", "0"]


def script_losses(folder: Path) -> list[float]:
    """The script's per-step training loss, from the tensorboard log accelerate wrote."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return []
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if "loss" in acc.Tags().get("scalars", []):
            return [round(float(e.value), 6) for e in sorted(acc.Scalars("loss"), key=lambda e: e.step)]
    return []


def train_with_script(cell, store, train_id: str, threads: int) -> float:
    """Run the script for the unit into store.lora(train_id), atomically; returns its wall seconds."""
    from dcobench.locks import Locks
    from dcobench.store import atomic_folder, atomic_write_bytes, atomic_write_json, provenance

    folder = store.lora(train_id)
    with Locks(store.root).hold("train", train_id):
        if (folder / "train.json").is_file():
            return read_train(folder)["seconds"]
        images = store.root / "instance" / cell.subject.name  # only the reference images: the script reads every file
        if not images.is_dir():
            with atomic_folder(images) as tmp:
                for p in cell.subject.images:
                    shutil.copy2(p, tmp / Path(p).name)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        with atomic_folder(folder) as tmp:
            cmd = script_command(cell, images.resolve(), tmp.resolve())
            start = time.perf_counter()
            run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            atomic_write_bytes(tmp / "script.log", (run.stdout + run.stderr).encode())
            if run.returncode != 0 or not (tmp / "pytorch_lora_weights.safetensors").is_file():
                tail = "\n".join((run.stdout + run.stderr).splitlines()[-30:])
                raise SystemExit(f"the script failed for {train_id} (exit {run.returncode}):\n{tail}")
            shown = [Path(c).name if c == str(tmp.resolve()) else c for c in cmd]
            shown[shown.index("--output_dir") + 1] = f"<run>/loras/{train_id}"
            losses = script_losses(tmp)
            atomic_write_json(tmp / "train.json", {
                "train_id": train_id, "trainer": "diffusers train_dreambooth_lora.py", "source": SCRIPT_SOURCE,
                "command": "python " + shlex.join(shown[1:]), "threads": threads, "config": cell.train_identity(),
                "losses": losses, "last": {"loss": losses[-1]} if losses else {}, "seconds": round(seconds, 3),
                "steps": cell.train.steps, "provenance": provenance(),
            })
    return seconds


def read_train(folder: Path) -> dict:
    return json.loads((folder / "train.json").read_text())


def run_unit(args, subject: str, seed: int) -> dict:
    from dcobench.runner import run_plan
    from dcobench.store import RunDir

    plan, cell, train_id = unit_plan(args, subject, seed)
    show = not args.quiet
    t0 = time.perf_counter()
    run_plan(plan, args.out / "dcobench", show_progress=show)
    t1 = time.perf_counter()
    store = RunDir(args.out / "script")
    store.root.mkdir(parents=True, exist_ok=True)
    train_with_script(cell, store, train_id, args.threads)
    if not (store.lora(train_id) / "train.json").is_file():  # run_plan must never train this side itself
        raise SystemExit(f"{store.lora(train_id)}: the script's LoRA is missing")
    run_plan(plan, store.root, show_progress=show)
    t2 = time.perf_counter()
    return {"subject": subject, "seed": seed, "train_id": train_id, "cells": [c.cell_id for c in plan.cells],
            "wall_s_this_invocation": {"dcobench": round(t1 - t0, 1), "script": round(t2 - t1, 1)}}


# ------------------------------------------------------------------------------------------------
# statistics and the report


def clean(obj):
    """JSON-safe: NaN -> None, tuple keys -> 'subject/seed'."""
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else round(obj, 6)
    if isinstance(obj, dict):
        return {("/".join(map(str, k)) if isinstance(k, tuple) else str(k)): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item"):
        return clean(obj.item())
    return obj


def load(args, units: list[dict]):
    import pandas as pd

    from dcobench.report.collect import load_cells

    wanted = {c for u in units for c in u["cells"]}
    parts = []
    for impl in IMPLS:
        df = load_cells(args.out / impl)
        df = df[df["cell_id"].isin(wanted)].assign(impl=impl)
        missing = wanted - set(df["cell_id"])
        if missing:
            raise SystemExit(f"{args.out / impl}: {len(missing)} cells without a result, e.g. {sorted(missing)[0]}")
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def analyse(args, units: list[dict]) -> dict:
    from dcobench.report.tables import mean_ci
    from dcobench.study.stats import frontier_difference, paired_difference

    df = load(args, units)
    cfgs = sorted(df["knob_value"].unique())
    rows = []
    for judge in JUDGES:
        for cfg in [*cfgs, None]:
            part = df if cfg is None else df[df["knob_value"] == cfg]
            row = {"judge": judge, "cfg": cfg if cfg is None else float(cfg)}
            for impl in IMPLS:  # each side's mean over units (a unit's mean over its CFG cells when pooled)
                per_unit = part[part["impl"] == impl].groupby(["subject", "seed"])[judge].mean()
                mean, half, n = mean_ci(per_unit.tolist())
                row[impl] = {"mean": mean, "half_width": half, "n": n}
            sel = {} if cfg is None else {"knob_value": cfg}
            row["diff"] = paired_difference(part, {"impl": "dcobench", **sel}, {"impl": "script", **sel}, judge,
                                            "script", units=("subject", "seed"))
            rows.append(row)
    frontier = [{"y": y, "x": X, **frontier_difference(df, "script", "dcobench", X, y, group="impl")}
                for y in FRONTIER_Y]
    noise = []  # for scale: how far two trainings of one subject land apart, by trainer vs by seed
    unit_means = df.groupby(["impl", "subject", "seed"])[JUDGES].mean()
    for judge in JUDGES:
        rec = {"judge": judge}
        for impl in IMPLS:
            per = unit_means.loc[impl, judge]
            gaps = [abs(a - b) for _, g in per.groupby(level=0) for a, b in itertools.combinations(g.tolist(), 2)]
            rec[f"{impl}_seed_gap"] = sum(gaps) / len(gaps) if gaps else math.nan
        cross = (unit_means.loc["script", judge] - unit_means.loc["dcobench", judge]).abs()
        rec["trainer_gap"] = float(cross.mean())
        noise.append(rec)
    training = []
    for u in units:
        rec = {"subject": u["subject"], "seed": u["seed"]}
        for impl in IMPLS:
            info = read_train(args.out / impl / "loras" / u["train_id"])
            tail = info["losses"][-100:]
            rec[impl] = {"seconds": info["seconds"], "loss_last100": sum(tail) / len(tail) if tail else None}
        training.append(rec)
    return {"rows": rows, "frontier": frontier, "noise": noise, "training": training, "cfgs": [float(c) for c in cfgs]}


def fmt(x, nd=3, sign=False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}"


def interval(d: dict) -> str:
    if d["ci_low"] is None or not math.isfinite(d["ci_low"]):
        return f"{fmt(d['estimate'], sign=True)} (n={d['n']}, no interval)"
    return f"{fmt(d['estimate'], sign=True)} [{fmt(d['ci_low'], sign=True)}, {fmt(d['ci_high'], sign=True)}]"


def open_bound(d: dict) -> str:
    return fmt(d["bound"]) if d["verdict"].startswith("no difference") else "–"


def markdown(args, res: dict, units: list[dict], argv: list[str]) -> str:
    from common import machine, table

    n_sub = len({u["subject"] for u in units})
    n_seed = len({u["seed"] for u in units})
    head = ["judge", "CFG", "dcobench mean ± CI", "script mean ± CI", "Δ script − dcobench [95% CI]",
            "no difference larger than", "verdict"]
    body = []
    for r in res["rows"]:
        side = [f"{fmt(r[i]['mean'])} ± {fmt(r[i]['half_width'])}" for i in IMPLS]
        body.append([r["judge"], "all" if r["cfg"] is None else f"{r['cfg']:g}", *side, interval(r["diff"]),
                     open_bound(r["diff"]), r["diff"]["verdict"]])
    fr = [[f["y"], f["x"], interval(f), open_bound(f), f["verdict"]] for f in res["frontier"]]
    tr = [[u["subject"], u["seed"], fmt(u["dcobench"]["loss_last100"], 4), fmt(u["script"]["loss_last100"], 4),
           fmt(u["dcobench"]["seconds"], 1), fmt(u["script"]["seconds"], 1)] for u in res["training"]]
    ahead = [r for r in res["rows"] if not r["diff"]["verdict"].startswith("no difference")] + \
            [f for f in res["frontier"] if not f["verdict"].startswith("no difference")]
    verdict = "no difference on every judge, CFG point and frontier" if not ahead else \
        f"{len(ahead)} row(s) not 'no difference': " + "; ".join(
            f"{r.get('judge', r.get('y'))} cfg {r.get('cfg', 'ΔHV')}: {r.get('diff', r).get('verdict')}" for r in ahead)
    return "\n".join([
        "# Baseline parity: dcobench DreamBooth vs diffusers' train_dreambooth_lora.py", "",
        f"Command: `OMP_NUM_THREADS={args.threads} python benchmarks/baseline_parity.py {' '.join(argv)}`".rstrip(),
        f"Machine: {machine(args.threads)}. Script: {SCRIPT_SOURCE}.", "",
        f"{n_sub} subjects × {n_seed} training seeds; means are over the {len(units)} units (pooled: each unit's "
        "mean over its CFG cells) ± 95% t half-width; differences are per unit, averaged within subject, with a 95% "
        f"t-interval over the {n_sub} subjects (`dcobench.study.stats`).", "",
        f"**Verdict: {verdict}.**", "", table(head, body), "",
        "Frontier difference ΔHV (script − dcobench; hypervolume of each side's CFG sweep, subject judge vs CLIP-T):",
        "", table(["judge", "against", "ΔHV [95% CI]", "no difference larger than", "verdict"], fr), "",
        "For scale, mean |difference| of a judge (each unit's mean over its CFG cells): the two trainers on the "
        "same subject and seed, against two training seeds of one trainer on the same subject (between two seeds when there are more):", "",
        table(["judge", "script vs dcobench, same seed", "seed 0 vs 1, dcobench", "seed 0 vs 1, script"],
              [[n["judge"], fmt(n["trainer_gap"]), fmt(n["dcobench_seed_gap"]), fmt(n["script_seed_gap"])]
               for n in res["noise"]]), "",
        "Training: mean loss over the last 100 steps, and wall seconds (the script's include its start-up and "
        "model loading):", "",
        table(["subject", "seed", "dcobench loss", "script loss", "dcobench s", "script s"], tr), "",
    ])


def sheets(args, units: list[dict]) -> None:
    """Side by side, per unit and CFG: dcobench's images (top row) over the script's (bottom row)."""
    import numpy as np
    from PIL import Image

    from dcobench.store import atomic_save_image

    for u in units:
        for cell_id in u["cells"]:
            rows = []
            for impl in IMPLS:
                result = json.loads((args.out / impl / "cells" / cell_id / "result.json").read_text())
                rows.append(np.concatenate([np.asarray(Image.open(args.out / impl / "cells" / cell_id / f).convert("RGB"))
                                            for f in result["images"]], axis=1))
            grid = np.concatenate(rows, axis=0).repeat(4, axis=0).repeat(4, axis=1)
            cfg = result["guidance"]["cfg_scale"]
            atomic_save_image(args.out / "sheets" / f"{u['subject']}-s{u['seed']}-cfg{cfg:g}.png", grid)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.out = args.out.resolve()
    import torch

    from dcobench.store import atomic_write_bytes, atomic_write_json

    torch.set_num_threads(args.threads)
    units = []
    for subject in args.subjects.split(","):
        for seed in ints(args.seeds):
            start = time.perf_counter()
            units.append(run_unit(args, subject, seed))
            print(f"unit {subject} seed {seed}: {time.perf_counter() - start:.0f} s "
                  f"(dcobench {units[-1]['wall_s_this_invocation']['dcobench']} s, script "
              f"{units[-1]['wall_s_this_invocation']['script']} s)",
                  flush=True)
    res = analyse(args, units)
    sheets(args, units)
    md = markdown(args, res, units, argv)
    atomic_write_json(args.out / "parity.json", clean({
        "command": f"OMP_NUM_THREADS={args.threads} python benchmarks/baseline_parity.py {' '.join(argv)}".rstrip(),
        "threads": args.threads, "script": SCRIPT_SOURCE, "units": units, **res}))
    atomic_write_bytes(args.out / "parity.md", md.encode())
    print(md)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
