"""The merge claim's figure: each merge's drop against the unmerged LoRAs, per judge, with CIs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import metric_meta
from ..report.merges import ALONE_LABEL
from ..report.tables import mean_ci


def drop_figure(drops: pd.DataFrame, metrics: list[str], lab=str):
    """One panel per metric: a bar per (method, merge) = mean drop over pairs, 95% t-CI whiskers."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator
    from matplotlib.figure import Figure

    merged = drops[~drops["merge"].isin(list(ALONE_LABEL))]
    groups = sorted(set(zip(merged["method"], merged["merge"])))
    ncols = max(1, min(3, len(metrics)))
    nrows = max(1, -(-len(metrics) // ncols))
    fig = Figure(figsize=(5.2 * ncols, (0.9 + 0.32 * len(groups)) * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    cmap = colormaps["tab10"]
    methods = sorted({m for m, _ in groups})
    for ax, m in zip(axes, metrics):
        stats = [mean_ci(merged[(merged["method"] == a) & (merged["merge"] == g)][f"drop_{m}"].tolist())
                 for a, g in groups]
        means = [s[0] for s in stats]
        errs = [0.0 if not np.isfinite(s[1]) else s[1] for s in stats]
        ys = list(range(len(groups)))[::-1]  # the first group on top
        ax.barh(ys, means, xerr=errs, capsize=3, color=[cmap(methods.index(a) % 10) for a, _ in groups], alpha=0.8)
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_yticks(ys)
        ax.set_yticklabels([f"{lab(a)} · {lab(g)}" for a, g in groups], fontsize=8)
        ax.set_title(f"drop of {metric_meta(m)['label']}", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(4))
    for ax in axes[len(metrics):]:
        ax.set_axis_off()
    fig.suptitle("Merge interference: unmerged LoRA's score minus the merge's, per pair "
                 "(mean ± 95% CI; right of 0 = interference)", fontsize=11)
    return fig
