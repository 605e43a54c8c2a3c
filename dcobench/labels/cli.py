"""`dcobench label RUN [--per-stratum N | --budget N [--judge NAME]] [--seed S] [--labeller NAME] [--port N]
[--sheets DIR | --import FILE | --export DIR] [--browser]`."""

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
    per_stratum: Optional[int] = typer.Option(None, "--per-stratum", help="Images drawn from each stratum "
                                              "(method x knobs x subject); all of them when a stratum has fewer "
                                              "(default: the one sample this --seed has drawn, else 8)."),
    budget: Optional[int] = typer.Option(None, help="Label N images in two passes instead: about N/2 evenly over "
                                                    "the points; then, run again once those are labelled, the rest "
                                                    "where the judge and the labels disagree most (docs/labels.md)."),
    judge: Optional[str] = typer.Option(None, help="With --budget: the binary subject judge whose disagreement "
                                                   "with the labels guides pass 2 (default: oracle_subject when "
                                                   "scored, else the first binary subject judge)."),
    seed: int = typer.Option(0, help="Seed of the draw; the sample is stored as RUN/labels/sample-s<seed>-n<N>.json "
                                     "(with --budget: sample-s<seed>-b<N>-p<pass>.json) and read back on later "
                                     "visits."),
    labeller: Optional[str] = typer.Option(None, help="Your name (letters, digits, - and _): answers go to "
                                                      "RUN/labels/<labeller>.csv (default: $USER, else me)."),
    port: Optional[int] = typer.Option(None, help="Port on 127.0.0.1 (default: the run folder's usual port, the "
                                                  "same on every start, else a free one; 0: any free one)."),
    sheets: Optional[Path] = typer.Option(None, help="Write the sample as numbered contact sheets (PNG), a "
                                                     "labels.csv to fill in and a README.txt into this folder."),
    import_file: Optional[Path] = typer.Option(None, "--import", help="Read a filled labels.csv (from --sheets) "
                                                                      "into RUN/labels/<labeller>.csv."),
    export: Optional[Path] = typer.Option(None, help="Copy the sample's images, references, items.csv and every "
                                                     "labeller's CSV into this folder (to commit without the run)."),
    browser: bool = typer.Option(False, "--browser/--no-browser", help="Open the page in a browser (default: "
                                                                       "only print its address)."),
    attach: Optional[Path] = typer.Option(None, help="Put an exported label set (a folder from --export) into "
                                                     "this run's labels: a rerun of the same study with the same "
                                                     "seeds, so that its study report is label-corrected by them."),
):
    """Label a sample of a run's images blind (the page shows the image, its prompt and the subject's
    references; never the method, knobs, seeds or scores), or export it as contact sheets."""
    from ..errors import DcoError
    from .sample import finished_cells, load_or_draw, sample_path
    from .store import check_labeller, labels_path

    if sum(x is not None for x in (sheets, import_file, export, attach)) > 1:
        raise DcoError("label: give at most one of --sheets, --import, --export, --attach")
    if budget is not None and per_stratum is not None:
        raise DcoError("--budget: it and --per-stratum choose the sample in two different ways; give one of them")
    if judge is not None and budget is None:
        raise DcoError(f"--judge {judge}: it only guides a --budget draw; add --budget N, or leave --judge out")
    if per_stratum is not None and per_stratum < 1:
        raise DcoError(f"--per-stratum {per_stratum}: must be at least 1")
    name = check_labeller(labeller if labeller is not None else default_labeller())
    finished_cells(run_dir)
    writable_labels(run_dir)
    if attach is not None:
        from .export import attach_export

        done = attach_export(run_dir, attach)
        typer.echo(f"attach: {done['items']} labelled images of {attach} as {done['sample']}; {done['rows']} label "
                   "rows added" + (f"; note: {done['differ']} images differ in bytes from the labelled copies (another "
                                   "CPU model or thread count?)" if done["differ"] else ""))
        return
    if budget is not None:
        from .budget import load_or_draw_budget

        sample, where, lines = load_or_draw_budget(run_dir, budget, seed, judge)
        for line in lines:
            typer.echo(line)
    else:
        # no --per-stratum: the seed's one stored sample, so that --import / --export after `--per-stratum 4
        # --sheets` read the sample the sheets showed (not a new default draw of 8)
        stored = sorted((run_dir / "labels").glob(f"sample-s{seed}-n*.json"))
        n = per_stratum or (int(stored[0].stem.rsplit("-n", 1)[1]) if len(stored) == 1 else 8)
        sample = load_or_draw(run_dir, n, seed)
        where = sample_path(run_dir, n, seed)
    if sheets is not None:
        from .sheets import write_sheets

        # pass 2's file repeats pass 1's items, which are labelled already: its sheets hold only the new ones
        step = sample.get("pass")
        done = write_sheets(run_dir, {**sample, "items": [it for it in sample["items"] if it.get("pass") == step]},
                            sheets)
        typer.echo(f"sheets: {done['items']} images on {done['sheets']} sheets in {sheets}; fill in {done['csv']}, "
                   f"then: dcobench label {run_dir} --import {done['csv']} --labeller NAME")
        return
    if import_file is not None:
        from .sheets import import_sheet

        new, already = import_sheet(run_dir, import_file, name, sample)
        typer.echo(f"import: {new + already} answers in {import_file}: {new} new, appended to "
                   f"{labels_path(run_dir, name)}; {already} already imported")
        return
    if export is not None:
        from .export import export_sample

        done = export_sample(run_dir, sample, export)
        typer.echo(f"export: {done['images']} images, {done['references']} references and the labels of "
                   f"{', '.join(done['labellers']) or 'nobody yet'} in {export}")
        return
    serve(run_dir, sample, name, port, browser, where)


def serve(run_dir: Path, sample: dict, name: str, port: Optional[int], browser: bool, where: Path) -> None:
    """Serve the page until Ctrl-C, which ends it cleanly (every answer is already on disk)."""
    from .server import address_path, last_address, make_server, write_address
    from .store import QUESTIONS, answers, labels_path

    before = last_address(run_dir)
    server = make_server(run_dir, sample, name, port)
    try:
        write_address(server)
    except BaseException:
        server.server_close()
        raise
    latest = answers(run_dir, name)
    done = sum(all((it["item"], q) in latest for q in QUESTIONS) for it in sample["items"])
    typer.echo(f"sample: {len(sample['items'])} images ({where}); {name} has labelled {done}")
    typer.echo(f"label: {server.url()} (Ctrl-C to stop)")
    # An open page keeps posting to the address it was loaded from: say where it went.
    if server.moved:
        typer.echo(f"note: port {server.usual_port}, this run's usual one, is taken; this server is at "
                   f"{server.url()} instead")
    if before.get("url") and before["url"] != server.url():
        typer.echo(f"note: the last server of this run was at {before['url']}; open {server.url()} instead "
                   "(an open page must be reloaded from there)")
    typer.echo(f"the address is kept in {address_path(run_dir)}")
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
