"""Data-mixing laws: per-domain validation loss as a function of the training mixture.

Ye et al. 2024 ("Data Mixing Laws") model the validation loss on domain i of a model trained on
mixture ``r`` (proportions over M training domains, summing to 1) as

    L_i(r) = c_i + k_i * exp(sum_j t_ij r_j)

Because ``sum_j r_j = 1``, adding s to every t_ij of a row multiplies the exponential by e^s, which
``k_i`` absorbs: the t_ij are identifiable only up to a common shift per row. We fit with the gauge
``t_i0 = 0`` (M-1 free slopes) and report the symmetric gauge ``sum_j t_ij = 0`` with ``k_i``
adjusted, so published tables and ours compare term by term after the same shift.

Fit (per validation domain, all domains at once being independent problems): ``log L_i`` is
``LSE(log c_i, log k_i + t_i . r)`` and is fitted with the lab's objective (Huber, delta 1e-3, on log
residuals, summed; :mod:`lab.fit.engine.laws`) from many starts. The starts come from profiling ``c``: for
each c on a grid below min L, ``log(L - c)`` is linear in r and solved by least squares, which is how
the authors pick c (by correlation) and gives L-BFGS a start in every basin. Intervals come from
bootstrap refits (runs resampled), batched. An optional ridge on the centred t_ij (``ridge``) steadies
fits with few runs per parameter.

The overall target is ``sum_i w_i L_i`` with user-given weights over validation domains.
This module holds the data loading, the law and the shared :class:`MixModel` interface; the
regression method (:mod:`lab.fit.mixing.regression`), nested prediction (:mod:`lab.fit.mixing.nested`) and the
simplex optimiser (:mod:`lab.fit.mixing.optimize`) build on it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from lab.fit.engine.bootstrap import bootstrap_weights, interval
from lab.fit.engine.errors import FitError, quiet
from lab.fit.engine.laws import Law, fit_law, objective
from lab.fit.engine.minimize import minimize_batched
from lab.fit.health import judged, mixing_health
from lab.fit.engine.points import ALIASES, LAB_OK_STATUS, read_table, require_one_setting

SUM_TOL = 0.01   # mixtures may be rounded (RegMix: 3 decimals); larger deviations are an error


# ----------------------------------------------------------------------------------------------- data
@dataclass
class MixData:
    """Validated mixing-law input: proportions R (n, M) and losses L (n, K), aligned by row."""

    domains: list[str]               # training domains: R's columns
    R: np.ndarray                    # (n, M), rows sum to 1
    val_domains: list[str]           # validation domains: L's columns
    L: np.ndarray                    # (n, K) losses, nats/token; NaN where a domain was not evaluated
    ids: list[str]
    N: np.ndarray | None = None      # params per row, when the table has them (nested prediction)
    D: np.ndarray | None = None      # tokens per row
    columns: dict[str, Any] = field(default_factory=dict)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = ""
    natural: dict[str, float] | None = None         # size-proportional mixture, when known
    unique_tokens: dict[str, float] | None = None   # training tokens per domain, when known

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> "MixData":
        m = np.asarray(mask, bool)
        take = lambda a: None if a is None else a[m]  # noqa: E731
        return MixData(list(self.domains), self.R[m], list(self.val_domains), self.L[m],
                       [i for i, k in zip(self.ids, m) if k], take(self.N), take(self.D), dict(self.columns),
                       list(self.dropped), list(self.notes), self.source, self.natural, self.unique_tokens)

    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.R, columns=[f"r_{d}" for d in self.domains])
        for k, v in enumerate(self.val_domains):
            df[f"loss_{v}"] = self.L[:, k]
        if self.N is not None:
            df["params"] = self.N
        if self.D is not None:
            df["tokens"] = self.D
        df.insert(0, "id", self.ids)
        return df


def _prefixed(df: pd.DataFrame, prefix: str, exclude: Sequence[str] = ()) -> list[str]:
    return [c for c in df.columns if isinstance(c, str) and c.startswith(prefix) and len(c) > len(prefix)
            and c[len(prefix):] not in exclude]


def pick_prefixes(df: pd.DataFrame, mix_prefix: str | None, loss_prefix: str | None) -> tuple[str, str]:
    """The mixture and loss column prefixes: the given ones, else ``r_``/``mix_`` and ``loss_val_``/``loss_``."""
    if mix_prefix is None:
        mix_prefix = next((p for p in ("r_", "mix_") if _prefixed(df, p)), "r_")
    if loss_prefix is None:
        loss_prefix = next((p for p in ("loss_val_", "loss_") if _prefixed(df, p, ("val", "train"))), "loss_")
    return mix_prefix, loss_prefix


def load_mixing(source: str | os.PathLike | pd.DataFrame, mix_prefix: str | None = None,
                loss_prefix: str | None = None, val_domains: Sequence[str] | None = None,
                tol: float = SUM_TOL, allow_missing_loss: bool = False) -> MixData:
    """Read a sweep folder or table with ``<mix_prefix><domain>`` proportions and ``<loss_prefix><domain>`` losses.

    Runs that did not complete and rows with no mixture are dropped and listed; a mixture with a
    negative share or a sum off 1 by more than ``tol`` is an error naming the row, since it means the
    columns are not what the fit assumes. Proportions within ``tol`` are renormalised to sum to 1.
    """
    df, src = read_table(source)
    ok = df[df["status"].astype(str) == "completed"] if "status" in df.columns else df
    require_one_setting(ok, src, "a mixing law", mixture=False)
    mix_prefix, loss_prefix = pick_prefixes(df, mix_prefix, loss_prefix)
    mcols = _prefixed(df, mix_prefix)
    lcols = _prefixed(df, loss_prefix, ("val", "train") if loss_prefix == "loss_" else ())
    cols = ", ".join(map(str, df.columns[:40]))
    if not mcols:
        raise FitError(f"no mixture columns '{mix_prefix}<domain>' in {src}; give --mix-prefix (columns: {cols})")
    if not lcols:
        raise FitError(f"no loss columns '{loss_prefix}<domain>' in {src}; give --loss-prefix (columns: {cols})")
    domains = [c[len(mix_prefix):] for c in mcols]
    vds = [c[len(loss_prefix):] for c in lcols]
    if val_domains is not None:
        unknown = [v for v in val_domains if v not in vds]
        if unknown:
            raise FitError(f"unknown validation domain(s) {unknown}; allowed: {vds}")
        vds = list(val_domains)
        lcols = [loss_prefix + v for v in vds]
    ids = [str(x) for x in (df["run"] if "run" in df.columns else df.index)]
    dropped: list[dict[str, Any]] = []
    keep = np.ones(len(df), bool)
    if "status" in df.columns:
        ok = df["status"].astype(str).isin(LAB_OK_STATUS).to_numpy()
        dropped += [{"id": i, "reason": f"status {s!r}"} for i, s, k in zip(ids, df["status"], ok) if not k]
        keep &= ok
    if "cooldown" in df.columns:
        keep &= ~df["cooldown"].fillna(False).astype(bool).to_numpy()
    R = df[mcols].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    nomix = np.all(np.isnan(R), axis=1) & keep
    dropped += [{"id": i, "reason": "no mixture recorded"} for i, k in zip(ids, nomix) if k]
    keep &= ~nomix
    R = np.nan_to_num(R, nan=0.0)
    L = df[lcols].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    if not allow_missing_loss:   # rows to predict (--predict) need no losses; rows to fit do
        noloss = np.all(np.isnan(L), axis=1) & keep
        dropped += [{"id": i, "reason": "no validation loss"} for i, k in zip(ids, noloss) if k]
        keep &= ~noloss
    for r in np.flatnonzero(keep):
        neg = [domains[j] for j in np.flatnonzero(R[r] < 0)]
        if neg:
            raise FitError(f"row {ids[r]!r}: negative proportion for {neg}; proportions must be >= 0 and sum to 1")
        s = R[r].sum()
        if abs(s - 1) > tol:
            raise FitError(f"row {ids[r]!r}: proportions {mix_prefix}* sum to {s:.4f}, not 1 (tolerance {tol}); "
                           f"domains: {domains}")
        bad = [vds[k] for k in np.flatnonzero(L[r] <= 0)]
        if bad:
            raise FitError(f"row {ids[r]!r}: non-positive loss for {bad}; losses must be > 0 (nats/token)")
    R = R / np.where(R.sum(axis=1, keepdims=True) > 0, R.sum(axis=1, keepdims=True), 1)
    N = D = None
    for role in ("N", "D"):
        col = next((a for a in ALIASES[role] if a in df.columns), None)
        if col is not None:
            v = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
            if role == "N":
                N = v
            else:
                D = v
    data = MixData(domains, R, vds, L, ids, N, D, {"mix_prefix": mix_prefix, "loss_prefix": loss_prefix},
                   dropped, [], src)
    data = data.subset(keep)
    data.dropped = dropped
    data.natural, data.unique_tokens = _corpus_sizes(df, domains)
    return data


def _corpus_sizes(df: pd.DataFrame, domains: list[str]) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """Training tokens per domain from the lab corpus a sweep used (tokens/<tokenizer>/meta.json), if found."""
    if "data.corpus" not in df.columns:
        return None, None
    from lab.paths import corpus_dir  # pure paths, no torch
    corpus = df["data.corpus"].dropna().astype(str)
    tok = df["data.tokenizer"].dropna().astype(str) if "data.tokenizer" in df.columns else pd.Series(["byte"])
    root = df["data.root"].dropna().astype(str) if "data.root" in df.columns else pd.Series([], dtype=str)
    if corpus.empty:
        return None, None
    meta = corpus_dir(corpus.iloc[0], root.iloc[0] if len(root) else None) / "tokens" / (tok.iloc[0] if len(tok) else "byte") / "meta.json"
    try:
        with open(meta, encoding="utf-8") as f:
            doms = json.load(f)["domains"]
        U = {d: float(doms[d]["train"]["tokens"]) for d in domains}
    except (OSError, KeyError, ValueError, TypeError):
        return None, None
    tot = sum(U.values())
    return {d: u / tot for d, u in U.items()}, U


def parse_shares(spec: str | dict | None, names: Sequence[str], what: str) -> dict[str, float]:
    """``"a=0.1,b=0.2"`` (or a dict) -> {name: value}; unknown names are an error listing the allowed ones."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        items = []
        for part in str(spec).split(","):
            if "=" not in part:
                raise FitError(f"{what}: expected domain=value pairs separated by commas, got {part!r}")
            k, v = part.split("=", 1)
            items.append((k.strip(), v))
    out = {}
    for k, v in items:
        if k not in names:
            raise FitError(f"{what}: unknown domain {k!r}; allowed: {list(names)}")
        try:
            out[k] = float(v)
        except ValueError:
            raise FitError(f"{what}: {k}={v!r} is not a number") from None
    return out


def target_weights(spec: str | dict | None, val_domains: Sequence[str]) -> np.ndarray:
    """Weights of the overall target over validation domains (default: equal), normalised to sum 1."""
    if spec in (None, "", "uniform"):
        return np.full(len(val_domains), 1.0 / len(val_domains))
    w = parse_shares(spec, val_domains, "--target-weights")
    v = np.array([w.get(d, 0.0) for d in val_domains])
    if not np.all(np.isfinite(v)) or np.any(v < 0) or v.sum() <= 0:
        raise FitError(f"--target-weights must be >= 0 with a positive sum, got {w}")
    return v / v.sum()


# ---------------------------------------------------------------------------------------- interface
class MixModel:
    """A fitted map from mixtures (m, M) to per-domain losses (m, K); both methods implement it."""

    method = "?"
    domains: list[str]
    val_domains: list[str]

    def predict(self, R: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_draws(self, R: np.ndarray) -> np.ndarray | None:
        """(B, m, K) predictions under bootstrap draws of the fit, or None when the method has none."""
        return None

    def interval_halfwidth(self, level: float) -> np.ndarray | None:
        """(K,) symmetric prediction half-widths from held-out residuals, when the method has them."""
        return None

    def summary(self) -> dict[str, Any]:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------- law
class MixingLawOne(Law):
    """One validation domain: ``log L = LSE(e, a + sum_{j>=1} t_j r_j)``, with c = e^e, k = e^a, t_0 = 0."""

    name = "mixing"
    inputs = ("R",)

    def __init__(self, M: int):
        self.M = M
        self.params = ("e", "a") + tuple(f"t{j}" for j in range(1, M))

    def forward(self, theta: np.ndarray, X: dict[str, np.ndarray]):
        R = X["R"]
        z = theta[:, 1:2] + theta[:, 2:] @ R[:, 1:].T                     # (S, n)
        e = np.broadcast_to(theta[:, 0:1], z.shape)
        m = np.maximum(e, z)
        pe, pz = np.exp(e - m), np.exp(z - m)
        tot = pe + pz
        out = m + np.log(tot)
        we, wz = pe / tot, pz / tot
        jac = np.concatenate([we[:, :, None], wz[:, :, None], wz[:, :, None] * R[None, :, 1:]], axis=2)
        return out, jac

    def value_and_vjp(self, theta, X):
        R = X["R"]
        z = theta[:, 1:2] + theta[:, 2:] @ R[:, 1:].T
        e = np.broadcast_to(theta[:, 0:1], z.shape)
        m = np.maximum(e, z)
        pe, pz = np.exp(e - m), np.exp(z - m)
        tot = pe + pz
        we, wz = pe / tot, pz / tot

        def vjp(v):
            vz = v * wz
            return np.concatenate([(v * we).sum(1, keepdims=True), vz.sum(1, keepdims=True), vz @ R[:, 1:]], axis=1)

        return m + np.log(tot), vjp

    def starts(self, X, logL):
        """Profile c: for c on a grid below min L, least squares of log(L - c) on [1, r_1..r_{M-1}]."""
        R, L = X["R"], np.exp(logL)
        A = np.column_stack([np.ones(len(L)), R[:, 1:]])
        out = []
        for q in (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.995):
            c = q * L.min()
            coef, *_ = np.linalg.lstsq(A, np.log(L - c), rcond=None)
            out.append(np.concatenate([[math.log(max(c, 1e-3 * L.min()))], coef]))
        return np.array(out)

    def public(self, theta):
        th = np.atleast_2d(theta)
        t = np.concatenate([np.zeros((len(th), 1)), th[:, 2:]], axis=1)
        shift = t.mean(axis=1, keepdims=True)
        return {"c": np.exp(th[:, 0]), "log_k": th[:, 1] + shift[:, 0], "t": t - shift}

    def formula(self):
        return "L_i(r) = c_i + k_i exp(sum_j t_ij r_j)"


def _ridge_objective(law: MixingLawOne, X, logL, weights, delta, ridge: float):
    """The lab objective plus ``ridge * sum_j (t_ij - mean_j t_ij)^2`` (gauge-invariant)."""
    base = objective(law, X, logL, weights, delta)
    if ridge <= 0:
        return base
    M = law.M
    P = np.eye(M) - 1.0 / M                       # centring
    E = np.vstack([np.zeros((1, M - 1)), np.eye(M - 1)])   # t (M,) = E @ t_free

    Q = E.T @ P @ E                              # penalty quadratic form on the free slopes

    def f(theta, idx):
        v, g = base(theta, idx)
        tf = theta[:, 2:]
        v = v + ridge * np.einsum("sp,pq,sq->s", tf, Q, tf)
        g = g.copy()
        g[:, 2:] += 2 * ridge * tf @ Q
        return v, g

    return f


@dataclass
class MixingLaw(MixModel):
    """Fitted data mixing law over K validation domains, with bootstrap draws."""

    domains: list[str]
    val_domains: list[str]
    c: np.ndarray                     # (K,)
    log_k: np.ndarray                 # (K,)
    t: np.ndarray                     # (K, M), rows sum to 0
    draws: dict[str, np.ndarray] = field(default_factory=dict)   # c (B,K), log_k (B,K), t (B,K,M)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    ridge: Any = 0.0                  # (K,) penalty per validation domain
    observed: dict[str, np.ndarray] = field(default_factory=dict)   # per-domain share range of the fit's runs
    method = "law"

    def predict(self, R: np.ndarray) -> np.ndarray:
        R = np.atleast_2d(R)
        return self.c[None, :] + np.exp(self.log_k[None, :] + R @ self.t.T)

    def predict_draws(self, R: np.ndarray) -> np.ndarray | None:
        if not self.draws:
            return None
        R = np.atleast_2d(R)
        z = self.draws["log_k"][:, None, :] + np.einsum("mj,bkj->bmk", R, self.draws["t"])
        return self.draws["c"][:, None, :] + np.exp(z)

    def summary(self) -> dict[str, Any]:
        out = {}
        for i, v in enumerate(self.val_domains):
            out[v] = {"c": float(self.c[i]), "k": float(math.exp(self.log_k[i])),
                      "t": {d: float(self.t[i, j]) for j, d in enumerate(self.domains)}}
        return out

    def intervals(self, level: float = 0.95) -> dict[str, Any]:
        if not self.draws:
            return {}
        out = {}
        for i, v in enumerate(self.val_domains):
            out[v] = {"c": list(interval(self.draws["c"][:, i], level)),
                      "k": list(interval(np.exp(self.draws["log_k"][:, i]), level)),
                      "t": {d: list(interval(self.draws["t"][:, i, j], level)) for j, d in enumerate(self.domains)}}
        return out


def _require_runs(data: MixData, n_params: int, what: str) -> None:
    """Enough runs, and enough *distinct* mixtures: seeds of one mixture say nothing about how the
    loss moves with the mixture, so a sweep of a single mixture is refused as not identifiable."""
    distinct = len(np.unique(np.round(np.asarray(data.R, float), 4), axis=0)) if len(data) else 0
    if len(data) < n_params + 1 or distinct < n_params + 1:
        raise FitError(f"{what}: {len(data)} runs with {distinct} distinct mixture(s) for {n_params} parameters per "
                       f"validation domain ({len(data.domains)} training domains); need at least {n_params + 1} "
                       f"runs with distinct mixtures (a mixture sweep, e.g. sweeps/mixture.yaml), else the law is not "
                       f"identifiable")


@quiet
def fit_one_domain(R: np.ndarray, L: np.ndarray, delta: float = 1e-2, ridge: float = 0.0,
                   weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Best (theta, objective) for one domain's losses ``L`` (n,) at mixtures ``R`` (n, M)."""
    law = MixingLawOne(R.shape[1])
    X, logL = {"R": R}, np.log(L)
    if ridge <= 0:
        core = fit_law(law, X, logL, delta=delta, weights=weights)
        return core.theta, core.objective
    x0 = law.starts(X, logL)
    res = minimize_batched(_ridge_objective(law, X, logL, weights, delta, ridge), x0, max_iter=1000)
    b = int(np.argmin(res.fun))
    return res.x[b], float(res.fun[b])


RIDGE_GRID = (0.0, 1e-6, 1e-5, 1e-4, 1e-3)


def _fit_thetas(data: MixData, delta: float, ridges: np.ndarray) -> list[np.ndarray]:
    M = len(data.domains)
    out = []
    for i, v in enumerate(data.val_domains):
        ok = np.isfinite(data.L[:, i])
        if ok.sum() < M + 2:
            raise FitError(f"mixing law: validation domain {v!r} has {int(ok.sum())} finite losses; need at least {M + 2}")
        out.append(fit_one_domain(data.R[ok], data.L[ok, i], delta, float(ridges[i]))[0])
    return out


@judged(mixing_health)
@quiet
def fit_mixing_law(data: MixData, bootstrap: int = 200, delta: float = 1e-2, ridge: float | str = "auto",
                   seed: int = 0, cv_folds: int | None = None) -> MixingLaw:
    """Fit Ye et al.'s data mixing law ``L_i(r) = c_i + k_i exp(sum_j t_ij r_j)`` per validation domain.

    Ye et al. (2024, "Data Mixing Laws", arXiv:2403.16952): the validation loss on domain i of a
    model trained on mixture r. Each validation domain is an independent fit of ``log L_i =
    LSE(log c_i, log k_i + t_i . r)`` in the gauge ``t_i0 = 0``: Huber (``delta``) on log-loss
    residuals, summed, L-BFGS from starts that profile c (see the module docstring), over the runs
    with a finite loss on that domain. The result is reported in the symmetric gauge
    ``sum_j t_ij = 0``. Bootstrap refits give intervals and K-fold refits over distinct mixtures a
    held-out error. A law holds at fixed N and D: pass runs of one model size (:func:`one_size`) or
    predictions at one size (:func:`~lab.fit.mixing.nested.nested_predict`).

    Units: mixtures r are proportions over the M training domains (dimensionless, rows sum to 1);
    losses, ``c_i`` and ``k_i`` in nats/token; ``t_ij`` dimensionless (the change in ``ln(L_i - c_i)``
    per unit share of training domain j).

    Parameters
    ----------
    data : MixData
        Runs from :func:`load_mixing`: proportions ``R`` (n, M) and losses ``L`` (n, K), NaN where a
        domain was not evaluated. Needs at least M + 2 runs, and M + 2 finite losses per domain.
    bootstrap : int, default 200
        Bootstrap resamples B: runs resampled with replacement, every domain refitted warm-started
        from the full fit (one batched L-BFGS per domain). Draws whose law predicts a non-finite
        loss, or one above twice the domain's largest observed loss, at any observed mixture are set
        to NaN and counted. 0 gives no draws.
    delta : float, default 1e-2
        Huber threshold on log-loss residuals.
    ridge : float or "auto", default "auto"
        Penalty ``ridge * sum_j (t_ij - mean_j t_ij)^2`` added to the objective, or ``"auto"``: per
        validation domain, the value of :data:`RIDGE_GRID` with the lowest held-out mean absolute
        error (ties to the stronger; 0 when too few distinct mixtures to cross-validate). Few runs
        per parameter let the free law fit exploding exponents that no held-out mixture supports;
        the ridge keeps them in check where the held-out mixtures say it helps, and never where
        the plain law cross-validates better.
    seed : int, default 0
        Seed of the bootstrap resampling and of the fold assignment.
    cv_folds : int, optional
        Folds of the held-out error, over distinct mixtures (:func:`mixture_folds`); default
        leave-one-mixture-out up to 40 mixtures, else 10 folds.

    Returns
    -------
    MixingLaw
        ``domains``, ``val_domains``; ``c`` (K,) and ``log_k`` (K,) (natural log of k, nats/token),
        ``t`` (K, M) with rows summing to 0; ``ridge`` (K,) the penalty used per domain; ``draws``
        ``{"c": (B, K), "log_k": (B, K), "t": (B, K, M)}`` (empty without bootstrap; NaN for failed
        or dropped draws), whose percentile intervals ``intervals(level)`` gives; ``observed``
        ``{"lo", "hi"}`` the per-domain share range of the fitted runs; ``diagnostics``:
        ``n_runs``, ``fit_mae`` (in-sample mean absolute error per domain and ``mean``, nats/token),
        ``ridge`` (grid, chosen value per domain and held-out MAE per grid value when ``"auto"``),
        ``bootstrap`` (``draws``, ``degenerate_dropped``) and ``held_out`` (``folds``, ``kind``,
        ``mae``, ``baseline_mae`` of the mixture-blind mean, ``predicted``). With ``"auto"`` the
        ridge is chosen on the same folds, so ``held_out`` is slightly optimistic.

    Raises
    ------
    FitError
        Fewer than M + 2 runs; a validation domain with fewer than M + 2 finite losses; ``ridge``
        neither ``"auto"`` nor a finite number >= 0.
    """
    M, K = len(data.domains), len(data.val_domains)
    _require_runs(data, M + 1, "mixing law")
    law = MixingLawOne(M)
    if ridge == "auto":
        trials = []
        for lam in RIDGE_GRID:
            lams = np.full(K, lam)
            th = _fit_thetas(data, delta, lams)
            cv = _law_cv(data, th, delta, lams, cv_folds, seed)
            trials.append((lam, th, cv))
        if trials[0][2].get("folds"):
            # the ridge with the lowest held-out error, per domain (ties go to the stronger ridge). An
            # earlier one-standard-error rule took the strongest ridge within one SE of the best; with few
            # held-out mixtures the SE is wide, and on Ye et al.'s 2-domain 70M runs it doubled the
            # leave-one-mixture-out error of the plain law (0.0108 vs 0.0051). The minimum never loses to
            # ridge 0 on these folds, since 0 is in the grid.
            absd = np.array([np.abs(np.asarray(t[2]["predicted"]) - data.L) for t in trials])   # (grid, n, K)
            seen = np.isfinite(data.L)                                                        # (n, K)
            absd = np.where(np.isfinite(absd), absd, np.inf)        # a failed refit counts as infinitely wrong
            mean = np.array([[absd[g, seen[:, k], k].mean() for k in range(K)] for g in range(len(trials))])
            best = mean.min(axis=0)
            pick = np.array([max(g for g in range(len(RIDGE_GRID)) if mean[g, k] <= best[k] * (1 + 1e-9))
                             for k in range(K)])
        else:
            pick = np.zeros(K, int)
        ridges = np.array([RIDGE_GRID[p] for p in pick])
        thetas = [trials[p][1][i] for i, p in enumerate(pick)]
        ridge_note = {"grid": list(RIDGE_GRID), "chosen": {v: float(r) for v, r in zip(data.val_domains, ridges)},
                      "note": "chosen on the same held-out folds that are reported, so the held-out error is "
                              "slightly optimistic",
                      "held_out_mae_by_ridge": {str(t[0]): t[2].get("mae", {}).get("mean") for t in trials}}
    else:
        if not (isinstance(ridge, (int, float)) and math.isfinite(ridge) and ridge >= 0):
            raise FitError(f"--ridge must be 'auto' or a number >= 0, got {ridge!r}")
        ridges = np.full(K, float(ridge))
        thetas = _fit_thetas(data, delta, ridges)
        ridge_note = {"chosen": {v: float(ridge) for v in data.val_domains}}
    c, logk, t = np.zeros(K), np.zeros(K), np.zeros((K, M))
    for i in range(K):
        pub = law.public(thetas[i])
        c[i], logk[i], t[i] = pub["c"][0], pub["log_k"][0], pub["t"][0]
    model = MixingLaw(list(data.domains), list(data.val_domains), c, logk, t, ridge=ridges)
    n_bad = 0
    if bootstrap:
        W = bootstrap_weights(len(data), bootstrap, np.random.default_rng(seed))
        draws = _refit_weighted(data, thetas, W, delta, ridges)
        model.draws = {"c": draws[0], "log_k": draws[1], "t": draws[2]}
        # a resample with few distinct mixtures can fit a law that explodes off its points: such draws
        # (any prediction at the observed mixtures above twice the largest loss) are dropped and counted
        P = model.predict_draws(data.R)
        bad = ~np.all(np.isfinite(P) & (P < 2 * np.nanmax(data.L, axis=0)[None, None, :]), axis=1)   # (B, K)
        for key in ("c", "log_k"):
            model.draws[key][bad] = np.nan
        model.draws["t"][bad] = np.nan
        n_bad = int(bad.sum())
    fitted = model.predict(data.R)
    model.diagnostics = {"n_runs": len(data), "fit_mae": mae(fitted, data.L, data.val_domains),
                         "ridge": ridge_note,
                         "bootstrap": {"draws": bootstrap, "degenerate_dropped": n_bad},
                         "held_out": _law_cv(data, thetas, delta, ridges, cv_folds, seed)}
    model.observed = {"lo": data.R.min(axis=0), "hi": data.R.max(axis=0)}
    return model


def _refit_weighted(data: MixData, thetas: list[np.ndarray], W: np.ndarray, delta: float, ridge: np.ndarray):
    """Refit every validation domain once per weight row of W (B, n), warm-started from the full fit.

    One batched L-BFGS call per domain serves all bootstrap resamples (or all CV folds, as 0/1 weights).
    Returns c (B, K), log_k (B, K), t (B, K, M); NaN where a refit failed.
    """
    B, (M, K) = len(W), (len(data.domains), len(data.val_domains))
    law = MixingLawOne(M)
    dc, dk, dt = np.full((B, K), np.nan), np.full((B, K), np.nan), np.full((B, K, M), np.nan)
    for i in range(K):
        ok = np.isfinite(data.L[:, i])
        X, logL = {"R": data.R[ok]}, np.log(data.L[ok, i])
        res = minimize_batched(_ridge_objective(law, X, logL, W[:, ok], delta, float(ridge[i])),
                               np.tile(thetas[i], (B, 1)), max_iter=1000)
        pub = law.public(res.x)
        good = np.isfinite(res.fun)
        dc[good, i], dk[good, i], dt[good, i] = pub["c"][good], pub["log_k"][good], pub["t"][good]
    return dc, dk, dt


def mixture_folds(R: np.ndarray, folds: int | None = None, seed: int = 0) -> tuple[np.ndarray, int, str]:
    """Fold index per row, over distinct mixtures (repeats of a mixture never straddle folds).

    Leave-one-mixture-out up to 40 mixtures, else ``folds`` (default 10).
    """
    keys = np.unique(np.round(R, 4), axis=0, return_inverse=True)[1].ravel()
    G = int(keys.max()) + 1
    k = min(folds or (G if G <= 40 else 10), G)
    order = np.random.default_rng(seed).permutation(G)
    fog = np.empty(G, int)
    fog[order] = np.arange(G) % k
    return fog[keys], k, ("leave-one-mixture-out" if k == G else f"{k}-fold over mixtures")


@quiet
def _law_cv(data: MixData, thetas, delta, ridge, folds, seed) -> dict[str, Any]:
    fold, k, kind = mixture_folds(data.R, folds, seed)
    if k < 3:
        return {"folds": 0, "note": "too few distinct mixtures to hold any out"}
    W = np.stack([(fold != f).astype(float) for f in range(k)])
    c, lk, t = _refit_weighted(data, thetas, W, delta, ridge)
    pred = np.full_like(data.L, np.nan)
    for f in range(k):
        te = fold == f
        pred[te] = c[f][None, :] + np.exp(lk[f][None, :] + data.R[te] @ t[f].T)
    return {"folds": k, "kind": kind, "mae": mae(pred, data.L, data.val_domains), **_baseline(data, fold, k),
            "predicted": pred.tolist()}


def _baseline(data: MixData, fold: np.ndarray, k: int) -> dict[str, Any]:
    """The held-out error of ignoring the mixture (predict each fold by the other folds' mean loss).

    A method's held-out MAE means little alone: against this it says how much of the loss's
    variation over mixtures the method explains (``skill`` = 1 - MAE / baseline MAE).
    """
    pred = np.full_like(data.L, np.nan)
    for f in range(k):
        te = fold == f
        with np.errstate(all="ignore"):
            pred[te] = np.nanmean(data.L[~te], axis=0)[None, :]
    return {"baseline_mae": mae(pred, data.L, data.val_domains)}


def one_size(data: MixData, size: float | None) -> tuple[MixData, str | None]:
    """The runs of one model size: a mixing law holds at fixed N and D (use --target-params to go across sizes)."""
    if data.N is None or not np.isfinite(data.N).any():
        return data, None
    N = data.N
    levels = sorted({float(x) for x in N[np.isfinite(N)]})
    groups: list[list[float]] = []
    for x in levels:
        if groups and x <= groups[-1][0] * 1.05:
            groups[-1].append(x)
        else:
            groups.append([x])
    if size is None and len(groups) == 1:
        return data, None
    if size is not None:
        closest = min(groups, key=lambda g: abs(math.log(g[0] / size)))[0]
        if abs(math.log(closest / size)) < math.log(1.5):
            size = closest                      # designs round sizes to a shape: take the nearest
        near = np.abs(np.log(N / size)) < math.log(1.05)
        if not near.any():
            raise FitError(f"--size {size:.4g}: no runs at that N; sizes in the table: "
                           + ", ".join(f"{g[0]:.4g}" for g in groups))
    else:
        need = len(data.domains) + 2
        ok = [g for g in groups if (np.abs(np.log(N / g[0])) < math.log(1.05)).sum() >= need]
        if not ok:
            return data, (f"no single model size has {need} runs; fitted all {len(data)} runs of "
                          f"{len(groups)} sizes together, so size differences pass for mixture effects "
                          f"(--target-params separates them)")
        size = ok[-1][0]
        near = np.abs(np.log(N / size)) < math.log(1.05)
    note = (f"the table holds {len(groups)} model sizes; fitted the {int(near.sum())} runs at N = {size:.4g} "
            f"(--size picks another; --target-params predicts across sizes)") if len(groups) > 1 else None
    return data.subset(near), note


def skill(held_out: dict[str, Any]) -> float:
    """1 - held-out MAE / mixture-blind baseline MAE (1: perfect, 0: no better than the mean)."""
    try:
        return float(1 - held_out["mae"]["mean"] / held_out["baseline_mae"]["mean"])
    except (KeyError, TypeError, ZeroDivisionError):
        return math.nan


@quiet
def mae(pred: np.ndarray, L: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Mean absolute error per validation domain and over all (NaN where nothing was predicted)."""
    err = np.abs(pred - L)
    out = {v: float(np.nanmean(err[:, k])) if np.isfinite(err[:, k]).any() else math.nan for k, v in enumerate(names)}
    out["mean"] = float(np.nanmean(err)) if np.isfinite(err).any() else math.nan
    return out


def cross_validate(fit, data: MixData, folds: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Held-out error of any method: refit without each fold (:func:`mixture_folds`), predict it."""
    fold, k, kind = mixture_folds(data.R, folds, seed)
    if k < 3:
        return {"folds": 0, "note": "too few distinct mixtures to hold any out"}
    pred = np.full_like(data.L, np.nan)
    failed = 0
    for f in range(k):
        test = fold == f
        try:
            m = fit(data.subset(~test))
        except FitError:
            failed += 1
            continue
        pred[test] = m.predict(data.R[test])
    return {"folds": k, "kind": kind, "mae": mae(pred, data.L, data.val_domains), "failed_folds": failed,
            **_baseline(data, fold, k), "predicted": pred.tolist()}
