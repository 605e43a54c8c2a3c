"""`dcobench study STUDY [key=value ...] [--out DIR] [--report DIR] [--readme FILE] [--plan] [--report-only]
[--model M] [--data D]`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def study_command(
    study: str = typer.Argument(..., help="A study YAML file, or the name of a shipped one (data/studies/<name>.yaml), "
                                          "e.g. micro_paper."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value run-config overrides for every run of the "
                                                               "study, e.g. train.steps=50"),
    out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<study name>); rerunning resumes it."),
    report: Optional[Path] = typer.Option(None, help="Report folder (default OUT/report)."),
    readme: Optional[Path] = typer.Option(None, help="Also rewrite the study's findings block (between its marker "
                                                     "lines) in this file, e.g. docs/studies.md, from the report."),
    plan: bool = typer.Option(False, "--plan", help="Print the cells and LoRAs of each claim; run nothing."),
    report_only: bool = typer.Option(False, "--report-only", help="Only fold the finished cells into the report."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    model: Optional[str] = typer.Option(None, help="Base model (a diffusers folder or hub id) replacing the study's "
                                                   "and its suite's, e.g. for data/studies/paper_sdxl.yaml."),
    data: Optional[Path] = typer.Option(None, help="Dataset folder for suites that read one (dreambench: a "
                                                   "google/dreambooth checkout)."),
    shard: Optional[str] = typer.Option(None, help="i/n: run only shard i of n of the study's units (processes on one "
                                                   "--out split it, each LoRA trained once); the report is written "
                                                   "by the one that finds every cell finished."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first training or cell that fails "
                                   "(default: record it, finish the others, report without it, exit 1)."),
):
    """Run a study (every claim's runs into one folder, shared cells run once) and write its report:
    one section per claim with its figure, tables and a verdict computed from the CIs. A training or
    cell that raises is recorded in its folder and the others go on; the report lists it, and a
    rerun retries only the failed ones."""
    from ..failures import exit_on_failures
    from ..plan import parse_shard
    from ..runner import console
    from .readme import update_readme
    from .report import write_study_report
    from .run import describe, plan_study, run_study
    from .spec import load_study

    spec, path = load_study(study)
    spec.model = model or spec.model
    spec.data = str(data) if data is not None else spec.data
    out = out or Path("runs") / spec.name
    if not report_only:
        sp = plan_study(spec, path, overrides or [])
        if plan:
            typer.echo("\n".join(describe(sp)))
            return
        part = parse_shard(shard) if shard is not None else None
        sp.plan.config.executor.fail_fast = fail_fast  # how it runs, not what: never in study.json
        stats = run_study(sp, out, show_progress=not quiet, shard=part)
        where = f" (shard {shard})" if part else ""
        failed = f", {len(stats['failed'])} failed" if stats["failed"] else ""
        console.print(f"study {spec.name}{where}: {stats['cells']} cells in {out}: {stats['sampled']} run, "
                      f"{stats['skipped']} already done{failed}, {stats['trained']} LoRAs trained, "
                      f"{stats['seconds']} s")
        if part and stats["left"]:
            console.print(f"{stats['left']} cells of other shards are not finished yet; the shard that finishes "
                          "last writes the report (or run with --report-only)")
            exit_on_failures(stats["failed"], out)
            return
    paths = write_study_report(out, report)
    from .readme import headline_findings

    # the answer on the terminal: each claim's sentence and its headline rows, each with its basis
    typer.echo("\n".join(headline_findings(paths["study_md"].parent).splitlines()[2:]).rstrip())
    typer.echo(f"study report: {paths['study_md']}")
    if readme is not None:
        changed = update_readme(readme, paths["study_md"].parent)
        typer.echo(f"{readme}: findings block {'rewritten' if changed else 'already up to date'}")
    if not report_only:
        exit_on_failures(stats["failed"], out)
