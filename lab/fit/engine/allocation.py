"""Compute-optimal allocation under the data's own FLOP convention.

:class:`FlopModel` learns FLOPs per token as a function of N from a table (``C / D = f(N)``);
:func:`optimal_allocation` minimises any batched loss law over N at fixed C with it. The laws'
closed forms assume ``C = 6 N D``; the lab counts the output head and attention too
(:mod:`lab.counting`), which dominate tiny proxies, so the allocation is found numerically.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls


def default_target_flops(C: np.ndarray, target: float | None) -> float:
    """The compute at which fits predict: ``target`` when given, else 10x the largest C in the data."""
    return float(target) if target is not None else float(10 * np.max(C))


class FlopModel:
    """Training FLOPs per token as a function of N, learnt from the data: ``C / D = f(N)``.

    The laws' closed-form allocation assumes ``C = 6 N D``. The lab counts more (the output head and
    attention, which dominate tiny models), so an optimal allocation under the data's own C needs
    ``f``. For a shape rule with depth proportional to width, the head term goes as d ~ N^(1/3) and
    the attention term as L d ~ N^(2/3), so ``f(N) = c1 N + c2 N^(2/3) + c3 N^(1/3)`` (non-negative
    least squares) describes the lab's counting; when ``C / (N D)`` is 6 everywhere it is ``6 N``.
    """

    def __init__(self, N: np.ndarray, C: np.ndarray, D: np.ndarray):
        ratio = C / (N * D)
        self.is_6nd = bool(np.all(np.abs(ratio / 6.0 - 1) < 0.01))
        if self.is_6nd:
            self.coef = np.array([6.0, 0.0, 0.0])
        else:
            fpt = C / D
            V = np.stack([N, N ** (2 / 3), N ** (1 / 3)], axis=1)
            scale = fpt.copy()  # relative least squares
            self.coef, _ = nnls(V / scale[:, None], np.ones_like(fpt))
        self.max_rel_err = float(np.max(np.abs(self(N) / (C / D) - 1)))

    def __call__(self, N: np.ndarray) -> np.ndarray:
        N = np.asarray(N, float)
        return self.coef[0] * N + self.coef[1] * N ** (2 / 3) + self.coef[2] * N ** (1 / 3)

    def to_json(self) -> dict:
        """What :func:`lab.fit.engine.evaluate.flops_per_token` needs to rebuild ``f`` from a saved fit."""
        return {"coef": [float(c) for c in self.coef], "is_6nd": self.is_6nd, "describe": self.describe()}

    def describe(self) -> str:
        if self.is_6nd:
            return "C = 6 N D"
        c = self.coef
        return (f"C/D = {c[0]:.4g} N + {c[1]:.4g} N^(2/3) + {c[2]:.4g} N^(1/3) "
                f"(fitted to the data's C/D, max error {self.max_rel_err:.1%})")


def optimal_allocation(loss_fn, C: float, flop_model: FlopModel, lnN_range: tuple[float, float],
                       n_grid: int = 1501) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimise ``loss_fn(lnN[G], lnD[G]) -> (K, G)`` over N at fixed C, for K parameter rows.

    Returns N_opt, D_opt and the loss there, each (K,). Grid search in ln N, refined by a parabola
    through the best grid point and its neighbours.
    """
    lnN = np.linspace(lnN_range[0], lnN_range[1], n_grid)
    N = np.exp(lnN)
    D = C / flop_model(N)
    L = loss_fn(lnN, np.log(D))
    L = np.where(np.isfinite(L), L, np.inf)
    j = np.clip(np.argmin(L, axis=1), 1, n_grid - 2)
    rows = np.arange(L.shape[0])
    y0, y1, y2 = L[rows, j - 1], L[rows, j], L[rows, j + 1]
    h = lnN[1] - lnN[0]
    den = y0 - 2 * y1 + y2
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(den > 0, 0.5 * (y0 - y2) / den, 0.0)
    x = lnN[j] + np.clip(off, -1, 1) * h
    n_opt = np.exp(x)
    d_opt = C / flop_model(n_opt)
    l_opt = _diag_eval(loss_fn, x, np.log(d_opt))
    edge = (np.argmin(L, axis=1) == 0) | (np.argmin(L, axis=1) == n_grid - 1)
    n_opt[edge], d_opt[edge], l_opt[edge] = np.nan, np.nan, np.nan
    return n_opt, d_opt, l_opt


def _diag_eval(loss_fn, lnN: np.ndarray, lnD: np.ndarray) -> np.ndarray:
    """loss_fn row k evaluated at its own (lnN[k], lnD[k]), in chunks to bound memory."""
    out = np.empty(len(lnN))
    for s in range(0, len(lnN), 256):
        sl = slice(s, s + 256)
        full = loss_fn(lnN[sl], lnD[sl])  # (K, m): all rows at these points
        k = np.arange(sl.start, min(sl.stop, len(lnN)))
        out[sl] = full[k, k - sl.start]
    return out
