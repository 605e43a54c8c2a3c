"""Wall time and peak memory of the micro world's headline run against its budgets.

Runs what `make run` runs, in a fresh folder, as a user would (a `dcobench` subprocess):

    dcobench run --methods dco,dreambooth --merge direct,ziplora --out OUT --quiet
    dcobench report OUT

and prints the wall time of each, the run's share of the issues' budgets (15 minutes for the
default micro run, 20 minutes with `--merge`), and the peak resident memory of the children.

    .venv/bin/python benchmarks/micro_run.py [--out /tmp/micro-bench] [--no-merge]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dcobench", *args], check=True)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/micro-bench")
    ap.add_argument("--no-merge", action="store_true", help="the run without --merge (budget 15 min)")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)  # a resumed run would skip every cell
    merge = [] if args.no_merge else ["--merge", "direct,ziplora"]
    run_s = timed(["run", "--methods", "dco,dreambooth", *merge, "--out", str(out), "--quiet"])
    report_s = timed(["report", str(out)])
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB on Linux
    cells = len(list((out / "cells").glob("*/result.json")))
    budget = 15 * 60 if args.no_merge else 20 * 60
    print(f"cells {cells}  run {run_s:.1f} s ({run_s / 60:.2f} min)  report {report_s:.1f} s  "
          f"budget {budget // 60} min  run/budget {run_s / budget:.2f}x  peak RSS {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
