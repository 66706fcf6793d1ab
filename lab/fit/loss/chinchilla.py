"""Chinchilla compute-optimal scaling (Hoffmann et al. 2022), approaches 1, 2 and 3.

* **Approach 1** (:func:`approach1`): the lower envelope of loss vs C over all runs (their
  evaluation curves when the table has them, else their final points); the run on the envelope at
  each C gives N_opt(C) and D_opt(C); power laws ``N_opt = G C^a``, ``D_opt = H C^b`` are fitted to it.
* **Approach 2** (:func:`approach2`): IsoFLOP profiles. Per budget, a parabola of loss in ln N;
  its minimum gives N_opt and (interpolated along the budget's runs, so in the data's own FLOP
  convention) D_opt; then the same power laws over budgets.
* **Approach 3** (:func:`approach3`): ``L = E + A/N^alpha + B/D^beta`` fitted as Besiroglu et al.
  (2024) replicated it: Huber (delta 1e-3) on log-loss residuals, summed; L-BFGS from the full
  4500-point grid of initialisations; log-sum-exp parametrisation. The compute-optimal allocation
  in closed form under ``C = 6 N D``: ``N_opt = G (C/6)^a``, ``a = beta/(alpha+beta)``,
  ``G = (alpha A / (beta B))^(1/(alpha+beta))``; under the data's own C convention when that differs.

Every approach returns a :class:`~lab.fit.engine.result.FitResult` with bootstrap intervals (runs
resampled with replacement; within budgets for approach 2) for its exponents and for N_opt, D_opt
and the loss at the target compute, residuals, dropped points and a leave-largest-out check.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from lab.fit.health import fit_health, judged
from lab.fit.engine.allocation import FlopModel, default_target_flops, optimal_allocation
from lab.fit.engine.bootstrap import bootstrap_weights, interval
from lab.fit.engine.errors import FitError, quiet, require
from lab.fit.engine.laws import Parametric, fit_law, refit_many
from lab.fit.engine.points import Points, group_budgets
from lab.fit.engine.regression import wls_line, wls_poly2
from lab.fit.engine.result import FitResult, residual_stats
from lab.fit.loss.envelope import envelope, envelope_grid, envelope_matrix, run_curves
from lab.fit.loss.holdout import holdout_indices

POWER_NOTE = "N_opt = G C^a, D_opt = H C^b (least squares in log-log)"


def _optimum_lines(lnC, lnN, lnD, lnL, W: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Least-squares lines through the optima: ln N_opt, ln D_opt and ln L* against ln C.

    Returns (cN, a, cD, b, cL, gL), scalars, or arrays with one entry per weight row of ``W``.
    """
    cN, a = wls_line(lnC, lnN, W)
    cD, b = wls_line(lnC, lnD, W)
    cL, gL = wls_line(lnC, lnL, W)
    return cN, a, cD, b, cL, gL


def _power_laws(lines: tuple, lt: float) -> tuple[dict[str, Any], tuple]:
    """The published names of :func:`_optimum_lines` (N_opt = G C^a, D_opt = H C^b, L* = (C_c/C)^alpha_C)
    and N_opt, D_opt, L* at ln C = ``lt``."""
    cN, a, cD, b, cL, gL = lines
    with np.errstate(all="ignore"):
        params = {"a": a, "b": b, "G": np.exp(cN), "H": np.exp(cD), "alpha_C": -gL,
                  "C_c": np.where(gL != 0, np.exp(cL / -gL), np.nan)}
        at = (np.exp(cN + a * lt), np.exp(cD + b * lt), np.exp(cL + gL * lt))
    return params, at


def _pred_block(C: float, n: np.ndarray | float, d: np.ndarray | float, l: np.ndarray | float,
                n_s: np.ndarray, d_s: np.ndarray, l_s: np.ndarray, level: float, note: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"C": C, "N_opt": float(n), "D_opt": float(d), "loss": float(l)}
    for k, s in (("N_opt", n_s), ("D_opt", d_s), ("loss", l_s)):
        out[k + "_interval"] = list(interval(s, level))
    out["tokens_per_param"] = float(d) / float(n) if float(n) > 0 else math.nan
    if note:
        out["note"] = note
    return out


# ----------------------------------------------------------------------------------------------
# Approach 3
# ----------------------------------------------------------------------------------------------

@judged(fit_health)
@quiet
def approach3(pts: Points, bootstrap: int = 1000, target_flops: float | None = None, delta: float = 1e-3,
              level: float = 0.95, seed: int = 0, holdout: bool = True) -> FitResult:
    """Chinchilla approach 3: fit the parametric law ``L(N, D) = E + A / N^alpha + B / D^beta``.

    Hoffmann et al. (2022, arXiv:2203.15556) approach 3 as Besiroglu et al. (2024, arXiv:2404.10102)
    replicated it: Huber loss (``delta``) on ``log Lhat - log L``, summed over points, minimised by
    L-BFGS in the log-sum-exp parametrisation from the 4500-point grid of initialisations (every start
    is screened for 30 steps and the 32 best run to convergence, :func:`~lab.fit.engine.laws.fit_law`).
    From the fitted law it derives the compute-optimal allocation, in closed form under ``C = 6 N D``
    (``N_opt = G (C / 6)^a``) and numerically under the data's own FLOP convention.

    Units: N = non-embedding parameters (the lab's ``params``; a foreign table's N column as given),
    D = training tokens, C = training FLOPs (forward + backward) as the table gives them: the lab's
    ``flops`` column counts ``C = 6 D (N + d_model V + n_layers seq_len d_attn)``
    (:func:`lab.counting.flops_per_token`: output head and causal attention included), or ``C = 6 N D``
    when derived because the table has no C column; ``FitResult.convention`` records which. Losses in
    nats/token (the lab's ``loss_val``).

    Parameters
    ----------
    pts : Points
        Runs to fit, one row each (:func:`~lab.fit.engine.points.load_points`): arrays ``N``, ``D``,
        ``C``, ``loss``. Needs at least 8 rows with at least 3 distinct N and 3 distinct D.
    bootstrap : int, default 1000
        Bootstrap resamples K: runs resampled with replacement, each resample refitted warm-started
        from the full-data optimum. 0 gives no intervals.
    target_flops : float, optional
        Compute C (FLOPs, the data's convention) at which N_opt, D_opt and the loss are predicted;
        default 10 x the largest C in ``pts``.
    delta : float, default 1e-3
        Huber threshold on log-loss residuals (``None``: plain least squares).
    level : float, default 0.95
        Coverage of the bootstrap percentile intervals.
    seed : int, default 0
        Seed of the bootstrap resampling.
    holdout : bool, default True
        Refit without the largest-compute budget group (or the top 10% of runs by C when there are
        fewer than 3 budget groups) and report the error predicting their losses.

    Returns
    -------
    FitResult
        ``law = "chinchilla approach 3"``. ``params``: ``E`` (nats/token), ``A``, ``B``, ``alpha``,
        ``beta`` of the law, and the closed-form allocation under ``C = 6 N D``: ``a = beta / (alpha +
        beta)``, ``b = alpha / (alpha + beta)``, ``G = (alpha A / (beta B))^(1 / (alpha + beta))``.
        ``samples`` holds the K bootstrap draws of each of these plus ``N_opt``, ``D_opt`` and
        ``loss_at_target``; ``intervals`` are their percentile intervals at ``level`` over the finite
        draws. ``predictions``: ``C`` (the target), ``N_opt`` (non-embedding parameters), ``D_opt``
        (tokens), ``loss`` (nats/token), each with an ``*_interval``, ``tokens_per_param`` and a
        ``note``; they minimise the law over N at fixed C with ``D = C / f(N)``, ``f`` the data's FLOPs
        per token fitted as a function of N (:class:`~lab.fit.engine.allocation.FlopModel`; exactly
        ``6 N`` when the data's ``C = 6 N D``), so they follow the data's C convention even where the
        closed-form ``G, a, b`` do not; NaN when the optimum falls at the edge of the N search range.
        ``diagnostics``: ``n_points``, ``dropped``, ``objective``, ``converged``, ``starts``,
        ``starts_converged``, ``huber_delta``, ``bootstrap``, ``bootstrap_failed`` (non-finite refits),
        ``residuals`` (log loss) and ``holdout``. ``extra``: ``theta``, ``law``, ``flop_model``,
        ``points`` (for plots).

    Raises
    ------
    FitError
        Fewer than 8 points, or fewer than 3 distinct N or 3 distinct D.
    """
    n = len(pts)
    require(n >= 8, f"approach 3 fits 5 parameters: needs at least 8 points, got {n}")
    require(len(np.unique(pts.N)) >= 3 and len(np.unique(np.round(np.log(pts.D), 3))) >= 3,
            "approach 3 needs at least 3 distinct N and 3 distinct D values to separate the N and D terms; "
            f"got {len(np.unique(pts.N))} N and {len(np.unique(np.round(np.log(pts.D), 3)))} D")
    law = Parametric()
    X = {"lnN": np.log(pts.N), "lnD": np.log(pts.D)}
    y = np.log(pts.loss)
    core = fit_law(law, X, y, delta=delta)
    theta = core.theta
    params = {k: float(v[0]) for k, v in law.public(theta).items()}
    al, be, A, B = params["alpha"], params["beta"], params["A"], params["B"]
    a, b = be / (al + be), al / (al + be)
    with np.errstate(all="ignore"):  # a degenerate fit (an exponent <= 0) has no real G: nan, not complex
        G = float(np.power(np.float64(al * A / (be * B)), 1.0 / (al + be)))
    params.update({"a": a, "b": b, "G": G})

    rng = np.random.default_rng(seed)
    samples: dict[str, np.ndarray] = {}
    C_t = default_target_flops(pts.C, target_flops)
    fm = FlopModel(pts.N, pts.C, pts.D)
    K = int(bootstrap)
    th_b = np.empty((0, 5))
    if K > 0:
        W = bootstrap_weights(n, K, rng)
        th_b = refit_many(law, X, y, W, [theta], delta=delta)
        pub = law.public(th_b)
        samples = {k: v for k, v in pub.items()}
        alb, beb = pub["alpha"], pub["beta"]
        with np.errstate(all="ignore"):
            samples["a"] = beb / (alb + beb)
            samples["b"] = alb / (alb + beb)
            samples["G"] = (alb * pub["A"] / (beb * pub["B"])) ** (1.0 / (alb + beb))

    def loss_fn_for(thetas):
        def f(lnN, lnD):
            return np.exp(law.forward(thetas, {"lnN": lnN, "lnD": lnD})[0])
        return f

    lo = float(np.log(pts.N.min())) - 12
    hi = float(np.log(C_t)) - 1
    n0, d0, l0 = optimal_allocation(loss_fn_for(theta[None, :]), C_t, fm, (lo, hi))
    if K > 0:
        nb, db, lb = optimal_allocation(loss_fn_for(th_b), C_t, fm, (lo, hi))
    else:
        nb = db = lb = np.array([])
    note = ("allocation under C = 6 N D (closed form)" if fm.is_6nd else
            f"allocation under the data's C convention, {fm.describe()}; the closed-form G, a, b assume C = 6 N D")
    preds = _pred_block(C_t, n0[0], d0[0], l0[0], nb, db, lb, level, note)
    samples.update({"N_opt": nb, "D_opt": db, "loss_at_target": lb}) if K > 0 else None

    pred_log = law.forward(theta[None, :], X)[0][0]
    diag: dict[str, Any] = {
        "n_points": n, "dropped": pts.dropped, "objective": core.objective, "converged": core.converged,
        "starts": core.n_starts, "starts_converged": core.n_converged, "huber_delta": delta,
        "bootstrap": K, "bootstrap_failed": int(np.sum(~np.all(np.isfinite(th_b), axis=1))) if K else 0,
        "residuals": residual_stats(y, pred_log), "flop_model": fm.to_json(),
    }
    if holdout:
        diag["holdout"] = _holdout_parametric(pts, law, theta, delta)
    return FitResult("chinchilla approach 3", law.formula(), params, samples, level, preds, diag,
                     dict(pts.convention), list(pts.notes),
                     extra={"theta": theta, "law": law, "flop_model": fm, "points": pts})


def _holdout_parametric(pts: Points, law, theta, delta) -> dict[str, Any]:
    top, what = holdout_indices(pts)
    rest = ~top
    if rest.sum() < 8:
        return {"skipped": f"only {int(rest.sum())} points would remain (approach 3 needs 8)"}
    X = pts.X()
    Xr = {k: v[rest] for k, v in X.items()}
    yr = np.log(pts.loss[rest])
    starts = np.vstack([theta[None, :], law.starts(Xr, yr)[::9]])
    core = fit_law(law, Xr, yr, starts=starts, delta=delta)
    pred = law.predict(core.theta, {k: v[top] for k, v in X.items()})
    err = pred / pts.loss[top] - 1
    return {"what": what, "n": int(top.sum()), "mean_abs_pct": float(np.mean(np.abs(err)) * 100),
            "max_abs_pct": float(np.max(np.abs(err)) * 100), "errors_pct": [float(e * 100) for e in err]}


# ----------------------------------------------------------------------------------------------
# Approach 2
# ----------------------------------------------------------------------------------------------

def _profile_minima(pts: Points, groups: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    """Per group and weight row: parabola minimum (ln N*, ln D*, L*) and whether it is interior."""
    G = int(groups.max()) + 1
    K = W.shape[0]
    out = {k: np.full((K, G), np.nan) for k in ("lnN", "lnD", "L", "lnC")}
    out["p"] = np.full((K, G, 3), np.nan)
    out["reason"] = np.full((K, G), "", dtype=object)
    x_all, d_all, y_all = np.log(pts.N), np.log(pts.D), pts.loss
    for g in range(G):
        idx = np.flatnonzero(groups == g)
        x, y, w = x_all[idx], y_all[idx], W[:, idx]
        p = wls_poly2(x, y, w)
        out["p"][:, g] = p
        out["lnC"][:, g] = np.log(np.exp(np.mean(np.log(pts.C[idx]))))
        with np.errstate(invalid="ignore", divide="ignore"):
            xs = -p[:, 1] / (2 * p[:, 2])
        present = w > 0
        xmin = np.where(present, x[None, :], np.inf).min(1)
        xmax = np.where(present, x[None, :], -np.inf).max(1)
        n_distinct = np.array([len(np.unique(x[pr])) for pr in present])
        ok = (n_distinct >= 3) & (p[:, 2] > 0) & (xs > xmin) & (xs < xmax)
        reason = np.where(n_distinct < 3, "fewer than 3 distinct N",
                          np.where(~(p[:, 2] > 0), "parabola opens downward (no minimum)",
                                   np.where(xs <= xmin, "minimum below the smallest N: add smaller models",
                                            np.where(xs >= xmax, "minimum above the largest N: add larger models", ""))))
        out["reason"][:, g] = reason
        c, s = wls_line(x, d_all[idx], w)
        out["lnN"][:, g] = np.where(ok, xs, np.nan)
        out["lnD"][:, g] = np.where(ok, c + s * xs, np.nan)
        out["L"][:, g] = np.where(ok, p[:, 0] + p[:, 1] * xs + p[:, 2] * xs * xs, np.nan)
    return out


@judged(fit_health)
@quiet
def approach2(pts: Points, bootstrap: int = 1000, target_flops: float | None = None, level: float = 0.95,
              seed: int = 0, holdout: bool = True, rel_tol: float = 0.1, window: float | None = None) -> FitResult:
    """Chinchilla approach 2: IsoFLOP parabolas per compute budget, then power laws of their minima over C.

    Hoffmann et al. (2022, arXiv:2203.15556) approach 2. Runs are grouped into compute budgets; per
    budget a least-squares parabola of loss in ln N, ``L = p0 + p1 ln N + p2 (ln N)^2``, gives the
    optimum ``ln N* = -p1 / (2 p2)``, the loss ``L*`` there, and ``D*`` from a least-squares line of
    ln D on ln N through the budget's own runs (so D* follows the data's FLOP convention). Budgets
    whose parabola has no minimum strictly inside their range of N are left out. Lines in log-log
    through the remaining optima give ``N_opt = G C^a``, ``D_opt = H C^b`` and
    ``L*(C) = (C_c / C)^alpha_C``.

    Units: N = non-embedding parameters (the lab's ``params``; a foreign table's N column as given),
    D = training tokens, C = training FLOPs (forward + backward) as the table gives them: the lab's
    ``flops`` column counts ``C = 6 D (N + d_model V + n_layers seq_len d_attn)``
    (:func:`lab.counting.flops_per_token`), or ``C = 6 N D`` when derived because the table has no C
    column; ``FitResult.convention`` records which. A budget's C is the geometric mean of its runs'
    C. Losses in nats/token (the lab's ``loss_val``).

    Parameters
    ----------
    pts : Points
        Runs to fit, one row each (:func:`~lab.fit.engine.points.load_points`): arrays ``N``, ``D``,
        ``C``, ``loss``, and ``budget`` (the design budget) when the table has one.
    bootstrap : int, default 1000
        Bootstrap resamples K: runs resampled with replacement *within* their budget, every parabola
        and line refitted. 0 gives no intervals.
    target_flops : float, optional
        Compute C (FLOPs, the data's convention) at which N_opt, D_opt and the loss are predicted;
        default 10 x the largest C in ``pts``.
    level : float, default 0.95
        Coverage of the bootstrap percentile intervals.
    seed : int, default 0
        Seed of the bootstrap resampling.
    holdout : bool, default True
        Hold out the largest budget that has an interior minimum, fit the lines to the others, and
        report the error predicting its minimum loss (and its N_opt).
    rel_tol : float, default 0.1
        Budget grouping when ``pts.budget`` is absent: runs sorted by C join one budget while
        consecutive C differ by less than a factor ``1 + rel_tol``.
    window : float, optional
        Fit each parabola only to runs within a factor ``window`` in N of the budget's lowest-loss
        run (None: all runs, as Hoffmann et al.); the others are listed in ``dropped``. Wide,
        asymmetric profiles bend away from a parabola far from the minimum; a local fit
        (``window=2``) reproduces Porian et al.'s interpolated optima (see tests/test_fit_reference.py).

    Returns
    -------
    FitResult
        ``law = "chinchilla approach 2"``. ``params``: ``a``, ``G`` (N_opt = G C^a), ``b``, ``H``
        (D_opt = H C^b), ``alpha_C``, ``C_c`` (L* = (C_c / C)^alpha_C, C_c in FLOPs). ``samples``
        holds the K bootstrap draws of each plus ``N_opt``, ``D_opt``, ``loss_at_target`` (NaN for a
        resample with fewer than 3 usable budgets); ``intervals`` are their percentile intervals at
        ``level`` over the finite draws. ``predictions``: ``C`` (the target), ``N_opt``, ``D_opt``,
        ``loss`` (from the L*(C) line), each with an ``*_interval``, ``tokens_per_param`` and a
        ``note``. ``diagnostics``: ``n_points``, ``n_groups``, ``n_groups_used``, ``dropped``,
        ``dropped_budgets`` (budget, reason, n_points), ``profiles`` (per budget: ``C``,
        ``interior_min``, ``reason``, ``n_points``, ``N_opt``, ``D_opt``, ``loss_opt``,
        ``parabola_lnN`` = [p0, p1, p2]), ``bootstrap``, ``bootstrap_failed``, ``residuals`` (log loss
        of each run against its budget's parabola) and ``holdout``. ``extra``: ``groups``,
        ``profiles``, ``points``.

    Raises
    ------
    FitError
        ``window <= 1``; fewer than 3 budgets; fewer than 3 budgets with an interior minimum (the
        message gives each dropped budget's reason).
    """
    groups = group_budgets(pts.C, pts.budget, rel_tol)
    if window is not None:
        require(window > 1, f"--window must be > 1 (a factor in N), got {window}")
        keep = np.zeros(len(pts), bool)
        for g in np.unique(groups):
            idx = np.flatnonzero(groups == g)
            best = idx[np.argmin(pts.loss[idx])]
            keep[idx] = np.abs(np.log(pts.N[idx] / pts.N[best])) <= np.log(window) + 1e-9
        pts = pts.subset(keep, f"outside the parabola window (factor {window:g} in N of its budget's best run)")
        groups = groups[keep]
    G = int(groups.max()) + 1 if len(groups) else 0
    require(G >= 3, f"approach 2 needs at least 3 compute budgets, found {G} "
                    f"(C values: {', '.join(f'{c:.3g}' for c in sorted(set(np.round(pts.C, -8))) [:8])})")
    full = _profile_minima(pts, groups, np.ones((1, len(pts))))
    ok = np.isfinite(full["lnN"][0])
    budgets = [float(np.exp(full["lnC"][0, g])) for g in range(G)]
    dropped_budgets = [{"budget": budgets[g], "reason": full["reason"][0, g], "n_points": int((groups == g).sum())}
                       for g in range(G) if not ok[g]]
    if ok.sum() < 3:
        detail = "; ".join(f"C={d['budget']:.3g}: {d['reason']} ({d['n_points']} points)" for d in dropped_budgets[:6])
        detail += " ..." if len(dropped_budgets) > 6 else ""
        raise FitError(f"approach 2 needs at least 3 budgets with an interior minimum, got {int(ok.sum())} of {G}: "
                       f"{detail}")
    C_t = default_target_flops(pts.C, target_flops)
    lt = math.log(C_t)
    lines = _optimum_lines(full["lnC"][0][ok], full["lnN"][0][ok], full["lnD"][0][ok], np.log(full["L"][0][ok]))
    params, (n_t, d_t, l_t) = _power_laws(lines, lt)
    params = {k: float(v) for k, v in params.items()}
    samples: dict[str, np.ndarray] = {}
    K = int(bootstrap)
    failed = 0
    nb = db = lb = np.array([])
    if K > 0:
        rng = np.random.default_rng(seed)
        W = bootstrap_weights(len(pts), K, rng, groups)
        bm = _profile_minima(pts, groups, W)
        good = np.isfinite(bm["lnN"]) & ok[None, :]
        with np.errstate(invalid="ignore"):
            lines_b = _optimum_lines(np.where(good, bm["lnC"], 0.0), np.where(good, bm["lnN"], 0.0),
                                     np.where(good, bm["lnD"], 0.0), np.log(np.where(good, bm["L"], 1.0)),
                                     good.astype(float))
        enough = good.sum(1) >= 3
        failed = int((~enough).sum())
        samples, (nb, db, lb) = _power_laws(tuple(np.where(enough, x, np.nan) for x in lines_b), lt)
        samples.update({"N_opt": nb, "D_opt": db, "loss_at_target": lb})
    preds = _pred_block(C_t, n_t, d_t, l_t, nb, db, lb, level,
                        "loss at target from L*(C) = (C_c / C)^alpha_C fitted to the profile minima")
    # residuals: each point against its own budget's parabola
    pred = np.full(len(pts), np.nan)
    for g in range(G):
        idx = np.flatnonzero(groups == g)
        p = full["p"][0, g]
        x = np.log(pts.N[idx])
        pred[idx] = p[0] + p[1] * x + p[2] * x * x
    fin = np.isfinite(pred) & (pred > 0)
    profiles = [{"C": budgets[g], "interior_min": bool(ok[g]), "reason": full["reason"][0, g],
                 "n_points": int((groups == g).sum()),
                 "N_opt": float(np.exp(full["lnN"][0, g])) if ok[g] else None,
                 "D_opt": float(np.exp(full["lnD"][0, g])) if ok[g] else None,
                 "loss_opt": float(full["L"][0, g]) if ok[g] else None,
                 "parabola_lnN": [float(v) for v in full["p"][0, g]]} for g in range(G)]
    diag: dict[str, Any] = {"n_points": len(pts), "n_groups": G, "n_groups_used": int(ok.sum()), "dropped": pts.dropped,
                            "dropped_budgets": dropped_budgets, "profiles": profiles, "bootstrap": K,
                            "bootstrap_failed": failed,
                            "residuals": residual_stats(np.log(pts.loss[fin]), np.log(pred[fin]))}
    notes = list(pts.notes)
    for d in dropped_budgets:
        notes.append(f"budget C={d['budget']:.3g} not used: {d['reason']}")
    if holdout:
        diag["holdout"] = _holdout_profiles(full, ok, budgets)
    formula = "per budget: L = p0 + p1 ln N + p2 (ln N)^2; N_opt = G C^a, D_opt = H C^b, L* = (C_c / C)^alpha_C"
    return FitResult("chinchilla approach 2", formula, params, samples, level, preds, diag, dict(pts.convention),
                     notes, extra={"groups": groups, "profiles": profiles, "points": pts})


def _holdout_profiles(full: dict[str, np.ndarray], ok: np.ndarray, budgets: list[float]) -> dict[str, Any]:
    use = np.flatnonzero(ok)
    if use.size < 4:
        return {"skipped": f"{use.size} budgets with a minimum; the hold-out needs 4 (3 to fit, 1 to predict)"}
    last, rest = use[-1], use[:-1]
    lnC = full["lnC"][0]
    cN, a = wls_line(lnC[rest], full["lnN"][0][rest])
    cL, gL = wls_line(lnC[rest], np.log(full["L"][0][rest]))
    n_pred = math.exp(cN + a * lnC[last])
    l_pred = math.exp(cL + gL * lnC[last])
    l_err = l_pred / full["L"][0][last] - 1
    n_err = n_pred / math.exp(full["lnN"][0][last]) - 1
    return {"what": f"largest budget C={budgets[last]:.3g} held out: its minimum loss predicted",
            "n": 1, "mean_abs_pct": abs(l_err) * 100, "max_abs_pct": abs(l_err) * 100,
            "loss_error_pct": l_err * 100, "N_opt_error_pct": n_err * 100}


# ----------------------------------------------------------------------------------------------
# Approach 1
# ----------------------------------------------------------------------------------------------

@judged(fit_health)
@quiet
def approach1(pts: Points, curves: pd.DataFrame | None = None, bootstrap: int = 1000,
              target_flops: float | None = None, level: float = 0.95, seed: int = 0, per_decade: int = 20,
              holdout: bool = True) -> FitResult:
    """Chinchilla approach 1: power laws of N_opt and D_opt over C from the lower envelope of loss vs C.

    Hoffmann et al. (2022, arXiv:2203.15556) approach 1. At each compute C on a grid the envelope
    is the lowest loss any run reached at that C; the run that reached it gives N_opt(C) (its N) and
    D_opt(C) (its D there). Lines in log-log through the envelope give ``N_opt = G C^a``,
    ``D_opt = H C^b`` and ``L(C) = (C_c / C)^alpha_C``.

    Units: N = non-embedding parameters (the lab's ``params``; a foreign table's N column as given),
    D = training tokens, C = training FLOPs (forward + backward) as the table gives them: the lab's
    ``flops`` column counts ``C = 6 D (N + d_model V + n_layers seq_len d_attn)``
    (:func:`lab.counting.flops_per_token`), or ``C = 6 N D`` when derived because the table has no C
    column; ``FitResult.convention`` records which (curves always use the lab's ``flops``). Losses in
    nats/token (the lab's ``loss_val``).

    Parameters
    ----------
    pts : Points
        Runs, one row each (:func:`~lab.fit.engine.points.load_points`): arrays ``N``, ``D``, ``C``,
        ``loss`` and, to match curves, ``run`` keys. Needs at least 3 runs spanning more than 0.3
        decades of C.
    curves : DataFrame, optional
        Evaluation rows of the runs (:func:`lab.results.load_curves`), columns ``sweep``, ``run``,
        ``flops`` (C), ``tokens`` (D) and ``loss_val`` (nats/token). A run's rows before its final C
        with a finite loss form its curve, read log-linearly on a grid of ``per_decade`` points per
        decade of C. Without curves (or without ``pts.run``) each run is its final point, the grid is
        the runs' own C, and a run is on the envelope when no run of equal or lower C has a lower loss.
    bootstrap : int, default 1000
        Bootstrap resamples K: runs resampled with replacement and the envelope re-read from the
        drawn runs; a resample whose envelope holds fewer than 2 distinct N fails (NaN). 0 gives no
        intervals.
    target_flops : float, optional
        Compute C (FLOPs, the data's convention) at which N_opt, D_opt and the loss are predicted;
        default 10 x the largest C in ``pts``.
    level : float, default 0.95
        Coverage of the bootstrap percentile intervals.
    seed : int, default 0
        Seed of the bootstrap resampling.
    per_decade : int, default 20
        Envelope grid points per decade of C when curves are used (at least 10 in all).
    holdout : bool, default True
        Fit L(C) to the envelope in the lowest 80% of the log-C range and report the error
        predicting the envelope loss above it.

    Returns
    -------
    FitResult
        ``law = "chinchilla approach 1"``. ``params``: ``a``, ``G`` (N_opt = G C^a), ``b``, ``H``
        (D_opt = H C^b), ``alpha_C``, ``C_c`` (L(C) = (C_c / C)^alpha_C, C_c in FLOPs). ``samples``
        holds the K bootstrap draws of each plus ``N_opt``, ``D_opt``, ``loss_at_target``;
        ``intervals`` are their percentile intervals at ``level`` over the finite draws.
        ``predictions``: ``C`` (the target), ``N_opt``, ``D_opt``, ``loss`` (from the envelope's
        L(C)), each with an ``*_interval``, ``tokens_per_param`` and a ``note``. ``diagnostics``:
        ``n_points``, ``dropped``, ``envelope_points``, ``envelope_sizes`` (distinct N on the
        envelope), ``source`` (final points only, or curves + final points), ``bootstrap``,
        ``bootstrap_failed``, ``residuals`` (log loss of the envelope against L(C)) and ``holdout``.
        ``extra``: ``grid``, ``env_N``, ``env_D``, ``env_L``, ``curves``, ``points`` (for plots).

    Raises
    ------
    FitError
        Fewer than 3 runs; runs spanning 0.3 decades of C or less; an envelope holding fewer than 2
        distinct model sizes.
    """
    rc = run_curves(pts, curves)
    single = all(c["C"].size == 1 for c in rc)
    require(len(pts) >= 3, f"approach 1 needs at least 3 runs, got {len(pts)}")
    cmin = min(c["C"][0] for c in rc)
    cmax = max(c["C"][-1] for c in rc)
    decades = math.log10(cmax / cmin)
    require(decades > 0.3, f"approach 1 needs runs spanning a range of C; these span {decades:.2f} decades")
    grid = envelope_grid(rc, single, per_decade)
    Lm, Dm = envelope_matrix(rc, grid)
    N = np.array([c["N"] for c in rc], float)
    n, d, l = envelope(Lm, Dm, N, np.ones(len(rc)), single)
    on = np.isfinite(n)
    distinct = len(np.unique(n[on]))
    require(distinct >= 2, f"approach 1: the envelope holds only {distinct} distinct model size(s); "
                           "it needs runs of at least 2 (better 3+) sizes that each lead somewhere in C")
    lnC = np.log(grid)
    C_t = default_target_flops(pts.C, target_flops)
    lt = math.log(C_t)
    lines = _optimum_lines(lnC[on], np.log(n[on]), np.log(d[on]), np.log(l[on]))
    params, (n_t, d_t, l_t) = _power_laws(lines, lt)
    params = {k: float(v) for k, v in params.items()}
    samples: dict[str, np.ndarray] = {}
    K = int(bootstrap)
    failed = 0
    nb = db = lb = np.array([])
    if K > 0:
        rng = np.random.default_rng(seed)
        W = bootstrap_weights(len(rc), K, rng)
        res = [envelope(Lm, Dm, N, W[k], single) for k in range(K)]
        nK = np.array([r[0] for r in res])
        dK = np.array([r[1] for r in res])
        lK = np.array([r[2] for r in res])
        good = np.isfinite(nK)
        with np.errstate(all="ignore"):
            lines_b = _optimum_lines(np.broadcast_to(lnC, nK.shape), np.log(np.where(good, nK, 1.0)),
                                     np.log(np.where(good, dK, 1.0)), np.log(np.where(good, lK, 1.0)),
                                     good.astype(float))
        distinctK = np.array([len(np.unique(nK[k][good[k]])) for k in range(K)])
        bad = distinctK < 2
        failed = int(bad.sum())
        samples, (nb, db, lb) = _power_laws(tuple(np.where(bad, np.nan, x) for x in lines_b), lt)
        samples.update({"N_opt": nb, "D_opt": db, "loss_at_target": lb})
    preds = _pred_block(C_t, n_t, d_t, l_t, nb, db, lb, level,
                        "loss at target from the envelope's L(C) = (C_c / C)^alpha_C")
    cL, gL = lines[4], lines[5]
    env_pred = np.exp(cL + gL * lnC[on])
    diag: dict[str, Any] = {"n_points": len(pts), "dropped": pts.dropped, "envelope_points": int(on.sum()),
                            "envelope_sizes": distinct, "source": "final points only" if single else
                            "evaluation curves + final points", "bootstrap": K, "bootstrap_failed": failed,
                            "residuals": residual_stats(np.log(l[on]), np.log(env_pred))}
    notes = list(pts.notes)
    if single:
        notes.append("no curves: the envelope is the runs' final points (those no cheaper run beats)")
    else:
        notes.append("envelope from evaluation curves: mid-run points of cosine/WSD runs sit above what a run "
                     "sized for that C reaches, which biases N_opt upward (Hoffmann et al. used 4 schedule lengths)")
    if holdout:
        diag["holdout"] = _holdoutenvelope(lnC, on, l, n)
    return FitResult("chinchilla approach 1", "envelope: N_opt = G C^a, D_opt = H C^b, L(C) = (C_c / C)^alpha_C",
                     params, samples, level, preds, diag, dict(pts.convention), notes,
                     extra={"grid": grid, "env_N": n, "env_D": d, "env_L": l, "curves": rc, "points": pts})


def _holdoutenvelope(lnC: np.ndarray, on: np.ndarray, l: np.ndarray, n: np.ndarray) -> dict[str, Any]:
    idx = np.flatnonzero(on)
    cut = lnC[idx[0]] + 0.8 * (lnC[idx[-1]] - lnC[idx[0]])
    fit, test = idx[lnC[idx] <= cut], idx[lnC[idx] > cut]
    if test.size == 0 or fit.size < 3 or len(np.unique(n[fit])) < 2:
        return {"skipped": "too few envelope points to hold out the top fifth of the C range"}
    c, s = wls_line(lnC[fit], np.log(l[fit]))
    err = np.exp(c + s * lnC[test]) / l[test] - 1
    return {"what": "envelope above 80% of the log-C range held out, its loss predicted from L(C)",
            "n": int(test.size), "mean_abs_pct": float(np.mean(np.abs(err)) * 100),
            "max_abs_pct": float(np.max(np.abs(err)) * 100)}
