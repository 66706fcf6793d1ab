"""Plots of data-mixing-law fits, one function each; every function takes optional axes (notebooks).

* :func:`plot_pred_vs_actual` predicted vs observed loss per validation domain, from each model's
  cross-validated (held-out) predictions, and optionally runs held out of the fit altogether: the
  check that a mixing model predicts mixtures it has not seen.
* :func:`plot_slices` predicted loss along two-domain slices through a mixture (share moved from one
  training domain to another, the rest fixed), with bootstrap bands: how flat or sharp the optimum is.
* :func:`plot_optimum` the optimal mixture with its interval, beside the uniform and natural mixtures.
* :func:`save_mixing_plots` writes them all as PNG and SVG.

Models are any :class:`~lab.fit.mixing.law.MixModel` (the law, :class:`~lab.fit.mixing.law.MixingLaw`, or
the regression, :class:`~lab.fit.mixing.regression.MixRegression`); optima are the dicts of
:func:`lab.fit.mixing.optimize.optimize`.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np

from lab.fit.engine.errors import quiet as _quiet
from lab.fit.mixing.law import MixData, MixModel, target_weights
from lab.plots.base import note_excluded, save_figure

MARKERS = ("o", "s", "^", "v", "P", "X")


def _color(i: int) -> str:
    return f"C{i % 10}"


def _col(names: Sequence[str], v: str, fallback: int) -> int | None:
    """Column of validation domain ``v`` in ``names``; ``fallback`` when names are unknown."""
    if names is None:
        return fallback
    names = list(names)
    return names.index(v) if v in names else None


def panel_grid(n: int, ncols: int = 3, size: tuple[float, float] = (4.2, 4.0)):
    ncols = max(1, min(n, ncols))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False,
                             layout="constrained")   # titles clear of the row above's x labels
    return fig, list(axes.ravel())


def _flat_axes(axes, n: int, what: str) -> list:
    """``axes`` as a flat list of at least ``n`` Axes (a single Axes counts as one)."""
    if hasattr(axes, "plot"):
        axes = [axes]
    axes = list(np.ravel(np.asarray(axes, dtype=object)))
    if len(axes) < n:
        raise ValueError(f"{what}: {n} panels to draw but {len(axes)} axes given")
    return axes


@_quiet
def plot_pred_vs_actual(data: MixData, models: dict[str, MixModel],
                        heldout: tuple[MixData, dict[str, np.ndarray]] | None = None, axes=None):
    """Predicted vs observed loss, one panel per validation domain, with the y = x line.

    Each model's points are its cross-validated predictions (``diagnostics["held_out"]["predicted"]``:
    every run predicted by a fit that did not see its mixture), so the scatter and the MAE in the
    legend measure prediction, not fit. ``heldout`` = (runs, {model name: predictions (m, K)}) adds
    runs kept out of the fit entirely (e.g. proposed mixtures trained for real), filled diamonds.
    Returns the flat list of axes.
    """
    K = len(data.val_domains)
    if axes is None:
        _, axes = panel_grid(K)
    axes = _flat_axes(axes, K, "plot_pred_vs_actual")
    kinds = set()
    for k, v in enumerate(data.val_domains):
        ax = axes[k]
        lo, hi = math.inf, -math.inf
        for i, (name, model) in enumerate(models.items()):
            ho = (getattr(model, "diagnostics", None) or {}).get("held_out", {}) or {}
            pred = ho.get("predicted")
            j = _col(getattr(model, "val_domains", None), v, k)
            if pred is None or j is None:
                ax.plot([], [], ls="", marker=MARKERS[i % len(MARKERS)], color=_color(i),
                        label=f"{name}: no held-out predictions")
                continue
            if ho.get("kind"):
                kinds.add(str(ho["kind"]))
            P = np.asarray(pred, float)
            x, y = data.L[:, k], P[:, j]
            ok = np.isfinite(x) & np.isfinite(y)
            mae = (ho.get("mae") or {}).get(v, math.nan)
            ax.scatter(x[ok], y[ok], s=22, marker=MARKERS[i % len(MARKERS)], facecolors="none",
                       edgecolors=_color(i), lw=1.1, zorder=3, label=f"{name} (held-out MAE {mae:.4f})")
            if ok.any():
                lo, hi = min(lo, x[ok].min(), y[ok].min()), max(hi, x[ok].max(), y[ok].max())
        if heldout is not None:
            hdata, hpred = heldout
            hk = _col(hdata.val_domains, v, k)
            for i, (name, model) in enumerate(models.items()):
                if name not in hpred or hk is None:
                    continue
                j = _col(getattr(model, "val_domains", None), v, k)
                P = np.atleast_2d(np.asarray(hpred[name], float))
                if j is None or j >= P.shape[1]:
                    continue
                x, y = hdata.L[:, hk], P[:, j]
                ok = np.isfinite(x) & np.isfinite(y)
                if not ok.any():
                    continue
                mae = float(np.mean(np.abs(x[ok] - y[ok])))
                ax.scatter(x[ok], y[ok], s=46, marker="D", color=_color(i), edgecolors="k", lw=0.7, zorder=4,
                           label=f"{name}: held-out runs (MAE {mae:.4f}, n={int(ok.sum())})")
                lo, hi = min(lo, x[ok].min(), y[ok].min()), max(hi, x[ok].max(), y[ok].max())
        if math.isfinite(lo):
            pad = 0.05 * (hi - lo) if hi > lo else 0.05 * abs(hi) + 1e-3
            lim = (lo - pad, hi + pad)
            ax.plot(lim, lim, color="0.4", lw=1, ls="--", zorder=1, label="y = x")
            ax.set_xlim(lim)
            ax.set_ylim(lim)
        else:
            ax.text(0.5, 0.5, "no observed losses", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"validation: {v}", fontsize=9)
        ax.set_xlabel("observed loss (nats/token)")
        ax.set_ylabel("predicted loss (nats/token)")
        if k == 0:
            note_excluded(ax, data.dropped)   # once, on the first panel: runs the fit left out, and why
        ax.legend(fontsize=6.5)
    for ax in axes[K:]:
        ax.set_axis_off()
    if kinds:
        axes[0].figure.suptitle("cross-validated predictions (" + "; ".join(sorted(kinds)) + ")", fontsize=9)
    return axes


def _mixture(base, domains: Sequence[str]) -> np.ndarray:
    """A mixture as an array over ``domains`` (from a dict {domain: share} or an array)."""
    if isinstance(base, dict):
        missing = [d for d in domains if d not in base]
        if missing:
            raise ValueError(f"mixture lacks shares for {missing}")
        r = np.array([float(base[d]) for d in domains])
    else:
        r = np.asarray(base, float).ravel()
        if r.shape != (len(domains),):
            raise ValueError(f"mixture of length {r.size} for {len(domains)} training domains")
    if np.any(r < -1e-9) or abs(r.sum() - 1) > 1e-3:
        raise ValueError(f"not a mixture (shares >= 0 summing to 1): {r}")
    return np.clip(r, 0, None)


def default_pairs(base: np.ndarray, k: int = 3) -> list[tuple[int, int]]:
    """The ``k`` pairs of training domains with the largest combined share in ``base`` (all if fewer)."""
    pairs = list(itertools.combinations(range(len(base)), 2))
    pairs.sort(key=lambda p: -(base[p[0]] + base[p[1]]))   # stable: ties keep domain order
    out = pairs[:k]
    # larger share first, so the x axis is the leading domain's share
    return [(a, b) if base[a] >= base[b] else (b, a) for a, b in out]


def _weights(weights, val_domains: Sequence[str]) -> np.ndarray | None:
    if weights is None:
        return None
    if isinstance(weights, (str, dict)):
        return target_weights(weights, val_domains)
    w = np.asarray(weights, float).ravel()
    if w.shape != (len(val_domains),):
        raise ValueError(f"{w.size} weights for {len(val_domains)} validation domains")
    return w / w.sum()


def _band(ax, x: np.ndarray, draws: np.ndarray, color: str, level: float) -> None:
    """Shade the ``level`` band of ``draws`` (B, len(x)) when at least two draws are finite."""
    ok = np.all(np.isfinite(draws), axis=1)
    if ok.sum() < 2:
        return
    q = (1 - level) / 2
    lo, hi = np.quantile(draws[ok], [q, 1 - q], axis=0)
    ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)


@_quiet
def plot_slices(model: MixModel, base, pairs: Sequence[tuple[Any, Any]] | None = None, axes=None,
                weights=None, n: int = 101, level: float = 0.95, base_label: str = "base", box=None):
    """Predicted loss along two-domain slices through ``base``, one panel per pair (a, b).

    Along a slice the share moves between a and b with the others fixed at ``base``:
    r_a = s, r_b = base_a + base_b - s, s in [0, base_a + base_b]; x is r_a. One line per
    validation domain, plus the overall target ``sum_i w_i L_i`` (black) when ``weights`` are given
    (array, {domain: weight} or ``"uniform"`` for equal weights). With bootstrap draws (the law) each
    line gets its ``level`` band; the regression has none. A flat curve near ``base`` means the
    optimum is loosely determined in that direction, a sharp one that it matters.
    ``base``: array over ``model.domains`` or {domain: share}; ``pairs``: domain names or indices,
    default :func:`default_pairs`. ``axes``: one Axes per pair (a single Axes for one pair).
    ``box``: the optimiser's constraints (a :class:`~lab.fit.mixing.optimize.Box` or ``opt["constraints"]``,
    {domain: [lo, hi]}); the parts of a slice outside them are greyed. Returns the list of axes.
    """
    doms = list(model.domains)
    r0 = _mixture(base, doms)
    if pairs is None:
        pairs = default_pairs(r0)
    idx = []
    for a, b in pairs:
        ia = doms.index(a) if isinstance(a, str) else int(a)
        ib = doms.index(b) if isinstance(b, str) else int(b)
        if ia == ib:
            raise ValueError(f"slice needs two different domains, got {doms[ia]!r} twice")
        idx.append((ia, ib))
    if axes is None:
        _, axes = panel_grid(len(idx), ncols=3, size=(4.8, 3.8))
    axes = _flat_axes(axes, len(idx), "plot_slices")
    w = _weights(weights, model.val_domains)
    for ax, (ia, ib) in zip(axes, idx):
        tot = r0[ia] + r0[ib]
        a, b = doms[ia], doms[ib]
        ax.set_title(f"{a} <-> {b} (others fixed at {base_label})", fontsize=9)
        ax.set_xlabel(f"share of {a} ({b} gets {tot:.3g} minus it)")
        ax.set_ylabel("predicted loss (nats/token)")
        if tot <= 1e-9:
            ax.text(0.5, 0.5, f"{a} and {b} have no share in {base_label}", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
            continue
        s = np.linspace(0.0, tot, n)
        R = np.repeat(r0[None, :], n, axis=0)
        R[:, ia], R[:, ib] = s, tot - s
        P = model.predict(R)                                   # (n, K)
        D = model.predict_draws(R)                             # (B, n, K) or None
        p0 = model.predict(r0[None])[0]
        for k, v in enumerate(model.val_domains):
            col = _color(k)
            ax.plot(s, P[:, k], color=col, lw=1.6, label=v)
            if D is not None:
                _band(ax, s, D[:, :, k], col, level)
            ax.scatter([r0[ia]], [p0[k]], color=col, edgecolors="k", s=30, zorder=4)
        if w is not None:
            ax.plot(s, P @ w, color="k", lw=2.0, label="target (weighted)")
            if D is not None:
                _band(ax, s, D @ w, "k", level)
            ax.scatter([r0[ia]], [p0 @ w], color="k", s=40, zorder=4)
        ax.scatter([], [], color="w", edgecolors="k", s=30, label=base_label)
        if D is not None:
            ax.fill_between([], [], [], color="0.5", alpha=0.18, lw=0, label=f"{level:.0%} bootstrap band")
        ax.set_xlim(0, tot)
        bounds = _bounds(box, doms)
        if bounds is not None:
            lo, hi = bounds
            a0 = max(lo[ia], tot - hi[ib], 0.0)          # feasible r_a: both shares inside their bounds
            a1 = min(hi[ia], tot - lo[ib], tot)
            spans = [(0.0, tot)] if a0 > a1 else [(0.0, a0), (a1, tot)]
            first = True
            for x0, x1 in spans:
                if x1 - x0 > 1e-9:
                    ax.axvspan(x0, x1, color="0.85", zorder=0, label="outside constraints" if first else None)
                    first = False
        ax.legend(fontsize=6.5)
    for ax in axes[len(idx):]:
        ax.set_axis_off()
    return axes[:len(idx)]


def _bounds(box, domains: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(lo, hi) over ``domains`` from a Box or {domain: [lo, hi]}; None when there is no box."""
    if box is None:
        return None
    if hasattr(box, "lo") and hasattr(box, "hi"):
        d = {k: (a, b) for k, a, b in zip(box.domains, box.lo, box.hi)}
    else:
        d = dict(box)
    lo = np.array([float(d[k][0]) if k in d else 0.0 for k in domains])
    hi = np.array([float(d[k][1]) if k in d else 1.0 for k in domains])
    return lo, hi


def _title_optimum(opt: dict[str, Any]) -> str:
    ti = opt.get("target_interval")
    head = f"optimum: predicted target {opt['target']:.4f}"
    if ti and all(map(math.isfinite, ti)):
        head += f" [{ti[0]:.4f}, {ti[1]:.4f}]"
    parts = []
    for name in ("uniform", "natural"):
        if name in opt:
            g = opt[name]
            gi = g.get("gain_interval")
            parts.append(f"gain vs {name} {g['gain']:+.4f}"
                         + (f" [{gi[0]:+.4f}, {gi[1]:+.4f}]" if gi and all(map(math.isfinite, gi)) else ""))
    return head + ("\n" + ", ".join(parts) if parts else "") + " (nats/token)"


def plot_optimum(opt: dict[str, Any], ax=None):
    """Grouped bars: the optimal share of each training domain beside the uniform and natural mixtures.

    The optimum's whiskers span ``mixture_interval`` (the law: where each bootstrap draw's own optimum
    lies) or ``mixture_spread_top_k`` (the regression: range of the best-scoring candidates), so a
    wide whisker marks a share the data do not pin down. Dashes mark constraint bounds that bind
    tighter than [0, 1]. The title gives the predicted target loss and the gains over the references.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.4, 1.1 * len(opt["mixture"]) + 2.5), 4.4))
    doms = list(opt["mixture"])
    x = np.arange(len(doms))
    series = [("optimum", opt["mixture"])]
    series += [(name, opt[name]["mixture"]) for name in ("uniform", "natural") if name in opt]
    width = 0.8 / len(series)
    colors = {"optimum": "C3", "uniform": "0.6", "natural": "C0"}
    for i, (name, mix) in enumerate(series):
        xs = x + (i - (len(series) - 1) / 2) * width
        vals = np.array([float(mix.get(d, math.nan)) for d in doms])
        outside = name != "optimum" and opt[name].get("feasible") is False
        ax.bar(xs, vals, width, color=colors[name], label=name + (" (outside the constraints)" if outside else ""),
               zorder=2, hatch="//" if outside else None, edgecolor="w" if outside else None)
        if name != "optimum":
            continue
        top = vals.copy()
        iv, how = opt.get("mixture_interval"), "bootstrap optima"
        if iv is None:
            iv, how = opt.get("mixture_spread_top_k"), "top candidates' spread"
        if iv:
            lo = np.array([iv[d][0] if d in iv else math.nan for d in doms], float)
            hi = np.array([iv[d][1] if d in iv else math.nan for d in doms], float)
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                ax.errorbar(xs[ok], (lo[ok] + hi[ok]) / 2, yerr=(hi[ok] - lo[ok]) / 2, fmt="none", ecolor="k",
                            capsize=4, lw=1.2, zorder=3, label=f"optimum range ({how})")
                top = np.where(ok, np.fmax(top, hi), top)
        for xi, v, t in zip(xs, vals, top):
            if math.isfinite(v):
                ax.text(xi, t + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    box = opt.get("constraints") or {}
    labelled = False
    for j, d in enumerate(doms):
        if d not in box:
            continue
        for bound, trivial in zip(box[d], (0.0, 1.0)):
            if abs(bound - trivial) > 1e-12:
                ax.hlines(bound, j - 0.45, j + 0.45, colors="k", linestyles="--", lw=1,
                          label=None if labelled else "constraint bound", zorder=4)
                labelled = True
    ax.set_xticks(x)
    ax.set_xticklabels(doms, rotation=30 if len(doms) > 5 else 0, ha="right" if len(doms) > 5 else "center")
    ax.set_ylabel("share of training tokens")
    ax.set_ylim(0, min(1.05, max(0.1, ax.get_ylim()[1] * 1.1)))
    ax.set_title(_title_optimum(opt), fontsize=8)
    ax.legend(fontsize=7)
    return ax


def _stem(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(s)).strip("_") or "model"


def save_mixing_plots(data: MixData, models: dict[str, MixModel], opt_by_model: dict[str, dict[str, Any]] | None,
                      out_dir: str | Path, heldout: tuple[MixData, dict[str, np.ndarray]] | None = None) -> list[Path]:
    """pred_vs_actual, slices_<model> and optimum_<model> as PNG and SVG in ``out_dir``; the paths written.

    Slices go through the model's optimum (target weighted as in the optimum) when there is one,
    else through the uniform mixture with equal weights; optimum plots only for models optimised.
    """
    written: list[Path] = []
    opt_by_model = opt_by_model or {}

    def save(fig, stem):
        written.extend(save_figure(fig, out_dir, stem))

    if models:
        fig, axes = panel_grid(len(data.val_domains))
        plot_pred_vs_actual(data, models, heldout, axes)
        save(fig, "pred_vs_actual")
    for name, model in models.items():
        opt = opt_by_model.get(name)
        if opt is not None:
            base, label = opt["mixture"], "optimum"
            tw = opt.get("target_weights")
            w = np.array([tw.get(v, 0.0) for v in model.val_domains]) if tw else "uniform"
        else:
            base, label, w = np.full(len(model.domains), 1.0 / len(model.domains)), "uniform", "uniform"
        base_arr = _mixture(base, list(model.domains))
        pairs = default_pairs(base_arr)
        fig, axes = panel_grid(len(pairs), ncols=3, size=(4.8, 3.8))
        plot_slices(model, base_arr, pairs, axes, weights=w, base_label=label,
                    box=opt.get("constraints") if opt is not None else None)
        fig.suptitle(f"{name}: loss along two-domain slices", fontsize=9)
        save(fig, f"slices_{_stem(name)}")
        if opt is not None:
            fig, ax = plt.subplots(figsize=(max(6.4, 1.1 * len(opt["mixture"]) + 2.5), 4.4))
            plot_optimum(opt, ax)
            save(fig, f"optimum_{_stem(name)}")
    return written
