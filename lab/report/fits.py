"""The fits the report and the notebooks show, each run on a source's sweeps with its failure
kept as a sentence (a report shows what it can and says what it could not).

* :func:`loss_fits`: Chinchilla approaches 1-3 and Kaplan's L(C) and L(N, D), each with its health
  verdict, and the approaches' agreement at the target;
* :func:`hparam_fit`: the batch-size and LR laws (form N, D, as the study's stage a fits them);
* :func:`mixing_fits`: the mixing law and the regression baseline at one size (or nested at the
  target), and the optimum inside the fitted mixtures' hull.

Targets default to the study's (``target_flops`` in ``study.json``), else 10x the largest budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from lab.fit import FitError


@dataclass
class Attempt:
    """A value, or why there is none."""

    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def attempt(fn: Callable[[], Any]) -> Attempt:
    """Run ``fn``; a fit that cannot be made (bad or thin data) becomes its message."""
    try:
        return Attempt(fn())
    except (FitError, ValueError, KeyError, RuntimeError) as e:
        return Attempt(error=f"{type(e).__name__}: {e}" if not isinstance(e, FitError) else str(e))


@dataclass
class LossFits:
    target_flops: float | None
    fits: dict[str, Attempt] = field(default_factory=dict)      # approach1..3, kaplan_C, kaplan_ND
    health: dict[str, Any] = field(default_factory=dict)         # name -> Verdict
    agreement: Any = None                                        # Verdict of approaches 1-3 at the target

    def ok(self) -> dict[str, Any]:
        """The fits that worked, name -> FitResult."""
        return {k: a.value for k, a in self.fits.items() if a.ok}


def loss_fits(dirs: list[str], target_flops: float | None = None, bootstrap: int = 200, seed: int = 0) -> LossFits:
    """Every loss law on the ladder ``dirs``: WSD cooldown branches count as finished runs."""
    from lab.fit import approach1, approach2, approach3, fit_kaplan, load_points
    from lab.fit.health import agreement
    from lab.results import load_curves, load_runs

    runs = load_runs(*dirs)
    pts_try = attempt(lambda: load_points(runs, cooldowns=True))
    out = LossFits(target_flops)
    if not pts_try.ok:
        out.fits["points"] = pts_try
        return out
    pts = pts_try.value
    wsd = "schedule" in runs and (runs["schedule"] == "wsd").any()
    curves = None if wsd else attempt(lambda: load_curves(*dirs)).value
    common = dict(bootstrap=bootstrap, target_flops=target_flops, seed=seed)
    out.fits = {
        "approach1": attempt(lambda: approach1(pts, curves=curves, **common)),
        "approach2": attempt(lambda: approach2(pts, **common)),
        "approach3": attempt(lambda: approach3(pts, **common)),
        "kaplan_C": attempt(lambda: fit_kaplan(pts, "C", **{**common, "bootstrap": min(bootstrap, 100)})),
        "kaplan_ND": attempt(lambda: fit_kaplan(pts, "ND", **{**common, "bootstrap": min(bootstrap, 100)})),
    }
    out.health = {k: a.value.health() for k, a in out.fits.items() if a.ok}  # attached by each fit
    chin = {k: (a.value if a.ok else a.error) for k, a in out.fits.items() if k.startswith("approach")}
    out.agreement = attempt(lambda: agreement(chin)).value
    if out.target_flops is None and out.ok():
        out.target_flops = next(iter(out.ok().values())).predictions.get("C")
    return out


def hparam_fit(dirs: list[str], bootstrap: int = 200, seed: int = 0) -> Attempt:
    """The form-ND batch/LR laws of a batch x LR sweep (cooldown branches are cells of their own)."""
    from lab.fit.hparams import fit_hparams, load_hparams
    from lab.results import load_runs

    return attempt(lambda: fit_hparams(load_hparams(load_runs(*dirs), form="ND"), form="ND",
                                       bootstrap=bootstrap, seed=seed))


@dataclass
class MixingFits:
    data: Any = None            # MixData of every run
    fit_data: Any = None        # the rows fitted (one size, or the nested prediction at the target)
    how: str = ""
    models: dict[str, Any] = field(default_factory=dict)
    optimum: dict[str, Any] | None = None
    choice: dict[str, Any] | None = None
    health: Any = None
    errors: list[str] = field(default_factory=list)


def mixing_fits(dirs: list[str], target: dict[str, float] | None = None, bootstrap: int = 100,
                seed: int = 0) -> MixingFits:
    """The mixing law (and the regression baseline) on a mixture sweep; nested at ``target`` (N, D)
    when given and the sweep has several sizes, else at its largest well-covered size."""
    from lab.fit import fit_mixing_law, fit_regression, load_mixing, nested_predict
    from lab.fit.health import mixing_health
    from lab.fit.mixing.law import one_size
    from lab.results import load_runs

    out = MixingFits()
    got = attempt(lambda: load_mixing(load_runs(*dirs)))
    if not got.ok:
        out.errors.append(got.error)
        return out
    out.data = data = got.value
    nested = attempt(lambda: nested_predict(data, target["N"], target.get("D"))) if target else Attempt(error="")
    if target and not nested.ok:  # one D/N in the sweep: predict at N along it, as the study does
        nested = attempt(lambda: nested_predict(data, target["N"], None))
    if nested.ok:
        out.fit_data, rep = nested.value
        out.how = f"nested: each mixture's size law predicted at N={target['N']:.3g} ({rep['extrapolation']:.1f}x)"
    else:
        out.fit_data, note = one_size(data, None)
        out.how = note or "one model size"
        if target:  # say why the target's nested prediction is not what is shown
            out.errors.append(f"not nested at the target (N={target['N']:.3g}): {nested.error}; shown: {out.how}")
    for name, fit in (("law", lambda: fit_mixing_law(out.fit_data, bootstrap=bootstrap, seed=seed)),
                      ("regression", lambda: fit_regression(out.fit_data, seed=seed))):
        a = attempt(fit)
        if a.ok:
            out.models[name] = a.value
        else:
            out.errors.append(f"{name}: {a.error}")
    if "law" in out.models:
        out.health = attempt(lambda: mixing_health(out.models["law"])).value
        _optimum(out, seed)
    return out


def _optimum(out: MixingFits, seed: int) -> None:
    from lab.fit.mixing.optimize import choose_mixture, make_box, optimize

    d, fd = out.data, out.fit_data
    w = np.full(len(d.val_domains), 1.0 / len(d.val_domains))
    box = attempt(lambda: make_box(d.domains, data_range=(fd.R.min(0), fd.R.max(0))))
    opt = attempt(lambda: optimize(out.models["law"], w, box.value, d.natural, seed=seed, hull=fd.R)) if box.ok else box
    if opt.ok:
        out.optimum = opt.value
        out.choice = choose_mixture(opt.value)
    else:
        out.errors.append(f"optimum: {opt.error}")
