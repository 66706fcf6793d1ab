"""Scaling-law fits on tables of runs; nothing here imports torch.

Grouped by job:

* :mod:`lab.fit.engine`: inputs (:func:`load_points`), law forms, the batched optimiser, bootstrap,
  the result type (:class:`FitResult`);
* :mod:`lab.fit.loss`: Kaplan (:func:`fit_kaplan`), Chinchilla approaches 1-3 (:func:`approach1`,
  :func:`approach2`, :func:`approach3`) and the data-constrained law (:func:`fit_data_constrained`);
* :mod:`lab.fit.hparams`: batch-size and learning-rate laws (:func:`fit_hparams`);
* :mod:`lab.fit.mixing`: data-mixing laws (:func:`fit_mixing_law`, :func:`fit_regression`,
  :func:`nested_predict`, :func:`optimize_mixture`);
* :mod:`lab.fit.compare`: two ladders' effective compute multiplier (:func:`compare_ladders`);
* the figures live a layer up, in :mod:`lab.plots`.

Inputs are any pandas table with the columns a law needs, a CSV/Parquet file or a sweep folder. The
CLI is ``python -m lab.fit {kaplan,chinchilla,hparams,mixing} INPUT``.
"""

from lab.fit.compare import LadderComparison, compare_ladders
from lab.fit.engine.errors import FitError
from lab.fit.engine.points import Points, load_points
from lab.fit.engine.result import FitResult
from lab.fit.hparams import HparamData, fit_hparams, load_hparams, predict_hparams
from lab.fit.loss.chinchilla import approach1, approach2, approach3
from lab.fit.loss.constrained import fit_data_constrained
from lab.fit.loss.kaplan import fit_kaplan
from lab.fit.mixing.law import MixData, MixModel, fit_mixing_law, load_mixing
from lab.fit.mixing.nested import nested_predict
from lab.fit.mixing.optimize import make_box
from lab.fit.mixing.optimize import optimize as optimize_mixture
from lab.fit.mixing.regression import fit_regression

__all__ = [
    "FitError", "FitResult", "Points", "load_points",
    "approach1", "approach2", "approach3", "fit_kaplan", "fit_data_constrained",
    "HparamData", "fit_hparams", "load_hparams", "predict_hparams",
    "MixData", "MixModel", "fit_mixing_law", "load_mixing", "nested_predict", "make_box", "optimize_mixture",
    "fit_regression", "LadderComparison", "compare_ladders",
]
