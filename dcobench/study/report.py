"""The study report: a pure fold over `study.json` and the cells it names.

    REPORT/study.md, index.html      one section per claim: its one-line verdict, figure and tables
    REPORT/verdicts.csv              every comparison: effect, sampler, recipe, estimate, 95% CI, n subjects, units,
                                     seeds, half_width, bound, verdict (the findings' source)
    REPORT/<claim>.png / .svg        the claim's figure (a recipes claim adds <claim>-curves.png / .svg)
    REPORT/<claim>-<table>.csv       its tables (points, targets, merge, vs_direct, mergers, recipes)
    REPORT/study.json                the manifest it was folded from

Rebuilding it from the same run folder writes identical tables. Cells the manifest names that are
not finished are left out, and the report says how many.
"""

from __future__ import annotations

import io
from html import escape
from pathlib import Path

import pandas as pd

from ..errors import DcoError
from ..failures import scan as scan_failures
from ..report.collect import load_cells
from ..report.judges import labelled
from ..report.html import data_uri
from ..report.pareto import save_figure
from ..store import atomic_write_bytes, atomic_write_json, read_json
from . import stats
from .anchors import ANCHOR_NOTE, anchor_table, anchor_values
from .calibration import calibration
from .corrections import study_labels
from .claims import Section, captions_section, frontier_section, labeller, merge_section
from .controls import check_lines, control_checks
from .envelope import envelope_section
from .run import MANIFEST, claim_ids, ordered_claims
from .verdicts import claim_sentence, findings_table

RULE = ("Verdict rule: per replication unit (subject or style × training seed; for merges subject × style × seed), "
        "the difference between the two sides; the units' differences are averaged within each subject (or style: "
        "training seeds of one subject give nearly the same LoRA, so they are not independent), then the mean and "
        "its 95% Student-t interval over the n subjects. An interval that contains 0 rules out effects larger than "
        "its farther end: such a row says 'no difference larger than ±X with n subjects'. "
        "Frontiers are compared by ΔHV, the difference of the normalised hypervolumes (areas dominated by each "
        "side's points in the prompt-fidelity × fidelity plane; the fidelity axis starts at the base model's own "
        "fidelity on each subject (its anchor cells, the LoRA out of the sampler), so a point that shows no more of "
        "the subject than the base model earns nothing, and the prompt-fidelity axis 10% of its range below its "
        "worst value; a claim without anchor cells starts both axes that way); merges by Δdrop, the baseline merge's drop minus the reference merge's. Interval above 0: "
        "'<tested> ahead'; below 0: '<tested> behind'; containing 0 (or n < 2): "
        f"'{stats.NO_DIFFERENCE}'. Computed, never written by hand (dcobench/study/stats.py).")


def _csv(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.10g", lineterminator="\n")
    return buf.getvalue().encode()


def _subset(cells: pd.DataFrame, ids) -> pd.DataFrame:
    out = cells[cells["cell_id"].isin(set(ids))].copy()
    out.attrs = cells.attrs
    return out


def claim_cells(manifest: dict, cells: pd.DataFrame, name: str) -> tuple[pd.DataFrame, int]:
    """The finished cells of one claim (an `arm` column added; merge rows of variants relabelled),
    and how many of its cells are not finished."""
    claim = manifest["claims"][name]
    arms = claim["arms"]
    wanted = claim_ids(manifest, name)
    parts, seen = [], set()
    for arm in claim["arm_order"]:
        entry = arms[arm]
        ids = [i for i in entry["cells"] + entry["merge_cells"] if i not in seen]
        seen.update(ids)
        part = _subset(cells, ids).assign(arm=arm)
        if claim["kind"] == "merge" and arm != "main":
            merged = ~part["merge"].isin(["subject", "style"])
            part.loc[merged, "merge"] = part.loc[merged, "merge"] + f" ({arm})"
        parts.append(part)
    df = pd.concat(parts, ignore_index=True) if parts else cells.iloc[:0].assign(arm="")
    df.attrs = cells.attrs
    return df, len(wanted) - int(df["cell_id"].nunique())


def _one_protocol(cells: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    scored = cells[cells["protocol_id"].notna()]
    if scored.empty:
        return scored
    counts = scored["protocol_id"].value_counts()
    pid = counts.index[0]
    if len(counts) > 1:
        warnings.append(f"cells were scored under {len(counts)} protocols; the report uses {pid} "
                        f"({counts.iloc[0]} cells) and leaves out {int(counts.iloc[1:].sum())}: rescore the run "
                        "(`dcobench score`) to include them")
    out = scored[scored["protocol_id"] == pid].copy()
    out.attrs = cells.attrs
    return out


def build_sections(run_dir: Path, manifest: dict, labels: dict) -> tuple[list[Section], list[str], str]:
    """The claims' sections, the warnings, and which judges carry verdicts (and on whose labels)."""
    warnings: list[str] = []
    cells = _one_protocol(load_cells(run_dir), warnings)
    read = labelled([run_dir])  # the study folder's own labels: read once, for the rule and the corrections
    calibrated, source = calibration(run_dir, manifest.get("suite", ""), read)
    corrections, notes, n_labelled = study_labels(read[0])
    cells.attrs["corrections"], cells.attrs["basis_notes"] = corrections, notes
    failed = {r["cell_id"] for r in scan_failures(run_dir)}
    if failed:
        warnings.append(f"{len(failed)} cell{'s' if len(failed) != 1 else ''} of this study failed (each claim below "
                        "says how many of its own; the run folder's cells/*/failed.json hold the errors): their "
                        "points are left out, so the verdicts rest on fewer units. Fix the cause and rerun "
                        "`dcobench study` to retry only those")
    sections = []
    for name, claim in ordered_claims(manifest):
        df, missing = claim_cells(manifest, cells, name)
        anchors = anchor_values(cells, claim, claim["judges"], corrections)
        if anchors is not None:  # every frontier of this claim starts at the base model's fidelity (anchors.py)
            df.attrs["anchors"] = anchors
        lost = len(claim_ids(manifest, name) & failed)
        missing -= lost
        if claim["kind"] == "frontier":
            sec = frontier_section(name, claim, df[df["kind"] != "merge"], labels, calibrated)
        elif claim["kind"] == "envelope":
            sec = envelope_section(name, claim, df[df["kind"] != "merge"], labels, calibrated)
        elif claim["kind"] in ("captions", "arms"):
            sec = captions_section(name, claim, df[df["kind"] != "merge"], labels, calibrated)
        else:
            sec = merge_section(name, claim, df[df["kind"] == "merge"], labels, run_dir, calibrated)
        if missing:
            sec.notes.append(f"{missing} of this claim's cells are not finished and are left out; rerun "
                             "`dcobench study` to finish them")
        if lost:  # a verdict that lost units says so in its own line
            sec.line += f" (lost: {lost} of {len(claim_ids(manifest, name))} cells failed)"
            sec.notes.append(f"{lost} of this claim's cells failed and are left out (cells/*/failed.json in the run "
                             "folder); rerun `dcobench study` to retry them")
        sections.append(sec)
    judged = basis_text(corrections, n_labelled, calibrated, source)
    changed = [r for s in sections for r in s.verdicts if r.get("labels_changed")]
    if changed:  # where the labels changed the answer: the reader must see it first
        warnings.append("the labels changed the verdict of " + "; ".join(
            f"{r['comparison']} on {r['judge_label']} (judge only: {r['judge_only_verdict']}, label-corrected: "
            f"{r['verdict']})" for r in changed))
    return sections, warnings, judged


def basis_text(corrections: dict, n_labelled: int, calibrated: dict, source: str) -> str:
    """What every verdict rests on: the paragraph above the claims."""
    if corrections:
        what = (f"Label-corrected where the study holds blind labels of its own outputs ({n_labelled} labelled "
                f"images in RUN/labels/): {', '.join(sorted(corrections))} (prediction-powered points per method "
                "× knob, intervals that carry the labels' noise: dcobench/study/ppi.py). Every other judge is "
                "judge only.")
    else:
        what = ("Judge only: this study holds no blind labels of its own outputs, so no judge's error is measured "
                "on them (label them: `dcobench label RUN_DIR`); every verdict below says so.")
    meets = sorted(j for j, (ok, _) in calibrated.items() if ok)
    return (f"Every verdict names its basis. {what} The headline rule ({source}) is a diagnostic, not a gate: "
            f"judges that meet it: {', '.join(meets) if meets else 'none'}.")


def _findings(sections: list[Section]) -> tuple[list[str], list[list[str]]]:
    return findings_table([(str(i), sec.verdicts) for i, sec in enumerate(sections, 1)])


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|",
            *["| " + " | ".join(map(esc, r)) + " |" for r in rows]]


def _checks(manifest: dict, sections: list[Section]) -> list[tuple[bool, str]]:
    return control_checks(manifest, [r for s in sections for r in s.verdicts], labeller(manifest.get("labels", {})))


def markdown(manifest: dict, sections: list[Section], warnings: list[str], judged: str = "") -> str:
    lines = [f"# Study: {manifest['study']}", ""]
    if manifest.get("description"):
        lines += [manifest["description"], ""]
    lines += [f"> **warning:** {w}" for w in warnings] + ([""] if warnings else [])
    header, body = _findings(sections)
    lines += ["## Findings", "", *[f"- **Claim {i}: {sec.title}.** {claim_sentence(sec.verdicts)}"
                                   for i, sec in enumerate(sections, 1)], "", *md_table(header, body), ""]
    lines += check_lines(_checks(manifest, sections))
    lines += [RULE, ""] + ([judged, ""] if judged else [])
    for i, sec in enumerate(sections, 1):
        lines += [f"## Claim {i}: {sec.title}", "", f"**Verdict.** {sec.line}", ""]
        lines += [f"> {n}" for n in sec.notes] + ([""] if sec.notes else [])
        if sec.figure is not None:
            lines += [f"![{sec.title}]({sec.name}.png)", ""]
        lines += [f"![{sec.title}: {key}]({key}.png)" for key in sec.extra_figures] + ([""] if sec.extra_figures else [])
        for caption, header, rows in sec.tables:
            lines += [f"*{caption}*", "", *md_table(header, rows), ""]
    moved = anchor_table(sections)
    if moved:
        lines += ["## The base-model anchor: ΔHV before and after", "", ANCHOR_NOTE, "", *md_table(*moved), ""]
    return "\n".join(lines)


def html(manifest: dict, sections: list[Section], warnings: list[str], figures: dict[str, bytes],
         judged: str = "") -> str:
    def table(header, rows):
        head = "".join(f"<th>{escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'

    def bold(text):  # the verdict line marks verdicts **like this**
        parts = escape(text).split("**")
        return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))

    out = [f"<h1>Study: {escape(manifest['study'])}</h1>", f"<p>{escape(manifest.get('description', ''))}</p>"]
    out += [f'<div class="warn"><b>warning:</b> {escape(w)}</div>' for w in warnings]
    header, body = _findings(sections)  # the answer first: the table a reader takes in at a glance
    out += ["<h2>Findings</h2>", "<ul>" + "".join(f"<li><b>Claim {i}: {escape(sec.title)}.</b> "
                                                  f"{escape(claim_sentence(sec.verdicts))}</li>"
                                                  for i, sec in enumerate(sections, 1)) + "</ul>", table(header, body)]
    checks = _checks(manifest, sections)
    if checks:
        out.append('<div class="warn"><b>Instrument checks</b> (controls fixed in the study file before the '
                   'results):<ul>' + "".join(f"<li>{'passed' if ok else '<b>FAILED</b>'}: {escape(text)}</li>"
                                              for ok, text in checks) + "</ul></div>")
    out.append(f'<p class="meta">{escape(RULE)}</p>')
    if judged:
        out.append(f'<p class="warn">{escape(judged)}</p>')
    for i, sec in enumerate(sections, 1):
        out += [f"<h2>Claim {i}: {escape(sec.title)}</h2>", f'<p class="verdict">Verdict. {bold(sec.line)}</p>']
        out += [f'<p class="warn">{escape(n)}</p>' for n in sec.notes]
        for key in [sec.name, *sec.extra_figures]:
            if key in figures:
                out.append(f'<img alt="{escape(sec.title)}" src="{data_uri(figures[key])}">')
        for caption, header, rows in sec.tables:
            out += [f"<h3>{escape(caption)}</h3>", table(header, rows)]
    moved = anchor_table(sections)
    if moved:
        out += ["<h2>The base-model anchor: ΔHV before and after</h2>", f"<p>{escape(ANCHOR_NOTE)}</p>", table(*moved)]
    css = ("body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1400px;padding:0 16px;line-height:1.4}"
           "table{border-collapse:collapse;font-size:.9em}th,td{border:1px solid #ccc;padding:3px 8px}"
           "th{background:#f2f4f7}.scroll{overflow-x:auto}img{max-width:100%}.meta{color:#555;font-size:.9em}"
           ".warn{background:#fff4d6;border:1px solid #e0b84c;padding:6px 10px}.verdict{font-size:1.05em}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Study: "
            f"{escape(manifest['study'])}</title><style>{css}</style></head>\n<body>\n" + "\n".join(out)
            + "\n</body></html>\n")


def write_study_report(run_dir: str | Path, out_dir: str | Path | None = None, labels: dict | None = None) -> dict:
    """Fold `run_dir` (a `dcobench study` folder) into its report under `out_dir` (default RUN/report)."""
    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file():
        raise DcoError(f"{run_dir}: no {MANIFEST}; this is not a study folder (run `dcobench study ... --out {run_dir}`)")
    manifest = read_json(run_dir / MANIFEST)
    labels = labels if labels is not None else manifest.get("labels", {})
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    sections, warnings, judged = build_sections(run_dir, manifest, labels)
    paths, figures = {}, {}
    for sec in sections:
        for key, fig in ([(sec.name, sec.figure)] if sec.figure is not None else []) + list(sec.extra_figures.items()):
            paths.update(save_figure(fig, out, key))
            figures[key] = paths[f"{key}_png"].read_bytes()
        for key, frame in sec.frames.items():
            paths[f"{sec.name}-{key}"] = out / f"{sec.name}-{key}.csv"
            atomic_write_bytes(paths[f"{sec.name}-{key}"], _csv(frame))
    verdicts = pd.DataFrame([{**r, "title": s.title} for s in sections for r in s.verdicts],
                            columns=["claim", "title", "effect", "sampler", "recipe", "comparison", "tested", "against", "judge",
                                     "judge_label", "statistic", "estimate", "ci_low", "ci_high", "n", "units", "seeds",
                                     "half_width", "bound", "verdict", "headline", "interval_verdict", "calibrated",
                                     "basis", "labels", "judge_only_estimate", "judge_only_ci_low",
                                     "judge_only_ci_high", "judge_only_verdict", "labels_changed", "anchor",
                                     "unanchored_estimate", "unanchored_ci_low", "unanchored_ci_high",
                                     "unanchored_verdict"])
    paths["verdicts_csv"] = out / "verdicts.csv"
    atomic_write_bytes(paths["verdicts_csv"], _csv(verdicts))
    paths["study_md"] = out / "study.md"
    atomic_write_bytes(paths["study_md"], markdown(manifest, sections, warnings, judged).encode())
    paths["index_html"] = out / "index.html"
    atomic_write_bytes(paths["index_html"], html(manifest, sections, warnings, figures, judged).encode())
    paths["study_json"] = out / MANIFEST
    atomic_write_json(paths["study_json"], manifest)
    return paths
