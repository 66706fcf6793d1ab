"""The analysis layer: what a folder holds (:mod:`~lab.report.sources`), the fits to show
(:mod:`~lab.report.fits`), and the HTML report (:func:`build_report`, ``python -m lab.report``).
The notebooks in ``analysis/`` use the same functions, so the page and the notebooks agree."""

from lab.report.fits import Attempt, LossFits, MixingFits, attempt, hparam_fit, loss_fits, mixing_fits
from lab.report.sources import Source, open_source, provenance, runs_table

__all__ = ["Attempt", "LossFits", "MixingFits", "attempt", "hparam_fit", "loss_fits", "mixing_fits", "Source",
           "open_source", "provenance", "runs_table", "build_report"]


def build_report(*args, **kwargs):
    """See :func:`lab.report.build.build_report` (imported on use: it pulls in matplotlib)."""
    from lab.report.build import build_report as _build

    return _build(*args, **kwargs)
