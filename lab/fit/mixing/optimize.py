"""The best mixture on the simplex under the constraints users need, for any fitted :class:`MixModel`.

Constraints: a minimum and maximum share per domain, and an epoch cap: a domain with U_j unique
training tokens may not be repeated more than ``max_epochs`` times in a run of D tokens, so
``r_j <= max_epochs * U_j / D``. Together they form a box on the simplex,
``{lo <= r <= hi, sum r = 1}``, which is checked for feasibility before any search.

Search: many Dirichlet samples projected onto the feasible set (exact Euclidean projection by
bisection on the shift), scored by the model's overall target ``sum_i w_i L_i(r)``; for the smooth
mixing law the best candidates are refined with SLSQP, for the regression method (piecewise
constant trees) the top candidates are averaged as in RegMix, then projected. The optimum is
reported with its predicted per-domain and overall loss, an interval (bootstrap draws for the law:
the spread of the re-optimised mixture and of the loss at the chosen one; held-out residuals for the
regression), and its gain over the uniform and the natural (size-proportional) mixtures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lab.fit.engine.bootstrap import interval
from lab.fit.engine.errors import FitError
from lab.fit.mixing.law import MixModel, parse_shares


@dataclass
class Box:
    """Feasible set ``lo <= r <= hi``, ``sum r = 1`` over ``domains``, with why each bound is what it is."""

    domains: list[str]
    lo: np.ndarray
    hi: np.ndarray
    why: list[str]

    def contains(self, r: np.ndarray, tol: float = 1e-6) -> bool:
        return bool(np.all(r >= self.lo - tol) and np.all(r <= self.hi + tol) and abs(r.sum() - 1) < tol)

    def to_json(self) -> dict[str, Any]:
        return {d: [float(a), float(b)] for d, a, b in zip(self.domains, self.lo, self.hi)}

    def reasons(self) -> dict[str, str]:
        return {d: w for d, w in zip(self.domains, self.why) if w}


def make_box(domains: Sequence[str], min_share: str | dict | None = None, max_share: str | dict | None = None,
             max_epochs: float | None = None, target_tokens: float | None = None,
             unique_tokens: dict[str, float] | str | None = None,
             data_range: tuple[np.ndarray, np.ndarray] | None = None) -> Box:
    """Per-domain bounds from user constraints; an infeasible set is an error saying which bounds clash.

    ``data_range``: the (min, max) share of each domain among the fitted runs. A law fitted there says
    nothing reliable beyond it (a vertex no run came near is pure extrapolation), so by default the
    search stays inside it; dropped with a note in ``why`` if it would make the user's box infeasible.
    """
    M = len(domains)
    lo, hi = np.zeros(M), np.ones(M)
    why = [""] * M
    for d, v in parse_shares(min_share, domains, "--min-share").items():
        if not 0 <= v <= 1:
            raise FitError(f"--min-share {d}={v}: a share must lie in [0, 1]")
        lo[domains.index(d)] = v
    for d, v in parse_shares(max_share, domains, "--max-share").items():
        if not 0 <= v <= 1:
            raise FitError(f"--max-share {d}={v}: a share must lie in [0, 1]")
        hi[domains.index(d)] = v
    if max_epochs is not None:
        if target_tokens is None or target_tokens <= 0:
            raise FitError("--max-epochs needs the target run's tokens (--target-tokens D > 0)")
        if max_epochs <= 0:
            raise FitError(f"--max-epochs must be > 0, got {max_epochs}")
        U = parse_shares(unique_tokens, domains, "--unique-tokens") if isinstance(unique_tokens, str) else unique_tokens
        if not U:
            raise FitError("--max-epochs needs each domain's unique tokens: a sweep folder of the lab (read from "
                           "the corpus) or --unique-tokens domain=tokens,...")
        missing = [d for d in domains if d not in U]
        if missing:
            raise FitError(f"--max-epochs: unique tokens unknown for {missing}; give --unique-tokens")
        for j, d in enumerate(domains):
            cap = max_epochs * U[d] / target_tokens
            if cap < hi[j]:
                hi[j] = cap
                why[j] = f"{max_epochs:g} epochs of {U[d]:.3g} unique tokens in D = {target_tokens:.3g}"
    if data_range is not None:
        dlo, dhi = (np.asarray(x, float) for x in data_range)
        nlo, nhi = np.maximum(lo, dlo), np.minimum(hi, dhi)
        if np.all(nlo <= nhi + 1e-12) and nlo.sum() <= 1 + 1e-9 and nhi.sum() >= 1 - 1e-9:
            for j in range(M):
                if nhi[j] < hi[j] - 1e-12 or nlo[j] > lo[j] + 1e-12:
                    why[j] = (why[j] + "; " if why[j] else "") + "the fitted runs' share range"
            lo, hi = nlo, nhi
    bad = [d for d, a, b in zip(domains, lo, hi) if a > b + 1e-12]
    if bad:
        raise FitError(f"no feasible mixture: min share exceeds max share for {bad}")
    if lo.sum() > 1 + 1e-9:
        raise FitError(f"no feasible mixture: the minimum shares sum to {lo.sum():.4f} > 1")
    if hi.sum() < 1 - 1e-9:
        caps = ", ".join(f"{d}<={b:.3g}" for d, b in zip(domains, hi))
        raise FitError(f"no feasible mixture: the maximum shares sum to {hi.sum():.4f} < 1 ({caps}); "
                       f"relax --max-share or allow more epochs")
    return Box(list(domains), lo, hi, why)


def project(X: np.ndarray, box: Box, iters: int = 60) -> np.ndarray:
    """Euclidean projection of rows of ``X`` onto ``{lo <= r <= hi, sum r = 1}`` (bisection on the shift)."""
    X = np.atleast_2d(X)
    a = (X - box.hi[None, :]).min(axis=1) - 1.0
    b = (X - box.lo[None, :]).max(axis=1) + 1.0
    for _ in range(iters):
        m = 0.5 * (a + b)
        s = np.clip(X - m[:, None], box.lo, box.hi).sum(axis=1)
        big = s > 1
        a = np.where(big, m, a)
        b = np.where(big, b, m)
    r = np.clip(X - (0.5 * (a + b))[:, None], box.lo, box.hi)
    return r / r.sum(axis=1, keepdims=True)


def candidates(box: Box, n: int, seed: int = 0, extra: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Feasible candidates: projected Dirichlet samples at several concentrations, plus vertices-ish and ``extra``."""
    rng = np.random.default_rng(seed)
    M = len(box.domains)
    parts = [rng.dirichlet(np.full(M, a), size=n // 3) for a in (0.3, 1.0, 3.0)]
    parts.append(np.eye(M))
    parts += [np.atleast_2d(e) for e in extra]
    return project(np.vstack(parts), box)


def hull_candidates(hull: np.ndarray, box: Box, n: int, seed: int = 0) -> np.ndarray:
    """Feasible mixtures inside the convex hull of ``hull``'s rows (the fitted runs' mixtures):
    Dirichlet weights over the rows at several concentrations, the rows themselves, and only those
    inside ``box``. The law interpolates there; a box corner no run came near is extrapolation."""
    H = np.unique(np.round(np.atleast_2d(np.asarray(hull, float)), 6), axis=0)
    rng = np.random.default_rng(seed)
    parts = [rng.dirichlet(np.full(len(H), a), size=n // 3) @ H for a in (0.1, 0.3, 1.0)]
    C = np.vstack([H, H.mean(axis=0, keepdims=True), *parts])
    C = C[[box.contains(r, 1e-6) for r in C]]
    if not len(C):
        raise FitError("no mixture inside the fitted runs' hull meets the share bounds and epoch caps; relax them, "
                       "or run mixtures that meet them")
    return C / C.sum(axis=1, keepdims=True)


def _target(model: MixModel, R: np.ndarray, w: np.ndarray) -> np.ndarray:
    return model.predict(R) @ w


def _draw_targets(model: MixModel, C: np.ndarray, w: np.ndarray, chunk: int = 4096) -> np.ndarray | None:
    """Every bootstrap draw's target at every candidate, (B, n), without holding (B, n, K) at once."""
    parts = []
    for i in range(0, len(C), chunk):
        D = model.predict_draws(C[i:i + chunk])
        if D is None:
            return None
        parts.append(D @ w)
    return np.concatenate(parts, axis=1)


def _refine(model: MixModel, r0: np.ndarray, w: np.ndarray, box: Box) -> np.ndarray:
    """SLSQP from ``r0`` on the smooth law; falls back to ``r0`` if it does not improve."""
    from scipy.optimize import minimize
    fun = lambda r: float(_target(model, r[None, :], w)[0])  # noqa: E731
    res = minimize(fun, r0, method="SLSQP", bounds=list(zip(box.lo, box.hi)),
                   constraints=[{"type": "eq", "fun": lambda r: r.sum() - 1.0}], options={"maxiter": 200, "ftol": 1e-12})
    r = project(res.x, box)[0]
    return r if fun(r) <= fun(r0) else r0


def _refine_in_hull(model: MixModel, r0: np.ndarray, w: np.ndarray, box: Box, H: np.ndarray) -> np.ndarray:
    """SLSQP over the hull weights ``lam`` (r = lam @ H, lam on the simplex, r inside ``box``), from
    the weights closest to ``r0``; ``r0`` kept unless the refined point scores better."""
    from scipy.optimize import minimize, nnls

    lam0, _ = nnls(np.vstack([H.T, np.ones(len(H))]), np.append(r0, 1.0))
    lam0 = lam0 / lam0.sum() if lam0.sum() > 0 else np.full(len(H), 1.0 / len(H))
    fun = lambda lam: float(_target(model, (lam @ H)[None, :], w)[0])  # noqa: E731
    cons = [{"type": "eq", "fun": lambda lam: lam.sum() - 1.0},
            {"type": "ineq", "fun": lambda lam: lam @ H - box.lo}, {"type": "ineq", "fun": lambda lam: box.hi - lam @ H}]
    res = minimize(fun, lam0, method="SLSQP", bounds=[(0.0, 1.0)] * len(H), constraints=cons,
                   options={"maxiter": 200, "ftol": 1e-12})
    lam = np.clip(res.x, 0.0, None)
    r = lam @ H / lam.sum()
    score0 = float(_target(model, r0[None, :], w)[0])
    return r if box.contains(r, 1e-6) and fun(lam / lam.sum()) <= score0 else r0


def optimize(model: MixModel, w: np.ndarray, box: Box, natural: dict[str, float] | None = None,
             n_samples: int = 30000, top_k: int = 64, level: float = 0.95, seed: int = 0,
             hull: np.ndarray | None = None) -> dict[str, Any]:
    """Find the mixture minimising the overall target ``sum_i w_i L_i(r)`` over a box of the simplex.

    Data-mixing optimisation as in Ye et al. (2024, arXiv:2403.16952) for the mixing law and RegMix
    (Liu et al. 2025, arXiv:2407.01492) for the regression: about ``n_samples`` Dirichlet samples
    (concentrations 0.3, 1 and 3), the vertices, the uniform and the natural mixture, all projected
    onto ``box``, are scored by the model. For the smooth mixing law (``model.method == "law"``) the
    5 best are refined by SLSQP and the best kept; for the regression (piecewise constant trees) the
    mean of the ``top_k`` best, projected, is kept when it scores no worse than the best candidate.
    Exported as :func:`lab.fit.optimize_mixture`.

    Units: mixtures are proportions over the training domains (dimensionless, sum 1); losses,
    targets and gains in nats/token.

    Parameters
    ----------
    model : MixModel
        A fitted model: :func:`~lab.fit.mixing.law.fit_mixing_law`'s or
        :func:`~lab.fit.mixing.regression.fit_regression`'s, over the same training domains as ``box``.
    w : ndarray, shape (K,)
        Weights of the overall target over the validation domains
        (:func:`~lab.fit.mixing.law.target_weights`: non-negative, summing to 1).
    box : Box
        The feasible set ``lo <= r <= hi``, ``sum r = 1`` (:func:`make_box`), domains in the model's order.
    natural : dict, optional
        The natural (size-proportional) mixture ``{domain: share}`` to compare against
        (``MixData.natural``); omitted when None or empty.
    n_samples : int, default 30000
        Dirichlet candidates (a third at each concentration).
    top_k : int, default 64
        Regression only: candidates averaged, and whose spread is reported.
    level : float, default 0.95
        Coverage of the intervals. For the regression it must be one of the ``levels`` the model
        was fitted with, else no loss interval is given.
    seed : int, default 0
        Seed of the candidate sampling.
    hull : ndarray, shape (K, M), optional
        The fitted runs' mixtures: the search then stays inside their convex hull (and ``box``),
        where the law interpolates (:func:`hull_candidates`); the law's refinement runs over the
        hull weights. ``search`` in the result says which.

    Returns
    -------
    dict
        ``mixture`` ``{domain: share}``; ``predicted`` ``{validation domain: loss}`` there;
        ``target`` (``sum_i w_i L_i``); ``target_weights``; ``constraints`` ``{domain: [lo, hi]}``;
        ``constraint_reasons``; ``binding`` (domains within 1e-4 of a bound); ``candidates`` (how
        many were scored); ``uniform`` and, when given, ``natural``: ``mixture``, ``target``,
        ``gain`` (their target minus the optimum's; positive means the optimum is predicted better)
        and ``feasible`` (inside ``box``).
        With bootstrap draws (the mixing law): ``target_interval`` and ``predicted_interval``
        (percentile intervals over the draws of the loss at the chosen mixture), ``mixture_interval``
        ``{domain: [lo, hi]}`` (percentiles of each draw's own best candidate, so the uncertainty
        of the mixture itself) and ``gain_interval`` under ``uniform`` / ``natural``.
        Without draws (the regression, or a law fitted with ``bootstrap=0``): ``target_interval`` and
        ``predicted_interval`` as ``value +- half-width`` from held-out residual quantiles (split
        conformal; the target's from its own joint residuals when available, else the weighted sum
        of the domains'), with ``interval_kind``, when the model has half-widths at ``level``; and
        ``mixture_spread_top_k`` ``{domain: [min, max]}`` over the ``top_k`` best candidates.

    Raises
    ------
    FitError
        ``box`` is over other domains (or another order) than ``model``.
    """
    if list(box.domains) != list(model.domains):
        raise FitError(f"constraints are over {box.domains}, the model over {model.domains}")
    M = len(box.domains)
    uniform = np.full(M, 1.0 / M)
    nat = np.array([natural[d] for d in box.domains]) if natural else None
    extra = [uniform] + ([nat] if nat is not None else [])
    H = None if hull is None else np.unique(np.round(np.atleast_2d(np.asarray(hull, float)), 6), axis=0)
    C = candidates(box, n_samples, seed, extra) if H is None else hull_candidates(H, box, n_samples, seed)
    score = _target(model, C, w)
    order = np.argsort(score)
    if model.method == "law":
        refine = (lambda r: _refine(model, r, w, box)) if H is None else (  # noqa: E731
            lambda r: _refine_in_hull(model, r, w, box, H))
        best = min((refine(C[i]) for i in order[:5]), key=lambda r: _target(model, r[None], w)[0])
    else:  # trees are piecewise constant: average the top candidates (RegMix), keep the better of that and the best
        avg = project(C[order[:top_k]].mean(axis=0), box)[0]
        best = avg if _target(model, avg[None], w)[0] <= score[order[0]] else C[order[0]]
    per = model.predict(best[None])[0]
    out: dict[str, Any] = {
        "mixture": {d: float(x) for d, x in zip(box.domains, best)},
        "predicted": {v: float(x) for v, x in zip(model.val_domains, per)},
        "target": float(per @ w),
        "target_weights": {v: float(x) for v, x in zip(model.val_domains, w)},
        "constraints": box.to_json(),
        "constraint_reasons": box.reasons(),
        "binding": [d for d, r, a, b in zip(box.domains, best, box.lo, box.hi) if r <= a + 1e-4 or r >= b - 1e-4],
        "candidates": int(len(C)),
        "search": "box" if H is None else f"convex hull of the {len(H)} fitted mixtures, inside the box",
    }
    for name, ref in (("uniform", uniform), ("natural", nat)):
        if ref is None:
            continue
        t = float(_target(model, ref[None], w)[0])
        out[name] = {"mixture": {d: float(x) for d, x in zip(box.domains, ref)}, "target": t,
                     "gain": t - out["target"], "feasible": box.contains(ref, 1e-4)}
    draws = model.predict_draws(best[None])
    if draws is not None:
        tgt = draws[:, 0, :] @ w
        out["target_interval"] = list(interval(tgt, level))
        out["predicted_interval"] = {v: list(interval(draws[:, 0, k], level)) for k, v in enumerate(model.val_domains)}
        # where each draw's own optimum lies: the uncertainty of the mixture itself
        T = _draw_targets(model, C, w)                              # (B, n), in chunks of candidates
        if T is not None:
            T = np.where(np.isfinite(T), T, np.inf)
            live = np.isfinite(T).any(axis=1)            # draws dropped as degenerate are all NaN
            opt = C[np.argmin(T[live], axis=1)]
            out["mixture_interval"] = {d: list(interval(opt[:, j], level)) for j, d in enumerate(box.domains)}
            for name in ("uniform", "natural"):
                if name in out:
                    ref = np.array(list(out[name]["mixture"].values()))
                    ref_tgt = model.predict_draws(ref[None])[:, 0, :] @ w
                    out[name]["target_interval"] = list(interval(ref_tgt, level))
                    out[name]["gain_interval"] = list(interval(ref_tgt - tgt, level))
    else:
        hw = model.interval_halfwidth(level)
        if hw is not None:
            t_hw = model.target_halfwidth(w, level) if hasattr(model, "target_halfwidth") else None
            if t_hw is None:
                t_hw = float(np.sum(w * hw))   # no joint residuals: the conservative sum
            out["target_interval"] = [out["target"] - t_hw, out["target"] + t_hw]
            out["predicted_interval"] = {v: [float(per[k] - hw[k]), float(per[k] + hw[k])]
                                         for k, v in enumerate(model.val_domains)}
            out["interval_kind"] = "held-out residual quantiles (split conformal)"
        near = C[order[:top_k]]
        out["mixture_spread_top_k"] = {d: [float(near[:, j].min()), float(near[:, j].max())]
                                       for j, d in enumerate(box.domains)}
    return out


def choose_mixture(opt: dict[str, Any], reference: str = "uniform") -> dict[str, Any]:
    """The mixture to train on: ``optimize``'s optimum, unless the law cannot tell it from
    ``reference`` (a feasible ``uniform`` or ``natural`` entry of ``opt``).

    The optimum is picked on the point fit, so its gain is biased up; when even so the 95% interval
    of the gain over the reference (paired over the bootstrap draws) reaches 0, the optimum is noise
    of the fit, moves from one set of runs to the next, and the reference is kept. Without draws (the
    regression, ``bootstrap=0``) the optimum is kept. Returns ``chosen`` (``"optimum"`` or the
    reference's name), ``mixture``, ``target``, ``target_interval``, ``gain`` and ``gain_interval``
    (the optimum over the reference, nats/token) and ``why``.
    """
    ref = opt.get(reference) or {}
    gi = ref.get("gain_interval")
    keep = ("optimum", opt["mixture"], opt["target"], opt.get("target_interval"))
    if not gi or not ref.get("feasible"):
        why = f"no {reference} reference to compare with (no bootstrap draws, or {reference} is infeasible)"
        name, mix, t, ti = keep
    else:
        g, (lo, hi) = ref["gain"], gi
        clear = lo > 0
        why = (f"the optimum's predicted gain over {reference}, {g:+.4f} [{lo:+.4f}, {hi:+.4f}] nats (95%), "
               + ("excludes 0: the optimum is kept" if clear else f"reaches 0: the law cannot tell them apart, "
                  f"{reference} is kept"))
        name, mix, t, ti = keep if clear else (reference, ref["mixture"], ref["target"], ref.get("target_interval"))
    return {"chosen": name, "mixture": mix, "target": t, "target_interval": ti, "reference": reference,
            "gain": ref.get("gain"), "gain_interval": gi, "why": why}


def format_optimum(opt: dict[str, Any]) -> str:
    """Readable lines for a report."""
    lines = ["  optimum (overall target = " + " + ".join(f"{w:.3g}*{v}" for v, w in opt["target_weights"].items()) + "):"]
    iv = opt.get("mixture_interval")
    for d, x in opt["mixture"].items():
        lo, hi = opt["constraints"][d]
        tail = f"  [{iv[d][0]:.3f}, {iv[d][1]:.3f}]" if iv else ""
        bound = "" if (lo, hi) == (0.0, 1.0) else f"  (allowed {lo:.3g}..{hi:.3g})"
        lines.append(f"    {d:<22s} {x:7.4f}{tail}{bound}")
    ti = opt.get("target_interval")
    lines.append(f"  predicted target loss {opt['target']:.4f}" + (f"  [{ti[0]:.4f}, {ti[1]:.4f}]" if ti else ""))
    for name in ("uniform", "natural"):
        if name in opt:
            g = opt[name]
            gi = g.get("gain_interval")
            lines.append(f"  vs {name:<8s} {g['target']:.4f}: gain {g['gain']:+.4f} nats/token"
                         + (f" [{gi[0]:+.4f}, {gi[1]:+.4f}]" if gi else "")
                         + ("" if g["feasible"] else " (that mixture breaks the constraints)"))
    lines.append(f"  search: {opt['search']}; choice: {choose_mixture(opt)['why']}")
    return "\n".join(lines)


def _isfinite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)
