"""Loss laws: how the validation loss scales with N, D and C.

* :mod:`~lab.fit.loss.chinchilla`: Hoffmann et al. (2022) approaches 1, 2 and 3;
* :mod:`~lab.fit.loss.kaplan`: Kaplan et al. (2020) L(N), L(D), L(C) and L(N, D);
* :mod:`~lab.fit.loss.constrained`: Muennighoff et al. (2023), repeated data;
* :mod:`~lab.fit.loss.envelope` and :mod:`~lab.fit.loss.holdout`: the compute frontier and the
  leave-largest-out check they share.
"""
