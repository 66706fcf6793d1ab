"""Build a recipe from sweeps: fit the laws, choose the full-size run, predict its loss.

The steps, each its own function: the **target** (C, and the law's compute-optimal N and D at
it), the **loss law** (Chinchilla approach 3, else 2), the **hyperparameters** (batch and peak LR
from the fitted batch/LR laws, else the sweeps' settings), the **mixture** (from the data mixing
law, else the sweeps' mixture), the **prediction** (the loss at the chosen N and D with its
bootstrap interval, overall and per domain), and the **assembly** into a :class:`Recipe`.
Laws not fitted take the sweeps' settings and are marked ``fitted: false``.

Symbols as in :mod:`lab.counting`: N non-embedding parameters, D tokens, C training FLOPs in
the lab's convention, B = ``batch_tokens`` the batch in tokens.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

import lab
from lab.config import ModelConfig, TrainConfig
from lab.counting import ASPECT, DESIGN_HEAD_DIM, FFN_MULT, FFN_MULTIPLE_OF, counts, micro_batch_sizes
from lab.counting import shape_for_params, steps_for_tokens, tokens_for_flops
from lab.fit import FitError, approach1, approach2, approach3, fit_hparams, fit_mixing_law, load_points, nested_predict
from lab.fit.engine.allocation import FlopModel, optimal_allocation
from lab.fit.engine.bootstrap import interval
from lab.fit.engine.evaluate import loss_nd
from lab.fit.engine.result import to_jsonable
from lab.fit.health import LEVELS, HealthCriteria, Verdict, agreement, combine, mixture_optimum_health
from lab.fit.hparams import batch_for, load_hparams, predict_hparams
from lab.fit.mixing.law import load_mixing, one_size, target_weights
from lab.fit.mixing.optimize import choose_mixture, make_box, optimize
from lab.recipe.format import FORMAT, Recipe, RecipeError
from lab.results import load_curves, load_runs

EXTRAPOLATION_WARN = 100.0  # target C / largest sweep C above which the recipe warns
DEFAULT_MICRO_TOKENS = 4096  # micro-batch size in tokens the recipe aims for (memory, not maths)
_OPTIM = ("schedule", "warmup", "min_lr_ratio", "decay", "decay_shape", "weight_decay", "beta1", "beta2", "eps",
          "grad_clip")


@dataclass
class _Sweeps:
    """The loss sweeps as the builder uses them."""

    names: list[str]
    runs: pd.DataFrame  # every run (the loss law's points are drawn from it)
    settings: dict[str, Any]  # the shared settings of the completed runs (:func:`_settings`)
    points: Any  # lab.fit points (N, D, C, loss) of the completed runs
    flop_model: FlopModel


@dataclass
class _Target:
    """C of the full-size run and the law's compute-optimal allocation at it."""

    flops: float
    n_opt: float
    d_opt: float


def build_recipe(sweeps: list[str], target_flops: float | None = None, target_params: float | None = None,
                 target_tokens: float | None = None, approach: str = "auto", bootstrap: int = 500,
                 seed: int = 0, hparam_sweeps: list[str] | None = None, mixing_sweeps: list[str] | None = None,
                 mixing_weights: str | None = None, force: bool = False,
                 mixing_law: dict[str, Any] | None = None, hparam_law: str | None = None) -> Recipe:
    """Fit the sweeps and derive the full-size run at one target (C, N or D); see the module docstring.

    The loss law's health (:mod:`lab.fit.health`: its own checks and the agreement of approaches
    1-3 at the target) is written into ``laws.loss.health``. An ``ill-posed`` law is refused with
    its reasons and fixes unless ``force``.

    ``hparam_law``: a batch/LR law file (``lab.fit hparams --json``, or a study's resolved law) to
    take batch and LR from instead of fitting ``hparam_sweeps``: the law the proxies followed.

    ``mixing_law``: a mixing law already fitted and followed (a staged study's mixture stage, whose
    mixture the loss sweeps trained on): the recipe keeps the loss sweeps' mixture, marked fitted
    with this law, and the prediction is for that mixture. Refused when the sweeps trained on another.

    Raises :class:`RecipeError` naming the input when no recipe can be built.
    """
    with np.errstate(all="ignore"):
        _check_request(sweeps, target_flops, target_params, target_tokens, approach)
        sw = _load_sweeps(sweeps)
        notes: list[str] = []
        res3, res2 = _fit_loss_law(sw, approach, bootstrap, seed, target_flops, notes)
        choice, alt3 = {"chosen": "approach3" if res3 is not None else "approach2"}, None
        if res3 is not None and approach == "auto":
            chosen, r2, choice = choose_loss_approach(sw, res3, target_flops or 10 * float(sw.points.C.max()),
                                                      bootstrap, seed)
            if chosen == "approach2":
                res2, alt3, res3 = r2, res3, None
                notes.append(f"loss law: approach 2, the healthier or (equally healthy) closer on the held-out optimum "
                             f"({_choice_text(choice)})")
        tgt = _target(sw, res3, res2, target_flops, target_params, target_tokens)
        health = _loss_health(sw, res3 if res3 is not None else res2, tgt.flops, seed, force, notes)
        varied = [k for k in sw.settings["varied"] if not (hparam_law and k in ("lr", "batch_tokens"))]
        if varied:  # a law-followed sweep varies batch and LR by design
            notes.append(f"the sweeps vary {', '.join(varied)}; the recipe takes the most common value "
                         "(fit the hyperparameter laws to choose them)")
        if target_params is not None:  # the run's N is the one asked for (counts.N_opt_law says so too)
            tgt.n_opt = float(target_params)
        shape = shape_for_params(tgt.n_opt, **_rule(sw))
        c = counts(shape)
        # D spends C exactly with the shape actually chosen (unless D was the target)
        tokens = float(target_tokens) if target_tokens is not None else tokens_for_flops(tgt.flops, shape)
        batch_tokens, lr, hp_law = sw.settings["batch_tokens"], sw.settings["lr"], None
        if hparam_law:
            batch_tokens, lr, hp_law = hparams_from_law(hparam_law, tgt.flops, sw.settings["seq_len"],
                                                        float(c["params"]), tokens)
        elif hparam_sweeps:
            batch_tokens, lr, hp_law = hparams_from(hparam_sweeps, tgt.flops, sw.settings["seq_len"], bootstrap,
                                                     seed, notes)
        steps = steps_for_tokens(tokens, batch_tokens, "the recipe's D")
        tokens = float(steps * batch_tokens)
        mixture, mix_law = sw.settings["mixture"], None
        if mixing_law is not None:
            mix_law = _followed_mixing_law(mixing_law, mixture)
        elif mixing_sweeps:
            mixture, mix_law = mixture_from(mixing_sweeps, float(c["params"]), tokens, mixing_weights, bootstrap,
                                             seed, notes)
        flops_run = tokens * c["flops_per_token"]
        factor = flops_run / float(sw.points.C.max())
        if factor > EXTRAPOLATION_WARN:
            notes.append(f"extrapolating {factor:.0f}x beyond the largest sweep budget ({float(sw.points.C.max()):.3g} "
                         "FLOPs): the fitted form may not hold that far; treat the interval as optimistic")
        prediction = _predict(sw, res3, res2, alt3, choice, c["params"], tokens, flops_run, bootstrap, seed, notes)
        health = _prediction_health(health, prediction, force, notes)
        doc = _assemble(sw, res3 if res3 is not None else res2, health, tgt, (target_flops, target_params, target_tokens), shape, c, tokens,
                        steps, batch_tokens, lr, mixture, prediction, hp_law, mix_law, factor, notes)
    return Recipe.from_dict(to_jsonable(doc), "built recipe")


def _check_request(sweeps: list[str], target_flops: float | None, target_params: float | None,
                   target_tokens: float | None, approach: str) -> None:
    """Exactly one positive target, a known approach, and sweep folders that exist."""
    given = [x is not None for x in (target_flops, target_params, target_tokens)]
    if sum(given) != 1:
        raise RecipeError("give exactly one target: --target-flops C, --target-params N or --target-tokens D")
    for name, v in (("--target-flops", target_flops), ("--target-params", target_params),
                    ("--target-tokens", target_tokens)):
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise RecipeError(f"{name} must be a positive number, got {v!r}")
    if approach not in ("auto", "2", "3"):
        raise RecipeError(f"approach {approach!r}: allowed auto, 2, 3")
    _require_dirs(sweeps, "sweep folder")


def _require_dirs(sweeps: list[str], what: str) -> None:
    for s in sweeps:
        if Path(s).is_file():
            raise RecipeError(f"{what} {s!r} is a file (a table?), not a sweep folder: a recipe is built from run "
                              "folders, whose configs give the shape rule, data and optimiser; pass the sweep "
                              "folder(s) the table was made from")
        if not Path(s).is_dir():
            raise RecipeError(f"{what} {s!r} does not exist")


def _load_sweeps(sweeps: list[str]) -> _Sweeps:
    runs = load_runs(*sweeps)
    ok = runs[runs["status"] == "completed"] if "status" in runs.columns else runs
    if "cooldown" in ok.columns:
        ok = ok[~ok["cooldown"].fillna(False).astype(bool)]
    if ok.empty:
        raise RecipeError(f"no completed runs in {', '.join(sweeps)}")
    pts = load_points(runs, cooldowns=True)  # a WSD cooldown branch is a finished run at its own (D, C)
    return _Sweeps(list(sweeps), runs, _settings(ok), pts, FlopModel(pts.N, pts.C, pts.D))


def _rule(sw: _Sweeps) -> dict[str, Any]:
    """The sweeps' shape rule, for :func:`lab.counting.shape_for_params`."""
    keys = ("vocab_size", "seq_len", "aspect", "head_dim", "kv_ratio", "ffn_mult", "ffn_multiple_of", "tie_embeddings")
    return {k: sw.settings[k] for k in keys}


def _mode(runs: pd.DataFrame, col: str, default: Any = None) -> Any:
    if col not in runs.columns:
        return default
    v = runs[col].dropna()
    if v.empty:
        return default
    try:
        return v.mode().iloc[0]
    except TypeError:  # unhashable values (a mixture dict): the most common rendering
        return v.astype(str).mode().iloc[0]


def _settings(runs: pd.DataFrame) -> dict[str, Any]:
    """The sweeps' shared settings: shape rule, data, optimiser (most common value per column)."""
    dm, dt = ModelConfig(), TrainConfig()
    s = {
        "vocab_size": int(_mode(runs, "vocab_size", 256)),
        "seq_len": int(_mode(runs, "seq_len", _mode(runs, "data.seq_len", 256))),
        "aspect": int(_mode(runs, "design.aspect", _mode(runs, "model.aspect", ASPECT))),
        "head_dim": int(_mode(runs, "design.head_dim", _mode(runs, "model.head_dim", DESIGN_HEAD_DIM))),
        "kv_ratio": int(_mode(runs, "model.kv_ratio", 1)),
        "ffn_mult": float(_mode(runs, "model.ffn_mult", FFN_MULT)),
        "ffn_multiple_of": int(_mode(runs, "model.ffn_multiple_of", FFN_MULTIPLE_OF)),
        "tie_embeddings": bool(_mode(runs, "model.tie_embeddings", False)),
        "corpus": str(_mode(runs, "data.corpus", "builtin")),
        "tokenizer": str(_mode(runs, "data.tokenizer", "byte")),
        "bpe_vocab_size": int(_mode(runs, "data.bpe_vocab_size", 4096)),
        "val_tokens": int(_mode(runs, "data.val_tokens", 32768)),
        "batch_tokens": int(_mode(runs, "batch_tokens", 4096)),
        "lr": float(_mode(runs, "lr", 3e-3)),
    }
    for k in _OPTIM:
        default = getattr(dt, k)
        v = _mode(runs, f"train.{k}", default)
        s[k] = type(default)(v) if v is not None else default
    vw = _mode(runs, "data.val_weights", "mixture")
    if isinstance(vw, str) and vw.strip().startswith("{"):  # the tables store mappings as JSON text
        vw = json.loads(vw)
    s["val_weights"] = vw if isinstance(vw, (str, dict)) else "mixture"
    for k in ("init_std", "rope_theta", "norm_eps"):
        s[k] = float(_mode(runs, f"model.{k}", getattr(dm, k)))
    s["varied"] = [c for c in ("lr", "batch_tokens", "train.schedule", "seq_len")
                   if c in runs.columns and runs[c].dropna().nunique() > 1]
    s["mixture"] = _swept_mixture(runs)
    return s


def _swept_mixture(runs: pd.DataFrame) -> dict[str, float] | str:
    mix_cols = [c for c in runs.columns if c.startswith("mix_")]
    rows = runs[mix_cols].dropna() if mix_cols else None
    if rows is None or rows.empty:
        return "natural"
    return {c[4:]: float(rows.iloc[0][c]) for c in mix_cols}


# ----------------------------------------------------------------------------------------------
# Loss law and target
# ----------------------------------------------------------------------------------------------

def _fit_loss_law(sw: _Sweeps, approach: str, bootstrap: int, seed: int, target_flops: float | None,
                  notes: list[str]) -> tuple[Any, Any]:
    """(approach-3 fit or None, approach-2 fit or None): approach 3 when asked or possible, else 2."""
    res3 = res2 = None
    if approach in ("auto", "3"):
        try:
            res3 = approach3(sw.points, bootstrap=bootstrap, seed=seed, target_flops=target_flops)
        except FitError as e:
            if approach == "3":
                raise RecipeError(f"approach 3 cannot be fitted: {e}") from e
            notes.append(f"approach 3 not fitted ({e}); using approach 2")
    if res3 is None:
        try:
            res2 = approach2(sw.points, bootstrap=bootstrap, seed=seed, target_flops=target_flops)
        except FitError as e:
            raise RecipeError(f"no loss law can be fitted to {', '.join(sw.names)}: {e}") from e
    return res3, res2


def _loss_health(sw: _Sweeps, fit, C: float, seed: int, force: bool, notes: list[str]) -> Verdict:
    """The chosen law's own health and approaches 1-3's agreement at C; refuse an ill-posed one unless forced."""
    others: dict[str, Any] = {}
    mine = "approach3" if fit.law.endswith("approach 3") else "approach2"
    if fit.predictions.get("C") == C:  # the chosen law already predicts at C: no refit
        others[mine] = fit
    # the curves of a WSD run before its decay are not finished schedules: approach 1 then takes run ends
    curves = None if sw.settings["schedule"] == "wsd" else load_curves(*sw.names)
    for name, run in (("approach1", lambda: approach1(sw.points, curves=curves, bootstrap=0,
                                                      target_flops=C, seed=seed, holdout=False)),
                      ("approach2", lambda: approach2(sw.points, bootstrap=0, target_flops=C, seed=seed,
                                                      holdout=False)),
                      ("approach3", lambda: approach3(sw.points, bootstrap=0, target_flops=C, seed=seed,
                                                      holdout=False))):
        if name in others:
            continue
        try:
            others[name] = run()
        except FitError as e:
            others[name] = str(e)
    own = Verdict(**fit.diagnostics["health"])
    verdict = combine([own, agreement(others)])
    if verdict.verdict == "ill-posed" and not force:
        raise RecipeError(f"the loss law is ill-posed at C={C:.3g}: " + "; ".join(
            r for r in verdict.reasons if r.startswith("ill-posed")) + ". To fix: " + "; ".join(verdict.fixes)
            + ". (--force writes the recipe anyway, with this verdict in laws.loss.health)")
    if verdict.verdict != "ok":
        notes.append(f"loss law health: {verdict.verdict} ({len(verdict.reasons)} reason(s) in laws.loss.health)")
    return verdict


def _prediction_health(health: Verdict, prediction: dict[str, Any], force: bool, notes: list[str]) -> Verdict:
    """The loss verdict (already the predicting approach's own and the approaches' agreement) with how
    far the other approach's loss at the run lies from the prediction (weak beyond
    criteria.approaches_loss_pct)."""
    choice = prediction.get("approach_choice") or {}
    v = Verdict()
    L = prediction["loss_val"]
    for name, other in (choice.get("loss_other") or {}).items():
        gap = 100 * abs(other / L - 1)
        v.checks["approaches_2_3_loss_gap_pct"] = gap
        if gap > HealthCriteria().approaches_loss_pct[0]:
            v.flag("weak", f"{name} puts the loss at the run {100 * (other / L - 1):+.1f}% from the prediction "
                           f"({choice['chosen']}, chosen by health, then the held-out optimum)",
                   "add a budget above the largest: the hold-out then tells the two forms apart on more points")
    out = combine([health, v])
    if out.verdict == "ill-posed" and not force:
        raise RecipeError("the loss prediction is ill-posed: " + "; ".join(r for r in out.reasons if r.startswith("ill-posed"))
                          + ". To fix: " + "; ".join(out.fixes) + ". (--force writes the recipe anyway)")
    if out.verdict != health.verdict:
        notes.append(f"loss prediction health: {out.verdict} (the predicting approach's own checks included)")
    return out


def _allocation_for(res, fm: FlopModel, C: float) -> tuple[float, float]:
    """Approach 3's compute-optimal (N, D) at C under the data's FLOP convention."""
    law, th = res.extra["law"], res.extra["theta"][None, :]
    n, d, _ = optimal_allocation(lambda lnN, lnD: np.exp(law.forward(th, {"lnN": lnN, "lnD": lnD})[0]), C, fm,
                                 (0.0, math.log(C) - 1))
    return float(n[0]), float(d[0])


def _solve_C(fn: Callable[[float], float], target: float, lo: float, hi: float) -> float:
    """C with fn(C) = target for increasing fn, by bisection in log C."""
    a, b = math.log(lo), math.log(hi)
    for _ in range(60):
        m = 0.5 * (a + b)
        if fn(math.exp(m)) < target:
            a = m
        else:
            b = m
    return math.exp(0.5 * (a + b))


def _target(sw: _Sweeps, res3, res2, target_flops: float | None, target_params: float | None,
            target_tokens: float | None) -> _Target:
    """C under the lab's convention for the requested target, and the law's (N_opt, D_opt) at it."""
    if res3 is not None:
        alloc = lambda C: _allocation_for(res3, sw.flop_model, C)  # noqa: E731
    else:
        p2 = res2.params
        alloc = lambda C: (p2["G"] * C ** p2["a"], p2["H"] * C ** p2["b"])  # noqa: E731
    if target_flops is not None:
        C = float(target_flops)
    elif target_params is not None:
        C = _solve_C(lambda c: alloc(c)[0], float(target_params), 1e3, 1e35)
    else:
        C = _solve_C(lambda c: alloc(c)[1], float(target_tokens), 1e3, 1e35)
    n_opt, d_opt = alloc(C)
    if not (math.isfinite(n_opt) and math.isfinite(d_opt) and n_opt > 0 and d_opt > 0):
        raise RecipeError(f"the fitted law gives no compute-optimal allocation at C={C:.3g} (N_opt={n_opt}, "
                          f"D_opt={d_opt}); the fit is degenerate, look at the fit report")
    for name, want, got in (("--target-params", target_params, n_opt), ("--target-tokens", target_tokens, d_opt)):
        if want is not None and abs(math.log(got / want)) > 0.01:
            raise RecipeError(f"{name} {want:.3g}: the fitted law never makes it compute-optimal "
                              f"(closest: {got:.3g}); give --target-flops instead")
    return _Target(C, n_opt, d_opt)


# ----------------------------------------------------------------------------------------------
# Hyperparameters and mixture
# ----------------------------------------------------------------------------------------------

def hparams_from(sweeps: list[str], C: float, seq_len: int, bootstrap: int, seed: int,
                  notes: list[str]) -> tuple[int, float, dict[str, Any]]:
    """Batch (tokens, a power-of-two number of sequences) and peak LR from the fitted form-C laws."""
    _require_dirs(sweeps, "--hparams sweep folder")
    res = fit_hparams(load_hparams(load_runs(*sweeps), form="C"), form="C", bootstrap=min(bootstrap, 300),
                      seed=seed, target_flops=C)
    b_opt, lr_opt = predict_hparams(res.params, "C", C=C)
    seqs = batch_for(b_opt, seq_len) // seq_len
    notes.extend(f"batch/LR law: {w}" for w in res.diagnostics["edge_warnings"])
    iv = res.predictions
    common = {"law": res.formula, "params": res.params, "intervals": res.intervals,
              "sweeps": [str(Path(s).resolve()) for s in sweeps], "edge_warnings": res.diagnostics["edge_warnings"]}
    law = {"batch_size": {**common, "B_opt_law": b_opt, "B_opt_interval": iv.get("B_opt_interval"),
                          "rounding": f"{seqs} sequences of {seq_len} (nearest power of two)"},
           "lr": {**common, "lr_opt_law": lr_opt, "lr_opt_interval": iv.get("lr_opt_interval")}}
    return seqs * seq_len, float(lr_opt), law


def _nested(data, N: float, D: float):
    """The nested prediction at (N, D); when the sweeps hold one D/N only, at N along that D/N (the
    size law cannot move D apart from N), which the description says."""
    try:
        fit_data, rep = nested_predict(data, N, D)
        return fit_data, rep, f"nested: size law per mixture predicted at N={N:.3g}, D={D:.3g} ({rep['extrapolation']:.1f}x)"
    except FitError as first:
        try:
            fit_data, rep = nested_predict(data, N, None)
        except FitError:
            raise first from None
    q = float(np.median(data.D / data.N))
    return fit_data, rep, (f"nested: size law per mixture predicted at N={N:.3g} along the sweeps' D/N = {q:.3g} "
                           f"({rep['extrapolation']:.1f}x; the target's D/N is {D / N:.3g}: run the mixture sweep at "
                           "that D/N, or at several, to predict at it)")


def mixture_from(sweeps: list[str], N: float, D: float, weights: str | None, bootstrap: int, seed: int,
                 notes: list[str], max_epochs: float | None = None, min_share: str | None = None,
                 max_share: str | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """The optimal mixture from mixture sweeps (lab.fit mixing): nested at the recipe's (N, D) when the
    sweeps allow it, else the mixing law at their largest proxy size (said in the notes).

    The search stays inside the convex hull of the fitted runs' mixtures (where the law interpolates),
    the share bounds (``min_share``/``max_share``, 'a=0.1,b=0.05') and, with ``max_epochs``, each
    domain's epoch cap at D tokens.
    """
    _require_dirs(sweeps, "--mixing sweep folder")
    try:
        data = load_mixing(load_runs(*sweeps))
        w = target_weights(weights, data.val_domains)
        try:
            fit_data, rep, how = _nested(data, N, D)
        except FitError as e:
            fit_data, pooled = one_size(data, None)
            where = (f"the largest proxy size with enough runs, N={float(np.nanmax(fit_data.N)):.3g}"
                     if fit_data.N is not None and not pooled else "all proxy sizes pooled: " + str(pooled))
            how = f"mixing law at {where} (not nested: {e})"
            notes.append(f"mixture: {how}")
        model = fit_mixing_law(fit_data, bootstrap=min(bootstrap, 200), seed=seed)
        box = make_box(data.domains, min_share, max_share, max_epochs, D if max_epochs else None, data.unique_tokens,
                       data_range=(fit_data.R.min(0), fit_data.R.max(0)))
        opt = optimize(model, w, box, data.natural, seed=seed, hull=fit_data.R)
    except FitError as e:
        raise RecipeError(f"--mixing: {e}") from None
    pick = choose_mixture(opt)
    notes.append("prediction.loss_val is the loss law's, fitted on the loss sweeps' own mixture; mixture: "
                 + pick["why"])
    law = {"law": "data mixing law (Ye et al. 2024)", "how": how, "target_weights": opt["target_weights"],
           "chosen": pick["chosen"], "choice": pick["why"], "optimum": opt["mixture"],
           "predicted_target": pick["target"], "predicted_target_interval": pick["target_interval"],
           "gain_vs_uniform": opt["uniform"]["gain"], "gain_vs_natural": opt.get("natural", {}).get("gain"),
           "held_out_mae": model.diagnostics["held_out"].get("mae", {}).get("mean"),
           "box": box.to_json(), "search": opt["search"], "mixture_interval": opt.get("mixture_interval"),
           "health": _mixing_verdict(model, opt, pick).to_json(), "sweeps": [str(Path(s).resolve()) for s in sweeps]}
    return _rounded_shares(pick["mixture"]), law


def _mixing_verdict(model, opt: dict[str, Any], pick: dict[str, Any]) -> Verdict:
    """The law's own health and, for the mixture trained on: the optimum pinned by the bootstrap
    draws when it is chosen; when the reference is kept instead, ``weak``, saying why."""
    parts = [Verdict(**model.diagnostics["health"])] if model.diagnostics.get("health") else []
    if pick["chosen"] == "optimum":
        parts.append(mixture_optimum_health(opt))
    else:
        v = Verdict()
        v.flag("weak", pick["why"], "run more mixtures, or several seeds of each, at larger proxy sizes")
        v.checks["mixture_share_width"] = mixture_optimum_health(opt).checks.get("mixture_share_width")
        parts.append(v)
    return combine(parts)


def hparams_from_law(path: str, C: float, seq_len: int, N: float | None = None, D: float | None = None
                     ) -> tuple[int, float, dict[str, Any]]:
    """Batch (tokens) and peak LR from a saved batch/LR law file: at C (form C), or at the run's
    N and D (form ND)."""
    from lab.fit.hparams import load_hparam_law

    try:
        form, params = load_hparam_law(path)
        doc = json.loads(Path(path).read_text())
    except ValueError as e:
        raise RecipeError(str(e).replace("design.hparams", "hparam_law")) from None
    if form == "ND" and (N is None or D is None):
        raise RecipeError(f"hparam_law {path}: a form-ND law needs the run's N and D")
    b_opt, lr_opt = predict_hparams(params, form, C=C, N=N, D=D)
    seqs = batch_for(b_opt, seq_len) // seq_len
    common = {"law": doc.get("formula") or doc.get("law"), "params": params, "intervals": doc.get("intervals"),
              "file": str(Path(path).resolve()), "notes": doc.get("resolved", []),
              "edge_warnings": (doc.get("diagnostics") or {}).get("edge_warnings", [])}
    law = {"batch_size": {**common, "B_opt_law": b_opt, "rounding": f"{seqs} sequences of {seq_len} (nearest power of two)"},
           "lr": {**common, "lr_opt_law": lr_opt}}
    return seqs * seq_len, float(lr_opt), law


def _followed_mixing_law(law: dict[str, Any], trained: Any) -> dict[str, Any]:
    """The law a study's loss sweeps followed; their mixture must be the law's choice."""
    chosen = law.get("mixture")
    if not isinstance(chosen, dict) or not isinstance(trained, dict) or set(chosen) != set(trained) or any(
            abs(float(chosen[d]) - float(trained[d])) > 1e-4 for d in chosen):
        raise RecipeError(f"the loss sweeps trained on mixture {trained!r}, not the mixing law's choice {chosen!r}: "
                          "rerun the loss stage on the law's mixture")
    return {k: v for k, v in law.items() if k != "mixture"}


def _rounded_shares(mix: dict[str, float]) -> dict[str, float]:
    """Shares to 6 decimals that still sum to 1: the largest takes the rounding remainder."""
    out = {d: round(float(x), 6) for d, x in mix.items()}
    top = max(out, key=out.get)
    out[top] = 1.0 - sum(v for d, v in out.items() if d != top)
    return out


# ----------------------------------------------------------------------------------------------
# Prediction and assembly
# ----------------------------------------------------------------------------------------------

def _loss_at(res, N: float, D: float) -> tuple[float, list[float]]:
    """Approach-3 loss at (N, D) and its bootstrap interval."""
    p, s = res.params, res.samples
    with np.errstate(all="ignore"):  # a degenerate fit (a huge exponent) gives inf, not an OverflowError
        point = loss_nd(res.law, p, np.float64(N), np.float64(D))
        if "E" in s:
            draws = loss_nd(res.law, s, np.float64(N), np.float64(D))
            return float(point), list(interval(draws, res.level))
    return float(point), [math.nan, math.nan]


def _envelope_prediction(res2, flops_run: float) -> tuple[float, list[float]]:
    """Approach 2's L*(C) = (C_c / C)^alpha_C at the run's C, with its bootstrap interval."""
    p2, s2 = res2.params, res2.samples
    with np.errstate(all="ignore"):
        draws = (s2["C_c"] / flops_run) ** s2["alpha_C"] if "C_c" in s2 else np.array([])
    return float((p2["C_c"] / flops_run) ** p2["alpha_C"]), list(interval(draws, res2.level))


def optimum_holdout(pts) -> dict[str, float]:
    """How well approaches 2 and 3 predict what a recipe predicts, on the sweeps' own data: each fitted
    without the largest budget, its compute-optimal loss there against the best seed-averaged loss
    measured there (% error, signed)."""
    C_max = float(pts.C.max())
    top = pts.C > C_max / 1.3
    ref = min(float(np.mean(pts.loss[top & (pts.N == n)])) for n in np.unique(pts.N[top]))
    rest = pts.subset(~top, "held out: the largest budget")
    out = {"reference": ref, "C": C_max}
    try:
        r3 = approach3(rest, bootstrap=0, target_flops=C_max, holdout=False)
        n, d = _allocation_for(r3, FlopModel(pts.N, pts.C, pts.D), C_max)
        out["approach3"] = 100 * (_loss_at(r3, n, d)[0] / ref - 1)
    except FitError:
        out["approach3"] = math.inf
    try:
        out["approach2"] = 100 * (approach2(rest, bootstrap=0, target_flops=C_max, holdout=False).predictions["loss"] / ref - 1)
    except FitError:
        out["approach2"] = math.inf
    return out


def _choice_text(choice: dict[str, Any]) -> str:
    h = choice.get("optimum_holdout_pct") or {}
    pct = lambda k: f"{h[k]:+.2f}%" if math.isfinite(h.get(k, math.inf)) else "not measured"  # noqa: E731
    v = choice.get("verdicts") or {}
    return (f"verdicts: approach 3 {v.get('approach3')}, approach 2 {v.get('approach2')}; compute-optimal loss at "
            f"the held-out C={h.get('C', math.nan):.3g}: approach 3 {pct('approach3')}, approach 2 {pct('approach2')}")


def choose_loss_approach(sw: _Sweeps, res3, C: float, bootstrap: int, seed: int) -> tuple[str, Any, dict[str, Any]]:
    """Which law gives the recipe's N_opt and loss: approach 3 (the (N, D) surface with a floor E) or
    approach 2 (power laws through the IsoFLOP minima): the one with the better health verdict, and
    between equally healthy ones the one that predicts the held-out optimum better (:func:`optimum_holdout`).

    Far above the irreducible loss, as small proxies are, a 5-parameter surface fitted to short runs
    can place E near the data and flatten its extrapolation (+10% at 10x on the default study's
    proxies, E above the loss the target run reached); near E, the minima's pure power law runs low
    instead. Predicting the held-out largest budget's optimum is the data's own test of which form
    extrapolates; both errors are kept in ``prediction.approach_choice``."""
    try:
        res2 = approach2(sw.points, bootstrap=bootstrap, seed=seed, target_flops=C)
    except FitError as e:
        return "approach3", None, {"approach2": f"not fitted: {e}", "chosen": "approach3"}
    try:
        h = optimum_holdout(sw.points)
    except (FitError, ValueError) as e:
        h = {"approach3": math.inf, "approach2": math.inf, "not_measured": str(e)}
    level = {k: LEVELS.index(((r.diagnostics or {}).get("health") or {}).get("verdict", "ok"))
             for k, r in (("approach3", res3), ("approach2", res2))}
    # the healthier law first; between equally healthy ones, the closer held-out optimum
    chosen = min(("approach3", "approach2"), key=lambda k: (level[k], abs(h[k])))
    return chosen, res2, {"optimum_holdout_pct": h, "verdicts": {k: LEVELS[v] for k, v in level.items()},
                          "chosen": chosen}


def _predict(sw: _Sweeps, res3, res2, alt3, choice: dict[str, Any], N: float, D: float, flops_run: float,
             bootstrap: int, seed: int, notes: list[str]) -> dict[str, Any]:
    """The predicted loss_val at the recipe's run, with its interval, overall and per domain, from the
    chosen approach (3, or 2 with approach 3 in ``alt3`` when it was fitted and not chosen)."""
    prediction: dict[str, Any] = {"level": 0.95, "approach_choice": dict(choice)}
    if res3 is None:
        L, iv = _envelope_prediction(res2, flops_run)
        prediction.update(loss_val=L, loss_val_interval=iv, at={"C": flops_run},
                          law="chinchilla approach 2 (L* = (C_c / C)^alpha_C through the IsoFLOP minima)")
        if alt3 is not None:
            L3 = _loss_at(alt3, N, D)[0]
            prediction["approach_choice"]["loss_other"] = {"approach3": L3}
            notes.append(f"approach 3 puts the loss at this run at {L3:.4f} ({100 * (L3 / L - 1):+.1f}%)")
        chosen = "approach2"
    else:
        L, iv = _loss_at(res3, N, D)
        prediction.update(loss_val=L, loss_val_interval=iv, law="chinchilla approach 3", at={"N": N, "D": D})
        if res2 is not None and "C_c" in res2.params:
            prediction["approach_choice"]["loss_other"] = {"approach2": _envelope_prediction(res2, flops_run)[0]}
        chosen = "approach3"
    prediction["domains"] = _domain_predictions(sw, chosen, N, D, flops_run, bootstrap, seed, notes)
    return prediction


def _domain_predictions(sw: _Sweeps, approach: str, N: float, D: float, flops_run: float, bootstrap: int,
                        seed: int, notes: list[str]) -> dict[str, Any]:
    """Per validation domain, the same approach fitted to that domain's loss column."""
    domains = {}
    for col in [k for k in sw.runs.columns if k.startswith("loss_val_")]:
        try:
            pts = load_points(sw.runs, loss=col, cooldowns=True)
            if approach == "approach3":
                Ld, ivd = _loss_at(approach3(pts, bootstrap=min(bootstrap, 200), seed=seed, holdout=False), N, D)
            else:
                Ld, ivd = _envelope_prediction(approach2(pts, bootstrap=min(bootstrap, 200), seed=seed, holdout=False), flops_run)
            if not math.isfinite(Ld):
                notes.append(f"no per-domain prediction for {col}: its law is degenerate (loss {Ld} at N={N:.3g})")
                continue
            domains[col[len("loss_val_"):]] = {"loss_val": Ld, "loss_val_interval": ivd}
        except FitError as e:
            notes.append(f"no per-domain law for {col}: {e}")
    return domains


def _laws(fit, health: Verdict, batch_tokens: int, lr: float, mixture: Any, hp_law: dict | None,
          mix_law: dict | None) -> dict:
    """The ``laws`` section: each law used, its constants, whether it was fitted, and its health."""
    holdout = {k: v for k, v in (fit.diagnostics.get("holdout") or {}).items() if k != "errors_pct"}
    return {
        "loss": {"fitted": True, "law": fit.law, "formula": fit.formula, "params": fit.params,
                 "intervals": fit.intervals, "n_points": fit.diagnostics.get("n_points"),
                 "residual_rms_log": fit.diagnostics.get("residuals", {}).get("rms_log"), "holdout": holdout,
                 "health": health.to_json()},
        "batch_size": ({"fitted": True, "value": batch_tokens, **hp_law["batch_size"]} if hp_law else
                       {"fitted": False, "value": batch_tokens, "source": "the sweeps' train.batch_tokens"}),
        "lr": ({"fitted": True, "value": lr, **hp_law["lr"]} if hp_law else
               {"fitted": False, "value": lr, "source": "the sweeps' train.lr"}),
        "mixture": ({"fitted": True, "value": mixture, **mix_law} if mix_law else
                    {"fitted": False, "value": mixture, "source": "the sweeps' training mixture"}),
    }


def _micro_batch(batch_seqs: int, seq_len: int) -> int:
    """The largest micro-batch that divides the batch and holds at most DEFAULT_MICRO_TOKENS tokens."""
    target = max(1, DEFAULT_MICRO_TOKENS // seq_len)
    return max(m for m in micro_batch_sizes(batch_seqs) if m <= target)


def _assemble(sw: _Sweeps, fit, health: Verdict, tgt: _Target, targets: tuple, shape, c: dict, tokens: float, steps: int,
              batch_tokens: int, lr: float, mixture: Any, prediction: dict, hp_law: dict | None,
              mix_law: dict | None, factor: float, notes: list[str]) -> dict[str, Any]:
    """The recipe document, section by section (the format's order)."""
    st, pts = sw.settings, sw.points
    batch_seqs = batch_tokens // st["seq_len"]
    return {
        "lab_recipe": FORMAT,
        "lab_version": lab.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "target": dict(zip(("flops", "params", "tokens"), targets)),
        "model": {"num_layers": shape.num_layers, "d_model": shape.d_model, "num_heads": shape.num_heads,
                  "num_kv_heads": shape.num_kv_heads, "d_ff": shape.d_ff, "head_dim": shape.head_dim,
                  "tie_embeddings": shape.tie_embeddings, "init_std": st["init_std"],
                  "rope_theta": st["rope_theta"], "norm_eps": st["norm_eps"]},
        "counts": {"params": c["params"], "params_total": c["params_total"], "tokens": tokens,
                   "flops": tokens * c["flops_per_token"], "flops_per_token": c["flops_per_token"],
                   "tokens_per_param": tokens / c["params"], "N_opt_law": tgt.n_opt, "D_opt_law": tgt.d_opt,
                   "convention": pts.convention.get("C", "")},
        "data": {"corpus": st["corpus"], "tokenizer": st["tokenizer"], "bpe_vocab_size": st["bpe_vocab_size"],
                 "seq_len": st["seq_len"], "mixture": mixture, "val_weights": st["val_weights"],
                 "val_tokens": st["val_tokens"]},
        "train": {"tokens": tokens, "batch_tokens": batch_tokens, "batch_seqs": batch_seqs,
                  "micro_batch": _micro_batch(batch_seqs, st["seq_len"]), "steps": steps, "lr": lr,
                  **{k: st[k] for k in _OPTIM}},
        "prediction": prediction,
        "laws": _laws(fit, health, batch_tokens, lr, mixture, hp_law, mix_law),
        "provenance": {"sweeps": [str(Path(s).resolve()) for s in sw.names], "runs_used": len(pts),
                       "runs_dropped": len(pts.dropped), "largest_sweep_flops": float(pts.C.max()),
                       "extrapolation_factor": factor, "flop_model": sw.flop_model.describe(),
                       "convention": dict(pts.convention)},
        "notes": notes,
    }
