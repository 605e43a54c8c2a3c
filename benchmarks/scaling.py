"""How cost grows: training-step time and peak memory against batch size and resolution, and a
run's wall time against its number of cells. Writes `benchmarks/scaling.png`.

1. Training step (DreamBooth and DCO through `train_lora`) at batch 1, 4, 16 on the micro model
   (32 px) and the tiny SD1.5 pipeline (64 px), and at 128 px on tiny SD (batch 1; `--full` adds
   batch 4 and 16). Each point runs in a fresh process (`--child`): the models are built, the
   resident high-water mark is reset, then one warm-up and `--steps` timed steps of each method
   run; peak memory is the process's peak resident set during that work, and "step memory" is that
   peak minus the resident set before it (what the step itself needs on top of the models).
2. `dcobench run --suite tiny` with 1, 8 and 32 cells, as subprocesses, each into a fresh folder:
   - DCO cells that differ only in a sampling knob (`sample.w_con`): one LoRA is trained and every
     further cell only samples and scores, so the wall time grows by the cost of a sampling-only
     cell;
   - DreamBooth with prior preservation (8 class images) over a sampling knob: one LoRA and one
     set of class images, generated once and reused by every cell; then the 1-cell run again into a
     new folder, whose class images come from the cache.

    python benchmarks/scaling.py [--steps 3] [--full] [--threads 1]   (--replot redraws from scaling.json)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    HERE,
    command,
    load_avg,
    machine,
    now,
    peak_mb,
    record,
    reset_peak,
    rss_mb,
    run_child,
    set_threads,
    setup,
    table,
    today,
)

DATA = HERE / "scaling.json"  # the figures behind scaling.png, from the last run
POINTS = [("micro", 32, b) for b in (1, 4, 16)] + [("tiny-sd", 64, b) for b in (1, 4, 16)] + [("tiny-sd", 128, 1)]
FULL = [("tiny-sd", 128, 4), ("tiny-sd", 128, 16)]


def child(spec: dict) -> dict:
    """One point, in this (fresh) process: DreamBooth then DCO, time and peak memory of each."""
    from baselines.dreambooth import DreamBooth
    from dcobench.lora import remove_training_adapter
    from dcobench.methods.dco import DCO
    from dcobench.trainer import train_lora

    set_threads(spec["threads"])
    s = setup(spec["model"], spec["resolution"], spec["batch"])
    base = rss_mb()
    out = {"base_rss_mb": round(base, 1), "peak_reset": True}
    for objective in (DreamBooth(), DCO()):
        out["peak_reset"] &= reset_peak()
        marks = []
        train_lora(s.pipe, s.cond, s.latents, s.subject, objective, s.train_config(1 + spec["steps"]), 0,
                   on_step=lambda step, logs: marks.append(now()))
        remove_training_adapter(s.pipe.unet)
        out[objective.name] = {"ms": round(1000 * (marks[-1] - marks[0]) / (len(marks) - 1), 1),
                               "peak_mb": round(peak_mb(), 1), "step_mb": round(peak_mb() - base, 1)}
    return out


def step_points(points, steps: int, threads: int) -> list[dict]:
    rows = []
    for model, res, batch in points:
        r = run_child(Path(__file__), {"model": model, "resolution": res, "batch": batch, "steps": steps,
                                       "threads": threads}, timeout=1800)
        rows.append({"model": model, "resolution": res, "batch": batch, **r})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def dcobench_run(out: Path, cache: Path, overrides: list[str]) -> tuple[float, float, int]:
    """Wall and CPU seconds of one `dcobench run` subprocess (one torch thread), and the
    class-image sets it generated."""
    env = dict(os.environ, DCOBENCH_CACHE=str(cache), OMP_NUM_THREADS="1")
    before, cpu0 = class_sets(cache), children_cpu()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dcobench", "run", "--suite", "tiny", "--out", str(out), "--quiet",
                    "subjects=[robot]", "seeds=[0]", *overrides], check=True, env=env, capture_output=True)
    return time.perf_counter() - start, children_cpu() - cpu0, class_sets(cache) - before


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def class_sets(cache: Path) -> int:
    folder = cache / "class_images"
    return len([d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]) if folder.is_dir() else 0


def knob_values(n: int) -> str:
    return "[" + ", ".join(f"{1.0 + 0.25 * k:g}" for k in range(n)) + "]"


def cell_points(full: bool) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="dcobench-bench-cells-"))
    cache = work / "cache"
    # builds the tiny model, subjects and encoders once, outside every timed run
    dcobench_run(work / "warm", cache, ["--methods", "dco", "methods.dco.sweep={sample.w_con: [1.0]}"])
    pp = ["--methods", "dreambooth_pp", "methods.dreambooth_pp.num_class_images=8"]
    runs = [("dco, one LoRA", n, ["--methods", "dco", f"methods.dco.sweep={{sample.w_con: {knob_values(n)}}}"])
            for n in (1, 8, 32)]
    runs += [("dreambooth_pp, one LoRA, 8 class images", n,
              [*pp, f"methods.dreambooth_pp.sweep={{sample.cfg_scale: {knob_values(n)}}}"])
             for n in ((1, 8, 32) if full else (1, 8))]
    rows = []
    for series, n, overrides in runs:
        if series.startswith("dreambooth_pp"):
            shutil.rmtree(cache / "class_images", ignore_errors=True)  # each such run starts without class images
        out = work / f"{series.split(',')[0]}-{n}"
        rows.append(_cell_row(series, n, *dcobench_run(out, cache, overrides), out))
    # a new run folder with the class images already in the cache
    out = work / "pp-again"
    again = dcobench_run(out, cache, [*pp, f"methods.dreambooth_pp.sweep={{sample.cfg_scale: {knob_values(1)}}}"])
    rows.append(_cell_row("dreambooth_pp, class images in the cache", 1, *again, out))
    shutil.rmtree(work, ignore_errors=True)
    return rows


def _cell_row(series: str, n: int, wall: float, cpu: float, generated: int, out: Path) -> dict:
    cells = len(list((out / "cells").glob("*/result.json")))
    loras = len(list((out / "loras").glob("*/train.json")))
    row = {"series": series, "cells": cells, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "loras": loras,
           "class_image_sets": generated}
    print(json.dumps(row), flush=True)
    return row


def plot(steps: list[dict], cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 8.5))
    for model, res in sorted({(r["model"], r["resolution"]) for r in steps}):
        pts = sorted((r for r in steps if r["model"] == model and r["resolution"] == res), key=lambda r: r["batch"])
        if len(pts) < 2:
            continue
        for method, style in (("dreambooth", "--"), ("dco", "-")):
            b = [r["batch"] for r in pts]
            ax[0, 0].plot(b, [r[method]["ms"] for r in pts], style, marker="o", label=f"{model} {res}px {method}")
            ax[0, 1].plot(b, [r[method]["step_mb"] for r in pts], style, marker="o", label=f"{model} {res}px {method}")
    for a, what in ((ax[0, 0], "CPU ms per training step"), (ax[0, 1], "step memory above the models (MB)")):
        a.set(xscale="log", yscale="log", xlabel="batch size", ylabel=what, xticks=[1, 4, 16],
              xticklabels=["1", "4", "16"])
        a.legend(fontsize=7)
    by_res = sorted((r for r in steps if r["batch"] == 1), key=lambda r: (r["model"], r["resolution"]))
    labels = [f"{r['model']}\n{r['resolution']}px" for r in by_res]
    x = range(len(by_res))
    ax[1, 0].bar([i - 0.2 for i in x], [r["dco"]["ms"] for r in by_res], 0.4, label="DCO ms/step")
    ax[1, 0].bar([i + 0.2 for i in x], [r["dreambooth"]["ms"] for r in by_res], 0.4, label="DreamBooth ms/step")
    twin = ax[1, 0].twinx()
    mem = [r["dco"]["step_mb"] for r in by_res]
    twin.plot(list(x), mem, "k^-", markersize=9, label="DCO step memory (MB)")
    twin.set_ylim(min(mem) / 2, max(mem) * 2)
    ax[1, 0].set(xticks=list(x), xticklabels=labels, ylabel="CPU ms per step (batch 1)", yscale="log")
    twin.set(ylabel="step memory above the models (MB)", yscale="log")
    ax[1, 0].legend(fontsize=7, loc="upper left")
    twin.legend(fontsize=7, loc="upper right")
    for series in dict.fromkeys(r["series"] for r in cells):
        pts = [r for r in cells if r["series"] == series]
        ax[1, 1].plot([r["cells"] for r in pts], [r["cpu_s"] for r in pts], marker="o", label=series)
    ax[1, 1].set(xlabel="cells in the run", ylabel="CPU time of `dcobench run` (s, one thread)", xticks=[1, 8, 32])
    ax[1, 1].legend(fontsize=7)
    fig.suptitle("dcobench scaling on the CPU (benchmarks/scaling.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="also tiny SD 128 px at batch 4 and 16, and 32 prior cells")
    ap.add_argument("--skip-cells", action="store_true", help="only the step points")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    ap.add_argument("--replot", action="store_true", help="redraw scaling.png from scaling.json; measure nothing")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.replot:
        data = json.loads(DATA.read_text())
        plot(data["steps"], data["cells"], HERE / "scaling.png")
        return
    threads = set_threads(args.threads)
    load0 = load_avg()
    steps = step_points(POINTS + (FULL if args.full else []), args.steps, threads)
    load1 = load_avg()
    cells = [] if args.skip_cells else cell_points(args.full)
    load2 = load_avg()
    step_header = ["model", "px", "batch", "DreamBooth CPU ms/step", "DCO CPU ms/step", "DreamBooth peak RSS MB",
                   "DCO peak RSS MB", "DreamBooth step MB", "DCO step MB"]
    step_rows = [[r["model"], r["resolution"], r["batch"], r["dreambooth"]["ms"], r["dco"]["ms"],
                  r["dreambooth"]["peak_mb"], r["dco"]["peak_mb"], r["dreambooth"]["step_mb"], r["dco"]["step_mb"]]
                 for r in steps]
    print(table(step_header, step_rows))
    base = {r["series"]: r["cpu_s"] for r in cells if r["cells"] == 1 and "cache" not in r["series"]}
    cell_header = ["series", "cells", "wall s", "CPU s", "LoRAs trained", "class-image sets generated",
                   "marginal CPU s per added cell"]
    cell_rows = []
    for r in cells:
        marginal = (r["cpu_s"] - base[r["series"]]) / (r["cells"] - 1) if r["cells"] > 1 else None
        cell_rows.append([r["series"], r["cells"], r["wall_s"], r["cpu_s"], r["loras"], r["class_image_sets"],
                          "" if marginal is None else f"{marginal:.2f}"])
    if cells:
        print(table(cell_header, cell_rows))
    print(f"load average {load0} -> {load1} -> {load2}; {machine(threads)}")
    DATA.write_text(json.dumps({"date": today(), "command": command(), "steps": steps, "cells": cells}, indent=1))
    plot(steps, cells, HERE / "scaling.png")
    if not args.no_record:
        meta = [today(), machine(threads), f"`{command()}`"]
        record("Scaling: training step against batch size and resolution (issue 14, item 4)", STEP_INTRO,
               ["date", "machine", "load avg", "command", *step_header],
               [[*meta[:2], f"{load0} -> {load1}", meta[2], *r] for r in step_rows])
        if cells:
            record("Scaling: run wall time against cells (issue 14, item 4)", CELL_INTRO,
                   ["date", "machine", "load avg", "command", *cell_header],
                   [[*meta[:2], f"{load1} -> {load2}", meta[2], *r] for r in cell_rows])


STEP_INTRO = """\
`benchmarks/scaling.py` (plotted in `benchmarks/scaling.png`): CPU ms per training step (one torch
thread) through `train_lora` (the mean of the timed steps after one warm-up step) and peak resident memory,
each point in a fresh process on models built from configs. "peak RSS" is the process's resident
high-water mark during the training (reset after the models were built); "step MB" is that peak
minus the resident set before training, i.e. what the step needs on top of the models. The
points run one after another, so background load moves them more than it moves the side-by-side
ratios above."""

CELL_INTRO = """\
`benchmarks/scaling.py`: wall and CPU time (one torch thread) of `dcobench run --suite tiny
subjects=[robot] seeds=[0]` (a subprocess, fresh run folder, tiny model and encoders already
built) against its number of cells.
The cells differ only in a sampling knob, so one LoRA is trained and reused; DreamBooth with prior
preservation also generates its 8 class images once per run and every cell reuses them; its last
row is a new run folder whose class images come from the cache. "marginal CPU s per added cell" is
(CPU s - CPU s of the 1-cell run) / (cells - 1): the cost of a sampling-only cell."""


if __name__ == "__main__":
    main()
