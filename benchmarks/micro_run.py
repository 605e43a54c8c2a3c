"""Wall time and peak memory of the micro world's headline run against its budgets.

Runs what `make run` runs, in a fresh folder, as a user would (a `dcobench` subprocess):

    dcobench run --methods dco,dreambooth --merge direct,ziplora --out OUT --quiet
    dcobench report OUT

and prints the wall time of each, the run's share of the issues' budgets (15 minutes for the
default micro run, 20 minutes with `--merge`), and the peak resident memory of the children
against its goal (issue 14: <= 1.5 GB, GB = 10^9 bytes), then appends a dated row to RESULTS.md.

    .venv/bin/python benchmarks/micro_run.py [--out /tmp/micro-bench] [--no-merge] [--no-record] [key=value ...]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import command, load_avg, machine, record, today

MEMORY_GOAL_GB = 1.5


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dcobench", *args], check=True)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/micro-bench")
    ap.add_argument("--no-merge", action="store_true", help="the run without --merge (budget 15 min)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for a smaller check run (not the default run)")
    args = ap.parse_args()
    load0 = load_avg()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)  # a resumed run would skip every cell
    merge = [] if args.no_merge else ["--merge", "direct,ziplora"]
    run_s = timed(["run", "--methods", "dco,dreambooth", *merge, "--out", str(out), "--quiet", *args.overrides])
    report_s = timed(["report", str(out)])
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9  # KiB on Linux
    load1 = load_avg()
    cells = len(list((out / "cells").glob("*/result.json")))
    budget = 15 * 60 if args.no_merge else 20 * 60
    print(f"cells {cells}  run {run_s:.1f} s ({run_s / 60:.2f} min)  report {report_s:.1f} s  "
          f"budget {budget // 60} min  run/budget {run_s / budget:.2f}x  peak RSS {peak_gb:.2f} GB "
          f"({peak_gb / MEMORY_GOAL_GB:.2f}x the {MEMORY_GOAL_GB} GB goal: "
          f"{'met' if peak_gb <= MEMORY_GOAL_GB else 'MISSED'})  load average {load0} -> {load1}")
    if not args.no_record:
        record("Micro default run: wall time and peak memory (issue 14, item 6)", INTRO,
               ["date", "machine", "load avg", "command", "run", "cells", "run s", "report s", "run / budget",
                "peak RSS GB", "peak / 1.5 GB"],
               [[today(), machine(), f"{load0} -> {load1}", f"`{command()}`",
                 "without --merge" if args.no_merge else "with --merge direct,ziplora", cells, f"{run_s:.1f}",
                 f"{report_s:.1f}", f"{run_s / budget:.2f}x", f"{peak_gb:.2f}",
                 f"{peak_gb / MEMORY_GOAL_GB:.2f}x ({'met' if peak_gb <= MEMORY_GOAL_GB else 'MISSED'})"]])


INTRO = """\
`benchmarks/micro_run.py`: `dcobench run` of the micro suite's defaults and `dcobench report`, as
subprocesses from an empty folder; peak RSS is the largest child's resident high-water mark
(GB = 10^9 bytes). Goal: <= 1.5 GB."""


if __name__ == "__main__":
    main()
