"""How fits fail: :class:`FitError` for input a fit cannot use, and numpy warnings kept quiet on purpose."""

from __future__ import annotations

import numpy as np


class FitError(ValueError):
    """Input a fit cannot use: says what is missing or wrong, before any fitting."""


def require(cond: bool, message: str) -> None:
    if not cond:
        raise FitError(message)


def quiet(fn):
    """Run ``fn`` with numpy floating-point warnings off.

    Multistart grids and bootstrap resamples visit wild parameters (exp overflow, 0 * inf) on
    purpose; those rows come out non-finite and are discarded or counted, so the warnings are noise.
    """
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper
