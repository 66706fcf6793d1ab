"""Weighted least-squares lines and parabolas, one per bootstrap weight row (batched, closed form).

Used for the power laws through IsoFLOP optima (lines in log-log) and for the IsoFLOP profiles
themselves (parabolas in ln N).
"""

from __future__ import annotations

import numpy as np


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
