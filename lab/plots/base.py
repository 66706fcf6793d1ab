"""What every figure shares: axes on demand, interval bands, log-log finishing, the excluded-runs
legend entry, and saving.

Nothing here (or anywhere in :mod:`lab.plots`) calls ``matplotlib.use``: the backend is the caller's
choice, so figures show inline in Jupyter, and a headless process gets matplotlib's own fallback
(Agg) when no display is there.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

FORMATS = ("png", "svg")


def new_ax(ax=None, size: tuple[float, float] = (6.4, 4.4)):
    """``ax`` itself, or the axes of a new figure of ``size`` inches."""
    if ax is None:
        _, ax = plt.subplots(figsize=size)
    return ax


def band(ax, x: np.ndarray, draws: np.ndarray, color: str, level: float = 0.95, label: str | None = None) -> None:
    """Shade the central ``level`` band of ``draws`` (K, len(x)) when there are 2 or more finite draws."""
    M = np.asarray(draws, float)
    if M.ndim != 2 or M.shape[1] != len(x) or np.sum(np.all(np.isfinite(M), axis=1)) < 2:
        return
    q = (1 - level) / 2
    lo, hi = np.nanquantile(M, [q, 1 - q], axis=0)
    ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0, label=label)


def finish_loglog(axes_labels: Iterable[tuple[Any, str]], legend_size: int, xlabel: str = "C (training FLOPs)") -> None:
    """Log-log axes with their y labels and legends (power laws are straight lines there)."""
    for ax, what in axes_labels:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(what)
        ax.legend(fontsize=legend_size)
        tidy_log_axis(ax, "x")
        tidy_log_axis(ax, "y")


def tidy_log_axis(ax, which: str = "x") -> None:
    """Readable labels on a log axis: under ~2.5 decades minor ticks (labelled) only at 2 and 5 x 10^k,
    beyond that no minor labels (matplotlib's defaults collide on a narrow log axis)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    if lo <= 0 or (ax.get_xscale() if which == "x" else ax.get_yscale()) != "log":
        return
    if hi / lo < 10 ** 2.5:
        axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        axis.set_minor_formatter(FuncFormatter(_mantissa_label))
    else:
        axis.set_minor_formatter(NullFormatter())


def _mantissa_label(v: float, _pos=None) -> str:
    """'2x10^11' in mathtext, as matplotlib writes its major log labels."""
    if v <= 0:
        return ""
    e = int(np.floor(np.log10(v) + 1e-9))
    m = v / 10 ** e
    return f"${m:.0f}\\times10^{{{e}}}$"


def excluded_text(dropped: Sequence[dict[str, Any]] | None, limit: int = 2) -> str | None:
    """'k runs excluded: reason (n), ...' for a fit's ``diagnostics["dropped"]``, or None when none were."""
    if not dropped:
        return None
    counts: dict[str, int] = {}
    for d in dropped:
        reason = str(d.get("reason", "?"))
        counts[reason] = counts.get(reason, 0) + 1
    parts = [f"{r} ({n})" for r, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    more = f"; +{len(parts) - limit} more reasons" if len(parts) > limit else ""
    return f"{len(dropped)} run(s) excluded: " + "; ".join(parts[:limit]) + more


def note_excluded(ax, dropped: Sequence[dict[str, Any]] | None) -> None:
    """Add a legend-only entry saying which runs the fit left out (and why); nothing when none were."""
    text = excluded_text(dropped)
    if text:
        ax.add_line(Line2D([], [], ls="none", marker="x", color="0.5", label=_wrap(text)))


def _wrap(text: str, width: int = 60) -> str:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return "\n".join(lines + [cur])


def save_figure(fig, out_dir: str | Path, stem: str, formats: Sequence[str] = FORMATS, close: bool = True) -> list[Path]:
    """Write ``fig`` as ``<out_dir>/<stem>.<fmt>`` for each format; the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        path = out / f"{stem}.{ext}"
        fig.savefig(path, dpi=130, bbox_inches="tight")
        paths.append(path)
    if close:
        plt.close(fig)
    return paths


def png_base64(fig, close: bool = True, dpi: int = 110) -> str:
    """The figure as a base64 PNG (for a self-contained HTML page)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def figure_of(obj) -> Any:
    """The Figure behind what a plot function returned (an Axes, an array of Axes or a Figure)."""
    if hasattr(obj, "savefig"):
        return obj
    if hasattr(obj, "figure"):
        return obj.figure
    return np.asarray(obj, dtype=object).ravel()[0].figure
