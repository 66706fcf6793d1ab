"""The back-test in one figure: each row (overall, then each validation domain) shows the recipe's
95% interval as a bar and the achieved loss of every seed of the full-size run, all relative to the
prediction, so rows with different losses share one axis and a miss is visible at a glance."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from lab.plots.base import new_ax


def _rows(bt: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("overall", bt["overall"])] + sorted((bt.get("domains") or {}).items())


def _rel(v: float | None, pred: float) -> float:
    return np.nan if v is None else 100 * (v / pred - 1)


def plot_backtest(bt: Mapping[str, Any], ax=None, seeds: Sequence[Mapping[str, Any]] | None = None):
    """``bt`` as :func:`lab.backtest.compare` writes it (``overall`` and ``domains``, each with
    ``predicted``, ``interval``, ``achieved``); ``seeds``: the other seeds' back-tests, drawn as dots.

    x is the loss relative to the prediction in %: the bar is the interval, the star the mean achieved
    loss over the seeds (the prediction is of the expected loss), dots each seed. Each star is labelled
    with the error as the back-test tables state it, predicted / achieved - 1 (the opposite sign).
    """
    rows = _rows(bt)
    ax = new_ax(ax, (6.8, 0.45 * len(rows) + 1.6))
    all_bts = [bt] + list(seeds or [])
    for i, (name, r) in enumerate(rows):
        pred = r["predicted"]
        lo, hi = (r.get("interval") or [None, None])[:2]
        if lo is not None and hi is not None:
            ax.plot([_rel(lo, pred), _rel(hi, pred)], [i, i], color="C0", lw=5, alpha=0.35, solid_capstyle="butt",
                    label="95% interval" if i == 0 else None)
        got = [(b["overall"] if name == "overall" else (b.get("domains") or {}).get(name, {})).get("achieved")
               for b in all_bts]
        got = [g for g in got if g is not None]
        ax.scatter([_rel(g, pred) for g in got], [i] * len(got), s=14, color="0.3", zorder=3,
                   label="each seed" if i == 0 and len(got) > 1 else None)
        mean = float(np.mean(got)) if got else None
        ax.scatter([_rel(mean, pred)], [i], marker="*", s=110, color="C3", zorder=4,
                   label="achieved (seed mean)" if i == 0 else None)
        if mean is not None:  # the label is the error as the tables give it: predicted / achieved - 1
            ax.annotate(f"error {100 * (pred / mean - 1):+.2f}%", (_rel(mean, pred), i), xytext=(6, 4),
                        textcoords="offset points", fontsize=7)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([n for n, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("achieved loss relative to the prediction (%)  [right of 0: the run did worse]")
    o = bt["overall"]
    ax.set_title(f"back-test: predicted {o['predicted']:.4f}, achieved {o['achieved']:.4f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax
