"""Kaplan et al. (2020) laws: L(N), L(D), L(C) and the joint L(N, D), optionally with an irreducible E.

* ``L(N) = (N_c / N)^alpha_N`` on each model size's lowest loss (Kaplan fit sizes trained close to
  convergence; the lowest loss of a size is the run that got closest).
* ``L(D) = (D_c / D)^alpha_D`` on each token count's lowest loss (the largest model that saw it).
* ``L(C) = (C_c / C)^alpha_C`` on the compute frontier: the lower envelope of loss vs C over runs
  (see :func:`lab.fit.loss.chinchilla.approach1`).
* ``L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D`` on every point.

``irreducible=True`` adds ``E +`` in front of each. All are fitted in log space with the same
robust objective as Chinchilla approach 3 (:mod:`lab.fit.engine.laws`) and bootstrap intervals from
resampled runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from lab.fit.health import fit_health, judged
from lab.fit.engine.allocation import FlopModel, default_target_flops, optimal_allocation
from lab.fit.engine.bootstrap import bootstrap_weights, interval
from lab.fit.engine.errors import quiet, require
from lab.fit.engine.laws import KaplanND, PowerLaw, fit_law, refit_many
from lab.fit.engine.points import Points, group_budgets
from lab.fit.engine.result import FitResult, residual_stats
from lab.fit.loss.envelope import envelope, envelope_grid, envelope_matrix, run_curves
from lab.fit.loss.holdout import holdout_indices

FORMS = ("N", "D", "C", "ND")


def _group_min(values: np.ndarray, loss: np.ndarray, groups: np.ndarray, W: np.ndarray):
    """Per weight row and group: the lowest loss among drawn rows, and the group's value; NaN if none drawn."""
    G = int(groups.max()) + 1
    K = W.shape[0]
    Lg = np.full((K, G), np.nan)
    vg = np.zeros(G)
    for g in range(G):
        idx = np.flatnonzero(groups == g)
        vg[g] = float(np.exp(np.mean(np.log(values[idx]))))
        M = np.where(W[:, idx] > 0, loss[idx][None, :], np.inf)
        m = M.min(1)
        Lg[:, g] = np.where(np.isfinite(m), m, np.nan)
    return vg, Lg


def _fit_single(var: str, x: np.ndarray, L: np.ndarray, LK: np.ndarray | None, irreducible: bool, delta: float):
    """Fit L(var) to points (x, L); refit each bootstrap row of LK (NaN = absent). Returns law, theta, thetas."""
    law = PowerLaw(var, irreducible)
    X = {f"ln{var}": np.log(x)}
    y = np.log(L)
    core = fit_law(law, X, y, delta=delta)
    thetas = None
    if LK is not None and len(LK):
        present = np.isfinite(LK)
        yK = np.where(present, np.log(np.where(present, LK, 1.0)), 0.0)
        thetas = refit_many(law, X, yK, present.astype(float), [core.theta], delta=delta)
        too_few = present.sum(1) < len(law.params) + 1
        thetas[too_few] = np.nan
    return law, core, thetas


@judged(fit_health)
@quiet
def fit_kaplan(pts: Points, form: str = "ND", curves: pd.DataFrame | None = None, irreducible: bool = False,
               bootstrap: int = 1000, target_flops: float | None = None, delta: float = 1e-3, level: float = 0.95,
               seed: int = 0, holdout: bool = True) -> FitResult:
    """Fit one Kaplan et al. (2020) loss law (``form`` N, D, C or ND) with bootstrap intervals.

    The laws of Kaplan et al. (2020, arXiv:2001.08361), fitted in log space with the robust
    objective of :mod:`lab.fit.engine.laws` (Huber on ``log Lhat - log L``, summed, L-BFGS from a
    grid of starts), each with residuals and a hold-out check:

    * ``"N"``: ``L(N) = (N_c / N)^alpha_N`` on each model size's lowest loss (N values within 2%
      form one size, its N the geometric mean);
    * ``"D"``: ``L(D) = (D_c / D)^alpha_D`` on each token count's lowest loss (likewise);
    * ``"C"``: ``L(C) = (C_c / C)^alpha_C`` on the compute frontier, the lower envelope of loss vs C
      over runs (as :func:`lab.fit.loss.chinchilla.approach1` reads it);
    * ``"ND"``: ``L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D`` on every point, plus
      its compute-optimal allocation at the target C.

    Units: N = non-embedding parameters (Kaplan's convention; the lab's ``params``, a foreign
    table's N column as given), D = training tokens, C = training FLOPs (forward + backward) as the
    table gives them: the lab's ``flops`` column counts ``C = 6 D (N + d_model V + n_layers seq_len
    d_attn)`` (:func:`lab.counting.flops_per_token`), not Kaplan's ``6 N D``; ``C = 6 N D`` only when
    derived because the table has no C column. ``FitResult.convention`` records which. Losses in
    nats/token (the lab's ``loss_val``).

    Parameters
    ----------
    pts : Points
        Runs to fit, one row each (:func:`~lab.fit.engine.points.load_points`): arrays ``N``, ``D``,
        ``C``, ``loss`` (and ``run`` keys to match ``curves``).
    form : {"N", "D", "C", "ND"}, default "ND"
        Which law.
    curves : DataFrame, optional
        Form C only: evaluation rows of the runs (:func:`lab.results.load_curves`; columns ``sweep``,
        ``run``, ``flops``, ``tokens``, ``loss_val``), so the frontier is read from the runs' curves
        rather than their final points only.
    irreducible : bool, default False
        Add an irreducible loss ``E +`` (nats/token) in front of the law.
    bootstrap : int, default 1000
        Bootstrap resamples K: runs resampled with replacement; forms N and D retake each group's
        lowest loss among the drawn runs, form C re-reads the frontier from them, then the law is
        refitted warm-started from the full-data fit. 0 gives no intervals.
    target_flops : float, optional
        Forms C and ND: compute C (FLOPs, the data's convention) at which the law predicts; default
        10 x the largest C in ``pts``.
    delta : float, default 1e-3
        Huber threshold on log-loss residuals (``None``: plain least squares).
    level : float, default 0.95
        Coverage of the bootstrap percentile intervals.
    seed : int, default 0
        Seed of the bootstrap resampling.
    holdout : bool, default True
        Refit without the largest points and report the error predicting them: the largest 20% of
        the fitted N, D or C values for forms N, D, C; the largest-compute budget group (or the top
        10% of runs by C) for form ND.

    Returns
    -------
    FitResult
        ``law = "kaplan L(N)"``, ``"kaplan L(D)"``, ``"kaplan L(C)"`` or ``"kaplan L(N, D)"``.
        ``params``: ``N_c``, ``alpha_N`` (form N); ``D_c``, ``alpha_D`` (form D); ``C_c`` (FLOPs),
        ``alpha_C`` (form C); ``N_c``, ``D_c``, ``alpha_N``, ``alpha_D`` (form ND); plus ``E`` with
        ``irreducible``. ``samples`` holds the K bootstrap draws of each (and ``loss_at_target`` for
        form C); ``intervals`` are their percentile intervals at ``level`` over the finite draws.
        ``predictions``: none for forms N and D; form C: ``C`` (the target), ``loss`` and
        ``loss_interval`` (L(C) extrapolated); form ND: ``C``, ``N_opt``, ``D_opt``, ``loss``, each
        with an ``*_interval``, minimising the law over N at fixed C with ``D = C / f(N)``, ``f`` the
        data's FLOPs per token fitted as a function of N (:class:`~lab.fit.engine.allocation.FlopModel`),
        and a ``note`` naming ``f``. ``diagnostics``: ``n_points``, ``dropped``, ``bootstrap``,
        ``bootstrap_failed``, ``huber_delta``, ``objective``, ``converged``, ``residuals`` (log loss),
        ``holdout``, and ``n_groups`` (forms N, D) or ``envelope_points`` and ``source`` (form C).
        ``extra``: ``law``, ``theta``, ``thetas``, ``points``, and ``x``, ``y`` (the fitted points,
        forms N, D, C) or ``flop_model`` (form ND).

    Raises
    ------
    FitError
        ``form`` not one of N, D, C, ND; no points; fewer distinct N or D values (forms N, D) or
        frontier points (form C) than the law's parameters + 1; for form ND fewer points than its
        parameters + 2, or fewer than 2 distinct N or 2 distinct D.
    """
    require(form in FORMS, f"--form {form!r} is not a Kaplan law; allowed: {', '.join(FORMS)}")
    require(len(pts) > 0, "no points to fit (every row was dropped; see the dropped list)")
    rng = np.random.default_rng(seed)
    K = int(bootstrap)
    C_t = default_target_flops(pts.C, target_flops)
    P = 2 + int(irreducible)
    notes = list(pts.notes)
    diag: dict[str, Any] = {"n_points": len(pts), "dropped": pts.dropped, "bootstrap": K, "huber_delta": delta}
    preds: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if form in ("N", "D"):
        vals = pts.N if form == "N" else pts.D
        groups = group_budgets(vals, None, 0.02)
        W = np.vstack([np.ones(len(pts)), bootstrap_weights(len(pts), K, rng)]) if K else np.ones((1, len(pts)))
        vg, Lg = _group_min(vals, pts.loss, groups, W)
        require(len(vg) >= P + 1, f"L({form}) with {P} parameters needs at least {P + 1} distinct {form} values, "
                                  f"got {len(vg)}")
        law, core, thetas = _fit_single(form, vg, Lg[0], Lg[1:] if K else None, irreducible, delta)
        X = {f"ln{form}": np.log(vg)}
        y = np.log(Lg[0])
        diag["n_groups"] = len(vg)
        diag["residuals"] = residual_stats(y, law.forward(core.theta[None], X)[0][0])
        notes.append(f"L({form}) uses each {form} value's lowest loss ({len(vg)} values)")
        extra.update(x=vg, y=Lg[0])
        if holdout:
            diag["holdout"] = _holdout_single(law, vg, Lg[0], delta, core.theta)
    elif form == "C":
        rc = run_curves(pts, curves)
        single = all(c["C"].size == 1 for c in rc)
        grid = envelope_grid(rc, single)
        Lm, Dm = envelope_matrix(rc, grid)
        N = np.array([c["N"] for c in rc], float)
        W = np.vstack([np.ones(len(rc)), bootstrap_weights(len(rc), K, rng)]) if K else np.ones((1, len(rc)))
        env = np.array([envelope(Lm, Dm, N, W[k], single)[2] for k in range(W.shape[0])])
        on = np.isfinite(env[0])
        require(on.sum() >= P + 1, f"L(C) needs at least {P + 1} frontier points, got {int(on.sum())}")
        law, core, thetas = _fit_single("C", grid[on], env[0][on], env[1:, on] if K else None, irreducible, delta)
        X = {"lnC": np.log(grid[on])}
        y = np.log(env[0][on])
        diag["envelope_points"] = int(on.sum())
        diag["source"] = "final points only" if single else "evaluation curves + final points"
        diag["residuals"] = residual_stats(y, law.forward(core.theta[None], X)[0][0])
        extra.update(x=grid[on], y=env[0][on])
        if holdout:
            diag["holdout"] = _holdout_single(law, grid[on], env[0][on], delta, core.theta)
    else:
        law = KaplanND(irreducible)
        X = pts.X()
        y = np.log(pts.loss)
        require(len(pts) >= len(law.params) + 2,
                f"L(N, D) fits {len(law.params)} parameters: needs at least {len(law.params) + 2} points, got {len(pts)}")
        require(len(np.unique(pts.N)) >= 2 and len(np.unique(np.round(np.log(pts.D), 3))) >= 2,
                "L(N, D) needs at least 2 distinct N and 2 distinct D")
        core = fit_law(law, X, y, delta=delta)
        thetas = refit_many(law, X, y, bootstrap_weights(len(pts), K, rng), [core.theta], delta=delta) if K else None
        diag["residuals"] = residual_stats(y, law.forward(core.theta[None], X)[0][0])
        if holdout:
            diag["holdout"] = _holdout_nd(pts, law, core.theta, delta)
        fm = FlopModel(pts.N, pts.C, pts.D)

        def loss_fn_for(th):
            return lambda lnN, lnD: np.exp(law.forward(th, {"lnN": lnN, "lnD": lnD})[0])

        rng_lnN = (float(np.log(pts.N.min())) - 12, float(np.log(C_t)) - 1)
        n0, d0, l0 = optimal_allocation(loss_fn_for(core.theta[None]), C_t, fm, rng_lnN)
        if thetas is not None:
            ok = np.all(np.isfinite(thetas), axis=1)
            nb, db, lb = (np.full(len(thetas), np.nan) for _ in range(3))
            if ok.any():
                nb[ok], db[ok], lb[ok] = optimal_allocation(loss_fn_for(thetas[ok]), C_t, fm, rng_lnN)
        else:
            nb = db = lb = np.array([])
        preds = {"C": C_t, "N_opt": float(n0[0]), "D_opt": float(d0[0]), "loss": float(l0[0]),
                 "N_opt_interval": list(interval(nb, level)), "D_opt_interval": list(interval(db, level)),
                 "loss_interval": list(interval(lb, level)),
                 "note": "compute-optimal allocation of the joint law under " + fm.describe()}
        extra["flop_model"] = fm
        diag["flop_model"] = fm.to_json()
    params = {k: float(v[0]) for k, v in law.public(core.theta).items()}
    samples = {k: v for k, v in law.public(thetas).items()} if thetas is not None else {}
    diag["bootstrap_failed"] = int(np.sum(~np.all(np.isfinite(thetas), axis=1))) if thetas is not None else 0
    if form == "C":
        lt = {"lnC": np.array([math.log(C_t)])}
        l0 = float(law.predict(core.theta, lt)[0])
        lb = law.predict(thetas, lt)[:, 0] if thetas is not None else np.array([])
        preds = {"C": C_t, "loss": l0, "loss_interval": list(interval(lb, level)), "note": "L(C) extrapolated"}
        samples["loss_at_target"] = lb
    diag["objective"] = core.objective
    diag["converged"] = core.converged
    extra.update(law=law, theta=core.theta, thetas=thetas, points=pts)
    return FitResult(f"kaplan L({form if form != 'ND' else 'N, D'})", law.formula(), params, samples, level, preds,
                     diag, dict(pts.convention), notes, extra)


def _holdout_single(law, x: np.ndarray, L: np.ndarray, delta: float, theta: np.ndarray) -> dict[str, Any]:
    P = len(law.params)
    k = max(1, int(round(0.2 * len(x))))
    order = np.argsort(x)
    fit, test = order[:-k], order[-k:]
    if fit.size < P + 1:
        return {"skipped": f"{fit.size} points would remain; {P + 1} needed"}
    X = {law.inputs[0]: np.log(x[fit])}
    core = fit_law(law, X, np.log(L[fit]), starts=np.vstack([theta[None], law.starts(X, np.log(L[fit]))]), delta=delta)
    err = law.predict(core.theta, {law.inputs[0]: np.log(x[test])}) / L[test] - 1
    return {"what": f"largest {k} of {len(x)} points held out", "n": int(k),
            "mean_abs_pct": float(np.mean(np.abs(err)) * 100), "max_abs_pct": float(np.max(np.abs(err)) * 100)}


def _holdout_nd(pts: Points, law, theta, delta) -> dict[str, Any]:
    top, what = holdout_indices(pts)
    rest = ~top
    if rest.sum() < len(law.params) + 2:
        return {"skipped": f"only {int(rest.sum())} points would remain"}
    X = pts.X()
    Xr = {k: v[rest] for k, v in X.items()}
    yr = np.log(pts.loss[rest])
    core = fit_law(law, Xr, yr, starts=np.vstack([theta[None], law.starts(Xr, yr)]), delta=delta)
    err = law.predict(core.theta, {k: v[top] for k, v in X.items()}) / pts.loss[top] - 1
    return {"what": what, "n": int(top.sum()), "mean_abs_pct": float(np.mean(np.abs(err)) * 100),
            "max_abs_pct": float(np.max(np.abs(err)) * 100)}
