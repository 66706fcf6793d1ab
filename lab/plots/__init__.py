"""The lab's figures, one function each, for notebooks, the HTML report and PNG/SVG files alike.

Every function takes optional axes (``ax=``/``axes=``) and returns what it drew on, so a notebook
shows it inline and :func:`lab.plots.base.save_figure` / :func:`~lab.plots.base.png_base64` write it.
Importing this package never changes the matplotlib backend. Power laws get log axes; intervals are
bands or bars; legends say which runs a fit excluded.

* :mod:`lab.plots.loss`: IsoFLOP profiles, loss-vs-compute frontiers, N_opt(C)/D_opt(C) beside
  published laws;
* :mod:`lab.plots.hparams`: batch x LR heatmaps per budget, B_opt/lr_opt laws beside published ones;
* :mod:`lab.plots.mixing`: predicted vs actual per domain, two-domain slices, the optimal mixture;
* :mod:`lab.plots.backtest`: the recipe's interval against the achieved loss, overall and per domain;
* :mod:`lab.plots.compare`: two ladders' effective compute multiplier and overlaid IsoFLOP profiles.
"""

from lab.plots.backtest import plot_backtest
from lab.plots.base import figure_of, png_base64, save_figure
from lab.plots.compare import plot_multiplier, plot_profiles_overlay
from lab.plots.hparams import plot_hparam_heatmaps, plot_hparam_laws
from lab.plots.loss import plot_frontier, plot_isoflops, plot_optimal, save_plots
from lab.plots.mixing import plot_optimum, plot_pred_vs_actual, plot_slices, save_mixing_plots

__all__ = [
    "figure_of", "png_base64", "save_figure", "plot_backtest", "plot_hparam_heatmaps", "plot_hparam_laws",
    "plot_frontier", "plot_isoflops", "plot_optimal", "save_plots", "plot_optimum", "plot_pred_vs_actual",
    "plot_slices", "save_mixing_plots", "plot_multiplier", "plot_profiles_overlay",
]
