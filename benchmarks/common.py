"""What every CPU benchmark here shares: fair timing on a shared machine, peak memory, small
models, and dated rows in RESULTS.md.

Fairness on a busy 2-core box: both sides of a ratio run in one process, in alternating order
(A B, B A, A B, ...), and each side's figure is the median of its rounds, so background load hits
both sides alike. Times are this process's CPU time (`time.process_time`, all its threads) with
torch on one thread: on an idle machine that equals wall time, and unlike wall time it does not
count the slices other processes take from the cores. Torch's thread count is set explicitly and
written into every row, with the 1-minute load average at the start and end of the script.

Peak memory on the CPU is the resident set of a child process: `/proc/self/clear_refs` resets its
high-water mark once the models are built, so a figure is the peak of the measured work alone
(plus the models it holds), not of imports and setup.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def set_threads(n: int) -> int:
    import torch

    torch.set_num_threads(n)
    return n


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int | None = None) -> str:
    import torch

    what = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__.split('+')[0]}"
    return what + (f", {threads} thread{'s' if threads != 1 else ''}" if threads else "")


def command() -> str:
    return "python " + " ".join([str(Path(sys.argv[0]).relative_to(HERE.parent)) if Path(sys.argv[0]).is_absolute()
                                 else sys.argv[0], *sys.argv[1:]])


def alternate(sides: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Call each side once per round, the order reversed every other round (A B, B A, ...);
    each call returns its own measured seconds."""
    names = list(sides)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            out[n].append(sides[n]())
    return out


def median(xs) -> float:
    return statistics.median(xs)


def now() -> float:
    """This process's CPU seconds (see the module docstring)."""
    return time.process_time()


def timed(fn: Callable[[], object]) -> float:
    start = now()
    fn()
    return now() - start


def verdict(ratio: float, goal: float) -> str:
    return f"{ratio:.2f}x (goal <= {goal}x: {'met' if ratio <= goal else 'MISSED'})"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# peak resident memory of a child process


def _status_mb(key: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1)) / 1024  # kB -> MB


def rss_mb() -> float:
    return _status_mb("VmRSS")


def reset_peak() -> bool:
    """Reset this process's resident high-water mark (Linux >= 4.0); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    return _status_mb("VmHWM")


def run_child(script: Path, spec: dict, timeout: int = 600) -> dict:
    """Run `script --child JSON` in a fresh interpreter; it prints one JSON line last."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(script), "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} child {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# models and subjects (random weights: a step's cost does not depend on them)


def micro_pipeline():
    """The micro world's StableDiffusionPipeline built from its configs (random weights)."""
    from dcobench.micro.models import (
        build_micro_pipeline,
        make_text_encoder,
        make_unet,
        make_vae,
    )

    return build_micro_pipeline(make_vae(), make_unet(), make_text_encoder())


def micro_train_defaults() -> dict:
    """The micro suite's training defaults (rank, alpha, lr, batch size)."""
    from dcobench.micro.suite import DEFAULTS

    return dict(DEFAULTS["train"])


def tiny_sd_pipeline():
    """The tiny SD1.5 pipeline of the tests and the tiny suite (built once into the cache)."""
    from dcobench.models.pipeline import load_pipeline
    from dcobench.models.tiny import tiny_model_path

    return load_pipeline(tiny_model_path("sd"))


def subject_at(kind: str, resolution: int, root: Path | None = None):
    """A subject whose images are already `resolution` px squares, so no resize differs between
    dcobench (bicubic) and the diffusers example (bilinear): both see the same pixels."""
    from PIL import Image

    from dcobench.suites.base import load_subject

    if kind == "micro":
        from dcobench.micro import suite

        src = load_subject(suite.subjects_root() / suite.SUBJECTS[0])
    else:
        from dcobench.suites import get_suite

        src = get_suite("tiny").subjects[0]
    root = Path(root or tempfile.mkdtemp(prefix="dcobench-bench-"))
    dst = root / f"{kind}-{resolution}"
    if not dst.is_dir():
        dst.mkdir(parents=True)
        for f in sorted(src.root.iterdir()):
            if f.suffix.lower() in (".png", ".jpg", ".jpeg"):
                with Image.open(f) as im:
                    im.convert("RGB").resize((resolution, resolution), Image.BICUBIC).save(dst / (f.stem + ".png"))
            elif f.is_file():
                (dst / f.name).write_bytes(f.read_bytes())
    return load_subject(dst, src.class_noun, src.identifier, src.prompts, name=src.name, kind=src.kind)


# name: (pipeline builder, resolution, training config: each suite's own defaults)
MODELS = {
    "micro": (micro_pipeline, 32, lambda: {k: micro_train_defaults()[k] for k in ("rank", "alpha", "lr",
                                                                                  "batch_size")}),
    "tiny-sd": (tiny_sd_pipeline, 64, lambda: {"rank": 4, "alpha": 4.0, "lr": 1e-3, "batch_size": 1}),
}


@dataclass
class Setup:
    """A pipeline with what a run keeps per subject: the caption cache and the reference latents."""

    name: str
    pipe: object
    resolution: int
    train: dict
    subject: object
    cond: object
    latents: object
    setup_s: float

    def train_config(self, steps: int, **extra):
        from dcobench.config import TrainConfig

        return TrainConfig(steps=steps, resolution=self.resolution, **{**self.train, **extra})

    def setting(self) -> str:
        return f"{self.resolution} px, batch {self.train['batch_size']}, LoRA r{self.train['rank']}"


def setup(name: str, resolution: int | None = None, batch_size: int | None = None) -> Setup:
    from dcobench.models.pipeline import Conditioner
    from dcobench.trainer import encode_images

    build, res, train = MODELS[name]
    res = resolution or res
    train = train()
    if batch_size:
        train["batch_size"] = batch_size
    pipe = build()
    subject = subject_at("micro" if name == "micro" else "tiny", res)
    start = now()
    cond = Conditioner(pipe, res)
    latents = encode_images(pipe.vae, subject.images, res)
    cond(subject.captions)
    cond(subject.base_captions)
    return Setup(name, pipe, res, train, subject, cond, latents, now() - start)


# ---------------------------------------------------------------------------------------------
# RESULTS.md


def record(title: str, intro: str, header: list[str], rows: list[list], path: Path = RESULTS) -> None:
    """Append `rows` to the table of section `## title`, creating the section (with `intro` and
    the header) when it is missing. Written to a temporary file and renamed."""
    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    lines = text.rstrip("\n").splitlines()
    head = f"## {title}"
    new = ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    if head not in lines:
        lines += ["", head, "", *intro.strip().splitlines(), "", table(header, []), *new]
    else:
        start = lines.index(head)
        end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
        last = max((k for k in range(start, end) if lines[k].startswith("|")), default=None)
        if last is None:
            lines[end:end] = ["", table(header, []), *new, ""]
        else:
            lines[last + 1:last + 1] = new
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def ratio_args(doc: str, rounds: int | None = None, steps: int | None = None):
    """The command line every CPU benchmark shares (models, [rounds,] [steps,] threads, --no-record)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--models", default="micro,tiny-sd")
    if steps is not None:
        ap.add_argument("--steps", type=int, default=steps)
    if rounds is not None:
        ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:  # before any model is built, so no measured side is lost
        ap.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    return args


def print_and_record(title: str, intro: str, header: list[str], rows: list[list], load0: float, threads: int,
                     detail: str, save: bool = True) -> None:
    """The ending every ratio benchmark shares: its table and load line printed, then (unless
    --no-record) one dated row per model appended under `## title`."""
    load1 = load_avg()
    print(table(header, rows))
    print(f"load average {load0} -> {load1}; {machine(threads)}; {detail}")
    if save:
        record(title, intro, ["date", "machine", "load avg", "command", *header],
               [[today(), machine(threads), f"{load0} -> {load1}", f"`{command()}`", *r] for r in rows])


def today() -> str:
    return datetime.date.today().isoformat()
