"""Shared fitting tools: weighted log-log lines, bootstrap weights, the FLOPs-per-token model.

Bootstraps here resample *runs* (rows) with replacement and are represented as multiplicity
weights, one (K, n) matrix for K resamples, so every refit is one batched call.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from lab.fit.data import FitError


def bootstrap_weights(n: int, K: int, rng: np.random.Generator, groups: np.ndarray | None = None) -> np.ndarray:
    """(K, n) resample multiplicities; with ``groups``, rows are resampled within their group."""
    if groups is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=K).astype(float)
    W = np.zeros((K, n))
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        W[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=K)
    return W


def wls_line(x: np.ndarray, y: np.ndarray, W: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares line y = c + s x for each weight row; returns (c, s), each (K,) or scalar.

    ``y`` may be (n,) or (K, n); rows with too little spread give NaN.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    single = W is None and y.ndim == 1
    if W is None:
        W = np.ones((1, x.size) if y.ndim == 1 else y.shape)
    Y = y if y.ndim == 2 else np.broadcast_to(y, W.shape)
    X = x if x.ndim == 2 else np.broadcast_to(x, W.shape)
    sw = W.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (W * X).sum(1) / sw
        my = (W * Y).sum(1) / sw
        vx = (W * (X - mx[:, None]) ** 2).sum(1)
        cxy = (W * (X - mx[:, None]) * (Y - my[:, None])).sum(1)
        s = np.where(vx > 1e-12 * np.maximum(1.0, sw), cxy / vx, np.nan)
    c = my - s * mx
    return (c[0], s[0]) if single else (c, s)


def wls_poly2(x: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted quadratic fits y = p0 + p1 x + p2 x^2 for each weight row -> (K, 3); NaN if singular.

    Solved in standardised u = (x - m) / s (ln N ~ 20 makes the raw normal equations
    ill-conditioned), then mapped back to coefficients in x.
    """
    m, s = float(np.mean(x)), float(np.std(x)) or 1.0
    u = (x - m) / s
    V = np.stack([np.ones_like(u), u, u * u], axis=1)           # (n, 3)
    A = np.einsum("kn,ni,nj->kij", W, V, V)
    b = np.einsum("kn,n,ni->ki", W, y, V)
    q = np.full((W.shape[0], 3), np.nan)
    det = np.linalg.det(A)
    scale = np.einsum("kii->k", A) ** 3
    ok = np.abs(det) > 1e-12 * np.maximum(scale, 1e-300)
    if ok.any():
        q[ok] = np.linalg.solve(A[ok], b[ok][..., None])[..., 0]
    q0, q1, q2 = q[:, 0], q[:, 1] / s, q[:, 2] / (s * s)
    return np.stack([q0 - q1 * m + q2 * m * m, q1 - 2 * q2 * m, q2], axis=1)


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


def quiet(fn):
    """Run ``fn`` with numpy floating-point warnings off.

    Multistart grids and bootstrap resamples visit wild parameters (exp overflow, 0 * inf) on
    purpose; those rows come out non-finite and are discarded or counted, so the warnings are noise.
    """
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper


def require(cond: bool, message: str) -> None:
    if not cond:
        raise FitError(message)
