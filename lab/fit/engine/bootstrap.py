"""Bootstrap by resampling runs: multiplicity weights for batched refits, and percentile intervals.

Bootstraps here resample *runs* (rows) with replacement and are represented as multiplicity
weights, one (K, n) matrix for K resamples, so every refit is one batched call. An interval is
the percentile interval of the finite draws (draws from degenerate refits come out non-finite
and are left out, and counted by the callers).
"""

from __future__ import annotations

import math

import numpy as np


def bootstrap_weights(n: int, K: int, rng: np.random.Generator, groups: np.ndarray | None = None) -> np.ndarray:
    """(K, n) resample multiplicities; with ``groups``, rows are resampled within their group."""
    if groups is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=K).astype(float)
    W = np.zeros((K, n))
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        W[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=K)
    return W


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the finite samples."""
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return (math.nan, math.nan)
    q = (1 - level) / 2
    lo, hi = np.quantile(s, [q, 1 - q])
    return (float(lo), float(hi))


def summarize(samples: dict[str, np.ndarray], level: float) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Intervals and standard errors (SD over resamples) of each named bootstrap sample."""
    iv, se = {}, {}
    for k, v in samples.items():
        v = np.asarray(v, float)
        iv[k] = list(interval(v, level))
        fin = v[np.isfinite(v)]
        with np.errstate(over="ignore", invalid="ignore"):
            se[k] = float(np.std(fin, ddof=1)) if fin.size > 1 else math.nan
    return iv, se
