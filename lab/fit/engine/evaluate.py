"""Evaluate a fitted law from its published parameters alone, so a result loaded back from JSON
predicts exactly what the fit did.

* :func:`loss_nd`: L(N, D) for the joint laws (Chinchilla's ``E + A/N^alpha + B/D^beta``, Kaplan's
  ``[(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D``) and the single-variable Kaplan laws.
* :func:`frontier`: the compute-optimal loss L*(C): the fitted line ``(C_c / C)^alpha_C`` of
  approaches 1-2 and Kaplan's L(C), or the joint law minimised over N at fixed C under the fit's
  own FLOP convention (``diagnostics["flop_model"]``, default C = 6 N D).
* :func:`allocation`: N_opt(C), D_opt(C) (and the loss there).

Units: N non-embedding parameters, D tokens, C training FLOPs in the fit's convention, losses in
nats/token; everything broadcasts over numpy arrays.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lab.fit.engine.errors import FitError

JOINT = ("chinchilla approach 3", "kaplan L(N, D)")
LINES = ("chinchilla approach 1", "chinchilla approach 2", "kaplan L(C)")


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


def loss_nd(law: str, p: Mapping[str, float], N=None, D=None) -> np.ndarray:
    """The law's loss at (N, D); single-variable laws take only their own variable."""
    E = p.get("E", 0.0)
    if law == "chinchilla approach 3":
        return E + p["A"] / _arr(N) ** p["alpha"] + p["B"] / _arr(D) ** p["beta"]
    if law == "kaplan L(N, D)":
        return E + ((p["N_c"] / _arr(N)) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / _arr(D)) ** p["alpha_D"]
    if law in ("kaplan L(N)", "kaplan L(D)"):
        v = "N" if law.endswith("(N)") else "D"
        x = N if v == "N" else D
        if x is None:
            raise FitError(f"{law} predicts from {v} only: pass {v}=")
        return E + (p[f"{v}_c"] / _arr(x)) ** p[f"alpha_{v}"]
    raise FitError(f"{law} has no L(N, D) to evaluate; use loss_at(C) for a frontier law")


def flops_per_token(fm: Mapping[str, Any] | None):
    """C/D as a function of N from a fit's stored FLOP model (coefficients of N, N^(2/3), N^(1/3))."""
    c = np.asarray((fm or {}).get("coef", [6.0, 0.0, 0.0]), float)
    return lambda N: c[0] * N + c[1] * N ** (2 / 3) + c[2] * N ** (1 / 3)


def allocation(law: str, p: Mapping[str, float], C, fm: Mapping[str, Any] | None = None, n_grid: int = 2001
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N_opt, D_opt, L*) at each C: the fitted power laws for approaches 1-2, a minimisation over
    N (log grid, parabola-refined) for the joint laws. Each has the shape of ``C``."""
    shape = np.shape(C)
    C = np.atleast_1d(_arr(C)).ravel()
    if law in LINES[:2]:
        out = p["G"] * C ** p["a"], p["H"] * C ** p["b"], (p["C_c"] / C) ** p["alpha_C"]
        return tuple(x.reshape(shape) for x in out)
    if law not in JOINT:
        raise FitError(f"{law} gives no compute-optimal allocation")
    fpt = flops_per_token(fm)
    lnN = np.linspace(np.log(10.0), np.log(C.max()) - 1, n_grid)
    N = np.exp(lnN)[None, :]
    L = loss_nd(law, p, N, C[:, None] / fpt(N))
    L = np.where(np.isfinite(L), L, np.inf)
    j = np.clip(np.argmin(L, axis=1), 1, n_grid - 2)
    r = np.arange(len(C))
    y0, y1, y2 = L[r, j - 1], L[r, j], L[r, j + 1]
    den = y0 - 2 * y1 + y2
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(den > 0, np.clip(0.5 * (y0 - y2) / den, -1, 1), 0.0)
    n_opt = np.exp(lnN[j] + off * (lnN[1] - lnN[0]))
    d_opt = C / fpt(n_opt)
    return n_opt.reshape(shape), d_opt.reshape(shape), loss_nd(law, p, n_opt, d_opt).reshape(shape)


def frontier(law: str, p: Mapping[str, float], C, fm: Mapping[str, Any] | None = None) -> np.ndarray:
    """The compute-optimal loss L*(C)."""
    if law in LINES:
        return (p["C_c"] / _arr(C)) ** p["alpha_C"] + (p.get("E", 0.0) if law == "kaplan L(C)" else 0.0)
    return allocation(law, p, C, fm)[2]
