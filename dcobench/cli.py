"""The `dcobench` command line.

Every command turns a `DcoError` into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .config import RunConfig
from .errors import DcoError
from .labels.cli import label_command
from .lora_cli import export_command, merge_command, scoped_overrides
from .registry import COMMANDS
from .study.cli import study_command

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, sample, score and report text-to-image personalization methods.")



def add_plugin_commands() -> None:
    """Add the commands plugins register (the micro world's `dcobench micro ...`), once; loading the
    plugins may fail with a one-line DcoError, so `main` calls this inside its error handling."""
    added = {g.name for g in app.registered_groups}
    for name in COMMANDS.names():
        if name not in added:
            app.add_typer(COMMANDS.get(name), name=name, help=COMMANDS.meta(name).get("description"))

OVERRIDES = typer.Argument(None, help="key=value overrides, e.g. methods.dco.beta=2000 train.steps=50")


def _names(text: Optional[str], flag: str = "--methods", example: str = "dco,dreambooth") -> Optional[list[str]]:
    """A comma-separated flag as a list; None when the flag is absent, an error when it is empty."""
    if text is None:
        return None
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise DcoError(f"{flag}: give a comma-separated list, e.g. {flag} {example}")
    return names


@app.command()
def run(
    overrides: Optional[List[str]] = OVERRIDES,
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods, e.g. dco,dreambooth."),
    suite: Optional[str] = typer.Option(None, help=f"Suite name or suite YAML path (default: {RunConfig().suite})."),
    data: Optional[str] = typer.Option(None, help="Dataset folder for suites that read one (dreambench)."),
    model: Optional[str] = typer.Option(None, help="Base model (diffusers folder or hub id) replacing the suite's."),
    config: Optional[Path] = typer.Option(None, help="YAML run config."),
    out: Path = typer.Option(Path("runs/default"), help="Run folder; rerunning resumes it."),
    merge: Optional[str] = typer.Option(None, help="Comma-separated merge methods (direct,ziplora): also train "
                                                    "style LoRAs and merge them with each subject LoRA."),
    shard: Optional[str] = typer.Option(None, help="i/n: run only shard i of n (1 <= i <= n), split by training so "
                                                   "no LoRA is trained twice; shards may share --out."),
    executor: Optional[str] = typer.Option(None, help="local (default) or ray: one Ray task per training and its "
                                                      "cells (pip install 'dcobench[ray]')."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster to join (what `ray start --head` prints); "
                                                         "default $RAY_ADDRESS, else a local Ray instance."),
    workers: Optional[int] = typer.Option(None, help="Local Ray instance: training tasks at a time."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first training or cell that fails "
                                   "(default: record it, finish the others, list the failures, exit 1)."),
):
    """Train, sample and store every cell; cells with a result.json are skipped. A training or cell
    that raises is recorded in its folder and the others go on; a rerun retries only the failed ones."""
    from .plan import make_plan, parse_shard
    from .runner import console, run_plan

    part = parse_shard(shard) if shard is not None else None
    flags = [f"executor.{k}={v}" for k, v in (("name", executor), ("address", ray_address), ("workers", workers))
             if v is not None] + (["executor.fail_fast=true"] if fail_fast else [])
    if ray_address is not None and executor is None:
        flags.append("executor.name=ray")
    plan = make_plan(config, [*(overrides or []), *flags], _names(methods), suite, data, model,
                     _names(merge, "--merge", "direct,ziplora"))
    for note in plan.notes:
        console.print(f"note: {note}", soft_wrap=True)
    stats = run_plan(plan, out, show_progress=not quiet, shard=part)
    where = f" (shard {shard})" if part else ""
    others = f", {stats['elsewhere']} by another process" if stats.get("elsewhere") else ""
    failed = f", {len(stats['failed'])} failed" if stats["failed"] else ""
    console.print(
        f"{stats['cells']} cells in {out}{where}: {stats['sampled']} run, {stats['skipped']} already done{others}"
        f"{failed}, {stats['trained']} LoRAs trained"
    )
    from .failures import exit_on_failures

    exit_on_failures(stats["failed"], out)


@app.command()
def validate(
    config: Path = typer.Argument(..., help="YAML run config to check."),
    overrides: Optional[List[str]] = OVERRIDES,
    methods: Optional[str] = typer.Option(None),
    suite: Optional[str] = typer.Option(None),
    data: Optional[str] = typer.Option(None),
    model: Optional[str] = typer.Option(None),
):
    """Check a config (and its suite) without running anything."""
    from .plan import make_plan

    plan = make_plan(config, overrides or [], _names(methods), suite, data, model)
    for note in plan.notes:
        typer.echo(f"note: {note}")
    extra = f" + {len(plan.merge_cells)} merge cells" if plan.merge_cells else ""
    typer.echo(f"ok: {config} -> {len(plan.cells)} cells{extra} ({', '.join(plan.methods)} on suite {plan.suite.name})")


@app.command()
def score(
    run_dir: Path = typer.Argument(..., help="A run folder written by `dcobench run`."),
    overrides: Optional[List[str]] = typer.Argument(None, help="score.* overrides, e.g. score.clip_t_prompt=remove"),
    force: bool = typer.Option(False, "--force", help="Rescore cells already scored under this protocol."),
):
    """(Re)score stored images under a protocol, without retraining."""
    from .config import ScoreConfig, deep_merge, from_dict
    from .runner import console
    from .scoring import rescore
    from .store import read_json

    base = {}
    if (run_dir / "run.json").is_file():
        base = read_json(run_dir / "run.json").get("config", {}).get("score", {})
    over = scoped_overrides(overrides, ["score"], "score.clip_t_prompt=remove")
    cfg = from_dict(ScoreConfig, deep_merge(base, over), "score.")
    stats = rescore(run_dir, cfg, force)
    console.print(f"{stats['cells']} cells in {run_dir}: {stats['scored']} scored, {stats['skipped']} already "
                  f"scored under protocol {stats['protocol']}")


@app.command()
def report(
    run_dirs: List[Path] = typer.Argument(..., help="Run folders written by `dcobench run` (e.g. one per shard)."),
    out: Optional[Path] = typer.Option(None, help="Report folder (default RUN_DIR/report; needed for several)."),
    pareto: Optional[str] = typer.Option(None, help="Comma-separated subject metrics for the Pareto plot and "
                                                    "dominance table (default: the run's report.pareto_metrics)."),
):
    """Summary tables, Pareto plots, prompt grids and index.html: a pure fold over result.json files."""
    from .report import write_report

    if len(run_dirs) > 1 and out is None:
        raise DcoError("report: several run folders need --out DIR for the combined report")
    paths = write_report(run_dirs if len(run_dirs) > 1 else run_dirs[0], out, _names(pareto, "--pareto", "clip_i,dino"))
    typer.echo(f"report: {paths['index_html']}")


@app.command()
def regress(
    run_dir: Path = typer.Argument(..., help="A scored run folder."),
    baseline: Optional[Path] = typer.Option(None, help="Baseline JSON to check against."),
    update: Optional[Path] = typer.Option(None, help="Write the run's aggregates as a new baseline here."),
    tolerance: Optional[float] = typer.Option(None, help="With --update: absolute tolerance for every metric "
                                              "(default: keep the file's, else 0.02)."),
):
    """Compare aggregate metrics with a stored baseline; exit 1 on a regression."""
    from . import regress as rg

    if (baseline is None) == (update is None):
        raise DcoError("regress: give exactly one of --baseline FILE or --update FILE")
    if update is not None:
        written = rg.update(run_dir, update, tolerance)
        typer.echo(f"baseline written to {update}: {len(written['metrics'])} groups, protocol {written['protocol']['id']}")
        return
    rows, ok, note = rg.compare(run_dir, baseline)
    if note:
        typer.echo(note)
    if rows:
        typer.echo(rg.format_rows(rows))
    if not ok:
        typer.echo("regression: at least one metric fell below its tolerance" if not note else "regression check failed")
        raise typer.Exit(1)
    typer.echo(f"ok: {len(rows)} metrics within tolerance of {baseline}")


@app.command()
def caption(
    subject_dir: Path = typer.Argument(..., help="A subject folder of reference images."),
    model: Optional[str] = typer.Option(None, help="image-to-text model (folder or cached hub id); "
                                        "without it the template 'a photo of {identifier} {class_noun}' is written."),
    class_noun: Optional[str] = typer.Option(None, help="Class noun (default: the folder's subject.yaml)."),
    identifier: Optional[str] = typer.Option(None, help="Identifier token (default: subject.yaml, else sks)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing caption files."),
):
    """Write a comprehensive caption file (<image>.txt, with the identifier) beside each reference image."""
    from .captions import caption_folder
    from .config import load_yaml

    meta = {}
    if (subject_dir / "subject.yaml").is_file():
        meta = load_yaml(subject_dir / "subject.yaml")
    noun = class_noun or meta.get("class_noun")
    if not noun:
        raise DcoError(f"{subject_dir}: no class noun; pass --class-noun dog or add class_noun to subject.yaml")
    done = caption_folder(subject_dir, noun, identifier or meta.get("identifier") or "sks", model, force)
    typer.echo(f"{len(done['written'])} captions written, {len(done['kept'])} kept"
               + (" (use --force to overwrite)" if done["kept"] else ""))


app.command("merge")(merge_command)  # dcobench/lora_cli.py: LoRA files in and out
app.command("export")(export_command)
app.command("study")(study_command)  # dcobench/study/cli.py: the claims of a study, one report
app.command("label")(label_command)  # dcobench/labels/cli.py: blind labels of a run's images by people


@app.command("ls")
def ls(what: str = typer.Argument("all", help="methods, baselines, merges, suites, metrics, plugins, options or all")):
    """List what is registered (methods, baselines, merges, suites, metrics, plugins) or every config option."""
    from .catalog import listing

    typer.echo("\n".join(listing(what)))


def _usage_errors() -> tuple:
    """The exception classes of command-line usage errors, through public names only: typer's own
    (`typer.TyperException`, the base of the click it vendors since 0.2x) and, for an older typer
    that runs on the `click` package, click's `ClickException`."""
    out = [c for c in (getattr(typer, "TyperException", None),) if c is not None]
    try:
        import click

        out.append(click.ClickException)
    except ImportError:
        pass
    return tuple(out)


def _aborts() -> tuple:
    out = [typer.Abort]
    try:
        import click

        out.append(click.Abort)
    except ImportError:
        pass
    return tuple(out)


def main(argv: Optional[list[str]] = None) -> int:
    try:
        add_plugin_commands()
        code = app(args=argv, standalone_mode=False)  # returns typer.Exit's code instead of exiting
    except DcoError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:  # a file system refusing a write (full, read-only, unwritable) is the user's to fix
        from .store import DISK_ERRORS, FOLDER_ERRORS

        fix = DISK_ERRORS.get(e.errno) or FOLDER_ERRORS.get(e.errno)
        if fix is None:
            raise
        print(f"error: {e.filename or 'output'}: {os.strerror(e.errno)}: {fix}", file=sys.stderr)
        return 2
    except _aborts():
        print("aborted", file=sys.stderr)
        return 1
    except _usage_errors() as e:  # click's own usage errors: its one-line message and exit code 2
        if hasattr(e, "show"):
            e.show()
        else:
            print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    return code if isinstance(code, int) else 0


def entry() -> None:
    sys.exit(main())
