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

from .errors import DcoError

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, sample, score and report text-to-image personalization methods.")

OVERRIDES = typer.Argument(None, help="key=value overrides, e.g. methods.dco.beta=2000 train.steps=50")


def _methods(text: Optional[str]) -> Optional[list[str]]:
    if text is None:
        return None
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise DcoError("--methods: give a comma-separated list, e.g. --methods dco,dreambooth")
    return names


@app.command()
def run(
    overrides: Optional[List[str]] = OVERRIDES,
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods, e.g. dco,dreambooth."),
    suite: Optional[str] = typer.Option(None, help="Suite name or suite YAML path (default: tiny)."),
    config: Optional[Path] = typer.Option(None, help="YAML run config."),
    out: Path = typer.Option(Path("runs/default"), help="Run folder; rerunning resumes it."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
):
    """Train, sample and store every cell; cells with a result.json are skipped."""
    from .plan import make_plan
    from .runner import console, run_plan

    plan = make_plan(config, overrides or [], _methods(methods), suite)
    stats = run_plan(plan, out, show_progress=not quiet)
    console.print(
        f"{stats['cells']} cells in {out}: {stats['sampled']} run, {stats['skipped']} already done, "
        f"{stats['trained']} LoRAs trained"
    )


@app.command()
def validate(
    config: Path = typer.Argument(..., help="YAML run config to check."),
    overrides: Optional[List[str]] = OVERRIDES,
    methods: Optional[str] = typer.Option(None),
    suite: Optional[str] = typer.Option(None),
):
    """Check a config (and its suite) without running anything."""
    from .plan import make_plan

    plan = make_plan(config, overrides or [], _methods(methods), suite)
    typer.echo(f"ok: {config} -> {len(plan.cells)} cells ({', '.join(plan.methods)} on suite {plan.suite.name})")


@app.command("ls")
def ls(what: str = typer.Argument("all", help="methods, suites, options or all")):
    """List registered methods and suites, or every config option with its help."""
    from . import methods as _m  # noqa: F401
    from . import suites as _s  # noqa: F401
    from .config import RunConfig, field_help
    from .registry import METHODS, SUITES

    if what not in ("all", "methods", "suites", "options"):
        raise DcoError(f"ls: unknown section '{what}'; use methods, suites, options or all")
    if what in ("all", "methods"):
        typer.echo("methods:")
        for name in METHODS.names():
            obj = METHODS.get(name)
            flags = [f for f in ("needs_reference", "needs_prior") if getattr(obj, f)]
            knobs = [r[0] for r in field_help(obj.config_cls) if r[0] != "sweep"]
            typer.echo(f"  {name:<12} {METHODS.meta(name).get('description', '')}"
                       f"  [guidance={obj.default_guidance}{', ' + ', '.join(flags) if flags else ''}"
                       f"{'; knobs: ' + ', '.join(knobs) if knobs else ''}]")
    if what in ("all", "suites"):
        typer.echo("suites:")
        for name in SUITES.names():
            typer.echo(f"  {name:<12} {SUITES.meta(name).get('description', '')}")
    if what in ("all", "options"):
        typer.echo("options (key=value):")
        for key, default, text in field_help(RunConfig):
            typer.echo(f"  {key:<26} {default:<28} {text}")


def main(argv: Optional[list[str]] = None) -> int:
    try:
        app(args=argv, standalone_mode=False)
    except DcoError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # click's own usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        if isinstance(e, click.exceptions.Abort):
            return 1
        raise
    return 0


def entry() -> None:
    sys.exit(main())
