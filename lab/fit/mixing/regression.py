"""RegMix-style mixture regression (Liu et al. 2025): a gradient-boosted regressor per validation domain.

Where the mixing law assumes a form, this method learns ``r -> L_i`` from many small runs with a
well-kept regressor: LightGBM when installed (the authors' choice), else scikit-learn's
``HistGradientBoostingRegressor``. It shares the :class:`~lab.fit.mixing.law.MixModel` interface, so
``--predict`` and ``--optimize`` work the same. Trees are piecewise constant, so the optimum is
found by scoring many candidate mixtures and averaging the best (see :mod:`lab.fit.mixing.optimize`).

Intervals come from held-out residuals (split conformal over the cross-validation folds): the
``level`` quantile of |observed - predicted| per validation domain.

Small sweeps: LightGBM's default of 20 rows per leaf would allow no split at all with tens of runs,
so the leaf minimum scales with the data (n / 10, between 2 and 20).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lab.fit.engine.errors import FitError
from lab.fit.mixing.law import MixData, MixModel, cross_validate, mae


def _regressor(kind: str, n: int, seed: int, iterations: int, lr: float):
    leaf = int(min(20, max(2, n // 10)))
    if kind in ("auto", "lightgbm"):
        try:
            import lightgbm as lgb
            return lgb.LGBMRegressor(n_estimators=iterations, learning_rate=lr, min_child_samples=leaf,
                                     random_state=seed, verbose=-1, n_jobs=1), "lightgbm"
        except ImportError:
            if kind == "lightgbm":
                raise FitError("--regressor lightgbm: the lightgbm package is not installed "
                               "(pip install lightgbm), or use --regressor sklearn") from None
    if kind not in ("auto", "sklearn", "lightgbm"):
        raise FitError(f"--regressor {kind!r}: allowed: auto, lightgbm, sklearn")
    from sklearn.ensemble import HistGradientBoostingRegressor
    return HistGradientBoostingRegressor(max_iter=iterations, learning_rate=lr, min_samples_leaf=leaf,
                                         early_stopping=False, random_state=seed), "sklearn"


@dataclass
class MixRegression(MixModel):
    domains: list[str]
    val_domains: list[str]
    models: list[Any]
    regressor: str
    halfwidth: dict[float, np.ndarray] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    cv_resid: np.ndarray | None = None     # (n, K) held-out predicted - observed
    method = "regression"

    def target_halfwidth(self, w: np.ndarray, level: float) -> float | None:
        """Half-width for the weighted target: the quantile of |sum_k w_k (pred - obs)| over held-out rows.

        Domain errors are correlated (one mixture helps or hurts several domains at once), so the
        target's residuals are taken as they are, not combined from per-domain widths.
        """
        if self.cv_resid is None:
            return None
        ok = np.all(np.isfinite(self.cv_resid), axis=1)
        return float(np.quantile(np.abs(self.cv_resid[ok] @ w), level)) if ok.sum() >= 2 else None

    def predict(self, R: np.ndarray) -> np.ndarray:
        R = np.atleast_2d(np.asarray(R, float))
        return np.column_stack([m.predict(R) for m in self.models])

    def interval_halfwidth(self, level: float) -> np.ndarray | None:
        return self.halfwidth.get(level)

    def summary(self) -> dict[str, Any]:
        return {"regressor": self.regressor, "n_models": len(self.models)}


def _fit_plain(data: MixData, kind: str, seed: int, iterations: int, lr: float) -> MixRegression:
    n, M = len(data), len(data.domains)
    if n < M + 2:
        raise FitError(f"regression: {n} runs for {M} training domains; need at least {M + 2}")
    models, name = [], kind
    for i, v in enumerate(data.val_domains):
        ok = np.isfinite(data.L[:, i])
        reg, name = _regressor(kind, int(ok.sum()), seed, iterations, lr)
        reg.fit(data.R[ok], data.L[ok, i])
        models.append(reg)
    return MixRegression(list(data.domains), list(data.val_domains), models, name)


def fit_regression(data: MixData, regressor: str = "auto", iterations: int = 1000, lr: float = 0.01,
                   seed: int = 0, cv_folds: int | None = None, levels: tuple[float, ...] = (0.95,)) -> MixRegression:
    """Fit RegMix's mixture regression: one gradient-boosted regressor ``r -> L_i`` per validation domain.

    RegMix (Liu et al. 2025, arXiv:2407.01492) learns the map from mixture to loss from many small
    runs instead of assuming a form. Each validation domain gets its own regressor, fitted to the
    runs with a finite loss on it: LightGBM when installed (the authors' choice), else
    scikit-learn's ``HistGradientBoostingRegressor``, with the minimum rows per leaf scaled to the
    data (``n // 10``, between 2 and 20). Cross-validation over distinct mixtures gives the held-out
    error and split-conformal interval half-widths.

    Units: mixtures r are proportions over the M training domains (dimensionless, rows sum to 1);
    losses, errors and half-widths in nats/token.

    Parameters
    ----------
    data : MixData
        Runs from :func:`~lab.fit.mixing.law.load_mixing`: proportions ``R`` (n, M) and losses ``L``
        (n, K). Needs at least M + 2 runs.
    regressor : {"auto", "lightgbm", "sklearn"}, default "auto"
        Which booster; ``"auto"`` is LightGBM when importable, else scikit-learn.
    iterations : int, default 1000
        Boosting rounds (``n_estimators`` / ``max_iter``).
    lr : float, default 0.01
        The booster's shrinkage (learning rate, dimensionless), not a training learning rate.
    seed : int, default 0
        Seed of the regressors and of the fold assignment.
    cv_folds : int, optional
        Folds over distinct mixtures (:func:`~lab.fit.mixing.law.mixture_folds`); default
        leave-one-mixture-out up to 40 mixtures, else 10 folds.
    levels : tuple of float, default (0.95,)
        Coverages for which conformal half-widths are computed.

    Returns
    -------
    MixRegression
        ``domains``, ``val_domains``, ``models`` (one fitted regressor per validation domain),
        ``regressor`` (``"lightgbm"`` or ``"sklearn"``), ``cv_resid`` (n, K) held-out predicted minus
        observed loss, ``halfwidth`` ``{level: (K,)}`` the ``level`` quantile of the absolute
        held-out residuals per domain (both absent when fewer than 3 distinct mixtures allow no
        folds), and ``diagnostics``: ``n_runs``, ``fit_mae`` (in-sample mean absolute error per domain
        and ``mean``) and ``held_out`` (``folds``, ``kind``, ``mae``, ``failed_folds``,
        ``baseline_mae`` of the mixture-blind mean, ``predicted``).

    Raises
    ------
    FitError
        Fewer than M + 2 runs; ``regressor="lightgbm"`` without lightgbm installed; an unknown
        ``regressor``.
    """
    model = _fit_plain(data, regressor, seed, iterations, lr)
    cv = cross_validate(lambda d: _fit_plain(d, regressor, seed, iterations, lr), data, cv_folds, seed)
    if cv.get("folds"):
        model.cv_resid = np.asarray(cv["predicted"]) - data.L
        res = np.abs(model.cv_resid)
        for lv in levels:
            model.halfwidth[lv] = np.array([np.nanquantile(res[:, k], lv) if np.isfinite(res[:, k]).any() else np.nan
                                            for k in range(res.shape[1])])
    model.diagnostics = {"n_runs": len(data), "fit_mae": mae(model.predict(data.R), data.L, data.val_domains),
                         "held_out": cv}
    return model
