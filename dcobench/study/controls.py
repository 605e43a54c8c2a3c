"""The instrument's checks: controls whose outcome is fixed in the study file before any result.

A positive control compares a method with a deliberately weakened copy of itself and must come out
"<first arm> ahead" (`expect: ahead`); a negative control compares a method with itself on other
training seeds and must come out even (`expect: even`). Each is read on the claim's headline judges
from the interval (`interval_verdict`, so a judge that carries no verdict still shows what its
interval says), and the report and the findings state at their top whether each check passed: a
study whose positive control fails cannot tell a weaker method from a stronger one at its n.
"""

from __future__ import annotations

from .recipes import arm_names
from .run import ordered_claims
from .stats import NO_DIFFERENCE


def _reading(row: dict) -> str:
    got = row.get("interval_verdict")
    return got if isinstance(got, str) and got else row["verdict"]


def control_checks(manifest: dict, rows: list[dict], lab) -> list[tuple[bool, str]]:
    """(passed, one line) per control claim and headline judge, in the study's order."""
    from .verdicts import interval, short_basis

    out = []
    for name, claim in ordered_claims(manifest):
        expect = claim.get("expect") or ""
        if not expect:
            continue
        want = f"{lab(arm_names(claim)[0])} ahead" if expect == "ahead" else NO_DIFFERENCE
        heads = claim["headline"] or claim["judges"][:1]
        for r in rows:
            if r["claim"] == name and r["judge"] in heads:
                got = _reading(r)
                if r["n"] < 2:  # no interval: a control that measured nothing has not passed
                    out.append((False, f"{claim['title'] or name}, {r['judge_label']}: expected '{want}', but only "
                                       f"{r['n']} subject(s) could be paired, so there is no interval"))
                    continue
                out.append((got == want, f"{claim['title'] or name}, {r['judge_label']}: expected '{want}', the "
                                         f"interval says '{got}' ({interval(r)}; {short_basis(r)})"))
    return out


def check_lines(checks: list[tuple[bool, str]]) -> list[str]:
    """Markdown lines for the top of a report or findings block (none when the study has no controls)."""
    if not checks:
        return []
    lines = ["**Instrument checks** (controls fixed in the study file before the results):", ""]
    lines += [f"- {'passed' if ok else '**FAILED**'}: {text}" for ok, text in checks]
    if not all(ok for ok, _ in checks):
        lines += ["", "**A check failed: at this number of subjects (and, on a label-corrected judge, of labels per "
                  "point) the study cannot be relied on to tell the methods apart; read every 'no difference' below "
                  "in that light.**"]
    return lines + [""]
