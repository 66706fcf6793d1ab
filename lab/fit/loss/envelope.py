"""The compute frontier: each run's loss curve read on a common grid of C, and its lower envelope.

Chinchilla's approach 1 and Kaplan's L(C) both read the frontier: at each compute C, the lowest
loss any run reached, and which run (N, D) reached it. A run contributes its evaluation curve when
the table has one (:mod:`lab.results` curves), else its final point.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lab.fit.engine.points import Points


def run_curves(pts: Points, curves: pd.DataFrame | None, loss_col: str = "loss_val",
               C_col: str = "flops", D_col: str = "tokens") -> list[dict[str, np.ndarray]]:
    """One curve per run: arrays C, D, L (and the run's N), from evaluation rows of ``curves``.

    Runs without curve rows contribute their final point only.
    """
    out = []
    by_run: dict[str, pd.DataFrame] = {}
    if curves is not None and len(curves) and pts.run is not None and loss_col in curves.columns:
        cv = curves[np.isfinite(pd.to_numeric(curves[loss_col], errors="coerce"))]
        key = cv["sweep"].astype(str) + "/" + cv["run"].astype(str)
        by_run = {k: g for k, g in cv.groupby(key)}
    for i in range(len(pts)):
        g = by_run.get(pts.run[i]) if pts.run is not None else None
        C = np.array([pts.C[i]])
        D = np.array([pts.D[i]])
        L = np.array([pts.loss[i]])
        if g is not None and len(g):
            gc = g[(g[C_col] > 0) & (g[C_col] < pts.C[i] * (1 - 1e-9))]
            C = np.concatenate([gc[C_col].to_numpy(float), C])
            D = np.concatenate([gc[D_col].to_numpy(float), D])
            L = np.concatenate([gc[loss_col].to_numpy(float), L])
        order = np.argsort(C)
        out.append({"N": pts.N[i], "C": C[order], "D": D[order], "L": L[order], "id": pts.ids[i]})
    return out


def envelope_grid(curves: list[dict[str, np.ndarray]], single: bool, per_decade: int = 20) -> np.ndarray:
    """C values at which the envelope is read: each run's own C when runs are single points, else
    ``per_decade`` log-spaced values per decade over the curves' range."""
    if single:
        return np.unique(np.concatenate([c["C"] for c in curves]))
    cmin = min(c["C"][0] for c in curves)
    cmax = max(c["C"][-1] for c in curves)
    return np.logspace(math.log10(cmin), math.log10(cmax), max(10, int(per_decade * math.log10(cmax / cmin)) + 1))


def envelope_matrix(curves: list[dict[str, np.ndarray]], grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, G) loss and tokens of each run at each grid C (log-linear interpolation), NaN off its range."""
    R, Gn = len(curves), len(grid)
    Lm = np.full((R, Gn), np.nan)
    Dm = np.full((R, Gn), np.nan)
    lg = np.log(grid)
    for r, c in enumerate(curves):
        lc = np.log(c["C"])
        if lc.size == 1:
            j = int(np.argmin(np.abs(lg - lc[0])))
            half = 0.5 * (lg[min(j + 1, Gn - 1)] - lg[max(j - 1, 0)]) / max(1, min(j + 1, Gn - 1) - max(j - 1, 0))
            if abs(lg[j] - lc[0]) <= half + 1e-12:
                Lm[r, j], Dm[r, j] = c["L"][0], c["D"][0]
            continue
        inside = (lg >= lc[0]) & (lg <= lc[-1])
        Lm[r, inside] = np.exp(np.interp(lg[inside], lc, np.log(c["L"])))
        Dm[r, inside] = np.exp(np.interp(lg[inside], lc, np.log(c["D"])))
    return Lm, Dm


def envelope(Lm: np.ndarray, Dm: np.ndarray, N: np.ndarray, w: np.ndarray, single: bool):
    """Envelope over runs with weight > 0: per grid C the best run's N, D and loss (NaN where none)."""
    M = np.where(w[:, None] > 0, Lm, np.nan)
    if single:
        # final points only: a run is on the frontier if no run with less or equal C has a lower loss
        best = np.fmin.accumulate(np.where(np.isnan(M), np.inf, M).min(0))
        col_min = np.where(np.isnan(M), np.inf, M).min(0)
        on = np.isfinite(col_min) & (col_min <= best)
    else:
        col_min = np.where(np.isnan(M), np.inf, M).min(0)
        on = np.isfinite(col_min)
    arg = np.argmin(np.where(np.isnan(M), np.inf, M), axis=0)
    cols = np.arange(M.shape[1])
    n = np.where(on, N[arg], np.nan)
    d = np.where(on, Dm[arg, cols], np.nan)
    l = np.where(on, col_min, np.nan)
    return n, d, l
