"""Training curves: what each objective logged, against the optimizer step, one line per method.

Each LoRA's train.json holds `curves`, one list per logged value with one entry per optimizer step
(runs from before curves were recorded have only `losses`); a cell's result.json points to it
(`train_log`, else loras/<train_id>/train.json). Panels, each where some method logs the value:

    loss           every objective's loss
    implicit_acc   DCO: the fraction of samples on which the LoRA fits the target better than the
                   base model (diff = mse_theta - mse_phi < 0); 0.5 at the start, where diff = 0
    beta_gap       DCO: beta * mean diff, the argument of its sigmoid; far below 0 the loss and its
                   gradient vanish (the saturation a too-large beta causes)

A line is the mean over the method's trained LoRAs (subjects x training seeds x training knobs),
with a band of ± the 95% t-CI where there are at least two. A single step is a one-batch
estimate, so each LoRA's curve is first smoothed by a trailing moving average (the window is in
the figure's title).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..store import read_json
from .pareto import save_figure
from .tables import t_critical

PANELS = {"loss": "training loss", "implicit_acc": "implicit accuracy (diff < 0)",
          "beta_gap": "β · gap  (β · (mse_θ − mse_φ))"}


def _train_log(row: pd.Series) -> Path:
    result = read_json(row["result_path"])
    rel = result.get("train_log")
    if rel:
        return (Path(row["cell_dir"]) / rel).resolve()
    return Path(row["cell_dir"]).parents[1] / "loras" / str(row["train_id"]) / "train.json"


def load_curves(df: pd.DataFrame) -> tuple[dict[str, dict[str, list[np.ndarray]]], list[str]]:
    """({method: {value: [one array per LoRA]}}, train ids whose train.json is missing)."""
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    missing = []
    cells = df[df["kind"] != "merge"].drop_duplicates("train_id")
    for _, row in cells.iterrows():
        path = _train_log(row)
        if not path.is_file():
            missing.append(str(row["train_id"]))
            continue
        info = read_json(path)
        curves = info.get("curves") or {"loss": info.get("losses") or []}
        for key, values in curves.items():
            if key in PANELS and values:
                out.setdefault(row["method"], {}).setdefault(key, []).append(np.asarray(values, dtype=float))
    return out, missing


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average: entry i is the mean of values[max(0, i - window + 1) : i + 1]."""
    c = np.cumsum(np.insert(values, 0, 0.0))
    i = np.arange(1, len(values) + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def window_for(curves: dict) -> int:
    longest = max((len(a) for keys in curves.values() for arrays in keys.values() for a in arrays), default=1)
    return max(1, round(longest / 25))


def curve_band(arrays: list[np.ndarray], window: int) -> pd.DataFrame:
    """Per step: mean over LoRAs of the smoothed curves, 95% t-CI half-width, n (ragged lengths allowed)."""
    width = max(len(a) for a in arrays)
    grid = np.full((len(arrays), width), np.nan)
    for i, a in enumerate(arrays):
        grid[i, : len(a)] = smooth(a, window)
    n = np.isfinite(grid).sum(0)
    mean = np.nanmean(grid, 0)
    std = np.array([np.nanstd(col, ddof=1) if k > 1 else np.nan for col, k in zip(grid.T, n)])
    ci = np.array([t_critical(k - 1) * s / math.sqrt(k) if k > 1 else np.nan for s, k in zip(std, n)])
    return pd.DataFrame({"step": np.arange(1, width + 1), "mean": mean, "ci": ci, "n": n})


def curves_figure(curves: dict, window: int):
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    keys = [k for k in PANELS if any(k in v for v in curves.values())]
    fig = Figure(figsize=(5.2 * len(keys), 3.8), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    cmap = colormaps["tab10"]
    colours = {m: cmap(i % 10) for i, m in enumerate(sorted(curves))}
    for ax, key in zip(axes, keys):
        means = []
        for method in sorted(curves):
            if key not in curves[method]:
                continue
            band = curve_band(curves[method][key], window)
            means.append(band["mean"].to_numpy())
            n = len(curves[method][key])
            ax.plot(band["step"], band["mean"], color=colours[method], lw=1.6, label=f"{method} (n={n} LoRAs)")
            ax.fill_between(band["step"], band["mean"] - band["ci"], band["mean"] + band["ci"],
                            color=colours[method], alpha=0.2, lw=0)
        if key == "implicit_acc":
            ax.set_ylim(-0.02, 1.02)
        else:  # the axes follow the means; with few LoRAs a t-band can be far wider than the curves
            lo, hi = float(min(m.min() for m in means)), float(max(m.max() for m in means))
            pad = max(0.1 * (hi - lo), 1e-3 * max(abs(lo), abs(hi)), 1e-6)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(PANELS[key], fontsize=11)
        ax.set_xlabel("optimizer step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
    fig.suptitle(f"Training curves: mean ± 95% CI over LoRAs (axes fit the means); moving average over {window} "
                 f"step{'s' if window > 1 else ''}", fontsize=11)
    return fig


def plot_curves(df: pd.DataFrame, out_dir: str | Path) -> tuple[dict[str, Path], list[str]]:
    """Write curves.png / curves.svg when any LoRA logged a curve; returns (paths, missing train ids)."""
    curves, missing = load_curves(df)
    if not curves:
        return {}, missing
    return save_figure(curves_figure(curves, window_for(curves)), out_dir, "curves", dpi=110), missing
