"""Nested prediction (Ye et al. 2024): choose the mixture for the full-size run, not for the proxy.

Per mixture the proxies come in several sizes. For each validation domain we fit, across all
mixtures at once, a size law with per-mixture scale and shared exponents

    L_g(N, D) = E_g + A_g N^-alpha              (the design's D/N is fixed: the law runs along it)
    L_g(N, D) = E_g + A_g N^-alpha + B_g D^-beta  (D/N varies: a token law joins the size law)

and predict every mixture's loss at the target size and tokens. Sharing the exponents across
mixtures is what makes this identifiable with few sizes per mixture (a free exponent per mixture
would need 3+ sizes each and extrapolates wildly); the mixtures then differ in E_g, A_g (and B_g).
The mixing law is fitted on those predictions (one row per mixture) and optimised as usual.

When the design fixes D/N (the lab's ``mixture`` sweep: D = tokens_per_param * N), a target D that
differs from that ratio would need a token law the data cannot support: that is an error saying so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lab.fit.engine.errors import FitError, quiet
from lab.fit.engine.minimize import minimize_batched
from lab.fit.mixing.law import MixData, mae

DELTA = 1e-2


def _objective(lnN, lnD, y, g, G, with_d):
    """Huber on log residuals of LSE(e_g, a_g - alpha lnN [, b_g - beta lnD]); theta = [e, a, (b), alpha, (beta)]."""

    onehot = np.eye(G)[g]                       # (n, G): per-mixture sums as one matmul

    def f(theta, idx):
        e, a = theta[:, :G], theta[:, G:2 * G]
        terms = [e[:, g], a[:, g] - theta[:, [-2 if with_d else -1]] * lnN[None, :]]
        if with_d:
            terms.append(theta[:, 2 * G:3 * G][:, g] - theta[:, [-1]] * lnD[None, :])
        m = np.maximum.reduce(terms)
        ex = [np.exp(t - m) for t in terms]
        tot = sum(ex)
        pred = m + np.log(tot)
        w = [x / tot for x in ex]
        r = pred - y[None, :]
        h = np.where(np.abs(r) <= DELTA, 0.5 * r * r, DELTA * (np.abs(r) - 0.5 * DELTA))
        dh = np.clip(r, -DELTA, DELTA)
        grad = np.zeros_like(theta)
        grad[:, :G] = (dh * w[0]) @ onehot
        grad[:, G:2 * G] = (dh * w[1]) @ onehot
        if with_d:
            grad[:, 2 * G:3 * G] = (dh * w[2]) @ onehot
        if with_d:
            grad[:, -2] = -(dh * w[1] * lnN[None, :]).sum(1)
            grad[:, -1] = -(dh * w[2] * lnD[None, :]).sum(1)
        else:
            grad[:, -1] = -(dh * w[1] * lnN[None, :]).sum(1)
        val = h.sum(1)
        bad = ~np.isfinite(val) | ~np.all(np.isfinite(grad), axis=1)
        val[bad], grad[bad] = np.inf, 0.0
        return val, grad

    return f


def _starts(lnN, lnD, L, g, G, with_d):
    out = []
    Lmin = np.array([L[g == k].min() for k in range(G)])
    Lmax = np.array([L[g == k].max() for k in range(G)])
    nmin = np.array([lnN[g == k].min() for k in range(G)])
    for alpha in (0.1, 0.3, 0.6, 1.0):
        for fe in (0.3, 0.6, 0.85):
            E = fe * Lmin
            a = np.log(np.maximum(Lmax - E, 1e-3)) + alpha * nmin
            if with_d:
                b = a - alpha * nmin + 0.3 * np.array([lnD[g == k].min() for k in range(G)]) - math.log(2)
                out.append(np.concatenate([np.log(E), a - math.log(2), b, [alpha, 0.3]]))
            else:
                out.append(np.concatenate([np.log(E), a, [alpha]]))
    return np.array(out)


@quiet
def nested_predict(data: MixData, target_params: float, target_tokens: float | None = None,
                   ratio_tol: float = 1.5) -> tuple[MixData, dict[str, Any]]:
    """Predict each mixture's per-domain loss at a target model size, for a mixing law fitted at that size.

    Ye et al. (2024, "Data Mixing Laws", arXiv:2403.16952) nested prediction: the mixture is chosen
    for the full-size run, not for the proxies. Runs are grouped by mixture (shares rounded to 4
    decimals); per validation domain one size law with per-mixture scales and shared exponents is
    fitted across all mixtures, ``L_g = E_g + A_g N^-alpha`` when every run has about the same D/N
    (max / min ratio at most ``ratio_tol``) or ``L_g = E_g + A_g N^-alpha + B_g D^-beta`` when D/N
    varies, with Huber (delta 1e-2) on log-loss residuals, summed, by L-BFGS from a small grid of
    starts. Each mixture's law is then evaluated at the target. Fit
    :func:`~lab.fit.mixing.law.fit_mixing_law` on the returned rows.

    Units: N = non-embedding parameters (the table's ``params`` column), D = training tokens,
    losses in nats/token; no FLOP count is used.

    Parameters
    ----------
    data : MixData
        Proxy runs with ``N`` and ``D`` per run (from the table's ``params`` and ``tokens``
        columns, or their aliases); rows with a missing or non-positive N or D are left out. Every mixture needs runs
        at 3+ sizes (2+ with a token law) with a finite loss on every validation domain.
    target_params : float
        Target model size N (non-embedding parameters), > 0.
    target_tokens : float, optional
        Target training tokens D. Default, when D/N is fixed: the runs' median D/N times
        ``target_params``; required when D/N varies. With fixed D/N a value more than 10% off that
        default is an error, since the data hold no token law.
    ratio_tol : float, default 1.5
        D/N counts as fixed when its max / min over runs is at most this.

    Returns
    -------
    MixData
        One row per distinct mixture (shares renormalised to sum 1, ids ``"mixture k"``), ``L`` the
        predicted losses (G, K) at the target, ``N`` and ``D`` the target size and tokens.
    dict
        Report: ``target_params``, ``target_tokens``, ``form`` (the size law used), ``mixtures``,
        ``runs``, ``sizes`` (distinct N), ``extrapolation`` (target N / largest proxy N),
        ``size_law`` (per validation domain: ``alpha``, ``beta`` with a token law, ``E_range`` in
        nats/token), ``size_law_fit_mae`` (in-sample mean absolute error, nats/token) and a ``note``:
        intervals from the mixing law fitted on these rows do not include the size-law extrapolation
        error.

    Raises
    ------
    FitError
        No N or D per run; ``target_params`` not > 0; a mixture trained at too few sizes, or with
        too few finite losses on a validation domain; fewer runs with a loss on a domain than the
        size law's parameters + 1; D/N varies and no ``target_tokens``; D/N is fixed and
        ``target_tokens`` is more than 10% off the ratio's.
    """
    if data.N is None or data.D is None:
        raise FitError("nested prediction (--target-params) needs N and D per run (columns params and tokens)")
    if not target_params or target_params <= 0:
        raise FitError(f"--target-params must be > 0, got {target_params}")
    ok = np.isfinite(data.N) & np.isfinite(data.D) & (data.N > 0) & (data.D > 0)
    d = data.subset(ok)
    keys, g = np.unique(np.round(d.R, 4), axis=0, return_inverse=True)
    g = g.ravel()
    G = len(keys)
    q = d.D / d.N
    with_d = q.max() / q.min() > ratio_tol
    # along a fixed D/N each mixture has 2 free scales (E_g, A_g) plus the shared exponent: 3 sizes are
    # needed for any check of the form; with a token law, runs at several D add the missing points
    need = 2 if with_d else 3
    sizes = np.array([np.unique(d.N[g == k]).size for k in range(G)])
    if sizes.min() < need:
        few = int((sizes < need).sum())
        raise FitError(f"nested prediction: {few} of {G} mixtures were trained at fewer than {need} sizes; every "
                       f"mixture needs {need}+ sizes (the mixture sweep's design.sizes) to fit a size law"
                       + ("" if with_d else " along its fixed D/N"))
    implied = float(np.median(q)) * target_params
    if target_tokens is None:
        if with_d:
            raise FitError("nested prediction: the runs vary D/N, so the target needs --target-tokens too")
        target_tokens = implied
    elif not with_d and abs(target_tokens / implied - 1) > 0.1:
        raise FitError(f"nested prediction: every run has D/N ~ {np.median(q):.3g}, so the size law predicts at "
                       f"D = {implied:.4g} for N = {target_params:.4g}; --target-tokens {target_tokens:.4g} needs runs "
                       f"at several D per size (a token law), which this table lacks")
    P = G * (3 if with_d else 2) + (2 if with_d else 1)
    # centred logs: a_g (b_g) is then the reducible log loss mid-range, which keeps L-BFGS well conditioned
    n0, d0 = float(np.mean(np.log(d.N))), float(np.mean(np.log(d.D)))
    lnN, lnD = np.log(d.N) - n0, np.log(d.D) - d0
    pred = np.full((G, len(d.val_domains)), np.nan)
    fits: dict[str, Any] = {}
    fitted = np.full_like(d.L, np.nan)
    for i, v in enumerate(d.val_domains):
        m = np.isfinite(d.L[:, i])
        per = np.bincount(g[m], minlength=G)
        if per.min() < need:
            raise FitError(f"nested prediction: validation domain {v!r} has fewer than {need} finite losses for "
                           f"{int((per < need).sum())} mixture(s); every mixture needs {need}+ sizes with a loss")
        if m.sum() < P + 1:
            raise FitError(f"nested prediction: {int(m.sum())} runs with a {v!r} loss for {P} parameters of the "
                           f"size law (shared exponents, {G} mixtures); train more sizes or mixtures")
        y = np.log(d.L[m, i])
        f = _objective(lnN[m], lnD[m], y, g[m], G, with_d)
        res = minimize_batched(f, _starts(lnN[m], lnD[m], d.L[m, i], g[m], G, with_d), max_iter=2000)
        th = res.x[int(np.argmin(res.fun))]
        e, a = th[:G], th[G:2 * G]
        alpha = th[-2] if with_d else th[-1]
        terms = [e, a - alpha * (math.log(target_params) - n0)]
        fterms = [e[g], a[g] - alpha * lnN]
        if with_d:
            b, beta = th[2 * G:3 * G], th[-1]
            terms.append(b - beta * (math.log(target_tokens) - d0))
            fterms.append(b[g] - beta * lnD)
        pred[:, i] = np.exp(np.logaddexp.reduce(np.array(terms), axis=0))
        fitted[:, i] = np.exp(np.logaddexp.reduce(np.array(fterms), axis=0))
        fits[v] = {"alpha": float(alpha), **({"beta": float(th[-1])} if with_d else {}),
                   "E_range": [float(np.exp(e).min()), float(np.exp(e).max())]}
    out = MixData(list(d.domains), keys / keys.sum(axis=1, keepdims=True), list(d.val_domains), pred,
                  [f"mixture {k}" for k in range(G)], np.full(G, float(target_params)), np.full(G, float(target_tokens)),
                  dict(d.columns), list(d.dropped), list(d.notes), d.source, d.natural, d.unique_tokens)
    report = {
        "target_params": float(target_params), "target_tokens": float(target_tokens),
        "form": "E_g + A_g N^-alpha + B_g D^-beta" if with_d else f"E_g + A_g N^-alpha along D/N = {np.median(q):.3g}",
        "mixtures": G, "runs": len(d), "sizes": sorted({float(x) for x in d.N}),
        "extrapolation": float(target_params / d.N.max()),
        "size_law": fits, "size_law_fit_mae": mae(fitted, d.L, d.val_domains),
        "note": "intervals of the optimum below come from the mixing-law bootstrap on these predictions; "
                "they do not include the size-law extrapolation error",
    }
    return out, report
