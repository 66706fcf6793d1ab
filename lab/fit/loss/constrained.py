"""Data-constrained scaling (Muennighoff et al. 2023): loss when data repeat, L(N, D, U).

With U unique tokens seen D / U times, repeated tokens are worth less than fresh ones, and excess
parameters beyond the compute-optimal size for U are worth less than useful ones:

    D' = U + U R_D* (1 - exp(-R_D / R_D*)),   R_D = max(D / U - 1, 0)
    N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)),  U_N = min(N, N_opt(C(U))),  R_N = max(N / U_N - 1, 0)
    L  = E + A / N'^alpha + B / D'^beta

where ``C(U)`` is the compute whose Chinchilla-optimal D is U, and ``N_opt`` the closed-form
allocation of the base law (C = 6 N D). As published, the base law (E, A, B, alpha, beta) is fitted
first on unrepeated data and held fixed; only R_D* and R_N* are fitted here, with the same Huber
objective on log loss (delta 1e-3, summed) as :mod:`lab.fit.engine.laws`, in log R* so both stay positive.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from lab.fit.engine.errors import quiet
from lab.fit.engine.laws import Law, fit_law


def _allocation(base: dict[str, float]) -> tuple[float, float, float]:
    al, be = base["alpha"], base["beta"]
    G = (al * base["A"] / (be * base["B"])) ** (1 / (al + be))
    return G, be / (al + be), al / (al + be)


def effective(N, D, U, R_N: float | np.ndarray, R_D: float | np.ndarray, base: dict[str, float]):
    """(N', D'): the effective parameters and tokens of the data-constrained law."""
    N, D, U = (np.asarray(v, float) for v in (N, D, U))
    G, a, b = _allocation(base)
    rd = np.maximum(D / U - 1, 0)
    Dp = U + U * R_D * (1 - np.exp(-rd / R_D))
    # C(U): D_opt(C) = (C / 6)^b / G = U  ->  C / 6 = (U G)^(1 / b);  N_opt(C) = G (C / 6)^a
    UN = np.minimum(N, G * (U * G) ** (a / b))
    rn = np.maximum(N / UN - 1, 0)
    Np = UN + UN * R_N * (1 - np.exp(-rn / R_N))
    return Np, Dp


def loss(N, D, U, R_N: float, R_D: float, base: dict[str, float]) -> np.ndarray:
    Np, Dp = effective(N, D, U, R_N, R_D, base)
    return base["E"] + base["A"] / Np ** base["alpha"] + base["B"] / Dp ** base["beta"]


class DataConstrained(Law):
    """log L as a function of theta = (ln R_N*, ln R_D*); finite-difference Jacobian (2 parameters)."""

    name = "data-constrained"
    params = ("lnR_N", "lnR_D")
    inputs = ("N", "D", "U")

    def __init__(self, base: dict[str, float]):
        self.base = dict(base)

    def _value(self, theta, X):
        rn, rd = np.exp(theta[:, 0:1]), np.exp(theta[:, 1:2])
        return np.log(loss(X["N"][None, :], X["D"][None, :], X["U"][None, :], rn, rd, self.base))

    def forward(self, theta, X):
        val = self._value(theta, X)
        jac = np.empty(val.shape + (2,))
        h = 1e-6
        for k in range(2):
            tp, tm = theta.copy(), theta.copy()
            tp[:, k] += h
            tm[:, k] -= h
            jac[..., k] = (self._value(tp, X) - self._value(tm, X)) / (2 * h)
        return val, jac

    def public(self, theta):
        th = np.atleast_2d(theta)
        return {"R_N": np.exp(th[:, 0]), "R_D": np.exp(th[:, 1])}

    def starts(self, X, logL):
        # a log grid over the range the published grid (linspace(0, 20, 4) squared) spans
        vals = np.log([1.0, 3.0, 10.0, 30.0, 100.0, 400.0])
        return np.array(list(itertools.product(vals, vals)))

    def formula(self):
        return "L = E + A / N'^alpha + B / D'^beta (effective N', D' under repetition)"


@quiet
def fit_data_constrained(N, D, U, L, base: dict[str, float], delta: float = 1e-3) -> dict[str, float]:
    """Fit the data-constrained law's R_N* and R_D* with the base Chinchilla law held fixed.

    Muennighoff et al. (2023, arXiv:2305.16264): repeated tokens and excess parameters decay in
    value with constants R_D* and R_N* (see the module docstring for ``N'`` and ``D'``). As
    published, the base law ``L = E + A / N^alpha + B / D^beta`` is fitted first on unrepeated data
    and held fixed; only ``ln R_N*`` and ``ln R_D*`` are fitted here, by L-BFGS from a 6 x 6 log
    grid of starts, with the Huber objective on log-loss residuals, summed. No bootstrap: this
    returns point estimates only.

    Units: N = parameters in the convention the base law was fitted in (non-embedding N for the
    lab's fits), D = training tokens, U = unique training tokens, losses in nats/token. C appears
    only inside the law: ``U_N = min(N, N_opt(C(U)))`` uses the base law's closed-form allocation
    under ``C = 6 N D``.

    Parameters
    ----------
    N, D, U, L : array_like
        Per run, aligned: parameters, training tokens, unique tokens (D / U = epochs) and loss.
    base : dict
        The fixed base law: keys ``E`` (nats/token), ``A``, ``B``, ``alpha``, ``beta``
        (e.g. :func:`lab.fit.loss.chinchilla.approach3`'s ``params`` or :func:`base_from_logs`).
    delta : float, default 1e-3
        Huber threshold on log-loss residuals (``None``: plain least squares).

    Returns
    -------
    dict
        ``R_N`` (R_N*) and ``R_D`` (R_D*), dimensionless (in units of U_N and U), ``objective`` (the
        summed Huber objective at the optimum) and ``converged`` (bool, the best start's L-BFGS).

    Raises
    ------
    KeyError
        ``base`` lacks one of ``E``, ``A``, ``B``, ``alpha``, ``beta``.
    """
    law = DataConstrained(base)
    X = {"N": np.asarray(N, float), "D": np.asarray(D, float), "U": np.asarray(U, float)}
    core = fit_law(law, X, np.log(np.asarray(L, float)), delta=delta)
    pub = law.public(core.theta)
    return {"R_N": float(pub["R_N"][0]), "R_D": float(pub["R_D"][0]), "objective": core.objective,
            "converged": core.converged}


def base_from_logs(a: float, b: float, e: float, alpha: float, beta: float | None = None) -> dict[str, float]:
    """The base law from the published log form ``[a, b, e, alpha(, beta)]`` (A = e^a, ...)."""
    return {"A": math.exp(a), "B": math.exp(b), "E": math.exp(e), "alpha": alpha,
            "beta": alpha if beta is None else beta}
