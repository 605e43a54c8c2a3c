"""How a verdict row reads: its numbers, its basis and the claim's one line, in tables and text.

Every figure comes from a verdict row (`calibration.verdict_row`); nothing here computes a statistic.
"""

from __future__ import annotations

import math


def fmt(v: float, signed: bool = False) -> str:
    return "–" if not math.isfinite(v) else (f"{v:+.3f}" if signed else f"{v:.3f}")


def sample_size(row: dict) -> str:
    """"3 subjects × 2 seeds" (the interval is over the subjects)."""
    seeds = row.get("seeds", 1)
    return f"{row['n']} subject{'s' * (row['n'] != 1)}" + (f" × {seeds} seeds" if seeds > 1 else "")


def rules_out(row: dict) -> str:
    """"±0.063" for an interval that contains 0 (it rules out every effect beyond its farther end), else "–"."""
    lo, hi, bound = row["ci_low"], row["ci_high"], row.get("bound", math.nan)
    contains_zero = math.isfinite(lo) and math.isfinite(hi) and lo <= 0 <= hi
    return f"±{bound:.3f}" if contains_zero and isinstance(bound, float) and math.isfinite(bound) else "–"


def interval(row: dict) -> str:
    ci = f"95% CI [{fmt(row['ci_low'], True)}, {fmt(row['ci_high'], True)}]" if math.isfinite(row["ci_low"]) else "no CI"
    bound = rules_out(row)
    return (f"{row['statistic']} {fmt(row['estimate'], True)}, {ci}, {sample_size(row)}"
            + (f"; no difference larger than {bound}" if bound != "–" else ""))


def _flag(v) -> bool:
    """A boolean cell as read back from verdicts.csv (NaN on rows without it)."""
    return v is True or str(v) == "True"


def short_basis(row: dict) -> str:
    """"label-corrected (N labels)" (flagged where the judge alone read another verdict), or "judge only"."""
    basis = row.get("basis") if isinstance(row.get("basis"), str) else ""
    if basis.startswith("label-corrected"):
        flag = "; ⚑ judge only read " + row["judge_only_verdict"] if _flag(row.get("labels_changed")) else ""
        return f"label-corrected ({int(row.get('labels', 0))} labels{flag})"
    return "judge only" + (" (a similarity)" if "similarity" in basis else "")


def in_words(row: dict) -> str:
    """The verdict as a reader says it: "DCO ahead", or what a no-difference interval rules out."""
    bound = rules_out(row)
    return f"no difference larger than {bound}" if bound != "–" and row["verdict"].startswith("no difference") \
        else row["verdict"]


def findings_table(claims: list[tuple[str, list[dict]]]) -> tuple[list[str], list[list[str]]]:
    """One row per claim × comparison on its headline judges: what a reader takes in at a glance."""
    header = ["claim", "comparison", "judge", "estimate", "95% CI", "subjects × seeds", "basis", "verdict"]
    body = [[title, r["comparison"], r["judge_label"], f"{r['statistic']} {fmt(r['estimate'], True)}",
             f"[{fmt(r['ci_low'], True)}, {fmt(r['ci_high'], True)}]", f"{r['n']} × {r.get('seeds', 1)}",
             short_basis(r), in_words(r)]
            for title, rows in claims for r in rows if r["headline"]]
    return header, body


def claim_sentence(rows: list[dict]) -> str:
    """What a claim's headline rows mean, in one sentence: per effect, the verdicts it found, or the
    largest difference its intervals leave open."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["headline"]:
            groups.setdefault(r.get("effect") or "", []).append(r)
    parts = []
    for effect, rs in groups.items():
        label = f"{effect}: " if effect else ""
        found = [r for r in rs if not r["verdict"].startswith("no difference")]
        if not found:
            bounds = [r.get("bound", math.nan) for r in rs]
            wide = max((b for b in bounds if isinstance(b, float) and math.isfinite(b)), default=math.nan)
            parts.append(f"{label}no difference " + (f"larger than ±{wide:.2f} " if math.isfinite(wide) else "")
                         + f"({sample_size(rs[0])})")
        else:
            parts.append(label + ", ".join(f"{r['comparison']}: {r['verdict']} ({fmt(r['estimate'], True)})"
                                           for r in found))
    return "; ".join(parts) + "." if parts else "no comparison could be computed."


def verdict_table(rows: list[dict]) -> tuple[str, list[str], list[list[str]]]:
    effect = any("effect" in r for r in rows)
    header = (["effect"] if effect else []) + ["comparison", "judge", "statistic", "estimate", "95% CI",
                                               "subjects × seeds", "rules out beyond", "basis", "verdict"]
    body = [([r.get("effect", "")] if effect else []) +
            [r["comparison"], r["judge_label"], r["statistic"], fmt(r["estimate"], True),
             f"[{fmt(r['ci_low'], True)}, {fmt(r['ci_high'], True)}]", f"{r['n']} × {r.get('seeds', 1)}",
             rules_out(r), short_basis(r), r["verdict"]] for r in rows]
    return "Verdicts (paired over units, interval over subjects; see the rule above)", header, body


def headline(rows: list[dict], judges: list[str]) -> str:
    """The claim's one line: every headline judge's comparisons, each with its verdict and numbers."""
    parts = []
    for j in judges:
        mine = [r for r in rows if r["judge"] == j and r["headline"]]
        if mine:
            parts.append(f"{mine[0]['judge_label']}: " + "; ".join(
                f"{r['comparison']}: **{r['verdict']}** ({interval(r)}; {short_basis(r)})" for r in mine))
    return " — ".join(parts) or "no comparison could be computed (no finished cells)"
