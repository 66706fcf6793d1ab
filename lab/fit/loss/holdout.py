"""Which runs a leave-largest-out check holds out: the largest-compute budget group."""

from __future__ import annotations

import numpy as np

from lab.fit.engine.points import Points, group_budgets


def holdout_indices(pts: Points) -> tuple[np.ndarray, str] | None:
    """Rows of the largest-compute budget group (or the top 10% by C when there are no groups)."""
    groups = group_budgets(pts.C, pts.budget)
    if len(np.unique(groups)) >= 3:
        top = groups == groups.max()
        return top, f"largest budget (C ~ {np.median(pts.C[top]):.3g}) held out"
    k = max(1, int(round(0.1 * len(pts))))
    top = np.zeros(len(pts), bool)
    top[np.argsort(pts.C)[-k:]] = True
    return top, f"top {k} runs by C held out"
