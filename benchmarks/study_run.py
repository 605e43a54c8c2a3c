"""Wall time and peak memory of `make study` against its budget (45 minutes on 2 CPU cores).

Runs what `make study` runs, from an empty run folder, as a user would (a `dcobench` subprocess):

    dcobench study STUDY --out OUT --report REPORT --quiet

(`make study` also passes `--readme docs/studies.md` and regenerates the README's headline; the benchmark leaves both alone). It prints
what the study plans (cells and LoRAs per claim), the wall time of the run and of a second,
report-only pass, the share of the budget, and the peak resident memory of the children.

    .venv/bin/python benchmarks/study_run.py                      # the micro paper study
    .venv/bin/python benchmarks/study_run.py --study tiny_paper   # the machinery on the tiny suite (~1 min)
"""

from __future__ import annotations

import argparse
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="micro_paper", help="a study name (data/studies/) or YAML file")
    ap.add_argument("--out", default="/tmp/study-bench", help="run folder; emptied first (a resumed run skips cells)")
    ap.add_argument("--report", default=None, help="report folder (default OUT/report)")
    args = ap.parse_args()
    out = Path(args.out)
    report = Path(args.report) if args.report else out / "report"
    shutil.rmtree(out, ignore_errors=True)
    _, planned = dcobench(["study", args.study, "--plan"], capture=True)
    print(planned.rstrip())
    run_s, _ = dcobench(["study", args.study, "--out", str(out), "--report", str(report), "--quiet"])
    report_s, _ = dcobench(["study", args.study, "--out", str(out), "--report", str(report), "--report-only"])
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB on Linux
    cells = len(list((out / "cells").glob("*/result.json")))
    loras = len(list((out / "loras").glob("*/train.json")))
    merges = len(list((out / "merges").glob("*/merge.json")))
    print(f"study {args.study}: cells {cells}  LoRAs {loras}  merges {merges}  run+report {run_s:.1f} s "
          f"({run_s / 60:.2f} min)  report alone {report_s:.1f} s  budget {BUDGET_S // 60} min  "
          f"run/budget {run_s / BUDGET_S:.2f}x  peak RSS {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
