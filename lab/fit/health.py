"""Fit health: can this fit be trusted? A verdict (``ok``, ``weak``, ``ill-posed``) with its reasons.

Every criterion is a number a user can read in :class:`HealthCriteria` and change: how wide the
key outputs' 95% intervals are (N_opt, the predicted loss), parameters whose interval spans orders
of magnitude or whose value sits at the edge of what the data can identify, the hold-out error,
IsoFLOP profiles without an interior minimum, and Chinchilla approaches 1-3 disagreeing on N_opt
and on the loss at the target. A verdict lists each failed check with the measured value and the
threshold, and what to run to fix it (which budgets or sizes to add).

``weak`` means: usable, with the reasons shown beside the numbers. ``ill-posed`` means: the data do
not determine the answer; :mod:`lab.recipe` refuses to build on it unless forced.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from lab.fit.engine.result import FitResult

LEVELS = ("ok", "weak", "ill-posed")


@dataclass(frozen=True)
class HealthCriteria:
    """Thresholds of the health checks: (weak above, ill-posed above) for each measured quantity."""

    n_opt_ratio: tuple[float, float] = (3.0, 10.0)  # hi / lo of N_opt's 95% interval at the target
    loss_halfwidth_pct: tuple[float, float] = (2.0, 5.0)  # the predicted loss's 95% half-width, % of the point
    param_span: tuple[float, float] = (10.0, 100.0)  # hi / lo of a positive parameter's 95% interval
    exponent_range: tuple[float, float] = (0.02, 3.0)  # exponents outside: at the edge of what is identifiable
    irreducible_floor: float = 0.02  # E below this fraction of the lowest loss: collapsed to its bound 0
    holdout_pct: tuple[float, float] = (1.0, 3.0)  # mean |error| on the held-out largest budget, %
    profiles_without_minimum: tuple[int, int] = (1, 2)  # IsoFLOP budgets whose profile has no interior minimum
    approaches_n_opt_ratio: tuple[float, float] = (2.0, 5.0)  # max / min of N_opt over approaches 1-3
    approaches_loss_pct: tuple[float, float] = (1.0, 3.0)  # spread of the loss at the target, % (laws with a floor)
    mixing_heldout_vs_baseline: tuple[float, float] = (0.8, 1.0)  # held-out MAE / mixture-blind MAE
    mixture_share_width: tuple[float, float] = (0.15, 0.3)  # widest 95% interval of a chosen share (absolute)


@dataclass
class Verdict:
    """A fit's health: the verdict, each failed check with its numbers, the measurements, and fixes."""

    verdict: str = "ok"
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    fixes: list[str] = field(default_factory=list)

    def flag(self, level: str, reason: str, fix: str | None = None) -> None:
        """Record a failed check; the verdict becomes the worst level flagged."""
        if LEVELS.index(level) > LEVELS.index(self.verdict):
            self.verdict = level
        self.reasons.append(f"{level}: {reason}")
        if fix and fix not in self.fixes:
            self.fixes.append(fix)

    def grade(self, name: str, value: float, limits: tuple[float, float], reason: str, fix: str | None = None) -> None:
        """Measure ``value`` against (weak, ill-posed) limits; NaN means it could not be measured."""
        self.checks[name] = _num(value)
        if not math.isfinite(value):
            return
        if value > limits[1]:
            self.flag("ill-posed", f"{reason} ({value:.3g} > {limits[1]:g})", fix)
        elif value > limits[0]:
            self.flag("weak", f"{reason} ({value:.3g} > {limits[0]:g})", fix)

    @property
    def trusted(self) -> bool:
        return self.verdict != "ill-posed"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def _repr_html_(self) -> str:
        from lab.fit.engine.html import verdict_html

        return verdict_html(self)

    def report(self) -> str:
        lines = [f"health: {self.verdict}"] + [f"  - {r}" for r in self.reasons]
        lines += [f"  fix: {f}" for f in self.fixes]
        return "\n".join(lines)


def _num(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _ratio(iv: Any) -> float:
    """hi / lo of a positive interval; inf when it reaches 0, NaN when not measured."""
    if not iv or len(iv) < 2 or iv[0] is None or iv[1] is None:
        return math.nan
    lo, hi = float(iv[0]), float(iv[1])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return math.inf if (math.isfinite(lo) or math.isfinite(hi)) else math.nan
    if hi <= 0:
        return math.nan
    return hi / lo if lo > 0 else math.inf


def _halfwidth_pct(point: float, iv: Any) -> float:
    if not iv or len(iv) < 2 or iv[0] is None or iv[1] is None or not point:
        return math.nan
    lo, hi = float(iv[0]), float(iv[1])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return math.nan
    return 100.0 * max(point - lo, hi - point) / abs(point)


def fit_health(res: FitResult, criteria: HealthCriteria = HealthCriteria()) -> Verdict:
    """The health of one loss-law fit (Chinchilla approaches 1-3, Kaplan, any FitResult with intervals)."""
    v = Verdict()
    pr, c = res.predictions or {}, criteria
    if res.samples == {} or not any(len(np.atleast_1d(s)) for s in res.samples.values()):
        v.flag("weak", "no bootstrap intervals (bootstrap=0): the widths cannot be checked",
               "fit with --bootstrap 200 or more")
    if "N_opt" in pr:
        v.grade("N_opt_interval_ratio", _ratio(pr.get("N_opt_interval")), c.n_opt_ratio,
                "N_opt's 95% interval spans a wide factor (hi/lo)",
                "add model sizes around N_opt at the largest budgets, and more seeds where profiles are flat")
    if "loss" in pr:
        v.grade("loss_halfwidth_pct", _halfwidth_pct(pr.get("loss", math.nan), pr.get("loss_interval")),
                c.loss_halfwidth_pct, "the predicted loss's 95% interval half-width, % of the prediction",
                "add a budget above the largest, and seeds at the largest budgets")
    _check_params(v, res, c)
    _check_holdout(v, res, c)
    _check_profiles(v, res, c)
    return v


def _check_params(v: Verdict, res: FitResult, c: HealthCriteria) -> None:
    iv = res.intervals if res.samples else {}
    pts = res.extra.get("points") if res.extra else None
    for name, val in res.params.items():
        if name in ("a", "b", "G", "H", "C_c") or not isinstance(val, (int, float)):
            continue  # derived: judged through N_opt and the loss
        if name in iv and val > 0:
            span = _ratio(iv[name])
            if not math.isnan(span):
                v.checks[f"span_{name}"] = _num(span)
                said = f"{name}'s 95% interval spans {iv[name][0]:.3g} to {iv[name][1]:.3g}"
                if name.startswith("E"):  # the floor: wide is common, and costs accuracy only far out
                    if span > c.param_span[0]:
                        v.flag("weak", f"{said}: the irreducible loss is not pinned down",
                               "add larger budgets so the curve's flattening is seen")
                elif span > c.param_span[1]:
                    how = "its sign is not determined" if iv[name][0] <= 0 else "orders of magnitude"
                    v.flag("ill-posed", f"{said}: {how}", "add budgets and sizes so the law's terms separate")
                elif span > c.param_span[0] and name.startswith(("alpha", "beta")):
                    v.flag("weak", f"{said}, more than {c.param_span[0]:g}x")
        lo, hi = c.exponent_range
        if name.startswith(("alpha", "beta")) and not (lo <= val <= hi):
            v.flag("ill-posed", f"exponent {name} = {val:.3g} is outside [{lo:g}, {hi:g}]: at the edge of what the "
                                "data identify", "add sizes (for alpha) or tokens per parameter (for beta) further apart")
        if name == "E" and pts is not None and len(pts) and val < c.irreducible_floor * float(np.min(pts.loss)):
            v.flag("weak", f"the irreducible loss E = {val:.3g} collapsed to its bound 0 (< {c.irreducible_floor:g} x "
                           "the lowest loss)", "add larger budgets so the curve's flattening is seen")


def _check_holdout(v: Verdict, res: FitResult, c: HealthCriteria) -> None:
    ho = (res.diagnostics or {}).get("holdout") or {}
    if "mean_abs_pct" in ho:
        v.grade("holdout_mean_abs_pct", float(ho["mean_abs_pct"]), c.holdout_pct,
                f"hold-out error ({ho.get('what', 'largest budget held out')}), %",
                "add a budget above the largest so the extrapolation is tested on more points")


def _check_profiles(v: Verdict, res: FitResult, c: HealthCriteria) -> None:
    profiles = (res.diagnostics or {}).get("profiles") or []
    if not profiles:
        return
    bad = [p for p in profiles if not p.get("interior_min")]
    v.checks["profiles_without_minimum"] = len(bad)
    limits = c.profiles_without_minimum
    for p in bad:
        side = _missing_side(p)
        level = "ill-posed" if len(bad) >= limits[1] else "weak" if len(bad) >= limits[0] else None
        if level:
            v.flag(level, f"the IsoFLOP profile at C={p['C']:.3g} has no interior minimum ({p.get('reason') or 'no'})",
                   f"at C={p['C']:.3g}, add sizes {side}")


def _missing_side(profile: Mapping[str, Any]) -> str:
    """Which sizes a profile without a minimum lacks, from its parabola in ln N."""
    p = profile.get("parabola_lnN") or []
    if len(p) == 3 and all(math.isfinite(x) for x in p) and p[2] > 0:
        return "around N = {:.3g} (its minimum is outside the sizes tried)".format(math.exp(-p[1] / (2 * p[2])))
    slope = p[1] if len(p) == 3 else math.nan
    if math.isfinite(slope):
        return "smaller than the smallest tried" if slope > 0 else "larger than the largest tried"
    return "on both sides of the sizes tried"


def agreement(results: Mapping[str, Any], criteria: HealthCriteria = HealthCriteria()) -> Verdict:
    """Do Chinchilla approaches 1-3 agree on N_opt and on the loss at the target? (fitted ones only)"""
    v = Verdict()
    fitted = {k: r for k, r in results.items() if isinstance(r, FitResult) and "N_opt" in (r.predictions or {})}
    v.checks["approaches"] = sorted(fitted)
    for k, r in results.items():
        if isinstance(r, str):  # the approach's own error says what the design lacks
            v.flag("weak", f"{k} not fitted: {r}", "add budgets and sizes until approaches 1-3 all fit")
    if len(fitted) < 2:
        return v
    n = np.array([float(r.predictions["N_opt"]) for r in fitted.values()])
    # Losses are compared only between laws with an irreducible term: approaches 1 and 2 extrapolate
    # L* = (C_c / C)^alpha_C, which has none, and on curved data runs low (5.8% at 10x on a clean
    # synthetic Chinchilla law, tests/test_health.py), so their loss is no test of approach 3's.
    ls = np.array([float(r.predictions.get("loss", math.nan)) for r in fitted.values() if "E" in r.params])
    where = ", ".join(f"{k} {x:.3g}" for k, x in zip(fitted, n))
    v.grade("approaches_N_opt_ratio", float(n.max() / n.min()) if n.min() > 0 else math.inf,
            criteria.approaches_n_opt_ratio, f"approaches disagree on N_opt ({where})",
            "add sizes around the optimum at every budget (the profiles then pin N_opt for all approaches)")
    ls = ls[np.isfinite(ls)]
    if ls.size >= 2:
        v.grade("approaches_loss_spread_pct", float(100 * (ls.max() - ls.min()) / ls.mean()),
                criteria.approaches_loss_pct, "approaches disagree on the loss at the target, % of the mean")
    return v


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """One verdict from several: the worst level, every reason, every measurement and fix."""
    out = Verdict()
    for v in verdicts:
        if LEVELS.index(v.verdict) > LEVELS.index(out.verdict):
            out.verdict = v.verdict
        out.reasons += v.reasons
        out.checks.update(v.checks)
        out.fixes += [f for f in v.fixes if f not in out.fixes]
    return out


def hparams_health(res: FitResult, criteria: HealthCriteria = HealthCriteria()) -> Verdict:
    """Batch-size and LR laws: optima on the grid's edge, and how wide the fitted optima's intervals are."""
    v = Verdict()
    for w in (res.diagnostics or {}).get("edge_warnings") or []:
        v.flag("weak", f"grid edge: {w}", "widen the batch x LR grid past the edge named")
    pr = res.predictions or {}
    for key in ("B_opt", "lr_opt"):
        if f"{key}_interval" in pr:
            v.grade(f"{key}_interval_ratio", _ratio(pr[f"{key}_interval"]), criteria.n_opt_ratio,
                    f"{key}'s 95% interval spans a wide factor (hi/lo)", "add budgets to the batch x LR grid")
    return v


def mixing_health(model: Any, criteria: HealthCriteria = HealthCriteria()) -> Verdict:
    """A mixing law: does it predict held-out mixtures better than ignoring the mixture?"""
    v = Verdict()
    ho = (getattr(model, "diagnostics", None) or {}).get("held_out") or {}
    mae = (ho.get("mae") or {}).get("mean")
    base = (ho.get("baseline_mae") or {}).get("mean") if isinstance(ho.get("baseline_mae"), dict) \
        else ho.get("baseline_mae")
    if mae is None or base is None or not base:
        v.flag("weak", "no held-out error (too few distinct mixtures to hold any out)",
               "run more distinct mixtures (sweeps/mixture.yaml, design.n_mixtures)")
        return v
    v.grade("heldout_vs_baseline", float(mae) / float(base), criteria.mixing_heldout_vs_baseline,
            "held-out error relative to a mixture-blind mean (1 = the law explains nothing)",
            "run more distinct mixtures, or mixtures spread further apart")
    return v


def mixture_optimum_health(opt: Mapping[str, Any], criteria: HealthCriteria = HealthCriteria()) -> Verdict:
    """Is the chosen mixture pinned? The widest 95% interval of a share over the bootstrap draws' own
    optima (``optimize``'s ``mixture_interval``): a law can predict held-out runs and still leave its
    optimum anywhere in a flat valley."""
    v = Verdict()
    iv = opt.get("mixture_interval") or {}
    if not iv:
        return v
    d, (lo, hi) = max(iv.items(), key=lambda kv: kv[1][1] - kv[1][0])
    v.grade("mixture_share_width", float(hi - lo), criteria.mixture_share_width,
            f"the optimum is not pinned: the {d} share's 95% interval over bootstrap optima is [{lo:.2f}, {hi:.2f}]",
            "run more mixtures (design.n_mixtures) at larger sizes, or bound the shares (--min-share/--max-share)")
    return v


def judged(check):
    """Decorator: attach ``check(result).to_json()`` as ``result.diagnostics["health"]`` to what a fit returns."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            res = fn(*args, **kwargs)
            res.diagnostics["health"] = check(res).to_json()
            return res

        return inner

    return wrap
