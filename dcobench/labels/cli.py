"""`dcobench label RUN [--per-stratum N] [--seed S] [--labeller NAME] [--port N] [--sheets DIR | --import FILE |
--export DIR] [--browser]`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def default_labeller() -> str:
    """$USER when it is a valid labeller name (it names a file), else "me"."""
    from .store import valid_labeller

    user = os.environ.get("USER", "")
    return user if valid_labeller(user) else "me"


def writable_labels(run_dir: Path) -> None:
    """RUN/labels must take a file now: an unwritable run fails before anyone labels a thing. The
    store's own message suggests another --out, which this command does not have."""
    from ..errors import DcoError
    from ..store import check_writable

    folder = run_dir / "labels"
    try:
        check_writable(folder)
    except DcoError as e:
        cause = e.__cause__
        why = os.strerror(cause.errno) if isinstance(cause, OSError) and cause.errno else "a file, not a folder"
        raise DcoError(f"{folder}: cannot write labels there ({why}); make the folder writable, or label a "
                       "writable copy of the run folder") from e


def label_command(
    run_dir: Path = typer.Argument(..., help="A run folder written by `dcobench run` (finished cells are sampled)."),
    per_stratum: int = typer.Option(8, "--per-stratum", min=1, help="Images drawn from each stratum "
                                    "(method x knobs x subject); all of them when a stratum has fewer."),
    seed: int = typer.Option(0, help="Seed of the draw; the sample is stored as RUN/labels/sample-s<seed>-n<N>.json "
                                     "and read back on later visits."),
    labeller: Optional[str] = typer.Option(None, help="Your name (letters, digits, - and _): answers go to "
                                                      "RUN/labels/<labeller>.csv (default: $USER, else me)."),
    port: int = typer.Option(0, help="Port on 127.0.0.1 (default 0: a free one)."),
    sheets: Optional[Path] = typer.Option(None, help="Write the sample as numbered contact sheets (PNG), a "
                                                     "labels.csv to fill in and a README.txt into this folder."),
    import_file: Optional[Path] = typer.Option(None, "--import", help="Read a filled labels.csv (from --sheets) "
                                                                      "into RUN/labels/<labeller>.csv."),
    export: Optional[Path] = typer.Option(None, help="Copy the sample's images, references, items.csv and every "
                                                     "labeller's CSV into this folder (to commit without the run)."),
    browser: bool = typer.Option(False, "--browser/--no-browser", help="Open the page in a browser (default: "
                                                                       "only print its address)."),
):
    """Label a sample of a run's images blind (the page shows the image, its prompt and the subject's
    references; never the method, knobs, seeds or scores), or export it as contact sheets."""
    from ..errors import DcoError
    from .sample import finished_cells, load_or_draw, sample_path
    from .store import check_labeller, labels_path

    if sum(x is not None for x in (sheets, import_file, export)) > 1:
        raise DcoError("label: give at most one of --sheets, --import, --export")
    name = check_labeller(labeller if labeller is not None else default_labeller())
    finished_cells(run_dir)
    writable_labels(run_dir)
    sample = load_or_draw(run_dir, per_stratum, seed)
    where = sample_path(run_dir, per_stratum, seed)
    if sheets is not None:
        from .sheets import write_sheets

        done = write_sheets(run_dir, sample, sheets)
        typer.echo(f"sheets: {done['items']} images on {done['sheets']} sheets in {sheets}; fill in {done['csv']}, "
                   f"then: dcobench label {run_dir} --import {done['csv']} --labeller NAME")
        return
    if import_file is not None:
        from .sheets import import_sheet

        n = import_sheet(run_dir, import_file, name, sample)
        typer.echo(f"import: {n} answers from {import_file} appended to {labels_path(run_dir, name)}")
        return
    if export is not None:
        from .export import export_sample

        done = export_sample(run_dir, sample, export)
        typer.echo(f"export: {done['images']} images, {done['references']} references and the labels of "
                   f"{', '.join(done['labellers']) or 'nobody yet'} in {export}")
        return
    serve(run_dir, sample, name, port, browser, where)


def serve(run_dir: Path, sample: dict, name: str, port: int, browser: bool, where: Path) -> None:
    """Serve the page until Ctrl-C, which ends it cleanly (every answer is already on disk)."""
    from .server import make_server
    from .store import QUESTIONS, answers, labels_path

    server = make_server(run_dir, sample, name, port)
    latest = answers(run_dir, name)
    done = sum(all((it["item"], q) in latest for q in QUESTIONS) for it in sample["items"])
    typer.echo(f"sample: {len(sample['items'])} images ({where}); {name} has labelled {done}")
    typer.echo(f"label: {server.url()} (Ctrl-C to stop)")
    if browser:
        import webbrowser

        webbrowser.open(server.url())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    typer.echo(f"labels are in {labels_path(run_dir, name)}")
