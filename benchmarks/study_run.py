"""Wall time and peak memory of `make study` against its budget (45 minutes on 2 CPU cores).

Runs what `make study` runs, from an empty run folder, as a user would (`dcobench` subprocesses):
two shards in parallel at one torch thread each, then the report,

    OMP_NUM_THREADS=1 dcobench study STUDY --out OUT --shard 1/2 --quiet   (and --shard 2/2 beside it)
    dcobench study STUDY --out OUT --report REPORT --report-only

(`make study` also passes `--readme docs/studies.md` and regenerates the README's headline; the benchmark leaves both alone). It prints
what the study plans (cells and LoRAs per claim), the wall time of the run and of a second,
report-only pass, the share of the budget, and the peak resident memory of a child (`--shards 1`: one process at the default thread count).

    .venv/bin/python benchmarks/study_run.py                      # the micro paper study
    .venv/bin/python benchmarks/study_run.py --study tiny_paper   # the machinery on the tiny suite (~1 min)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

BUDGET_S = 45 * 60


def dcobench(args: list[str], capture: bool = False) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dcobench", *args], check=True, text=True,
                          stdout=subprocess.PIPE if capture else None)
    return time.perf_counter() - start, done.stdout or ""


def sharded(args: list[str], n: int) -> float:
    """`args` as n `--shard i/n` processes at one thread each, in parallel, as `make study` runs them."""
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "dcobench", *args, "--shard", f"{i}/{n}"], env=env)
             for i in range(1, n + 1)]
    if any(p.wait() for p in procs):
        raise SystemExit("a shard failed")
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="micro_paper", help="a study name (data/studies/) or YAML file")
    ap.add_argument("--out", default="/tmp/study-bench", help="run folder; emptied first (a resumed run skips cells)")
    ap.add_argument("--report", default=None, help="report folder (default OUT/report)")
    ap.add_argument("--shards", type=int, default=2, help="parallel shards at one thread each (make study: 2); 1 runs "
                                                          "one process at the default thread count")
    args = ap.parse_args()
    out = Path(args.out)
    report = Path(args.report) if args.report else out / "report"
    shutil.rmtree(out, ignore_errors=True)
    _, planned = dcobench(["study", args.study, "--plan"], capture=True)
    print(planned.rstrip())
    if args.shards > 1:
        run_s = sharded(["study", args.study, "--out", str(out), "--quiet"], args.shards)
    else:
        run_s, _ = dcobench(["study", args.study, "--out", str(out), "--report", str(report), "--quiet"])
    report_s, _ = dcobench(["study", args.study, "--out", str(out), "--report", str(report), "--report-only"])
    run_s += report_s if args.shards > 1 else 0.0
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB on Linux
    cells = len(list((out / "cells").glob("*/result.json")))
    loras = len(list((out / "loras").glob("*/train.json")))
    merges = len(list((out / "merges").glob("*/merge.json")))
    print(f"study {args.study}: cells {cells}  LoRAs {loras}  merges {merges}  run+report {run_s:.1f} s "
          f"({run_s / 60:.2f} min)  report alone {report_s:.1f} s  budget {BUDGET_S // 60} min  "
          f"run/budget {run_s / BUDGET_S:.2f}x  peak RSS {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
