"""Data-mixing laws: per-domain validation loss as a function of the training mixture.

* :mod:`~lab.fit.mixing.law`: the data (``MixData``), Ye et al.'s law, cross-validation;
* :mod:`~lab.fit.mixing.nested`: nested prediction across model sizes;
* :mod:`~lab.fit.mixing.optimize`: the best mixture on a box of the simplex, with intervals;
* :mod:`~lab.fit.mixing.regression`: RegMix's regression method;
* :mod:`~lab.fit.mixing.cli`: ``python -m lab.fit mixing``.
"""
