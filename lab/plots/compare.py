"""Figures of a two-ladder comparison (:func:`lab.fit.compare.compare_ladders`).

* :func:`plot_multiplier` the effective compute multiplier k(C) = C_A(L*_B(C)) / C: per-budget
  readings (B's minima through A's measured minima) with their intervals, the frontier-based curve
  and band out to the target, the pure power laws' k there when a floor was fitted, k = 1.
* :func:`plot_profiles_overlay` both ladders' IsoFLOP profiles (runs and parabolas) on one axis.

C in FLOPs as the input tables count them; losses in nats/token unless the comparison named another
loss column. Nothing here calls ``matplotlib.use``: the backend is the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

from lab.fit.engine.result import FitResult
from lab.plots.base import new_ax

if TYPE_CHECKING:
    from lab.fit.compare import LadderComparison

STYLES = ({"marker": "o", "ls": "-"}, {"marker": "^", "ls": "--"})  # ladder A, ladder B


def _arr(values) -> np.ndarray:
    """Floats with None (a deserialised NaN or inf) as NaN."""
    return np.array([np.nan if v is None else v for v in values], float)


def _finite(a: np.ndarray) -> np.ndarray:
    """``a`` with inf (an unbounded interval end: A never reaches B's loss) as NaN, which plots leave out."""
    return np.where(np.isfinite(a), a, np.nan)


def _bars(k: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(2, n) error-bar lengths below and above ``k``; 0 on a side whose end is missing or infinite."""
    yerr = np.vstack([k - lo, hi - k])
    return np.where(np.isfinite(yerr), yerr, 0.0).clip(min=0)


def _budget_points(ax, cmp: LadderComparison) -> None:
    """B's per-budget readings with asymmetric error bars (a bar's side is left out where its end is not finite);
    extrapolated readings (beyond A's minima) hollow."""
    rows = [r for r in cmp.budgets if np.isfinite(r.k)]
    if not rows:
        return
    C, k = _arr([r.C for r in rows]), _arr([r.k for r in rows])
    lo, hi = _arr([r.interval[0] for r in rows]), _arr([r.interval[1] for r in rows])
    yerr = _bars(k, lo, hi)
    ext = np.array([r.extrapolated for r in rows], bool)
    ax.errorbar(C, k, yerr=yerr, fmt="none", ecolor="C0", capsize=3, zorder=3)
    ax.scatter(C[~ext], k[~ext], color="C0", zorder=4,
               label=f"per budget: {cmp.names[1]}'s minimum via {cmp.names[0]}'s minima")
    if ext.any():
        ax.scatter(C[ext], k[ext], facecolors="white", edgecolors="C0", zorder=4,
                   label=f"per budget, beyond {cmp.names[0]}'s minima (extrapolated)")


def plot_multiplier(cmp: LadderComparison, ax=None):
    """k(C) of ladder B over ladder A on log-log axes; returns the axes.

    Points: B's measured minimum at each of its budgets read through A's measured minima, with
    bootstrap bars (hollow: beyond A's minima); line and band: k from both frontiers (``cmp.curve``,
    in ``cmp.forms``) out to the target, marked by a star and a dotted vertical line; a hollow
    diamond: the pure power laws' k at the target when a floor was fitted; dashed horizontal line at
    k = 1 (no difference; above it B is better). Infinite values (A never reaches B's loss) are left out.
    """
    ax = new_ax(ax)
    a, b = cmp.names
    cur = {k: _finite(_arr(v)) for k, v in cmp.curve.items()}
    ax.plot(cur["C"], cur["k"], color="C1", lw=1.5, label=f"from both frontiers ({' / '.join(cmp.forms)})")
    if np.isfinite(cur["lo"]).any():
        ax.fill_between(cur["C"], cur["lo"], cur["hi"], color="C1", alpha=0.2, lw=0,
                        label=f"{cmp.level:.0%} bootstrap band")
    _budget_points(ax, cmp)
    ax.axhline(1.0, color="0.4", ls="--", lw=1, label="k = 1 (no difference)")
    ax.axvline(cmp.target_flops, color="0.6", ls=":", lw=1)
    m = _finite(np.array([cmp.multiplier], float))
    err = _bars(m, *(np.array([v], float) for v in cmp.interval)) if np.isfinite(m).all() else None
    ax.errorbar([cmp.target_flops], m, yerr=err, fmt="*", ms=12, color="C3", capsize=3, zorder=4,
                label=f"target C = {cmp.target_flops:.2g}: k = {cmp.multiplier:.3g}")
    k_p = (cmp.alternative or {}).get("multiplier")
    if k_p is not None and np.isfinite(k_p):
        ax.scatter([cmp.target_flops], [k_p], marker="D", facecolors="none", edgecolors="C3", zorder=4,
                   label=f"pure power laws: k = {k_p:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("C (training FLOPs)")
    ax.set_ylabel(f"k = C_{a}(L*_{b}(C)) / C")
    ax.set_title(f"compute multiplier of {b} over {a} ({cmp.verdict})", fontsize=10)
    ax.legend(fontsize=7)
    return ax


def _profiles(ax, res: FitResult, name: str, style: dict, norm: LogNorm) -> None:
    """One ladder's runs and per-budget parabolas in ``style``, coloured by budget on a shared scale."""
    pts, groups, profiles = res.extra["points"], res.extra["groups"], res.extra["profiles"]
    cmap = plt.get_cmap("viridis")
    for g, prof in enumerate(profiles):
        col = cmap(norm(prof["C"]))
        idx = np.flatnonzero(groups == g)
        ax.scatter(pts.N[idx], pts.loss[idx], color=col, marker=style["marker"], s=18, zorder=3)
        p = prof["parabola_lnN"]
        if np.all(np.isfinite(p)):
            x = np.linspace(np.log(pts.N[idx].min()) - 0.2, np.log(pts.N[idx].max()) + 0.2, 100)
            ax.plot(np.exp(x), p[0] + p[1] * x + p[2] * x * x, color=col, ls=style["ls"], lw=1,
                    label=name if g == 0 else None)
        if prof["interior_min"]:
            ax.scatter([prof["N_opt"]], [prof["loss_opt"]], color=col, marker="x", s=40, zorder=4)


def plot_profiles_overlay(res_a: FitResult, res_b: FitResult, names: Sequence[str] = ("A", "B"), ax=None):
    """Both ladders' IsoFLOP profiles (approach 2 fits, e.g. ``cmp.fits``) on one log-x axis; returns the axes.

    A in circles and solid parabolas, B in triangles and dashed ones; a budget's colour is its C on
    one scale for both ladders, so equal budgets share a colour; crosses mark the interior minima.
    """
    ax = new_ax(ax)
    Cs = [p["C"] for r in (res_a, res_b) for p in r.extra["profiles"]]
    norm = LogNorm(vmin=min(Cs), vmax=max(Cs) * (1 + 1e-9))
    for res, name, style in zip((res_a, res_b), names, STYLES):
        _profiles(ax, res, name, style, norm)
    ax.set_xscale("log")
    ax.set_xlabel("N (parameters, as the table counts them)")
    col = res_a.extra["points"].columns.get("loss", "loss")
    ax.set_ylabel("loss (nats/token)" if col == "loss_val" else col)
    sm = plt.cm.ScalarMappable(norm=norm, cmap="viridis")
    ax.figure.colorbar(sm, ax=ax, label="budget C (FLOPs)")
    ax.legend(fontsize=8)
    return ax
