"""The Ray executor against the local one on the same machine: wall time, and identical results.

Runs the same `dcobench run` twice from empty folders, as a user would (subprocesses), then
`dcobench report` on each:

    OUT/local   dcobench run ARGS --out OUT/local
    OUT/ray     dcobench run ARGS --out OUT/ray --executor ray --workers N

and prints both wall times, their ratio, whether the two summary.csv files are byte-identical and
how many of the computed files (LoRAs, images, per-image scores) are. Both runs get the same torch
thread count (OMP_NUM_THREADS, default 1: what a Ray task with num_cpus=1 gets), because CPU
results are bit-identical only at the same thread count (docs/scale-out.md, "Determinism").

    .venv/bin/python benchmarks/ray_vs_local.py --suite tiny
    .venv/bin/python benchmarks/ray_vs_local.py --config data/configs/micro_ci.yaml --methods dco,dreambooth
    .venv/bin/python benchmarks/ray_vs_local.py --methods dco,dreambooth            # the micro default
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def timed(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dcobench", *args], check=True, env=env)
    return time.perf_counter() - start


def computed(root: Path) -> dict[str, bytes]:
    """The files a run computed (not its records of time, date and machine)."""
    keep = (".safetensors", ".png", ".csv")
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in keep and "report" not in p.relative_to(root).parts}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite")
    ap.add_argument("--config")
    ap.add_argument("--methods", default="dco,dreambooth")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", default=os.environ.get("OMP_NUM_THREADS", "1"), help="torch threads of both runs")
    ap.add_argument("--out", default="/tmp/ray-vs-local")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)  # resumed runs would skip every cell
    run = ["run", "--methods", args.methods, "--quiet", *args.overrides]
    run += ["--suite", args.suite] if args.suite else []
    run += ["--config", args.config] if args.config else []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    local_s = timed([*run, "--out", str(out / "local")], env)
    ray_s = timed([*run, "--out", str(out / "ray"), "--executor", "ray", "--workers", str(args.workers)], env)
    for name in ("local", "ray"):
        subprocess.run([sys.executable, "-m", "dcobench", "report", str(out / name)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    summary = [(out / n / "report" / "summary.csv").read_bytes() for n in ("local", "ray")]
    a, b = computed(out / "local"), computed(out / "ray")
    same = sum(a[k] == b.get(k) for k in a)
    cells = len(list((out / "local" / "cells").glob("*/result.json")))
    print(f"cells {cells}  threads {args.threads}  local {local_s:.1f} s  ray ({args.workers} workers) {ray_s:.1f} s  "
          f"ray/local {ray_s / local_s:.2f}x  summary.csv identical: {summary[0] == summary[1]}  "
          f"files identical: {same}/{len(a)} (ray has {len(b)})")


if __name__ == "__main__":
    main()
