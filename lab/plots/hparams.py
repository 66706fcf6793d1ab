"""Plots of batch-size and learning-rate fits: per-budget heatmaps over (batch, LR) and the fitted
B_opt / lr_opt laws beside published ones (DeepSeek LLM 2024 in C; Step Law 2025 in N and D)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from lab.fit.engine.result import FitResult
from lab.plots.base import band as _band
from lab.plots.base import finish_loglog as _finish_loglog
from lab.plots.base import note_excluded


# Published batch/LR laws: DeepSeek LLM (2024) in C (FLOPs; their M-based C ~ 6ND here), and Step Law
# (Li et al. 2025) in N and D, batch in tokens.
DEEPSEEK = {"B_coef": 0.2920, "B_C_exp": 0.3271, "lr_coef": 0.3118, "lr_C_exp": -0.1250}
STEPLAW = {"lr_coef": 1.79, "lr_N_exp": -0.713, "lr_D_exp": 0.307, "B_coef": 0.58, "B_D_exp": 0.571}


def _grid_ticks(ax, B: np.ndarray, lr: np.ndarray) -> None:
    """Ticks at the swept batches and LRs themselves (log minor labels crowd a small panel)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    for axis, vals, fmt in ((ax.xaxis, B, "{:.0f}"), (ax.yaxis, lr, "{:.2g}")):
        v = np.unique(np.round(vals, 12))
        if len(v) > 6:
            v = v[:: int(np.ceil(len(v) / 6))]
        axis.set_minor_locator(NullLocator())
        axis.set_minor_formatter(NullFormatter())
        axis.set_ticks(v, [fmt.format(x) for x in v])
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.tick_params(axis="y", labelsize=7)


def plot_hparam_heatmaps(result: FitResult, max_cells: int | None = None, ncols: int = 4):
    """Per budget (or cell): loss over (batch, LR), near-optimal runs ringed, the best starred.

    Every cell gets a panel, ``ncols`` to a row (a 4 sizes x 3 budgets study: 12 panels on 3 rows);
    ``max_cells`` caps the panels drawn, and the figure's title then says how many of how many.
    """
    h, near = result.extra["data"], result.extra["near"]
    total = len(h.cells)
    cells = list(range(total))[:max_cells] if max_cells is not None else list(range(total))
    if not cells:
        raise ValueError("plot_hparam_heatmaps: no cells to draw")
    ncols = max(1, min(len(cells), int(ncols)))
    nrows = math.ceil(len(cells) / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(3.8 * ncols + 1.0, 3.4 * nrows), squeeze=False,
                             layout="constrained")   # titles clear of the row above's tick labels
    axes = list(grid.ravel())
    sc = None
    for k, (ax, g) in enumerate(zip(axes, cells)):
        idx = np.flatnonzero(h.cell == g)
        if not len(idx):
            ax.set_axis_off()
            continue
        rel = h.loss[idx] / h.loss[idx].min() - 1
        # a shared colour scale, so one colourbar reads every panel
        sc = ax.scatter(h.B[idx], h.lr[idx], c=np.minimum(rel, 0.05) * 100, cmap="viridis_r", s=60, marker="s",
                        vmin=0.0, vmax=5.0)
        nb = idx[near[idx]]
        ax.scatter(h.B[nb], h.lr[nb], facecolors="none", edgecolors="r", s=140, lw=1.2, label="near-optimal")
        j = idx[np.argmin(h.loss[idx])]
        ax.scatter([h.B[j]], [h.lr[j]], marker="*", color="r", s=120, zorder=4, label="best")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _grid_ticks(ax, h.B[idx], h.lr[idx])
        c = h.cells[g]
        size = f"N={c['N']:.3g}, " if "N" in c else ""
        ax.set_title(f"{size}C={c['C']:.2g}" + (" EDGE" if result.diagnostics["cells"][g]["edge"] else ""), fontsize=9)
        ax.set_xlabel("batch (tokens)")
        if k % ncols == 0:
            ax.set_ylabel("peak LR")
        if k == 0:
            ax.legend(fontsize=7)
    for ax in axes[len(cells):]:
        ax.set_axis_off()
    if sc is not None:
        fig.colorbar(sc, ax=axes, label="loss above cell best (%, capped at 5)")
    if len(cells) < total:
        fig.suptitle(f"first {len(cells)} of {total} cells (max_cells={max_cells})", fontsize=9)
    return fig


def plot_hparam_laws(result: FitResult, axes=None, published: bool = True):
    """B_opt(C) and lr_opt(C) with bootstrap bands to the target, beside DeepSeek's and Step Law's laws."""
    from lab.fit.hparams import predict_hparams

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    axB, axL = axes
    h, form, p, s = result.extra["data"], result.extra["form"], result.params, result.samples
    cs = np.array([c["C"] for c in h.cells])
    C = np.logspace(math.log10(cs.min()), math.log10(result.predictions["C"]), 40)

    # a form-ND law is drawn along the cells' own median D/N (and C ~ 6 N D), where its runs are
    ratio = float(np.median([c["D"] / c["N"] for c in h.cells])) if form != "C" else None

    def at(params, Cv):
        if form == "C":
            return predict_hparams(params, "C", C=Cv)
        N = np.sqrt(Cv / (6 * ratio))
        return predict_hparams(params, "ND", N=N, D=ratio * N)

    label = "lab fit" if form == "C" else f"lab fit (along D = {ratio:.0f} N)"
    b, l = at(p, C)
    axB.plot(C, b, color="C0", lw=1.8, label=label)
    axL.plot(C, l, color="C0", lw=1.8, label=label)
    if s:
        K = len(next(iter(s.values())))
        draws = [at({k: v[i] for k, v in s.items()}, C) for i in range(min(K, 300))]
        B_d, L_d = np.array([d[0] for d in draws]), np.array([d[1] for d in draws])
        _band(axB, C, B_d, "C0")
        _band(axL, C, L_d, "C0")
    for c in result.diagnostics["cells"]:
        axB.scatter([c["C"]], [c["best_B"]], color="C0", s=20, zorder=3)
        axL.scatter([c["C"]], [c["best_lr"]], color="C0", s=20, zorder=3)
    if published:
        axB.plot(C, DEEPSEEK["B_coef"] * C ** DEEPSEEK["B_C_exp"], "k--", lw=1, label="DeepSeek LLM 2024")
        axL.plot(C, DEEPSEEK["lr_coef"] * C ** DEEPSEEK["lr_C_exp"], "k--", lw=1, label="DeepSeek LLM 2024")
        N = np.sqrt(C / 120)
        sb, sl = predict_hparams(STEPLAW, "ND", N=N, D=20 * N)
        axB.plot(C, sb, "k:", lw=1, label="Step Law 2025 (D = 20N)")
        axL.plot(C, sl, "k:", lw=1, label="Step Law 2025 (D = 20N)")
    d = result.diagnostics
    note_excluded(axB, d.get("dropped", d.get("excluded")))   # once: diverged and failed runs left out
    _finish_loglog(((axB, "B_opt (tokens)"), (axL, "lr_opt")), 7)
    return axes
