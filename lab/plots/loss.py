"""Plots of loss-law fits, one function each; every function takes an optional ``ax`` (notebooks).

* :func:`plot_isoflops` IsoFLOP profiles with their fitted parabolas and minima (approach 2).
* :func:`plot_frontier` loss vs compute: the runs, the fitted law and its extrapolation band to the
  target compute.
* :func:`plot_optimal` N_opt(C) and D_opt(C) with bootstrap bands, beside published laws
  (Hoffmann et al. 2022, Besiroglu et al. 2024's refit, Kaplan et al. 2020, and 20 tokens/param).
* :func:`save_plots` writes whichever apply to a set of fit results as PNG and SVG.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import matplotlib.pyplot as plt
import numpy as np

from lab.fit.engine.errors import quiet as _quiet
from lab.fit.engine.evaluate import JOINT, allocation, frontier
from lab.fit.engine.result import FitResult
from lab.plots.base import band as _band
from lab.plots.base import finish_loglog as _finish_loglog
from lab.plots.base import new_ax as _ax
from lab.plots.base import note_excluded, save_figure, tidy_log_axis

PF_DAY = 8.64e19

# Published compute-optimal laws as (label, N_opt(C), D_opt(C)); all assume C = 6 N D and count
# parameters their own way (Chinchilla: all parameters; Kaplan: non-embedding).


def _chinchilla_closed(A: float, B: float, alpha: float, beta: float):
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    return (lambda C: G * (C / 6) ** a), (lambda C: (C / 6) ** b / G)


def published_laws() -> list[tuple[str, Any, Any]]:
    h_n, h_d = _chinchilla_closed(406.4, 410.7, 0.34, 0.28)
    e_n, e_d = _chinchilla_closed(482.01, 2085.43, 0.3478, 0.3658)
    k_n = lambda C: 1.3e9 * (C / PF_DAY) ** 0.73  # noqa: E731  Kaplan et al. 2020, eq. 6.6 (C_min in PF-days)
    return [
        ("Hoffmann et al. 2022 (approach 3)", h_n, h_d),
        ("Besiroglu et al. 2024 refit", e_n, e_d),
        ("Kaplan et al. 2020", k_n, lambda C: C / (6 * k_n(C))),
        ("20 tokens / param", lambda C: np.sqrt(C / 120), lambda C: 20 * np.sqrt(C / 120)),
    ]


def plot_isoflops(result: FitResult, ax=None):
    """Loss vs N per budget, with each budget's parabola and its minimum (approach 2)."""
    ax = _ax(ax)
    pts, groups, profiles = result.extra["points"], result.extra["groups"], result.extra["profiles"]
    cmap = plt.get_cmap("viridis")
    G = len(profiles)
    for g, prof in enumerate(profiles):
        col = cmap(g / max(1, G - 1))
        idx = np.flatnonzero(groups == g)
        ax.scatter(pts.N[idx], pts.loss[idx], color=col, s=18, zorder=3, label=f"C={prof['C']:.2g}")
        p = prof["parabola_lnN"]
        if all(np.isfinite(p)):
            x = np.linspace(np.log(pts.N[idx].min()) - 0.2, np.log(pts.N[idx].max()) + 0.2, 100)
            ax.plot(np.exp(x), p[0] + p[1] * x + p[2] * x * x, color=col, lw=1, alpha=0.8)
        if prof["interior_min"]:
            ax.scatter([prof["N_opt"]], [prof["loss_opt"]], marker="*", s=140, color=col, edgecolor="k", zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("loss")
    ax.set_title(f"IsoFLOP profiles: N_opt ~ C^{result.params['a']:.3f}")
    note_excluded(ax, result.diagnostics.get("dropped"))
    ax.legend(fontsize=7, ncol=2)
    return ax


@_quiet
def _law_curve(result: FitResult, C: np.ndarray, max_samples: int = 300) -> tuple[np.ndarray, np.ndarray | None]:
    """Predicted (frontier) loss at C, and a (2, len(C)) band from the bootstrap samples."""
    s = result.samples
    p = result.params
    if "alpha_C" in p and "C_c" in p:
        floor = result.law == "kaplan L(C)" and "E" in p   # Kaplan's L(C) may carry an irreducible term
        line = (p["C_c"] / C) ** p["alpha_C"] + (p["E"] if floor else 0.0)
        if "alpha_C" in s and "C_c" in s and (not floor or "E" in s):
            A, Cc = np.asarray(s["alpha_C"]), np.asarray(s["C_c"])
            E = np.asarray(s["E"]) if floor else np.zeros_like(A)
            ok = np.isfinite(A) & np.isfinite(Cc) & np.isfinite(E)
            M = (Cc[ok, None] / C[None, :]) ** A[ok, None] + E[ok, None]
            return line, np.nanquantile(M, [0.025, 0.975], axis=0) if ok.any() else None
        return line, None
    if result.law in JOINT and "theta" not in result.extra:   # a loaded result: its law from its parameters
        return frontier(result.law, result.params, C, result.diagnostics.get("flop_model")), None
    if "theta" in result.extra and "flop_model" in result.extra:
        from lab.fit.engine.allocation import optimal_allocation
        law, fm = result.extra["law"], result.extra["flop_model"]
        th = result.extra["theta"][None, :]

        def f(thetas):
            return lambda lnN, lnD: np.exp(law.forward(thetas, {"lnN": lnN, "lnD": lnD})[0])

        thetas = result.extra.get("thetas")
        if thetas is None and "alpha" in s:  # approach 3 keeps its draws in public form; rebuild raw rows
            thetas = np.stack([np.log(s["A"]), np.log(s["B"]), np.log(s["E"]), s["alpha"], s["beta"]], axis=1)
        lo = float(np.log(C.min())) - 30
        line = np.array([optimal_allocation(f(th), c, fm, (max(lo, 0.0), np.log(c) - 1), 600)[2][0] for c in C])
        band = None
        if thetas is not None and len(thetas):
            sub = thetas[np.all(np.isfinite(thetas), axis=1)][:max_samples]
            if len(sub):
                M = np.array([optimal_allocation(f(sub), c, fm, (0.0, np.log(c) - 1), 600)[2] for c in C]).T
                band = np.nanquantile(M, [0.025, 0.975], axis=0)
        return line, band
    raise ValueError(f"{result.law}: no loss-vs-compute law to draw")


def plot_frontier(result: FitResult, ax=None, runs: Any | None = None):
    """Loss vs C: the runs, the fitted frontier law, and its extrapolation (band) to the target."""
    ax = _ax(ax)
    pts = result.extra.get("points")
    x_data = result.extra.get("x")
    if "curves" in result.extra:
        for c in result.extra["curves"]:
            ax.plot(c["C"], c["L"], color="0.75", lw=0.8, zorder=1)
        ax.scatter(result.extra["grid"], result.extra["env_L"], s=8, color="C0", zorder=3, label="envelope")
    if pts is not None:
        ax.scatter(pts.C, pts.loss, s=14, color="0.35", zorder=2, label="runs")
    if x_data is not None and result.law.startswith("kaplan L(C"):
        ax.scatter(x_data, result.extra["y"], s=14, color="C0", zorder=3, label="frontier")
    seen = pts.C if pts is not None else x_data if x_data is not None else result.extra.get("grid")
    if seen is None:   # a loaded result keeps no points: from its profiles' budgets, else 3 decades below the target
        seen = [p["C"] for p in result.diagnostics.get("profiles", []) if "C" in p] or None
    if seen is None and "C" not in result.predictions:
        raise ValueError(f"{result.law}: no compute range to draw (no points, no target)")
    cmin = float(np.min(seen)) if seen is not None else float(result.predictions["C"]) / 1e3
    C_t = float(result.predictions.get("C", 10 * cmin))
    C = np.logspace(math.log10(cmin), math.log10(C_t), 60)
    line, band = _law_curve(result, C)
    ax.plot(C, line, color="C3", lw=1.6, label="fit")
    if band is not None:
        ax.fill_between(C, band[0], band[1], color="C3", alpha=0.2, lw=0, label="95% band")
    if "loss" in result.predictions:
        ax.scatter([C_t], [result.predictions["loss"]], marker="D", color="C3", zorder=4, label=f"target C={C_t:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("C (training FLOPs)")
    ax.set_ylabel("loss")
    ax.set_title(result.law)
    tidy_log_axis(ax, "x")
    note_excluded(ax, result.diagnostics.get("dropped"))
    ax.legend(fontsize=7)
    return ax


def plot_optimal(results: Iterable[FitResult], axes=None, published: bool = True, C_range: tuple[float, float] | None = None):
    """N_opt(C) and D_opt(C) of each result with bootstrap bands, and published laws for comparison."""
    results = [r for r in results if isinstance(r, FitResult)]
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    axN, axD = axes
    if C_range is None:
        lo = min(r.extra["points"].C.min() if "points" in r.extra else r.predictions["C"] / 1e3 for r in results)
        hi = max(r.predictions.get("C", lo * 10) for r in results)
        C_range = (lo, hi)
    C = np.logspace(math.log10(C_range[0]), math.log10(C_range[1]), 50)
    for i, r in enumerate(results):
        col = f"C{i}"
        s, p = r.samples, r.params
        if "G" in p and "a" in p and "H" in p:   # approaches 1 and 2: power laws fitted in the data's convention
            n, d = p["G"] * C ** p["a"], p["H"] * C ** p["b"]
            if "G" in s:
                ok = np.isfinite(s["G"]) & np.isfinite(s["a"]) & np.isfinite(s["H"]) & np.isfinite(s["b"])
                nb = s["G"][ok, None] * C[None] ** s["a"][ok, None]
                db = s["H"][ok, None] * C[None] ** s["b"][ok, None]
                _band(axN, C, nb, col)
                _band(axD, C, db, col)
        elif r.law in JOINT:                     # approach 3, Kaplan L(N, D): minimised under the fit's own C
            n, d, nb, db = _joint_allocation(r, C)
            if nb is not None:
                _band(axN, C, nb, col)
                _band(axD, C, db, col)
        else:
            continue
        axN.plot(C, n, color=col, lw=1.8, label=r.law)
        axD.plot(C, d, color=col, lw=1.8, label=r.law)
        for prof in r.diagnostics.get("profiles", []):
            if prof["interior_min"]:
                axN.scatter([prof["C"]], [prof["N_opt"]], color=col, s=20, zorder=3)
                axD.scatter([prof["C"]], [prof["D_opt"]], color=col, s=20, zorder=3)
    if published:
        for j, (label, fn, fd) in enumerate(published_laws()):
            axN.plot(C, fn(C), color="0.5", lw=1, ls=["--", ":", "-.", (0, (1, 3))][j], label=label)
            axD.plot(C, fd(C), color="0.5", lw=1, ls=["--", ":", "-.", (0, (1, 3))][j], label=label)
    _finish_loglog(((axN, "N_opt"), (axD, "D_opt")), 6)
    axN.set_title("compute-optimal N (fits: their own C convention; published laws: C = 6ND, "
                  "their N conventions)", fontsize=8)
    axD.set_title("compute-optimal D", fontsize=8)
    return axes


# the public parameters of each joint law, as its bootstrap samples hold them
_JOINT_PARAMS = {"chinchilla approach 3": ("E", "A", "B", "alpha", "beta"),
                 "kaplan L(N, D)": ("N_c", "D_c", "alpha_N", "alpha_D", "E")}


@_quiet
def _joint_allocation(result: FitResult, C: np.ndarray, max_draws: int = 200):
    """N_opt(C), D_opt(C) of a joint law under the fit's own FLOP model (``diagnostics["flop_model"]``,
    as ``result.optimum`` and the fit's table use), and (K, len(C)) draws of each from up to
    ``max_draws`` bootstrap rows of the public parameters (None without draws)."""
    fm = result.diagnostics.get("flop_model")
    n, d, _ = allocation(result.law, result.params, C, fm)
    s = result.samples
    keys = [k for k in _JOINT_PARAMS.get(result.law, ()) if k in result.params]
    if not keys or not all(k in s for k in keys):
        return n, d, None, None
    S = np.stack([np.asarray(s[k], float) for k in keys], axis=1)
    S = S[np.all(np.isfinite(S), axis=1)][:max_draws]
    if len(S) < 2:
        return n, d, None, None
    draws = [allocation(result.law, dict(zip(keys, row)), C, fm, n_grid=801)[:2] for row in S]
    return n, d, np.array([x[0] for x in draws]), np.array([x[1] for x in draws])


def _stem(name: str) -> str:
    return f"frontier_{name}".replace("(", "").replace(")", "").replace(",", "").replace(" ", "")


def save_plots(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Every plot that applies to ``results`` (name -> FitResult), as PNG and SVG in ``out_dir``."""
    from lab.plots.hparams import plot_hparam_heatmaps, plot_hparam_laws

    written: list[Path] = []
    fits = {k: v for k, v in results.items() if isinstance(v, FitResult)}
    for name, r in list(fits.items()):
        if r.law.startswith("hyperparameter"):
            written += save_figure(plot_hparam_heatmaps(r), out_dir, "hparam_heatmaps")
            fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
            plot_hparam_laws(r, axes)
            written += save_figure(fig, out_dir, "hparam_laws")
            fits.pop(name)
    for name, r in fits.items():
        if r.law == "chinchilla approach 2":
            written += save_figure(plot_isoflops(r).figure, out_dir, "isoflops")
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        try:
            plot_frontier(r, ax)
            written += save_figure(fig, out_dir, _stem(name))
        except (ValueError, KeyError):
            plt.close(fig)
    opt = [r for r in fits.values() if r.law.startswith("chinchilla")]
    if opt:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        plot_optimal(opt, axes)
        written += save_figure(fig, out_dir, "optimal_allocation")
    return written
