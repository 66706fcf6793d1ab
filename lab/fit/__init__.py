"""Scaling-law fits on tables of runs: Kaplan (:mod:`lab.fit.kaplan`), Chinchilla approaches 1-3
(:mod:`lab.fit.chinchilla`), with bootstrap intervals, diagnostics and plots (:mod:`lab.fit.plots`).

Inputs are any pandas table with N, D, C and loss columns (:func:`lab.fit.data.load_points`); the
CLI is ``python -m lab.fit {kaplan,chinchilla} INPUT``. Nothing here imports torch.
"""

from lab.fit.chinchilla import approach1, approach2, approach3
from lab.fit.data import FitError, Points, load_points
from lab.fit.kaplan import fit_kaplan
from lab.fit.result import FitResult

__all__ = ["approach1", "approach2", "approach3", "fit_kaplan", "FitError", "FitResult", "Points", "load_points"]
