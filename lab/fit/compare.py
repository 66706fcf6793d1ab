"""Comparing two ladders: the effective compute multiplier of ladder B over ladder A.

Two IsoFLOP ladders (two mixtures, architectures, tokenizers...) are compared by how much compute
ladder A would need to reach the compute-optimal loss ladder B reaches at budget C:

    k(C) = C_A(L*_B(C)) / C

where ``L*`` is a ladder's compute-optimal loss, read off its IsoFLOP profile minima (Chinchilla
approach 2, :func:`lab.fit.loss.chinchilla.approach2`; Hoffmann et al. 2022, arXiv:2203.15556), and
``C_A`` is the inverse of A's. ``k > 1``: B is better (it reaches that loss with 1/k of A's compute).
This is the "effective compute" or "compute multiplier" reading used to compare recipes.

Two readings are given:

* **per budget of B**: B's measured minimum at C, inverted through A's *measured* minima rather than
  a fitted law: ln C is interpolated piecewise-linearly against ln(L* - E_A) between A's minima, and
  only beyond them extrapolated with the end segment's slope (the row is ``extrapolated``). E_A is
  A's fitted irreducible loss when A's frontier has one (below), else 0 (plain log-log). Subtracting
  it straightens the curve: on a Chinchilla law the compute-optimal loss is exactly E + K C^-alpha_C,
  so ln(L* - E) is linear in ln C and the interpolation exact, while in ln L* the curve bends and
  chords between decade-spaced budgets misread k = 2 as 2.24-2.26, extrapolation as 1.65 (E = 1.2,
  the law of tests/test_compare.py).
* **at a target C** (default 10x the largest budget both ladders share), beyond both ladders: from
  each ladder's frontier fitted to its minima. With at least ``MIN_FLOOR_MINIMA`` minima the frontier
  has an irreducible term, ``L*(C) = E + (C_c / C)^alpha_C`` with E in [0, min L*) (least squares in
  ln L*); with fewer, or where the best E runs to the top of that range (the minima do not place it),
  the pure power law ``L*(C) = (C_c / C)^alpha_C`` (approach 2's own frontier). ``forms`` and
  ``notes`` say which was used and why; ``alternative`` holds the pure power laws' k beside a floor's.

Why the target stays fragile: ``d ln k = d ln L / s`` with ``s = alpha_C (L* - E) / L*`` the
frontier's local slope in log-log. Near a floor s is small (0.006 at 1e20 FLOPs for E = 1.2), so
0.1% in loss is about 20% in compute. At the target k rests on the two fitted floors, which 4 minima
with 0.2% noise per run place only to several 0.1% of L*, so the interval there can run to inf. The
per-budget rows share the sensitivity but not the extrapolation: on that law with 0.2% noise per run
(7 runs a budget) their rms error over 20 seeds is 6-24% in k (36% where extrapolated), against 4-20%
for B's minimum alone read through A's true frontier; without noise they recover k = 2 to 0.1%.
The verdict is ``weak`` when the target's interval spans more than a factor ``WIDE_FACTOR``, or when
the pure power laws' k lies outside the floor form's interval (the forms disagree by more than it).

Conventions: C in FLOPs exactly as the input tables count them (both ladders should use the same
convention; a note says when they do not), losses in nats/token (the lab's ``loss_val``) unless
another loss column is named. Losses in nats/token are only comparable between ladders of one
tokenizer: with different tokenizers compare bits per byte (``loss="bpb_val"``).

Intervals: approach 2 reports no bootstrap spread of its profile minima, so each ladder's runs are
resampled with replacement within their budgets (approach 2's own scheme) ``bootstrap`` times and
approach 2 refitted to each resample (bootstrap=0); each drawn minimum's departure from the fitted
one is scaled by sqrt(n / (n - 3)) for n runs a budget, the parabola's degrees-of-freedom correction
(:func:`_minima_draws`). A draw's profile minima give its per-budget
readings (A's drawn minima, and E_A refitted to them, invert B's drawn minimum) and, refitted in the
form chosen for the point estimate, its frontiers. The ladders are independent, so draw i of A is
paired with draw i of B; what a draw cannot give (a budget without an interior minimum in that
resample, too few minima for a frontier) is NaN and left out, and intervals are percentiles over
the rest. Where B's loss lies below A's fitted floor A never reaches it: k = inf, counted as such.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lab.fit.engine.bootstrap import bootstrap_weights, interval
from lab.fit.engine.errors import FitError, quiet, require
from lab.fit.engine.points import ONE_SETTING, Points, load_points, read_table
from lab.fit.engine.result import FitResult, to_jsonable
from lab.fit.loss.chinchilla import approach2

# Two budgets are one when their C differ by less than this factor: approach 2's grouping tolerance.
RANGE_TOL = 1.1
# A frontier that misplaces its own budgets' minima by more than this factor in compute (see
# _frontier_out) makes k uncertain by about that factor beyond its interval: our choice, 20%.
MISREAD_TOL = 1.2
# The floor E adds a third parameter to the frontier; with 3 minima it would pass through them all,
# leaving no check, so it needs at least 4.
MIN_FLOOR_MINIMA = 4
E_TOP = 0.999    # the floor is searched in [0, E_TOP * min L*]: a best E at the top is not placed
E_GRID = 101     # coarse grid of E over that range, then E_ZOOMS refinements of 21 points, each 10x finer
E_ZOOMS = 3
GN_STEPS = 4  # Gauss-Newton steps of the frontier's line at each trial E (see _floor_sse)
WIDE_FACTOR = 2.0  # a target interval with hi / lo above this does not pin k (our choice)
CURVE_POINTS = 40  # points of the frontier-based k(C) curve (log-spaced), for plots
UNIT_SETTINGS = ("tokenizer", "vocab_size")  # a difference here changes what a nat/token means
LETTERS = ("A", "B")
FORM_TEXT = {"floor": "L* = E + (C_c / C)^alpha_C", "power": "L* = (C_c / C)^alpha_C"}


@dataclass
class BudgetMultiplier:
    """The multiplier at one budget of ladder B, from B's measured IsoFLOP minimum there.

    ``C`` in FLOPs (the budget's geometric-mean C), ``loss_B`` B's profile minimum (nats/token),
    ``k`` = C_A(loss_B) / C read through A's measured minima, and its bootstrap ``interval``; NaN
    when B's profile has no interior minimum (``note`` says why). ``extrapolated``: loss_B lies
    outside the range of A's minima, so k comes from the end segment's slope (``note`` says so).
    """

    C: float
    loss_B: float
    k: float
    interval: tuple[float, float]
    extrapolated: bool = False
    note: str = ""


@dataclass
class LadderComparison:
    """Effective compute multiplier of ladder B over ladder A (see the module docstring).

    ``multiplier`` at ``target_flops`` (FLOPs) from both frontiers, with its ``interval`` at
    ``level``; ``forms`` the frontier form of each ladder (``"floor"``: E + (C_c / C)^alpha_C,
    ``"power"``: (C_c / C)^alpha_C); ``alternative`` the target's k and interval from pure power
    laws when a floor was used (empty otherwise); ``budgets`` one :class:`BudgetMultiplier` per
    budget of B; ``frontier_a`` / ``frontier_b`` each ladder's ``E``, ``C_c`` (FLOPs), ``alpha_C``,
    budget range of its minima ``C_min``, ``C_max``, ``misread``, ``n_minima`` and its pure power
    law's ``power_C_c``, ``power_alpha_C``; ``curve`` the frontier-based k(C) (``C``, ``k``, ``lo``,
    ``hi``) from the smallest common budget to the target; ``verdict`` (``ok``/``weak``/``ill-posed``)
    with ``reasons``; ``n_draws`` the paired bootstrap draws where both frontiers fitted. ``fits``
    holds the two approach 2 results (for :func:`lab.plots.compare.plot_profiles_overlay`); it is not
    serialised.
    """

    names: tuple[str, str]
    level: float
    target_flops: float
    multiplier: float
    interval: tuple[float, float]
    budgets: list[BudgetMultiplier]
    frontier_a: dict[str, float]
    frontier_b: dict[str, float]
    curve: dict[str, list[float]]
    verdict: str = "ok"
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_draws: int = 0
    forms: tuple[str, str] = ("power", "power")
    alternative: dict[str, Any] = field(default_factory=dict)
    fits: tuple[FitResult, FitResult] | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict (NaN and inf -> None); everything but ``fits``."""
        out = {k: getattr(self, k) for k in ("names", "level", "target_flops", "multiplier", "interval",
                                             "frontier_a", "frontier_b", "curve", "verdict", "reasons",
                                             "notes", "n_draws", "forms", "alternative")}
        out["budgets"] = [vars(b) for b in self.budgets]
        return to_jsonable(out)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LadderComparison:
        """Inverse of :meth:`to_json` (None -> NaN in numeric fields; ``fits`` is None)."""
        rows = [BudgetMultiplier(_num(b["C"]), _num(b["loss_B"]), _num(b["k"]), _pair(b["interval"]),
                                 bool(b["extrapolated"]), b.get("note", "")) for b in d["budgets"]]
        alt = d.get("alternative") or {}
        alt = {"form": alt["form"], "multiplier": _num(alt["multiplier"]), "interval": _pair(alt["interval"])} if alt else {}
        return cls(tuple(d["names"]), float(d["level"]), _num(d["target_flops"]), _num(d["multiplier"]),
                   _pair(d["interval"]), rows, _nums(d["frontier_a"]), _nums(d["frontier_b"]),
                   {k: [_num(x) for x in v] for k, v in d["curve"].items()}, d["verdict"], list(d["reasons"]),
                   list(d["notes"]), int(d["n_draws"]), tuple(d.get("forms", ("power", "power"))), alt)

    def report(self) -> str:
        """The comparison for people: the headline multiplier, per-budget rows, frontiers, verdict, notes."""
        a, b = self.names
        lo, hi = self.interval
        lines = [f"== effective compute multiplier of {b} over {a}: k(C) = C_{a}(L*_{b}(C)) / C  (k > 1: {b} better)",
                 (f"  at C = {_fmt(self.target_flops)} (frontiers: {a} {self.forms[0]}, {b} {self.forms[1]}): "
                  f"k = {_fmt(self.multiplier)}  [{_fmt(lo)}, {_fmt(hi)}]  ({self.level:.0%}, {self.n_draws} "
                  "paired bootstrap draws)")]
        if self.alternative:
            alo, ahi = self.alternative["interval"]
            lines.append(f"    with pure power laws instead: k = {_fmt(self.alternative['multiplier'])}  "
                         f"[{_fmt(alo)}, {_fmt(ahi)}]")
        lines.append(f"  per budget of {b} (its measured minimum through {a}'s measured minima):")
        for r in self.budgets:
            flag = f"  (beyond {a}'s minima: extrapolated)" if r.extrapolated else ""
            note = "  " + r.note if r.note and not r.extrapolated else ""
            lines.append(f"    C = {_fmt(r.C):>10}  L*_{b} = {_fmt(r.loss_B):>7}  k = {_fmt(r.k)}  "
                         f"[{_fmt(r.interval[0])}, {_fmt(r.interval[1])}]{flag}{note}")
        for name, form, f in ((a, self.forms[0], self.frontier_a), (b, self.forms[1], self.frontier_b)):
            head = f"{_fmt(f['E'])} + " if form == "floor" else ""
            lines.append(f"  frontier {name}: L* = {head}({_fmt(f['C_c'])} / C)^{_fmt(f['alpha_C'])}, "
                         f"fitted to minima over C = {_fmt(f['C_min'])} .. {_fmt(f['C_max'])}; misplaces them "
                         f"by up to {_fmt(f['misread'])}x in compute")
        lines.append(f"  verdict: {self.verdict}" + "".join(f"\n    - {r}" for r in self.reasons))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """A small HTML table for Jupyter: one row per budget of B, then the target row and the verdict."""
        a, b = self.names
        head = "".join(f"<th>{html.escape(h)}</th>" for h in ("C (FLOPs)", f"L*_{b}", "k", f"{self.level:.0%} interval", ""))
        rows = [_html_row(r.C, r.loss_B, r.k, r.interval, "extrapolated" if r.extrapolated else r.note)
                for r in self.budgets]
        rows.append(_html_row(self.target_flops, math.nan, self.multiplier, self.interval,
                              f"<b>target (frontiers: {html.escape(' / '.join(self.forms))})</b>", escape=False))
        caption = html.escape(f"effective compute multiplier of {b} over {a} (k > 1: {b} better); verdict: {self.verdict}")
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in self.reasons)
        return (f"<table><caption>{caption}</caption><tr>{head}</tr>{''.join(rows)}</table>"
                + (f"<ul>{reasons}</ul>" if reasons else ""))


def _html_row(C: float, loss: float, k: float, iv: Sequence[float], note: str, escape: bool = True) -> str:
    cells = [_fmt(C), _fmt(loss) if math.isfinite(loss) else "", _fmt(k), f"[{_fmt(iv[0])}, {_fmt(iv[1])}]"]
    cells = [html.escape(c) for c in cells] + [html.escape(note) if escape else note]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _fmt(v: Any) -> str:
    """A number for people: 4 significant digits, "inf" for an unbounded end, "-" when missing."""
    if v is None or math.isnan(float(v)):
        return "-"
    return f"{float(v):.4g}"


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def _nums(d: dict[str, Any]) -> dict[str, float]:
    return {k: _num(v) for k, v in d.items()}


def _pair(v: Sequence[Any]) -> tuple[float, float]:
    return (_num(v[0]), _num(v[1]))


def _interval(samples: Any, level: float) -> tuple[float, float]:
    """Percentile interval over the draws that are not NaN; +inf draws (A never reaches B's loss) count.

    Without infinities this is the engine's interval; with them, percentiles of the sorted draws
    without interpolation (an interpolated end next to inf is undefined), so an end can be inf.
    """
    s = np.asarray(samples, float).ravel()
    s = s[~np.isnan(s)]
    if not np.isinf(s).any():
        return interval(s, level)
    q = (1 - level) / 2
    lo, hi = np.quantile(s, [q, 1 - q], method="inverted_cdf")
    return (float(lo), float(hi))


# ----------------------------------------------------------------------------------------------
# frontier arithmetic (C in FLOPs, L in the table's loss unit)
# ----------------------------------------------------------------------------------------------

def frontier_loss(C: Any, C_c: Any, alpha_C: Any, E: Any = 0.0) -> np.ndarray:
    """``L*(C) = E + (C_c / C)^alpha_C`` (E = 0: the pure power law), broadcasting."""
    with np.errstate(all="ignore"):
        return np.asarray(E, float) + np.exp(np.asarray(alpha_C) * (np.log(C_c) - np.log(C)))


def compute_for_loss(L: Any, C_c: Any, alpha_C: Any, E: Any = 0.0) -> np.ndarray:
    """The inverse of :func:`frontier_loss`: ``C(L) = C_c (L - E)^(-1 / alpha_C)``, broadcasting.

    inf where L <= E: a loss at or below the floor is never reached.
    """
    with np.errstate(all="ignore"):
        gap = np.asarray(L, float) - np.asarray(E, float)
        C = np.exp(np.log(C_c) - np.log(gap) / np.asarray(alpha_C))
        return np.where(gap > 0, C, np.where(np.isnan(gap), np.nan, np.inf))


def _line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares line ``y = c + s x`` along the last axis (w = 0 leaves a point out): (c, s)."""
    sw = w.sum(-1)
    mx, my = (w * x).sum(-1) / sw, (w * y).sum(-1) / sw
    dx = x - mx[..., None]
    s = (w * dx * (y - my[..., None])).sum(-1) / (w * dx * dx).sum(-1)
    return my - s * mx, s


def _floor_sse(lnC: np.ndarray, L: np.ndarray, E: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For trial floors E (K, M) and minima L (K, G; NaN = missing): the least-squares fit in ln L of
    ``ln(L* - E) = c + s ln C`` and its sum of squared residuals in ln L, each (K, M).

    Gauss-Newton from the line of ln(L - E) on ln C: each step is a line of z + e / u on ln C weighted
    by u^2, with z = c + s ln C, e the residual in ln L and u = (L* - E) / L* = d ln L* / dz. The first
    weights ((L - E) / L)^2 already undo most of how ln(L - E) magnifies the noise near the floor;
    ``GN_STEPS`` steps (each kept only where it lowers the SSE) make the fit exact in ln L.
    """
    ok = np.isfinite(L)[:, None, :]
    Y = np.where(ok, L[:, None, :], 1.0)
    R = np.where(ok, Y - E[..., None], 1.0)
    x, lnY, E_ = np.broadcast_to(lnC, R.shape), np.log(Y), E[..., None]

    def sse(c, s):
        return np.where(ok, (lnY - np.log(E_ + np.exp(c[..., None] + s[..., None] * x))) ** 2, 0.0).sum(-1)

    c, s = _line(x, np.log(R), np.where(ok, (R / Y) ** 2, 0.0))
    best = sse(c, s)
    for _ in range(GN_STEPS):
        z = c[..., None] + s[..., None] * x
        pred = E_ + np.exp(z)
        u = np.exp(z) / pred
        c2, s2 = _line(x, z + (lnY - np.log(pred)) / u, np.where(ok, u * u, 0.0))
        new = sse(c2, s2)
        take = new < best
        c, s, best = np.where(take, c2, c), np.where(take, s2, s), np.where(take, new, best)
    return c, s, best


@quiet
def fit_frontier(lnC: Any, L: Any, floor: bool = True) -> dict[str, np.ndarray]:
    """Least squares in ln L of the frontier ``L*(C) = E + (C_c / C)^alpha_C`` to profile minima.

    ``lnC`` (G,): ln of each budget's C (FLOPs); ``L`` (K, G) or (G,): the minima, one row per set
    (a bootstrap draw), NaN where a budget has none. ``floor=False``: E = 0, the pure power law (the
    line in log-log approach 2 fits). ``floor=True``: E is profiled over [0, E_TOP min L] on a
    grid, refined around the best point ``E_ZOOMS`` times; for each E, c and alpha_C by least squares
    in ln L (:func:`_floor_sse`). Rows with too few minima (3 for the power law, ``MIN_FLOOR_MINIMA`` with a
    floor) are NaN. Returns arrays (one per row) ``E``, ``alpha_C``, ``C_c`` (FLOPs) and ``pinned``
    (the best E is at the top of its range: the minima do not place E).
    """
    L = np.atleast_2d(np.asarray(L, float))
    lnC, rows = np.asarray(lnC, float), np.arange(len(L))
    top = E_TOP * np.min(np.where(np.isfinite(L), L, np.inf), 1)
    frac = np.linspace(0.0, 1.0, E_GRID if floor else 1)[None, :].repeat(len(L), 0)
    step = 1.0 / (E_GRID - 1)
    for r in range(E_ZOOMS + 1 if floor else 1):
        c, s, sse = _floor_sse(lnC, L, frac * top[:, None])
        j = np.argmin(np.where(np.isfinite(sse), sse, np.inf), 1)
        best = frac[rows, j]
        frac = np.clip(best[:, None] + np.linspace(-step, step, 21)[None, :], 0.0, 1.0)
        step /= 10
    alpha = -s[rows, j]
    out = {"E": best * top if floor else np.zeros(len(L)), "alpha_C": alpha, "C_c": np.exp(c[rows, j] / alpha)}
    bad = np.isfinite(L).sum(1) < (MIN_FLOOR_MINIMA if floor else 3)
    out = {k: np.where(bad, np.nan, v) for k, v in out.items()}
    out["pinned"] = floor & (best >= 1.0) & ~bad
    return out


def _choose_form(lnC: np.ndarray, L: np.ndarray) -> tuple[str, str]:
    """The frontier form for one ladder's minima, ``"floor"`` or ``"power"``, and why."""
    n = int(np.isfinite(L).sum())
    if n < MIN_FLOOR_MINIMA:
        return "power", (f"only {n} profile minima: a floor E needs at least {MIN_FLOOR_MINIMA} (it adds a "
                         "third parameter), so the pure power law (no floor to bend toward)")
    f = fit_frontier(lnC, L, floor=True)
    if f["pinned"][0]:
        return "power", (f"the floor fit to its {n} minima runs E up to the lowest of them: they do not place "
                         "E, so the pure power law")
    if not f["alpha_C"][0] > 0:
        return "power", "the floor fit does not fall with compute, so the pure power law"
    return "floor", f"E = {f['E'][0]:.4g} fitted to its {n} profile minima (E in [0, min L*))"


# ----------------------------------------------------------------------------------------------
# one ladder: its minima, their bootstrap draws, its frontiers
# ----------------------------------------------------------------------------------------------

@dataclass
class _Ladder:
    """One ladder's approach 2 fit, its profile minima and their bootstrap draws, and its frontiers.

    ``lnC`` (G,) ln C of each budget; ``L`` (G,) the minima (NaN: no interior minimum); ``Lb`` (K, G)
    each draw's minima; ``form``/``why`` the frontier form used at the target; ``fit`` / ``fit_b``
    that form fitted to ``L`` (arrays of length 1) and to each draw; ``power`` / ``power_b`` the pure
    power law likewise.
    """

    res: FitResult
    lnC: np.ndarray
    L: np.ndarray
    Lb: np.ndarray
    form: str
    why: str
    fit: dict[str, np.ndarray]
    fit_b: dict[str, np.ndarray]
    power: dict[str, np.ndarray]
    power_b: dict[str, np.ndarray]


def _take(pts: Points, idx: np.ndarray) -> Points:
    """Rows ``idx`` of ``pts`` (repeats allowed: a bootstrap resample)."""
    budget, run = (None if a is None else a[idx] for a in (pts.budget, pts.run))
    return dataclasses.replace(pts, N=pts.N[idx], D=pts.D[idx], C=pts.C[idx], loss=pts.loss[idx],
                               ids=[pts.ids[i] for i in idx], budget=budget, run=run, dropped=[], notes=[])


def _minima_draws(res: FitResult, lnC: np.ndarray, L: np.ndarray, K: int, rng: np.random.Generator) -> np.ndarray:
    """(K, G) profile minima of ``K`` resamples of the fit's runs (within budgets), approach 2 refitted.

    A draw's budget is matched to the fit's by C (within ``RANGE_TOL``); a budget with no interior
    minimum in a draw, or a draw approach 2 refuses, is NaN. Each draw's departure from the fitted
    minimum ``L`` is scaled by sqrt(n / (n - 3)) for a budget of n > 3 runs: resampling n runs
    through a 3-parameter parabola sees the residual variance times (n - 3) / n (the usual
    degrees-of-freedom correction). On tests/test_compare.py's law with E = 1.2, 0.2% noise and 7 runs
    a budget, the per-budget 95% intervals covered k in 85-100% of 20 seeds without it, 90-100% of 30 with it.
    """
    pts, groups = res.extra["points"], res.extra["groups"]
    out = np.full((K, len(lnC)), np.nan)
    W = bootstrap_weights(len(pts), K, rng, groups).astype(int)
    for i in range(K):
        try:
            r = approach2(_take(pts, np.repeat(np.arange(len(pts)), W[i])), bootstrap=0, holdout=False)
        except FitError:
            continue
        for p in r.diagnostics["profiles"]:
            g = int(np.argmin(np.abs(lnC - math.log(p["C"]))))
            if p["interior_min"] and abs(lnC[g] - math.log(p["C"])) < math.log(RANGE_TOL):
                out[i, g] = p["loss_opt"]
    n = np.array([np.sum(groups == g) for g in range(len(lnC))], float)
    return L + (out - L) * np.sqrt(np.where(n > 3, n / np.maximum(n - 3, 1), 1.0))


def _valid(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Frontier fits with those that do not fall with compute (alpha_C <= 0) set to NaN."""
    bad = ~(f["alpha_C"] > 0)
    return {k: (v if k == "pinned" else np.where(bad, np.nan, v)) for k, v in f.items()}


def _ladder(res: FitResult, K: int, rng: np.random.Generator) -> _Ladder:
    """A ladder's minima, ``K`` bootstrap draws of them, its frontier form and its fits (see :class:`_Ladder`)."""
    prof = res.diagnostics["profiles"]
    lnC = np.log([float(p["C"]) for p in prof])
    L = np.array([p["loss_opt"] if p["interior_min"] else np.nan for p in prof], float)
    Lb = _minima_draws(res, lnC, L, K, rng) if K > 0 else np.full((0, len(lnC)), np.nan)
    form, why = _choose_form(lnC, L)
    floor = form == "floor"
    return _Ladder(res, lnC, L, Lb, form, why, fit_frontier(lnC, L, floor), _valid(fit_frontier(lnC, Lb, floor)),
                   fit_frontier(lnC, L, False), _valid(fit_frontier(lnC, Lb, False)))


def _frontier_out(lad: _Ladder) -> dict[str, float]:
    """The chosen frontier's ``E``, ``C_c``, ``alpha_C``, the span of its minima, ``misread``, ``n_minima``,
    and the pure power law's ``power_C_c``, ``power_alpha_C``.

    ``misread`` = max over the ladder's own minima of the factor by which the frontier, inverted,
    misplaces that budget's compute (C(L_i) / C_i, or its inverse): 1 when the minima lie on it.
    Because ``d ln k = d ln L / s`` (module docstring) a small misfit in loss is a large one in compute;
    a floor that a pure power law lacks bends the minima away from it and shows here.
    """
    f = {k: float(lad.fit[k][0]) for k in ("E", "C_c", "alpha_C")}
    ok = np.isfinite(lad.L)
    C = np.exp(lad.lnC[ok])
    self_k = compute_for_loss(lad.L[ok], f["C_c"], f["alpha_C"], f["E"]) / C
    with np.errstate(all="ignore"):
        misread = float(np.exp(np.max(np.abs(np.log(self_k)))))
    return {**f, "C_min": float(C.min()), "C_max": float(C.max()), "misread": misread, "n_minima": int(ok.sum()),
            "power_C_c": float(lad.power["C_c"][0]), "power_alpha_C": float(lad.power["alpha_C"][0])}


def _frontier_problem(f: dict[str, float], name: str) -> str | None:
    """Why a frontier cannot be inverted (None when it can)."""
    if not (math.isfinite(f["C_c"]) and math.isfinite(f["alpha_C"])):
        return f"{name}'s frontier fit failed (C_c = {f['C_c']}, alpha_C = {f['alpha_C']})"
    if f["alpha_C"] <= 0:
        return f"{name}'s frontier does not fall with compute (alpha_C = {f['alpha_C']:.3g} <= 0)"
    return None


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------

def _label(i: int, names: Sequence[str]) -> str:
    """How messages name ladder i: "ladder A", or "ladder A (baseline)" when it has its own name."""
    letter = LETTERS[i]
    return f"ladder {letter}" if names[i] == letter else f"ladder {letter} ({names[i]})"


def _ladder_points(source: Any, label: str, loss: str | None) -> tuple[Points, dict[str, list[str]]]:
    """Points of one ladder and its tokenizer/seq_len/corpus values (empty when given as Points).
    A WSD run's cooldown branches are finished schedules at smaller budgets, so they count (a study's
    ladder reaches its smaller budgets only through them)."""
    if isinstance(source, Points):
        return source, {}
    try:
        df, where = read_table(source)
        pts = load_points(df, loss=loss, cooldowns=True)
    except FitError as e:
        raise FitError(f"{label}: {e}") from e
    pts.source = where
    settings = {c: sorted(map(str, df[c].dropna().unique())) for c in ONE_SETTING if c in df.columns}
    return pts, settings


def _fit(pts: Points, label: str, **kw) -> FitResult:
    try:
        return approach2(pts, **kw)
    except FitError as e:
        raise FitError(f"{label}: {e}") from e


def _common_range(fa: FitResult, fb: FitResult, labels: Sequence[str]) -> tuple[float, float]:
    """The span of compute both ladders' budgets cover; FitError when they do not overlap."""
    ca = [p["C"] for p in fa.diagnostics["profiles"]]
    cb = [p["C"] for p in fb.diagnostics["profiles"]]
    lo, hi = max(min(ca), min(cb)), min(max(ca), max(cb))
    require(lo <= hi * RANGE_TOL,
            f"no overlap in compute: {labels[0]} spans C = {min(ca):.3g}..{max(ca):.3g}, {labels[1]} "
            f"C = {min(cb):.3g}..{max(cb):.3g}; the multiplier compares ladders over budgets they share")
    return min(lo, hi), hi


def _setting_notes(sa: dict[str, list[str]], sb: dict[str, list[str]], names: Sequence[str],
                   loss_col: str) -> tuple[list[str], list[str]]:
    """(reasons for a weak verdict, notes) from the ladders' tokenizer, seq_len and corpus."""
    reasons, notes = [], []
    for col in ONE_SETTING:
        if col in sa and col in sb and sa[col] != sb[col]:
            said = f"{col} differs ({names[0]}: {', '.join(sa[col])}; {names[1]}: {', '.join(sb[col])})"
            if col in UNIT_SETTINGS and not loss_col.startswith("bpb"):
                reasons.append(f"{said}: losses in nats/token are not comparable across tokenizers; "
                               "compare bits per byte (loss='bpb_val')")
            elif col == "seq_len":
                notes.append(f"{said}: the losses are at different context lengths")
            elif col == "corpus":
                notes.append(f"{said}: each ladder's loss is on its own validation set")
    return reasons, notes


# ----------------------------------------------------------------------------------------------
# the multiplier
# ----------------------------------------------------------------------------------------------

def _read_minima(L: float, lnC: np.ndarray, LA: np.ndarray, E: float) -> tuple[float, bool]:
    """ln C at which ladder A's measured minima (``lnC``, ``LA``; NaN = none) reach loss ``L``.

    ln C is interpolated piecewise-linearly against ln(LA - E) between A's minima and, beyond them,
    extrapolated with the end segment's slope. Returns (ln C, extrapolated); (inf, True) where
    L <= E (below A's floor: never reached); NaN with fewer than 2 usable minima or no L or E.
    """
    ok = np.isfinite(LA) & (LA > E)
    if ok.sum() < 2 or not (math.isfinite(L) and math.isfinite(E)):
        return math.nan, False
    if L <= E:
        return math.inf, True
    x, y = np.log(LA[ok] - E), lnC[ok]
    order = np.argsort(x)
    x, y, t = x[order], y[order], math.log(L - E)
    if x[0] <= t <= x[-1]:
        return float(np.interp(t, x, y)), False
    i, j = (0, 1) if t < x[0] else (-1, -2)
    return float(y[i] + (y[j] - y[i]) / (x[j] - x[i]) * (t - x[i])), True


def _budget_rows(la: _Ladder, lb: _Ladder, level: float, name_a: str) -> list[BudgetMultiplier]:
    """One row per budget of B: its measured minimum read through A's measured minima (:func:`_read_minima`).

    The interval: draw i reads B's drawn minimum at that budget through A's drawn minima, with A's
    floor refitted to them (0 when A's frontier is the pure power law); NaN draws are left out.
    """
    rows = []
    for g, p in enumerate(lb.res.diagnostics["profiles"]):
        C = float(p["C"])
        if not p["interior_min"]:
            rows.append(BudgetMultiplier(C, math.nan, math.nan, (math.nan, math.nan), False,
                                         f"no interior minimum: {p['reason']}"))
            continue
        lnc, ext = _read_minima(lb.L[g], la.lnC, la.L, float(la.fit["E"][0]))
        draws = [_read_minima(lb.Lb[i, g], la.lnC, la.Lb[i], la.fit_b["E"][i])[0] for i in range(len(la.Lb))]
        with np.errstate(over="ignore"):
            k = np.exp(np.array([lnc, *draws], float)) / C
        note = f"beyond {name_a}'s measured minima: extrapolated with the end segment's slope" if ext else ""
        rows.append(BudgetMultiplier(C, float(lb.L[g]), float(k[0]), _interval(k[1:], level), ext, note))
    return rows


def _k_frontiers(C: Any, fa: dict[str, Any], fb: dict[str, Any]) -> np.ndarray:
    """k(C) from both frontiers, C_A(L*_B(C)) / C (dicts of E, alpha_C, C_c; broadcasting)."""
    LB = frontier_loss(C, fb["C_c"], fb["alpha_C"], fb["E"])
    return compute_for_loss(LB, fa["C_c"], fa["alpha_C"], fa["E"]) / np.asarray(C)


def _target(C_t: float, fa: dict, fb: dict, fa_b: dict, fb_b: dict, level: float) -> tuple[float, tuple[float, float]]:
    """k at C_t from the point frontiers, and its interval from the paired draws."""
    return float(_k_frontiers(C_t, fa, fb)[0]), _interval(_k_frontiers(C_t, fa_b, fb_b), level)


def _curve(C0: float, C_t: float, la: _Ladder, lb: _Ladder, level: float) -> dict[str, list[float]]:
    """k(C) from both frontiers on a log grid from ``C0`` to the target, with its percentile band."""
    C = np.geomspace(min(C0, C_t), max(C0, C_t), CURVE_POINTS)
    k = _k_frontiers(C, la.fit, lb.fit)
    fa, fb = ({n: f[n][:, None] for n in ("E", "C_c", "alpha_C")} for f in (la.fit_b, lb.fit_b))
    M = _k_frontiers(C[None, :], fa, fb)
    band = [_interval(M[:, j], level) for j in range(len(C))]
    return {"C": C.tolist(), "k": k.tolist(), "lo": [b[0] for b in band], "hi": [b[1] for b in band]}


def _misread_reason(f: dict[str, float], form: str, label: str) -> str | None:
    """A weak-verdict reason when a frontier misplaces its own minima by more than MISREAD_TOL in compute."""
    if not f["misread"] > MISREAD_TOL:
        return None
    why = ("its minima do not lie on a power law in C (an irreducible loss bends them; with "
           f"{MIN_FLOOR_MINIMA}+ minima a floor would be fitted), so the target's k carries about that factor "
           "beyond its interval, and the per-budget rows, read in plain ln L*, part of it" if form == "power"
           else "its minima do not follow E + (C_c / C)^alpha_C, so the target's k carries about that "
           "factor beyond its interval")
    return (f"{label}'s frontier misplaces its own budgets' minima by up to {f['misread']:.3g}x in compute "
            f"(> {MISREAD_TOL:g}x): {why}")


def _target_reasons(k_iv: tuple[float, float], alt: dict[str, Any], C_t: float) -> list[str]:
    """Weak-verdict reasons about the target's k: indistinguishable from 1, too wide, forms disagreeing."""
    reasons = []
    lo, hi = k_iv
    if not (math.isnan(lo) or math.isnan(hi)):
        if lo <= 1 <= hi:
            reasons.append(f"not distinguishable at C = {C_t:.3g}: the multiplier's interval [{lo:.3g}, {hi:.3g}] spans 1")
        if hi > WIDE_FACTOR * lo:
            reasons.append(f"the target's interval [{lo:.3g}, {hi:.3g}] spans a factor {hi / lo:.3g} (> {WIDE_FACTOR:g}): "
                           "the frontiers do not pin k this far beyond the ladders")
        k_p = alt.get("multiplier", math.nan)
        if math.isfinite(k_p) and not lo <= k_p <= hi:
            reasons.append(f"the two frontier forms disagree at the target: pure power laws give k = {k_p:.3g}, "
                           f"outside the floor form's interval [{lo:.3g}, {hi:.3g}]; k there rests on the fitted floors")
    return reasons


def _health_reasons(lad: _Ladder, label: str) -> list[str]:
    """The ill-posed reasons of a ladder's own approach 2 fit that bear on the comparison.

    With a floor form the power law's parameters (approach 2's alpha_C, C_c, its loss at the target)
    are not used, so only the profiles' reasons count then.
    """
    health = lad.res.diagnostics.get("health", {})
    if health.get("verdict") != "ill-posed":
        return []
    said = [r for r in health.get("reasons", []) if r.startswith("ill-posed")
            and (lad.form == "power" or "IsoFLOP profile" in r)]
    return [f"{label}'s own fit is ill-posed: " + "; ".join(said[:2])] if said else []


def _judge(k_iv: tuple[float, float], alt: dict[str, Any], C_t: float, problems: list[str],
           n_draws: int, K: int, lads: Sequence[_Ladder], frontiers: Sequence[dict[str, float]],
           labels: Sequence[str]) -> tuple[str, list[str]]:
    """The comparison's verdict and its reasons (ill-posed: a frontier failed; weak: see each reason)."""
    if problems:
        return "ill-posed", list(problems)
    reasons = []
    if K == 0:
        reasons.append("no bootstrap (bootstrap=0): the multiplier has no interval")
    elif n_draws < K / 2:
        reasons.append(f"only {n_draws} of {K} paired bootstrap draws usable (failed fits in either ladder)")
    reasons += _target_reasons(k_iv, alt, C_t)
    reasons += [r for f, lad, lab in zip(frontiers, lads, labels) if (r := _misread_reason(f, lad.form, lab))]
    ok = np.isfinite(lads[0].L)
    if np.any(np.diff(lads[0].L[ok]) >= 0):
        reasons.append(f"{labels[0]}'s measured minima do not fall steadily with compute: reading them "
                       "back at a loss is ambiguous")
    for lad, lab in zip(lads, labels):
        reasons += _health_reasons(lad, lab)
    return ("weak" if reasons else "ok"), reasons


def _form_notes(lads: Sequence[_Ladder], labels: Sequence[str], A: dict[str, float], B: dict[str, float],
                C_t: float, k_t: float, alt: dict[str, Any]) -> list[str]:
    """Notes on the frontiers: which form each ladder uses and why, and what the target's k rests on."""
    notes = [f"{lab}'s frontier at the target: {FORM_TEXT[lad.form]}, {lad.why}" for lad, lab in zip(lads, labels)]
    if lads[0].form != lads[1].form:
        notes.append("the two ladders' frontiers have different forms: k at the target mixes them")
    if lads[0].form == "floor":
        notes.append(f"per budget, {labels[0]}'s minima are read in ln(L* - E) with its E = {A['E']:.4g}")
    if alt:
        notes.append(f"with pure power laws instead the target's k would be {alt['multiplier']:.3g} "
                     f"[{alt['interval'][0]:.3g}, {alt['interval'][1]:.3g}]")
    if lads[0].form == lads[1].form == "power" and math.isfinite(B["alpha_C"] / A["alpha_C"]):
        notes.append(f"from the frontiers k grows as C^{B['alpha_C'] / A['alpha_C'] - 1:.3g} "
                     "(alpha_C,B / alpha_C,A - 1): the target's k rests on that ratio; the per-budget "
                     "rows are the measured readings")
    if math.isfinite(k_t):
        notes.append(f"the target C = {C_t:.3g} extrapolates both frontiers; {labels[0]}'s is read at "
                     f"{k_t * C_t:.3g} ({k_t * C_t / A['C_max']:.3g}x its largest budget)")
    elif k_t == math.inf:
        notes.append(f"at the target {labels[1]}'s frontier lies below {labels[0]}'s floor E = {A['E']:.4g}: "
                     f"{labels[0]} never reaches that loss (k = inf)")
    return notes


def _notes(rows: list[BudgetMultiplier], pa: Points, pb: Points, labels: Sequence[str]) -> list[str]:
    """What a reader must know about the inputs and rows: unit conventions, extrapolated or missing budgets."""
    notes = []
    for key in ("C", "loss"):
        if pa.convention.get(key) != pb.convention.get(key):
            notes.append(f"{key} is defined differently: {labels[0]}: {pa.convention.get(key)}; "
                         f"{labels[1]}: {pb.convention.get(key)}")
    return notes + [f"{labels[1]} budget C = {r.C:.3g}: {r.note}" for r in rows if r.note]


def compare_ladders(a: Any, b: Any, target_flops: float | None = None, bootstrap: int = 200,
                    level: float = 0.95, seed: int = 0, names: Sequence[str] = LETTERS,
                    loss: str | None = None) -> LadderComparison:
    """The effective compute multiplier of ladder ``b`` over ladder ``a``, k(C) = C_A(L*_B(C)) / C.

    Each ladder is fitted with Chinchilla approach 2 (IsoFLOP parabolas per budget). Per budget of
    B, B's measured profile minimum is read through A's measured minima (interpolated, extrapolated
    beyond them); at ``target_flops`` both ladders' frontiers are used, with an irreducible term
    where 4+ minima place one (module docstring). ``k > 1``: B reaches the loss with less compute.

    Parameters
    ----------
    a, b : Points, DataFrame, str or path
        The two ladders: anything :func:`~lab.fit.engine.points.load_points` reads (a sweep folder, a
        .csv/.parquet table, a DataFrame) or its :class:`Points`. C in FLOPs as the table counts them;
        each needs at least 3 budgets with an interior minimum, and their budgets must overlap.
    target_flops : float, optional
        C (FLOPs) of the headline multiplier; default 10x the largest budget both ladders share.
    bootstrap : int, default 200
        Bootstrap draws per ladder: runs resampled within budgets and approach 2 refitted to each
        (about 1.5 ms a draw); draw i of A is paired with draw i of B. 0: no intervals.
    level : float, default 0.95
        Coverage of the percentile intervals.
    seed : int, default 0
        Seeds the bootstraps (A and B get independent streams drawn from it).
    names : (str, str), default ("A", "B")
        Display names of the ladders.
    loss : str, optional
        Loss column of both tables (default: the loader's, ``loss_val`` in nats/token); ``"bpb_val"``
        compares ladders of different tokenizers in bits per byte.

    Returns
    -------
    LadderComparison
        The multiplier at the target with its interval and frontier forms, the pure power laws'
        alternative, per-budget rows, both frontiers, the k(C) curve, a verdict with reasons, notes,
        and the two approach 2 fits in ``fits``.

    Raises
    ------
    FitError
        Bad input, naming the ladder (fewer than 3 budgets, fewer than 3 with an interior minimum,
        no loss column...), ladders whose budgets do not overlap, a non-positive target, a level
        outside (0, 1).
    """
    require(len(names) == 2, f"names: give two names (A, B), got {list(names)}")
    require(0 < level < 1, f"level must be in (0, 1), got {level}")
    require(target_flops is None or target_flops > 0, f"target_flops must be > 0 FLOPs, got {target_flops}")
    labels = [_label(i, names) for i in range(2)]
    (pa, sa), (pb, sb) = (_ladder_points(x, lab, loss) for x, lab in zip((a, b), labels))
    seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(4)]
    fa, fb = (_fit(p, lab, bootstrap=bootstrap, target_flops=target_flops, level=level, seed=s)
              for p, lab, s in zip((pa, pb), labels, seeds))
    C_lo, C_hi = _common_range(fa, fb, labels)
    C_t = float(target_flops) if target_flops is not None else 10.0 * C_hi
    la, lb = (_ladder(f, int(bootstrap), np.random.default_rng(s)) for f, s in zip((fa, fb), seeds[2:]))
    return _assemble(la, lb, pa, pb, (sa, sb), names, labels, C_lo, C_t, level, int(bootstrap),
                     pa.columns.get("loss", "loss"))


def _assemble(la: _Ladder, lb: _Ladder, pa: Points, pb: Points, settings: tuple, names: Sequence[str],
              labels: Sequence[str], C_lo: float, C_t: float, level: float, K: int,
              loss_col: str) -> LadderComparison:
    """The comparison from the two ladders: rows, target multiplier, curve, verdict and notes."""
    A, B = _frontier_out(la), _frontier_out(lb)
    problems = [p for p in (_frontier_problem(A, labels[0]), _frontier_problem(B, labels[1])) if p]
    n = int(np.sum(np.isfinite(la.fit_b["alpha_C"]) & np.isfinite(lb.fit_b["alpha_C"])))
    rows = _budget_rows(la, lb, level, names[0])
    k_t, k_iv = _target(C_t, la.fit, lb.fit, la.fit_b, lb.fit_b, level)
    alt: dict[str, Any] = {}
    if "floor" in (la.form, lb.form):
        k_p, iv_p = _target(C_t, la.power, lb.power, la.power_b, lb.power_b, level)
        alt = {"form": "power", "multiplier": k_p, "interval": iv_p}
    if problems:  # an uninvertible frontier makes the target's k meaningless: say so rather than print numbers
        k_t, k_iv = math.nan, (math.nan, math.nan)
    verdict, reasons = _judge(k_iv, alt, C_t, problems, n, K, (la, lb), (A, B), labels)
    unit_reasons, notes = _setting_notes(*settings, names, loss_col)
    if unit_reasons and verdict == "ok":
        verdict = "weak"
    reasons += unit_reasons
    notes += _notes(rows, pa, pb, labels) + _form_notes((la, lb), labels, A, B, C_t, k_t, alt)
    return LadderComparison(tuple(names), level, C_t, k_t, k_iv, rows, A, B, _curve(C_lo, C_t, la, lb, level),
                            verdict, reasons, notes, n, (la.form, lb.form), alt, (la.res, lb.res))
