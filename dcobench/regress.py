"""Guarding fidelity scores: compare a run's aggregate metrics with a stored baseline.

A baseline is JSON: the protocol the scores were measured under, provenance, each group's
aggregate metrics (a group is a method and its knob value, e.g. `dco[sample.w_con=2.0]`; the
value is the mean over the group's cells), and per-metric absolute tolerances. A metric fails
when it is worse than the baseline by more than its tolerance, in its own direction
(`higher_is_better`). A baseline measured under another protocol is never compared: that is a
one-line error (exit 2), not a regression (exit 1).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .errors import DcoError
from .metrics import metric_meta
from .store import RunDir, atomic_write_json, provenance, read_json

DEFAULT_TOLERANCE = 0.02


def group_key(result: dict) -> str:
    if result.get("kind") == "merge":  # `--merge` rows never pool with the method's own cells
        return f"{result['method']}/merge={result['merge']}"
    knobs = ",".join(f"{k}={v}" for k, v in sorted(result.get("knobs", {}).items()))
    return f"{result['method']}[{knobs}]" if knobs else result["method"]


def aggregate(run_dir) -> tuple[dict, dict[str, dict[str, float]]]:
    """(protocol, {group: {metric: mean over cells}}) of a scored run."""
    results = RunDir(run_dir).results()
    if not results:
        raise DcoError(f"{run_dir}: no finished cells; run `dcobench run --out {run_dir}` first")
    unscored = [r["cell_id"] for r in results if "metrics" not in r]
    if unscored:
        raise DcoError(f"{run_dir}: cell {unscored[0]} has no scores; run `dcobench score {run_dir}`")
    protocols = {r["protocol"]["id"]: r["protocol"] for r in results}
    if len(protocols) > 1:
        raise DcoError(f"{run_dir}: cells were scored under different protocols ({', '.join(sorted(protocols))}); "
                       f"rescore them all with `dcobench score {run_dir} --force`")
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        for metric, stats in r["metrics"].items():
            values[group_key(r)][metric].append(stats["mean"])
    groups = {g: {m: sum(v) / len(v) for m, v in sorted(ms.items())} for g, ms in sorted(values.items())}
    return next(iter(protocols.values())), groups


def compare(run_dir, baseline_path) -> tuple[list[dict], bool, str]:
    """Rows of (group, metric, baseline, current, delta, tolerance, ok); overall ok; a note."""
    path = Path(baseline_path)
    if not path.is_file():
        raise DcoError(f"{path}: baseline not found; write one with `dcobench regress {run_dir} --update {path}`")
    try:
        baseline = read_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise DcoError(f"{path}: not valid JSON ({e}); restore the baseline file or write one with --update")
    protocol, groups = aggregate(run_dir)
    if not isinstance(baseline, dict) or not isinstance(baseline.get("protocol"), dict) or "metrics" not in baseline:
        raise DcoError(f"{path}: not a dcobench baseline (no protocol or metrics); write one with "
                       f"`dcobench regress {run_dir} --update {path}`")
    if baseline["protocol"].get("id") != protocol["id"]:
        raise DcoError(f"{path}: protocols differ: baseline {baseline['protocol'].get('id')} vs run {protocol['id']}; "
                       "scores measured differently cannot be compared: rescore the run under the baseline's "
                       f"protocol (`dcobench score {run_dir} ...`) or write a new baseline with --update")
    rows, ok = [], True
    for group, metrics in baseline["metrics"].items():
        for metric, base in metrics.items():
            tol = baseline["tolerances"].get(metric, DEFAULT_TOLERANCE)
            current = groups.get(group, {}).get(metric)
            higher = metric_meta(metric)["higher_is_better"]
            if current is None:
                good, delta = False, None
            else:
                delta = current - base
                good = delta >= -tol if higher else delta <= tol
            ok &= good
            rows.append({"group": group, "metric": metric, "baseline": base, "current": current,
                         "delta": delta, "tolerance": tol, "ok": good})
    return rows, ok, ""


def update(run_dir, baseline_path, tolerance: float | None = None) -> dict:
    """Write the run's aggregates as the baseline; tolerances: `tolerance`, else the old file's."""
    protocol, groups = aggregate(run_dir)
    path = Path(baseline_path)
    old = read_json(path)["tolerances"] if path.is_file() else {}
    metrics = sorted({m for g in groups.values() for m in g})
    tol = {m: tolerance if tolerance is not None else old.get(m, DEFAULT_TOLERANCE) for m in metrics}
    baseline = {"protocol": protocol, "metrics": groups, "tolerances": tol, "provenance": provenance(),
                "run": str(run_dir)}
    atomic_write_json(path, baseline)
    return baseline


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'group':<32} {'metric':<14} {'baseline':>9} {'current':>9} {'delta':>9} {'tol':>6}  status"]
    for r in rows:
        cur = "missing" if r["current"] is None else f"{r['current']:.4f}"
        delta = "" if r["delta"] is None else f"{r['delta']:+.4f}"
        lines.append(f"{r['group']:<32} {r['metric']:<14} {r['baseline']:>9.4f} {cur:>9} {delta:>9} "
                     f"{r['tolerance']:>6.3f}  {'ok' if r['ok'] else 'REGRESSED'}")
    return "\n".join(lines)
