"""Batched L-BFGS in numpy: many independent small minimisations at once.

Scaling-law fits are tiny (3-6 parameters, tens to hundreds of points) but are run from thousands
of initialisations and refitted for every bootstrap resample. A scipy loop pays Python overhead per
start (about a minute for the ~4500-start Chinchilla grid); here all S problems advance together,
so one step costs a few array operations over an (S, n) residual matrix.

The algorithm is textbook L-BFGS (two-loop recursion, memory ``m``) with a backtracking Armijo line
search done per problem; a problem stops when its gradient or its objective change falls below
tolerance, or after ``max_iter`` steps. Problems whose curvature pair fails ``s.y > 0`` skip that
memory update, which keeps the inverse-Hessian estimate positive definite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# f(theta[S, P], idx[S']) -> (value[S'], grad[S', P]) evaluated for the rows ``idx`` of the batch.
Objective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class BatchResult:
    x: np.ndarray          # (S, P) minimisers
    fun: np.ndarray        # (S,) objective at x
    grad_norm: np.ndarray  # (S,) max-abs gradient at x
    iterations: np.ndarray  # (S,) steps taken
    converged: np.ndarray  # (S,) bool


def minimize_batched(fun: Objective, x0: np.ndarray, max_iter: int = 500, memory: int = 10,
                     gtol: float = 1e-9, ftol: float = 1e-13, max_backtrack: int = 40) -> BatchResult:
    """Minimise S independent objectives from the rows of ``x0`` (S, P).

    ``fun(x, idx)`` evaluates problems ``idx`` at ``x`` (rows aligned with ``idx``) and returns their
    values and gradients. Converged problems drop out of later evaluations.
    """
    x = np.array(x0, dtype=float, copy=True)
    S, P = x.shape
    all_idx = np.arange(S)
    f, g = fun(x, all_idx)
    f = np.where(np.isfinite(f), f, np.inf)
    s_mem = np.zeros((S, memory, P))
    y_mem = np.zeros((S, memory, P))
    rho = np.zeros((S, memory))
    n_mem = np.zeros(S, dtype=int)   # valid pairs stored (<= memory)
    head = np.zeros(S, dtype=int)    # next slot (ring buffer)
    iters = np.zeros(S, dtype=int)
    active = np.isfinite(f) & (np.abs(g).max(axis=1) > gtol)
    converged = ~active & np.isfinite(f)
    for it in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        d = -_two_loop(g[idx], s_mem[idx], y_mem[idx], rho[idx], n_mem[idx], head[idx], memory)
        slope = np.einsum("ij,ij->i", d, g[idx])
        bad = ~(slope < 0) | ~np.all(np.isfinite(d), axis=1)
        if bad.any():  # reset to steepest descent where the direction is not a descent direction
            d[bad] = -g[idx][bad]
            slope[bad] = -np.einsum("ij,ij->i", g[idx][bad], g[idx][bad])
            n_mem[idx[bad]] = 0
        first = n_mem[idx] == 0
        t = np.ones(idx.size)
        # first step (or after a reset): a step of unit length in parameter space at most
        dn = np.abs(d).max(axis=1)
        t[first] = np.minimum(1.0, 1.0 / np.maximum(dn[first], 1e-300))
        x_new = np.empty((idx.size, P))
        f_new = np.full(idx.size, np.inf)
        g_new = np.empty((idx.size, P))
        todo = np.arange(idx.size)
        for _ in range(max_backtrack):
            xt = x[idx[todo]] + t[todo, None] * d[todo]
            ft, gt = fun(xt, idx[todo])
            ok = np.isfinite(ft) & (ft <= f[idx[todo]] + 1e-4 * t[todo] * slope[todo])
            acc = todo[ok]
            x_new[acc], f_new[acc], g_new[acc] = xt[ok], ft[ok], gt[ok]
            todo = todo[~ok]
            if todo.size == 0:
                break
            t[todo] *= 0.5
        failed = np.zeros(idx.size, dtype=bool)
        failed[todo] = True
        # problems whose line search failed have reached the precision the objective allows
        done_idx = idx[failed]
        active[done_idx] = False
        converged[done_idx] = np.abs(g[done_idx]).max(axis=1) < 1e-5 * np.maximum(1.0, np.abs(f[done_idx]))
        ok_mask = ~failed
        oi = idx[ok_mask]
        s = x_new[ok_mask] - x[oi]
        y = g_new[ok_mask] - g[oi]
        sy = np.einsum("ij,ij->i", s, y)
        df = f[oi] - f_new[ok_mask]
        x[oi], f[oi], g[oi] = x_new[ok_mask], f_new[ok_mask], g_new[ok_mask]
        iters[oi] += 1
        upd = sy > 1e-12 * np.maximum(1e-300, np.einsum("ij,ij->i", y, y))
        ui = oi[upd]
        slot = head[ui]
        s_mem[ui, slot] = s[upd]
        y_mem[ui, slot] = y[upd]
        rho[ui, slot] = 1.0 / sy[upd]
        head[ui] = (slot + 1) % memory
        n_mem[ui] = np.minimum(n_mem[ui] + 1, memory)
        stop = (np.abs(g[oi]).max(axis=1) <= gtol) | (np.abs(df) <= ftol * np.maximum(1.0, np.abs(f[oi])))
        active[oi[stop]] = False
        converged[oi[stop]] = True
    return BatchResult(x=x, fun=f, grad_norm=np.abs(g).max(axis=1), iterations=iters, converged=converged)


def _two_loop(g: np.ndarray, s_mem: np.ndarray, y_mem: np.ndarray, rho: np.ndarray, n_mem: np.ndarray,
              head: np.ndarray, memory: int) -> np.ndarray:
    """H g for each row, with the L-BFGS inverse-Hessian estimate of that row's memory."""
    q = g.copy()
    B = g.shape[0]
    rows = np.arange(B)
    alpha = np.zeros((B, memory))
    for k in range(memory):  # newest to oldest
        slot = (head - 1 - k) % memory
        valid = k < n_mem
        s, y, r = s_mem[rows, slot], y_mem[rows, slot], rho[rows, slot]
        a = np.where(valid, r * np.einsum("ij,ij->i", s, q), 0.0)
        alpha[:, k] = a
        q -= a[:, None] * y
    newest = (head - 1) % memory
    s, y = s_mem[rows, newest], y_mem[rows, newest]
    yy = np.einsum("ij,ij->i", y, y)
    gamma = np.where(n_mem > 0, np.einsum("ij,ij->i", s, y) / np.where(yy > 0, yy, 1.0), 1.0)
    q *= gamma[:, None]
    for k in reversed(range(memory)):  # oldest to newest
        slot = (head - 1 - k) % memory
        valid = k < n_mem
        s, y, r = s_mem[rows, slot], y_mem[rows, slot], rho[rows, slot]
        b = np.where(valid, r * np.einsum("ij,ij->i", y, q), 0.0)
        q += (alpha[:, k] - b)[:, None] * s
    return q
